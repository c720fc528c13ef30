"""Attribution graphs: which lower-layer concepts a concept is made of, for one prediction (Achtibat et al. 2023,
Sec. 4.3; zennit-crp's ``AttributionGraph``).

For a concept ``c`` of layer ``l`` (and the explained class ``y``), the relevance arriving at each of ``l``'s input
layers (the nearest layers of the layer map on the way to the input) under the condition ``{l: [c], y}`` is split
over that layer's concepts; each concept's share is its relevance over the sum of absolute relevances. The
``width[0]`` largest shares become the next nodes, decomposed in turn (conditioned on themselves and on the root
concept) with ``width[1]``, and so on.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from deepexplain.adapters.layers import _call_node, _node_layer
from deepexplain.errors import InvalidInputError, InvalidTypeError


class AttributionGraphResult(NamedTuple):
    """``nodes``: ``[(layer, concept), ...]``, the root first; ``connections``: ``{(layer, concept): [(lower layer,
    lower concept, share), ...]}``."""

    nodes: list
    connections: dict


class AttributionGraph:
    """Decompose a concept into the concepts of the layers below it (zennit-crp's ``AttributionGraph``).

    Parameters
    ----------
    attribution : CondAttribution
    layer_map : dict
        Layer name -> concept (:class:`ChannelConcept`): the layers the graph has nodes in. Input layers are found
        in the Keras model's graph of layers (the layers between are passed through).
    """

    def __init__(self, attribution, layer_map: dict):
        from deepexplain.crp.attribution import CondAttribution

        if not isinstance(attribution, CondAttribution):
            raise InvalidTypeError(f"attribution must be a CondAttribution; got {type(attribution).__name__}")
        if not isinstance(layer_map, dict) or not layer_map:
            raise InvalidInputError("layer_map must be a non-empty dict {'<layer>': ChannelConcept()}")
        self.attribution, self.layer_map = attribution, dict(layer_map)
        self._paths = {name: attribution.layer_path(name) for name in self.layer_map}
        self._inputs: dict = {}

    def find_input_layers(self, layer_name: str) -> list:
        """The layers of the layer map nearest to ``layer_name`` on the way to the input (through the layers that
        are not in it), in the layer map's order."""
        if layer_name not in self._inputs:
            path = self._paths.get(layer_name) or self.attribution.layer_path(layer_name)
            model = path.models[-1]
            mapped = {id(p.layer): name for name, p in self._paths.items() if p.models[-1] is model}
            found, seen, stack = set(), set(), [_call_node(model, path.layer)]
            while stack:
                node = stack.pop()
                for parent in node.parent_nodes:
                    if id(parent) in seen:
                        continue
                    seen.add(id(parent))
                    name = mapped.get(id(_node_layer(parent)))
                    if name is not None:
                        found.add(name)
                    else:
                        stack.append(parent)
            self._inputs[layer_name] = [name for name in self.layer_map if name in found]
        return self._inputs[layer_name]

    def __call__(self, sample, target, layer_name: str, concept_id: int, width=(3, 2), parent_c_id=None,
                 parent_layer=None, abs_norm: bool = True, batch_size: int = 16) -> AttributionGraphResult:  # fmt: skip
        """The attribution graph of concept ``concept_id`` of ``layer_name`` for ``sample``.

        Parameters
        ----------
        sample : ndarray
            One sample (with or without the batch axis of 1).
        target : int or None
            The explained class; None: the concept alone (the backward pass starts at ``parent_layer`` or the
            concept's own layer, with its activation).
        layer_name, concept_id
            The concept to decompose.
        width : sequence of int
            How many lower concepts to keep per input layer, level by level (its length is the depth).
        parent_c_id, parent_layer : optional
            Decompose in the context of this higher concept (conditioned on it) instead of on the concept itself.
        abs_norm : bool
            Shares as relevance over the sum of absolute relevances of the layer.
        batch_size : int
            Rows per model call.

        Returns
        -------
        AttributionGraphResult
        """
        xs = np.asarray(sample)
        specs = self.attribution.model.inputs
        if xs.ndim == len(specs[0].shape) - 1:
            xs = xs[None]
        if len(xs) != 1:
            raise InvalidInputError(f"sample must be one sample; got {len(xs)}")
        if layer_name not in self.layer_map:
            raise InvalidInputError(f"layer {layer_name!r} is not in the layer_map {list(self.layer_map)}")
        start_layer = None if target is not None else (parent_layer or layer_name)
        in_context = parent_c_id is not None and parent_layer
        parent = {parent_layer: [parent_c_id]} if in_context else {layer_name: [concept_id]}
        if target is not None:
            parent["y"] = [target]
        nodes, connections = [(layer_name, concept_id)], {}
        level = [(layer_name, concept_id)]
        for w in width:
            conditions, inputs = [], []
            for name, c in level:
                conditions.append({name: [c], **parent})
                inputs.extend(n for n in self.find_input_layers(name) if n not in inputs)
            if not inputs:
                break
            result = self.attribution(xs, conditions, record_layer=inputs, exclude_parallel=False,
                                      start_layer=start_layer, batch_size=batch_size, progress=False)  # fmt: skip
            below = []
            for row, (name, c) in enumerate(level):
                for lower in self.find_input_layers(name):
                    concept = self.layer_map[lower]
                    shares = concept.attribute(result.relevances[lower][row : row + 1], abs_norm=abs_norm)[0]
                    top = np.argsort(-shares, kind="stable")[:w]
                    nodes.extend((lower, int(i)) for i in top)
                    below.extend((lower, int(i)) for i in top)
                    connections.setdefault((name, c), []).extend((lower, int(i), float(shares[i])) for i in top)
            level = below
        return AttributionGraphResult(nodes, connections)


__all__ = ["AttributionGraph", "AttributionGraphResult"]
