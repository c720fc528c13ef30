"""Conditional relevance: an LRP backward pass whose relevance is masked at named layers to chosen channels.

Achtibat et al., "From attribution maps to human-understandable explanations through Concept Relevance
Propagation", Nature Machine Intelligence 5, 2023, Eq. 5: with the relevance map of the LRP rules fixed by the
forward pass,

    R_i^(l-1)(x | theta u theta_l) = sum_j  z_ij / z_j * delta_j(theta_l) * R_j^l(x | theta),

where delta_j is 1 for the units of the concepts a condition lists for layer ``l`` (channels OR-ed) and 0 for the
others, and conditions on several layers are applied in turn (AND). The output condition ``y`` seeds the relevance
with the logit of the listed classes (zennit-crp's ``relevance_init``).

How: :class:`CondAttribution` compiles ONE explanation per set of conditioned layers (the :class:`Explainer` of the
LRP method, with the layers' outputs tapped in the same trace); each row of a batch is one (sample, condition) pair
and the masks are per-row inputs of that explanation, so any number of conditions costs one trace and memory is
bounded by ``batch_size`` rows. With ``exclude_parallel=False`` the masks are gates on the relevance arriving at each
layer's output, in one backward pass (zennit-crp's hooks); with ``exclude_parallel=True`` the backward pass is
chained from layer to layer (``tf.gradients`` from the output to the highest conditioned layer, masked, from there to
the next, ...), so only relevance through every conditioned layer, in turn, reaches the input.
"""

from __future__ import annotations

import numbers
import os
import threading
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from deepexplain import batching
from deepexplain.errors import InvalidInputError, InvalidTypeError, NotConnectedError
from deepexplain.tensorflow.graph import ancestors_of
from deepexplain.tensorflow.overrides import original_gradient

MODEL_OUTPUT_NAME = "y"


class CondAttributionResult(NamedTuple):
    """What :class:`CondAttribution` returns, one row per (sample, condition) pair (zennit-crp's ``attrResult``).

    Attributes
    ----------
    heatmap : ndarray or list of ndarray
        The input relevance of each row, passed through :meth:`CondAttribution.heatmap_modifier` (summed over the
        channel axis for images, ``(rows, H, W)``); a list for a model with several inputs.
    activations : dict
        Layer name -> ``(rows, *layer shape)``, the layer's output.
    relevances : dict
        Layer name -> ``(rows, *layer shape)``, the relevance arriving at the layer's output, before that layer's own
        mask (after the masks of the layers above it); zeros where no relevance arrives. The layers of
        ``record_layer`` (activations too).
    prediction : ndarray
        ``(rows, *output shape)``: the explained output (the logits of a model ending in a softmax), or the start
        layer's activation.
    """

    heatmap: object
    activations: dict
    relevances: dict
    prediction: np.ndarray


@dataclass(frozen=True)
class ConditionalProgram:
    """A conditional backward pass over the explainer's taps (the tapped layers' outputs, in its order).

    Attributes
    ----------
    names : tuple of str
        The tapped layers, for messages.
    masked : tuple of (int, str, tuple)
        ``(tap index, 'channel' or 'neuron', mask shape without rows)`` of each conditioned layer; its mask is one
        extra input, ``(rows, channels)`` or ``(rows, *layer shape)``.
    exclude_parallel : bool
        Chain the backward pass through the conditioned layers (True) or gate the relevance where they sit (False).
    start : int or None
        Tap index of the layer the backward pass starts at (its activation, masked, is the initial relevance).
    recorded : tuple of int
        Tap indices whose relevance and activation are returned.
    """

    names: tuple
    masked: tuple
    exclude_parallel: bool
    start: int | None = None
    recorded: tuple = ()

    def extra_specs(self, weights_dtype) -> list:
        """Target weights ``(rows, *output)``, whether each row explains its largest output, then the masks."""
        specs = [tf.TensorSpec(None, tf.as_dtype(weights_dtype), name="target_weights"),
                 tf.TensorSpec((None,), tf.bool, name="select_max")]  # fmt: skip
        for index, _, shape in self.masked:
            specs.append(tf.TensorSpec((None, *shape), tf.float32, name=f"mask_{index}"))
        return specs

    def bind(self, traced, method) -> _BoundProgram:
        """The program on the tensors of one trace."""
        return _BoundProgram(self, traced, method)


class _BoundProgram:
    def __init__(self, program: ConditionalProgram, traced, method):
        self.program, self.method = program, method
        self.taps = list(traced.taps)
        self.start = None if program.start is None else self.taps[program.start]

    def _name(self, index: int) -> str:
        return self.program.names[index]

    def check_path(self, path) -> None:
        for index in range(len(self.taps)):
            if self.taps[index].op not in path.ops:
                where = "below the start layer" if self.start is not None else "between the input and the output"
                raise InvalidInputError(
                    f"layer {self._name(index)!r} is not on the path from the input to the explained output "
                    f"({where}), so no relevance passes it; condition or record a layer the output depends on"
                )

    def _mask(self, position: int, extra: list, like: tf.Tensor) -> tf.Tensor:
        """The ``position``-th mask, shaped to broadcast against the layer output ``like``."""
        mask = tf.cast(extra[2 + position], like.dtype)
        if self.program.masked[position][1] == "channel" and like.shape.rank > 2:
            mask = tf.reshape(mask, [-1] + [1] * (like.shape.rank - 2) + [mask.shape[-1]])
        return mask

    def gated(self, op_rules: dict, rules, extra: list) -> dict:
        """The rules with a gate at each conditioned layer's output (exclude_parallel=False): the relevance arriving
        there is multiplied by the row's mask before the op's own rule takes it."""
        if self.program.exclude_parallel:
            return op_rules
        gated = dict(op_rules)
        for position, (index, _, _) in enumerate(self.program.masked):
            if index == self.program.start:
                continue  # the start layer's mask is in the initial relevance
            tensor = self.taps[index]
            op, output = tensor.op, tensor.value_index
            base = gated.get(op) or rules.get(op.type)  # a second name of the same tensor: the gates compose
            mask = self._mask(position, extra, tensor)

            def gate(op, grads, settings, base=base, output=output, mask=mask):
                grads = list(grads)
                if grads[output] is not None:
                    grads[output] = grads[output] * mask
                return base(op, grads, settings) if base is not None else original_gradient(op, *grads)

            gated[op] = gate
        return gated

    def backward(self, target: tf.Tensor, inputs: list, extra: list, seed: tf.Tensor | None) -> list:
        """``[input relevances..., prediction, recorded relevances..., recorded activations...]``; ``seed`` is the
        relevance at the output (the explainer's, from each row's target weights), None with a start layer."""
        masks = {index: position for position, (index, _, _) in enumerate(self.program.masked)}
        if self.start is not None:
            seed = target
            if self.program.start in masks:
                seed = seed * self._mask(masks[self.program.start], extra, target)
        relevances = [None] * len(self.taps)
        if self.program.start is not None:
            relevances[self.program.start] = target  # the initial relevance, before its mask
        if not self.program.exclude_parallel:
            recorded = [i for i in self.program.recorded if i != self.program.start]
            gradients = tf.gradients(target, [*inputs, *(self.taps[i] for i in recorded)], grad_ys=seed)
            heat = gradients[: len(inputs)]
            for i, g in zip(recorded, gradients[len(inputs) :], strict=True):
                relevances[i] = g
        else:
            heat = self._chained(target, seed, inputs, extra, masks, relevances)
        if all(h is None for h in heat):
            raise NotConnectedError("no relevance reaches the input: the explained output does not depend on it")
        heat = [tf.zeros_like(x) if h is None else h for h, x in zip(heat, inputs, strict=True)]
        recorded = self.program.recorded
        relevances = [tf.zeros_like(self.taps[i]) if relevances[i] is None else relevances[i] for i in recorded]
        return [*heat, target, *relevances, *(self.taps[i] for i in recorded)]

    def _chained(self, target, seed, inputs, extra, masks, relevances) -> list:
        """exclude_parallel=True: ``tf.gradients`` from the start (the output or the start layer) to the highest
        conditioned layer, its relevance masked, from there to the next, ..., then to the inputs; a tapped layer
        that is not conditioned records what passes it in the stage whose two ends it lies between."""
        ancestors = [ancestors_of(t) for t in self.taps]
        chain = sorted((i for i in masks if i != self.program.start), key=lambda i: -len(ancestors[i]))
        top_ancestors = ancestors_of(target)
        for upper, lower in zip([None, *chain], chain, strict=False):
            above = top_ancestors if upper is None else ancestors[upper]
            if self.taps[lower].op not in above:
                upper_name = "the start layer" if upper is None else repr(self._name(upper))
                raise InvalidInputError(
                    f"with exclude_parallel=True the relevance passes every conditioned layer in turn, but layer "
                    f"{self._name(lower)!r} is not below {upper_name} (they are on parallel paths); condition them in "
                    "separate conditions, or pass exclude_parallel=False"
                )
        pending = [i for i in self.program.recorded if i not in masks and i != self.program.start]

        def stage(top, top_ops, relevance, lower, bottom: list) -> list:
            """``tf.gradients`` of ``top`` to ``bottom`` (tap ``lower``; None: the inputs), recording the pending
            taps that lie between the two ends."""
            between = [i for i in pending if self.taps[i].op in top_ops and
                       (lower is None or self.taps[lower].op in ancestors[i])]  # fmt: skip
            gradients = tf.gradients(top, [*bottom, *(self.taps[i] for i in between)], grad_ys=relevance)
            for i, g in zip(between, gradients[len(bottom) :], strict=True):
                relevances[i] = g
            pending[:] = [i for i in pending if i not in between]
            return gradients[: len(bottom)]

        top, top_ops, relevance = target, top_ancestors, seed
        for index in chain:
            (gradient,) = stage(top, top_ops, relevance, index, [self.taps[index]])
            if gradient is None:
                raise NotConnectedError(f"no relevance reaches layer {self._name(index)!r}")
            relevances[index] = gradient
            relevance = gradient * self._mask(masks[index], extra, self.taps[index])
            top, top_ops = self.taps[index], ancestors[index]
        return stage(top, top_ops, relevance, None, inputs)


# ----------------------------------------------------------------------------------------------------------------
# Conditions
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Condition:
    """One condition, checked: the output classes (None: the row's largest output) and, per layer, the channels
    (a tuple) or the units (a dict channel -> flat spatial indices)."""

    y: tuple | None
    layers: dict


def _indices(value, what: str, count: int | None) -> tuple:
    values = [value] if isinstance(value, numbers.Integral | np.integer) and not isinstance(value, bool) else value
    try:
        values = list(values)
    except TypeError:
        raise InvalidTypeError(f"{what} must be an int or a list of ints; got {value!r}") from None
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral | np.integer):
            raise InvalidTypeError(f"{what} must be ints; got {v!r} in {value!r}")
        if v < 0 or (count is not None and v >= count):
            raise InvalidInputError(f"{what}: {v} is out of range; expected 0 .. {count - 1 if count else '?'}")
    return tuple(int(v) for v in values)


# ----------------------------------------------------------------------------------------------------------------
# CondAttribution
# ----------------------------------------------------------------------------------------------------------------


class CondAttribution:
    """Concept-conditional LRP of a Keras model (zennit-crp's ``CondAttribution``; Achtibat et al. 2023, Eq. 5).

    Parameters
    ----------
    model : keras.Model, tf_keras.Model or path
        A Sequential or functional Keras model (or a saved one's path); conditioned layers are its layers, by name
        (``'conv2d_1'``; a layer of a nested model by its path ``'backbone/conv3'`` or its unique name).
    method : str
        Any method of the LRP family (``'lrp.epsilon_plus'``, the default as zennit-crp's tutorials;
        ``'lrp.epsilon'``, ``'lrp.alpha_2_beta_1'``, ``'lrp.composite'``, ``'deep_taylor'``, ...).
    output : int or str, optional
        Which output of a model with several.
    progress : bool
        Show a progress bar on long runs.
    **method_kwargs
        The method's arguments (``epsilon``, ``rules`` of ``lrp.composite``, ...).

    Notes
    -----
    Deliberate differences from zennit-crp 0.6.0: rows are always sample-major (sample ``n``, condition ``k`` ->
    row ``n * K + k``), also when there are as many samples as conditions (zennit-crp pairs them then; pass
    ``pair=True`` for that) and when conditions name different layers with ``exclude_parallel=True`` (zennit-crp
    returns such rows grouped by layer set); the layers of one condition may be listed in any order (they are
    ordered from the output down); relevances are recorded before the layer's own mask, as zennit-crp's tests fix
    (its hooks record after the mask on PyTorch >= 2); only the layers of ``record_layer`` are recorded
    (zennit-crp records the conditioned layers too: each recorded layer is two more layer-sized outputs per row, 40%
    of the time of a conditional pass on bench-cnn).
    """

    MODEL_OUTPUT_NAME = MODEL_OUTPUT_NAME

    def __init__(self, model, method: str = "lrp.epsilon_plus", *, output=None, progress: bool = True,
                 **method_kwargs):  # fmt: skip
        from deepexplain.adapters.keras import keras_module, load_model

        _check_lrp(method, method_kwargs)
        self.model = load_model(model) if isinstance(model, str | os.PathLike) else model
        if keras_module(self.model) is None or not hasattr(self.model, "layers"):
            raise InvalidTypeError(
                f"CondAttribution needs a Keras model; got {type(self.model).__name__} (for a TF1 graph, use "
                "DeepExplain's de.cond_attribution(T, X))"
            )
        self.method, self.method_kwargs, self.output, self.progress = method, dict(method_kwargs), output, progress
        self._layers = _KerasLayers(self)
        self._explainers: dict = {}
        self._lock = threading.RLock()
        self._output_shape = _output_shape(self.model, output)

    @classmethod
    def of_graph(cls, session, T, X, method: str = "lrp.epsilon_plus", progress: bool = True, **method_kwargs):
        """The conditional LRP of ``T`` with respect to ``X`` in a TF1 graph and its session (what the DeepExplain
        context's ``de.cond_attribution(T, X)`` gives): layers are named by tensor name (``'conv1/Relu:0'``) or op
        name (``'conv1/Relu'``; its first output)."""
        _check_lrp(method, method_kwargs)
        self = cls.__new__(cls)
        self.model, self.output, self.progress = None, None, progress
        self.method, self.method_kwargs = method, dict(method_kwargs)
        self._layers = _GraphLayers(self, session, T, X)
        self._explainers, self._lock = {}, threading.RLock()
        shape = T.shape.as_list()[1:] if T.shape.rank else None
        self._output_shape = None if shape is None or None in shape else tuple(shape)
        return self

    # ------------------------------------------------------------------------------------------------------------

    def heatmap_modifier(self, relevance: np.ndarray) -> np.ndarray:
        """The heatmap of an input's relevance: summed over the channel axis for images and sequences (rank >= 3,
        NHWC), as it is for tabular inputs. Override to keep the channels (zennit-crp's ``heatmap_modifier``)."""
        return relevance.sum(axis=-1) if relevance.ndim >= 3 else relevance

    def layer_shape(self, name: str) -> tuple:
        """The output shape of layer ``name`` without the batch dimension (raising for an unknown name, with the
        closest suggested)."""
        if not isinstance(name, str):
            raise InvalidTypeError(f"layers are named by str; got {name!r}")
        if name == MODEL_OUTPUT_NAME:
            raise InvalidInputError(f"{MODEL_OUTPUT_NAME!r} names the model output, not a layer")
        return self._layers.shape(name)

    def layer_path(self, name: str):
        """The Keras layer ``name`` (:func:`deepexplain.adapters.layers.find_layer`), with one output."""
        self.layer_shape(name)
        return self._layers.path(name)

    def explainer(self, layers) -> object:
        """The LRP explainer with the outputs of ``layers`` (names) tapped, compiled once per set of layers."""
        key = tuple(layers)
        with self._lock:
            if key not in self._explainers:
                self._explainers[key] = self._layers.explainer(key)
            return self._explainers[key]

    def __call__(self, xs, conditions, record_layer=(), exclude_parallel: bool = True, batch_size=None,
                 start_layer=None, pair: bool = False, progress=None) -> CondAttributionResult:  # fmt: skip
        """Conditional heatmaps of ``xs`` for each condition.

        Parameters
        ----------
        xs : ndarray or list of ndarray
            ``(N, ...)`` model inputs.
        conditions : dict or list of dict
            ``{'y': [class, ...], '<layer>': [channel, ...], ...}``: the explained classes (their logits seed the
            relevance; omitted: each row's largest output) and, per layer, the channels that pass (OR); several
            layers: all apply (AND). ``{'<layer>': {channel: [flat spatial index, ...]}}`` lets single units pass.
            An empty list passes nothing.
        record_layer : sequence of str
            The layers whose activations and relevances are returned (conditioned or not).
        exclude_parallel : bool
            True (zennit-crp's default): relevance reaches the input only through the conditioned layers, in turn
            (a residual shortcut around a conditioned layer carries nothing). False: the masks act where the layers
            sit; parallel paths carry their relevance unmasked.
        batch_size : int, optional
            Rows (sample-condition pairs) per model call; memory is bounded by it whatever the number of conditions.
        start_layer : str, optional
            Start the backward pass at this layer: its activation, masked by the conditions on it, is the initial
            relevance (``'y'`` is then ignored). Reference heatmaps of a concept start so.
        pair : bool
            Pair sample ``n`` with condition ``n`` (as many of each) instead of every sample with every condition.
        progress : bool, optional
            Show a progress bar (default: the instance's setting).

        Returns
        -------
        CondAttributionResult
            ``heatmap``, ``activations``, ``relevances``, ``prediction``; row ``n * K + k`` is sample ``n`` under
            condition ``k`` (row ``n`` with ``pair=True``).
        """
        conditions = self._conditions(conditions)
        record = list(dict.fromkeys(record_layer if not isinstance(record_layer, str) else [record_layer]))
        for name in record:
            self.layer_shape(name)
        if start_layer is not None:
            self.layer_shape(start_layer)
        batching.check_batch_size(batch_size)
        layers = sorted({*(n for c in conditions for n in c.layers), *record, *([start_layer] if start_layer else [])})
        explainer = self.explainer(layers)
        arrays, specs, rows = explainer.inputs_of(xs, batch_size)
        n, k = len(arrays[0]), len(conditions)
        if pair and n != k:
            raise InvalidInputError(f"pair=True pairs samples with conditions, so both must be as many; got {n}, {k}")
        owners = np.arange(n) if pair else np.repeat(np.arange(n), k)
        which = np.arange(n) if pair else np.tile(np.arange(k), n)
        groups = self._groups(conditions, which, exclude_parallel, start_layer)
        show = self.progress if progress is None else bool(progress)
        total = sum(-(-len(r) // rows) for r in groups.values())
        results = None
        with tqdm(total=total, delay=2, disable=not show, desc="crp", unit="run") as bar:
            for conditioned, row_ids in groups.items():
                program = self._program(layers, conditioned, exclude_parallel, start_layer, record)
                for lo in range(0, len(row_ids), rows):
                    ids = row_ids[lo : lo + rows]
                    feeds = self._feeds(program, layers, [conditions[c] for c in which[ids]])
                    out = explainer.run_program(program, [a[owners[ids]] for a in arrays], feeds, specs)
                    if results is None:
                        results = [np.zeros((len(owners), *o.shape[1:]), o.dtype) for o in out]
                    for result, o in zip(results, out, strict=True):
                        result[ids] = o[: len(ids)]
                    bar.update(1)
        count = len(arrays)
        heat = [self.heatmap_modifier(h) for h in results[:count]]
        relevances = dict(zip(record, results[count + 1 : count + 1 + len(record)], strict=True))
        activations = dict(zip(record, results[count + 1 + len(record) :], strict=True))
        return CondAttributionResult(heat if count > 1 else heat[0], activations, relevances, results[count])

    # ------------------------------------------------------------------------------------------------------------

    def _conditions(self, conditions) -> list[_Condition]:
        if isinstance(conditions, dict):
            conditions = [conditions]
        if not isinstance(conditions, list | tuple) or not conditions:
            raise InvalidInputError(
                f"conditions must be a dict or a non-empty list of dicts {{'y': [class], '<layer>': [channel, ...]}}; "
                f"got {conditions!r}"
            )
        units = int(np.prod(self._output_shape)) if self._output_shape is not None else None
        checked = []
        for condition in conditions:
            if not isinstance(condition, dict):
                raise InvalidTypeError(f"each condition must be a dict {{'y': [class], '<layer>': [...]}}; got "
                                       f"{condition!r}")  # fmt: skip
            y = None
            layers = {}
            for key, value in condition.items():
                if key == MODEL_OUTPUT_NAME:
                    y = _indices(value, "the condition's 'y' (output classes)", units)
                    continue
                shape = self.layer_shape(key)
                channels = shape[-1]
                if isinstance(value, dict):
                    positions = int(np.prod(shape[:-1]))
                    layers[key] = {_indices(c, f"channels of layer {key!r}", channels)[0]:
                                   _indices(v, f"units of channel {c} of layer {key!r}", positions)
                                   for c, v in value.items()}  # fmt: skip
                else:
                    layers[key] = _indices(value, f"channels of layer {key!r}", channels)
            checked.append(_Condition(y, layers))
        return checked

    def _groups(self, conditions, which, exclude_parallel: bool, start_layer) -> dict:
        """Row indices per set of conditioned layers: one program (one trace) per set; with exclude_parallel=False
        one for all (a layer a condition does not name gets a mask of ones)."""

        def layers_of(condition):
            names = set(condition.layers) | ({start_layer} if start_layer else set())
            return tuple(sorted((name, isinstance(condition.layers.get(name), dict)) for name in names))

        if not exclude_parallel:
            names = {}
            for condition in conditions:
                for name, neuron in layers_of(condition):
                    names[name] = names.get(name, False) or neuron
            return {tuple(sorted(names.items())): np.arange(len(which))}
        keys = [layers_of(conditions[c]) for c in which]
        groups: dict = {}
        for row, key in enumerate(keys):
            groups.setdefault(key, []).append(row)
        return {key: np.asarray(rows) for key, rows in groups.items()}

    def _program(self, layers: list, conditioned: tuple, exclude_parallel: bool, start_layer,
                 record: list) -> ConditionalProgram:  # fmt: skip
        masked = []
        for name, neuron in conditioned:
            shape = self.layer_shape(name)
            masked.append((layers.index(name), "neuron" if neuron else "channel", tuple(shape) if neuron else
                           (shape[-1],)))  # fmt: skip
        start = None if start_layer is None else layers.index(start_layer)
        recorded = tuple(layers.index(name) for name in record)
        return ConditionalProgram(tuple(layers), tuple(masked), bool(exclude_parallel), start, recorded)

    def _feeds(self, program: ConditionalProgram, layers: list, conditions: list) -> list:
        count = len(conditions)
        weights = np.zeros((count, *self._output_shape), np.float32) if self._output_shape else np.zeros((count, 1))
        flat = weights.reshape(count, -1)
        select_max = np.array([c.y is None for c in conditions])
        for row, condition in enumerate(conditions):
            if condition.y is not None:
                flat[row, list(condition.y)] = 1.0
        feeds = [weights, select_max]
        for index, kind, shape in program.masked:
            name = layers[index]
            mask = np.ones((count, *shape), np.float32)
            for row, condition in enumerate(conditions):
                if name not in condition.layers:
                    continue
                mask[row] = 0.0
                value = condition.layers[name]
                if kind == "channel":
                    mask[row, list(value)] = 1.0
                else:
                    units = mask[row].reshape(-1, shape[-1])
                    for channel, positions in (value.items() if isinstance(value, dict) else
                                               ((c, range(len(units))) for c in value)):  # fmt: skip
                        units[list(positions), channel] = 1.0
            feeds.append(mask)
        return feeds


def _check_lrp(method, method_kwargs) -> None:
    """The method exists, takes these arguments and is of the LRP family (before any model is loaded or traced)."""
    from deepexplain.tensorflow.methods import check_method, declaration_of, make_method
    from deepexplain.tensorflow.methods.relevance import LRP

    check_method(method, method_kwargs)
    if not (isinstance(declaration_of(method), type) and issubclass(declaration_of(method), LRP)):
        raise InvalidInputError(
            f"CondAttribution needs a method of the LRP family (lrp.epsilon_plus, lrp.epsilon, lrp.alpha_2_beta_1, "
            f"lrp.composite, deep_taylor, ...), whose relevance it masks; got {method!r}"
        )
    make_method(method, [None], dict(method_kwargs))


class _KerasLayers:
    """Layers of a Keras model, by name; explainers of the model with their outputs tapped."""

    def __init__(self, attribution: CondAttribution):
        self.attribution = attribution
        self._paths: dict = {}  # name -> LayerPath: conditions name the same layers call after call

    def path(self, name: str):
        from deepexplain.adapters.layers import find_layer

        if name not in self._paths:
            path = find_layer(self.attribution.model, name)
            if path.output_shape is None:
                raise InvalidInputError(
                    f"layer {name!r} has no single output; condition a layer of the model used once"
                )
            self._paths[name] = path
        return self._paths[name]

    def shape(self, name: str) -> tuple:
        shape = tuple(self.path(name).output_shape[1:])
        if None in shape:
            raise InvalidInputError(f"layer {name!r} has an output of unknown shape {shape}; its channels are unknown")
        return shape

    def explainer(self, names: tuple):
        from deepexplain.explainer import Explainer

        a = self.attribution
        return Explainer(a.method, a.model, output=a.output, taps=names, progress=False, **a.method_kwargs)


class _GraphLayers:
    """Tensors of a TF1 graph, by tensor or op name; explainers of ``T`` and ``X`` in its session with them tapped."""

    def __init__(self, attribution: CondAttribution, session, T, X):
        self.attribution, self.session, self.T = attribution, session, T
        self.inputs = list(X) if isinstance(X, list | tuple) else [X]
        self.multiple = isinstance(X, list | tuple)

    def tensor(self, name: str) -> tf.Tensor:
        graph = self.session.graph
        try:
            return graph.get_tensor_by_name(name) if ":" in name else graph.get_operation_by_name(name).outputs[0]
        except (KeyError, ValueError, IndexError):
            from deepexplain.errors import closest

            names = [op.name for op in graph.get_operations()]
            raise InvalidInputError(f"layer {name!r} is no tensor or op of the graph{closest(name, names)}") from None

    def path(self, name: str):
        raise InvalidTypeError("this needs a Keras model (its graph of layers); the TF1 graph has tensors")

    def shape(self, name: str) -> tuple:
        tensor = self.tensor(name)
        if tensor.shape.rank is None or tensor.shape.rank < 2 or None in tensor.shape.as_list()[1:]:
            raise InvalidInputError(f"layer {name!r}: a tensor (N, ..., channels) of known shape; got {tensor.shape}")
        return tuple(tensor.shape.as_list()[1:])

    def explainer(self, names: tuple):
        from deepexplain.explainer import Explainer
        from deepexplain.tensorflow.runners import SessionRunner

        a = self.attribution
        runner = SessionRunner(self.session, self.T, self.inputs, multiple_inputs=self.multiple,
                               taps=[self.tensor(n) for n in names])  # fmt: skip
        return Explainer(a.method, runner, progress=False, **a.method_kwargs)


def _output_shape(model, output) -> tuple | None:
    """The explained output's shape without the batch dimension, from the Keras model's symbolic outputs."""
    outputs = getattr(model, "outputs", None) or []
    if not outputs:
        return None
    names = list(getattr(model, "output_names", None) or [])
    index = names.index(output) if isinstance(output, str) and output in names else (output or 0)
    if not isinstance(index, int) or not 0 <= index < len(outputs):
        return None  # the explainer says what is wrong with output=
    shape = tuple(outputs[index].shape[1:])
    return None if any(d is None for d in shape) else shape


__all__ = ["CondAttribution", "CondAttributionResult", "ConditionalProgram"]
