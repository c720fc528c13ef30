"""Layers of Keras models, found through nested models: by name, by path, by object, or the last spatial one.

A Keras model often holds its backbone as one layer (``Sequential([ResNet50(...), GlobalAveragePooling2D(),
Dense(10)])``): ``model.layers[0]`` is a whole model, and the layer a class activation map needs lives inside it.
:func:`find_layer` resolves ``'resnet50/conv5_block3_out'`` (or the bare name when it is unique, or the layer
object) to a :class:`LayerPath`; :func:`last_spatial_layer` finds the default layer of the CAM methods; and
:func:`tapped` calls the model so that the layers' outputs are tensors of the same trace as the model's outputs (so
that the gradient of an output with respect to it is the true partial derivative, whatever else the output
depends on).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import tensorflow as tf

from deepexplain.errors import InvalidInputError, InvalidTypeError, closest, describe_shape


@dataclass(frozen=True)
class LayerPath:
    """A layer and the chain of models that holds it.

    Attributes
    ----------
    models : tuple
        The explained model first, then each nested model down to the one whose own layer ``layer`` is.
    layer : keras layer
    """

    models: tuple
    layer: object

    @property
    def name(self) -> str:
        """``'backbone/conv5_block3_out'``: the nested models' names, then the layer's."""
        return "/".join([m.name for m in self.models[1:]] + [self.layer.name])

    @property
    def output_shape(self) -> tuple | None:
        """The layer's symbolic output shape with the batch dimension, or None when it has no single output."""
        try:
            shape = self.layer.output.shape
        except (AttributeError, ValueError):
            return None
        return tuple(shape) if not isinstance(shape, list) else None


def all_layers(model) -> list[LayerPath]:
    """Every layer of ``model`` in the model's order, nested models expanded in place (the nested model itself
    listed after its layers)."""
    found = []

    def visit(chain):
        for layer in getattr(chain[-1], "layers", []):
            if _is_model(layer):
                visit((*chain, layer))
            found.append(LayerPath(chain, layer))

    visit((model,))
    return found


def find_layer(model, layer) -> LayerPath:
    """The layer ``layer`` of ``model``: a name (a layer of the model, a path ``'backbone/conv5_block3_out'`` through
    nested models, or the bare name of a nested layer when only one layer has it) or a layer object.

    Raises
    ------
    InvalidInputError
        For a name no layer has (the closest name suggested), a bare name that several nested layers have, or a
        layer object that is not part of the model.
    """
    candidates = all_layers(model)
    if isinstance(layer, str):
        by_path = [c for c in candidates if c.name == layer]
        if by_path:
            return by_path[0]
        by_name = [c for c in candidates if c.layer.name == layer]
        if len(by_name) == 1:
            return by_name[0]
        if by_name:
            raise InvalidInputError(
                f"layer {layer!r} names layers of several nested models: {[c.name for c in by_name]}; pass one path"
            )
        names = [c.name for c in candidates] + [c.layer.name for c in candidates]
        hint = closest(layer, names) or f"; its layers: {', '.join(repr(c.name) for c in candidates[:20])}" + (
            ", ..." if len(candidates) > 20 else ""
        )
        raise InvalidInputError(f"layer {layer!r} is not a layer of the model{hint}")
    if not hasattr(layer, "name") or not callable(layer):
        raise InvalidTypeError(f"layer must be a layer name or a Keras layer; got {type(layer).__name__}")
    for candidate in candidates:
        if candidate.layer is layer:
            return candidate
    raise InvalidInputError(f"layer {layer.name!r} is not a layer of the model (nor of a model nested in it)")


def spatial_size(shape) -> int | None:
    """The number of positions of an NHWC (or NTC, NDHWC) shape with its batch dimension; None if one is unknown."""
    dims = shape[1:-1]
    return None if any(d is None for d in dims) else math.prod(dims)


def last_spatial_layer(model, rank: int | None = None) -> LayerPath:
    """The last layer whose output has feature maps: rank ``rank`` (default: the model input's, 4 for images, 3 for
    sequences) and more than one position. Nested models are searched inside; a 1×1 map after global pooling (the
    1×1 convolutions of a MobileNetV3 head) is not one.

    Raises
    ------
    InvalidInputError
        When no layer has such an output.
    """
    if rank is None:
        inputs = getattr(model, "inputs", None) or []
        rank = len(inputs[0].shape) if inputs else 4
    found = None
    for candidate in all_layers(model):
        shape = candidate.output_shape
        if _is_model(candidate.layer) or _is_input_layer(candidate.layer) or shape is None or len(shape) != rank:
            continue
        size = spatial_size(shape)
        if size is None or size > 1:
            found = candidate
    if found is None:
        raise InvalidInputError(
            f"the model has no layer with feature maps (an output of rank {rank} with more than one position) to "
            "take a class activation map of; pass layer="
        )
    return found


def check_spatial(path: LayerPath, method: str) -> None:
    """Refuse a layer without feature maps (a Dense layer, a layer after global pooling) for a CAM method."""
    shape = path.output_shape
    if shape is None:
        raise InvalidInputError(
            f"layer {path.name!r} has no single symbolic output (a layer used several times, or one of a subclassed "
            f"model); {method} needs a layer of a Sequential or functional model used once"
        )
    size = spatial_size(shape)
    if len(shape) < 3 or size == 1:
        try:
            hint = f"; the last layer with feature maps is {last_spatial_layer(path.models[0]).name!r}"
        except InvalidInputError:
            hint = ""
        raise InvalidInputError(
            f"{method} needs a layer with feature maps (an output (N, H, W, C), or (N, T, C) for sequences, with more "
            f"than one position); layer {path.name!r} outputs {describe_shape(shape)}{hint}"
        )


def tapped(keras, paths: list[LayerPath]) -> Callable[[list], tuple]:
    """``call(inputs) -> (layer outputs, model outputs)``: the model applied to ``inputs`` (a list of tensors) so
    that the outputs of the layers ``paths`` are tensors of the same computation as the model's outputs.

    Each nested model on the way is entered (see :func:`split`), and the innermost model returns the layers' outputs
    besides its own; the layers must therefore be of one model (the same chain of nested models). The parts share
    the model's layers and weights.

    Raises
    ------
    InvalidInputError
        When the layers are of different (nested) models, or an outer model's output depends on its input also
        around a nested model on the way.
    """
    chains = {tuple(id(m) for m in p.models): p for p in paths}
    if len(chains) > 1:
        a, b = list(chains.values())[:2]
        raise InvalidInputError(
            f"layers {a.name!r} and {b.name!r} are of different (nested) models; the layers read together must be "
            "of one model"
        )
    inner, levels = paths[0].models[-1], _levels(keras, paths[0])
    taps = _part(keras, _flat(inner.inputs), [*(_output_of(p) for p in paths), *_flat(inner.outputs)])
    count = len(paths)

    def call(inputs: list):
        values = taps(_into(levels, list(inputs)))
        return values[:count], _out_of(levels, values[count:])

    return call


def split(keras, path: LayerPath) -> tuple:
    """``(head, tail, layer output)``: the model cut at the layer, ``head(inputs) -> [layer output]`` and
    ``tail([layer output]) -> outputs`` (lists of tensors), and the layer's symbolic output (its spec).

    Each model on the way to a nested layer is cut at the nested model's call: the part before computes its inputs,
    the part after takes its outputs. The parts share the model's layers and weights.

    Raises
    ------
    InvalidInputError
        When the output depends on the model's input also around the layer (a mask, a skip connection): the
        attributions to the layer alone would ignore part of the model.
    """
    inner, levels = path.models[-1], _levels(keras, path)
    layer_output = _output_of(path)
    if getattr(layer_output, "_keras_mask", None) is not None:
        # the layers after it would run without the mask (it is not part of the layer's output): another function
        raise InvalidInputError(
            f"layer {path.name!r} outputs a Keras mask (mask_zero=True, Masking) that the layers after it read "
            "(attention masks, masked pooling), so attributions to that layer alone would explain the model without "
            "its mask; explain, without layer=, a model that takes the embeddings and the mask as inputs of their "
            "own (keras.Model([embeddings, mask], ...) passing MultiHeadAttention(attention_mask=...))"
        )
    try:
        head = _part(keras, _flat(inner.inputs), [layer_output])
        tail = _part(keras, [layer_output], _flat(inner.outputs))
    except ValueError:
        raise InvalidInputError(
            f"the output depends on the model input also around layer {path.name!r} (a mask or a skip connection), "
            "so attributions to that layer alone would ignore part of the model"
        ) from None

    def head_call(inputs: list) -> list:
        return head(_into(levels, inputs))

    def tail_call(values: list) -> list:
        return _out_of(levels, tail(values))

    return head_call, tail_call, layer_output


def _into(levels, inputs: list) -> list:
    """The inputs of the innermost model, from the outer model's."""
    for before, _ in levels:
        inputs = before(inputs)
    return inputs


def _out_of(levels, outputs: list) -> list:
    """The outer model's outputs, from the innermost model's."""
    for _, after in reversed(levels):
        outputs = after(outputs)
    return outputs


def _levels(keras, path: LayerPath) -> list:
    """``(before, after)`` per model on the way to the layer's own model: the parts of that model before and after
    the call of the next nested model."""
    levels = []
    for model, nested in zip(path.models[:-1], path.models[1:], strict=True):
        node = _call_node(model, nested)
        try:
            before = _part(keras, _flat(model.inputs), _flat(node.input_tensors))
            after = _part(keras, _flat(node.outputs), _flat(model.outputs))
        except ValueError:
            raise InvalidInputError(
                f"the output of {model.name!r} depends on its input also around the nested model {nested.name!r}, "
                f"so layer {path.name!r} cannot be reached inside it; pass a layer of {model.name!r} itself"
            ) from None
        levels.append((before, after))
    return levels


def _output_of(path: LayerPath):
    """The layer's output tensor in its own model's graph."""
    outputs = _flat(_call_node(path.models[-1], path.layer).outputs)
    if len(outputs) != 1:
        raise InvalidInputError(f"layer {path.name!r} has {len(outputs)} outputs; pass a layer with one")
    return outputs[0]


def _part(keras, inputs: list, outputs: list):
    """``call(tensors) -> tensors``: the part of a model from ``inputs`` to ``outputs`` (the identity when they are
    the same tensors, which tf_keras cannot build a model of)."""
    if len(inputs) == len(outputs) and all(a is b for a, b in zip(inputs, outputs, strict=True)):
        return list
    part = keras.Model(_structure(inputs), outputs)
    return lambda tensors: _flat(part(_structure(tensors), training=False))


def _call_node(model, layer):
    """The node where ``model`` calls its layer ``layer`` (which must be called once there). A layer may have nodes
    of other graphs too: of another model it is part of, or of an earlier build of a Sequential model."""
    nodes = [n for n in layer._inbound_nodes if _node_layer(n) is layer and _in_model(model, n)]
    if len(nodes) != 1:
        raise InvalidInputError(
            f"layer {layer.name!r} is called {len(nodes)} times in {model.name!r}; its feature maps can be read only "
            "when it is called once"
        )
    return nodes[0]


def _node_layer(node):
    return getattr(node, "operation", None) or getattr(node, "layer", None)  # Keras 3 / tf_keras


def _in_model(model, node) -> bool:
    graph = getattr(model, "_functional", None) or model  # a Keras 3 Sequential keeps its graph in a Functional
    by_depth = getattr(graph, "_nodes_by_depth", None)
    if by_depth is None:  # a model without a graph of nodes: trust the only call
        return True
    return any(node is n for nodes in by_depth.values() for n in nodes)


def _flat(tensors) -> list:
    return list(tf.nest.flatten(tensors))


def _structure(tensors):
    """A single tensor for a one-input model (as Keras builds and calls it without warnings), else a list."""
    tensors = _flat(tensors)
    return tensors[0] if len(tensors) == 1 else tensors


def _is_model(layer) -> bool:
    return hasattr(layer, "layers") and hasattr(layer, "inputs") and callable(getattr(layer, "get_layer", None))


def _is_input_layer(layer) -> bool:
    return type(layer).__name__ == "InputLayer"
