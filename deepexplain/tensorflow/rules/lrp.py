"""Layer-wise relevance propagation (Bach et al. 2015, PLoS ONE; Montavon et al. 2019, "Layer-Wise Relevance
Propagation: An Overview") as backward rules keyed by op type.

The backward signal is the relevance itself, seeded with the explained output's value. At a dense or convolution
op (a *layer* ``z = W x + b``) the method's :class:`LayerRule` for that op redistributes it. Every rule here is one
instance of the generic form (Montavon et al. 2019, Sec. 10.2.3)

    R_i = sum_groups c_g sum_(a, V) in g  a_i * [V^T (R / (sum_(a, V) in g V a + b_g))]_i

with input parts ``a`` (x, x+, x-, ones, bounds) and weights ``V`` (W, W+, W-, W**2, ones), evaluated by
:func:`_distribute` with one re-applied op and one transposed op per distinct part ``a`` (the weights of a part
stacked along their output axis). Rules that split inputs by sign skip the x- terms where the input is >= 0,
provably (after a ReLU) or, checked at run time, in the batch (:meth:`LinearLayer.by_sign`).

A batch normalisation right after a layer is folded into it (Montavon et al. 2019, Sec. 10.3; zennit's canonizers):
the layer's rule sees ``W s`` and ``s b + t`` and the batch norm passes relevance unchanged. Average pooling, Mean
and Sum use the z-rule, other batch normalisations and scalings by a constant the z/epsilon rule;
activations, bias additions and constant subtractions pass relevance unchanged; max-pooling passes it to the
maximum (its own gradient) or, with ``maxpool='avg'``, in proportion to the inputs as average pooling would (as
innsight offers); the sum of two paths (residual ``Add``) splits it in proportion to the summands.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from deepexplain.errors import InvalidInputError
from deepexplain.tensorflow import ops
from deepexplain.tensorflow.graph import Path, layer_type
from deepexplain.tensorflow.overrides import original_gradient
from deepexplain.tensorflow.rules.linear_ops import (
    CONV_TYPES,
    DENSE_TYPES,
    WEIGHTED_TYPES,
    LinearLayer,
    equivalent_of_call,
    folded_into_layer,
    following_bias,
    negative,
    positive,
    stabilised,
)

# ----------------------------------------------------------------------------------------------------------------
# Layer rules (what happens at a dense/convolution op)
# ----------------------------------------------------------------------------------------------------------------


class LayerRule:
    """How relevance passes a dense/convolution layer; see the module docstring for the generic form."""

    def propagate(self, layer: LinearLayer, relevance: tf.Tensor) -> tf.Tensor:
        """Relevance of the layer's data input, given the relevance of its output (pre-activation)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Epsilon(LayerRule):
    """z-rule (``epsilon=0``, LRP-0) or epsilon-rule: ``R_i = x_i sum_j w_ij R_j / (z_j + eps sign(z_j))``
    (Bach et al. 2015, Eq. 56/58; Montavon et al. 2019, Eq. 4). ``bias=False`` leaves the bias out of ``z``."""

    epsilon: float = 1e-7
    bias: bool = True

    def propagate(self, layer, relevance):
        group = _Group([(layer.x_part, layer.weights)], _bias(layer, self.bias))
        return _distribute(layer, relevance, [group], self.epsilon)


@dataclass(frozen=True)
class AlphaBeta(LayerRule):
    """alpha-beta rule (Bach et al. 2015, Eq. 60): ``R_i = sum_j (alpha z+_ij / z+_j - beta z-_ij / z-_j) R_j`` with
    the positive/negative contributions ``z_ij = x_i w_ij`` split by sign (``x+ w+ + x- w-`` and ``x+ w- + x- w+``).

    With ``bias=True`` the positive bias part joins the positive denominator and the negative part the negative one,
    as in zennit. iNNvestigate 2.1.2 instead adds the whole bias to both (its ``AlphaBetaRule`` applies the
    bias-carrying layer copy to x+ and to x-), so the two differ on layers with biases; they agree with
    ``bias=False``.
    """

    alpha: float = 2.0
    beta: float = 1.0
    bias: bool = True

    def propagate(self, layer, relevance):
        w_pos, w_neg = positive(layer.weights), negative(layer.weights)
        b = _bias(layer, self.bias)

        def by_sign(x_pos, x_neg, relevance):
            groups = [_Group(_pairs((x_pos, w_pos), (x_neg, w_neg)), _part(b, positive), self.alpha)]
            if self.beta:
                groups.append(_Group(_pairs((x_pos, w_neg), (x_neg, w_pos)), _part(b, negative), -self.beta))
            return _distribute(layer, relevance, groups)

        return layer.by_sign(relevance, by_sign)


@dataclass(frozen=True)
class ZPlusFast(LayerRule):
    """z+ rule for non-negative inputs without splitting them (iNNvestigate's ``ZPlusFast``): ``R_i = x_i sum_j
    w+_ij R_j / sum_i x_i w+_ij``, biases ignored. Equals ``AlphaBeta(1, 0, bias=False)`` when inputs are >= 0."""

    def propagate(self, layer, relevance):
        return _distribute(layer, relevance, [_Group([(layer.x_part, positive(layer.weights))])])


@dataclass(frozen=True)
class Gamma(LayerRule):
    """gamma rule (Montavon et al. 2019, Eq. 6: weights ``w + gamma w+``), generalised to negative inputs and
    outputs as zennit's ``Gamma``: where ``z_j > 0`` contributions use ``x+ (w + gamma w+) + x- (w + gamma w-)`` with
    bias ``b + gamma b+``; where ``z_j < 0``, ``x+ (w + gamma w-) + x- (w + gamma w+)`` with ``b + gamma b-``."""

    gamma: float = 0.25
    bias: bool = True

    def propagate(self, layer, relevance):
        w_up = layer.weights + self.gamma * positive(layer.weights)
        w_down = layer.weights + self.gamma * negative(layer.weights)
        b = _bias(layer, self.bias)
        z = layer.z_with_bias if self.bias else layer.z
        zero = tf.zeros((), z.dtype)
        up_bias = None if b is None else b + self.gamma * positive(b)
        down_bias = None if b is None else b + self.gamma * negative(b)
        up, down = z > zero, z < zero

        def by_sign(x_pos, x_neg, relevance):
            groups = [
                _Group(_pairs((x_pos, w_up), (x_neg, w_down)), up_bias, mask=up),
                _Group(_pairs((x_pos, w_down), (x_neg, w_up)), down_bias, mask=down),
            ]
            return _distribute(layer, relevance, groups)

        return layer.by_sign(relevance, by_sign)


@dataclass(frozen=True)
class WSquare(LayerRule):
    """w**2 rule (Montavon et al. 2017, "Explaining nonlinear classification decisions with deep Taylor
    decomposition", Sec. 4): ``R_i = sum_j w_ij**2 R_j / sum_i w_ij**2``, independent of the input; biases ignored
    (as iNNvestigate; zennit's ``WSquare`` also squares the bias into the denominator)."""

    def propagate(self, layer, relevance):
        return _distribute(layer, relevance, [_Group([(layer.constant_part(1.0), tf.square(layer.weights))])])


@dataclass(frozen=True)
class Flat(LayerRule):
    """flat rule (Lapuschkin et al. 2019, "Unmasking Clever Hans predictors"): relevance spread uniformly over each
    output's receptive field, ``R_i = sum_j R_j / |receptive field of j|``; biases ignored."""

    def propagate(self, layer, relevance):
        return _distribute(layer, relevance, [_Group([(layer.constant_part(1.0), tf.ones_like(layer.weights))])])


@dataclass(frozen=True, eq=False)
class Bounded(LayerRule):
    """z^B rule for inputs bounded by ``low <= x <= high`` (Montavon et al. 2017, Sec. 4.3): ``R_i = sum_j (x_i w_ij
    - l_i w+_ij - h_i w-_ij) R_j / sum_i (...)``; biases ignored. ``low``/``high`` are scalars or arrays that
    broadcast to one sample (e.g. per channel)."""

    low: object = -1.0
    high: object = 1.0

    def propagate(self, layer, relevance):
        low, high = layer.constant_part(-np.asarray(self.low)), layer.constant_part(-np.asarray(self.high))
        terms = [(layer.x_part, layer.weights), (low, positive(layer.weights)), (high, negative(layer.weights))]
        return _distribute(layer, relevance, [_Group(terms)])


def z_plus() -> AlphaBeta:
    """z+ rule (Montavon et al. 2017, Eq. 12; iNNvestigate's ``ZPlus``): alpha=1, beta=0 with biases ignored."""
    return AlphaBeta(1.0, 0.0, bias=False)


# The rules a string may name (lrp.composite); parameters take their defaults.
NAMED_RULES: Mapping[str, Callable[[], LayerRule]] = {
    "z": lambda: Epsilon(0.0),
    "epsilon": Epsilon,
    "alpha_beta": AlphaBeta,
    "alpha_1_beta_0": lambda: AlphaBeta(1.0, 0.0),
    "alpha_2_beta_1": lambda: AlphaBeta(2.0, 1.0),
    "z_plus": z_plus,
    "z_plus_fast": ZPlusFast,
    "gamma": Gamma,
    "w_square": WSquare,
    "flat": Flat,
}


def as_rule(value, name: str) -> LayerRule:
    """A :class:`LayerRule` from a rule object or the name of one (see :data:`NAMED_RULES`)."""
    if isinstance(value, LayerRule):
        return value
    if isinstance(value, str) and value in NAMED_RULES:
        return NAMED_RULES[value]()
    raise InvalidInputError(
        f"{name} must be a rule object (Epsilon, AlphaBeta, ZPlusFast, Gamma, WSquare, Flat, Bounded from "
        f"deepexplain.tensorflow.rules.lrp) or one of {sorted(NAMED_RULES)}; got {value!r}"
    )


# ----------------------------------------------------------------------------------------------------------------
# The generic redistribution
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class _Group:
    """Terms ``(a, V)`` sharing one denominator ``sum V a + bias``; ``coefficient`` scales the group's share and
    ``mask`` (boolean, shaped like the output) selects the outputs it applies to."""

    terms: list
    bias: tf.Tensor | None = None
    coefficient: float = 1.0
    mask: tf.Tensor | None = None


def _distribute(layer: LinearLayer, relevance, groups, epsilon: float = 0.0) -> tf.Tensor:
    """``sum_g c_g sum_(a, V) in g  a * V^T (R / (sum_(a, V) in g V a + b_g))`` with one re-applied op per part ``a``
    (its weights stacked) and one transposed op per part ``a`` (its weights and signals stacked)."""
    if _single_part_groups(layer, groups):
        return _distribute_side_by_side(layer, relevance, groups, epsilon)
    outputs = _forward(layer, groups)
    signals: dict = {}  # part -> {V: summed signal}
    for group in groups:
        denominator = _denominator(layer, group, outputs)
        signal = tf.math.divide_no_nan(relevance, stabilised(denominator, epsilon))
        if group.mask is not None:
            signal = tf.where(group.mask, signal, tf.zeros((), signal.dtype))
        if group.coefficient != 1:
            signal = signal * tf.constant(group.coefficient, signal.dtype)
        for part, v in group.terms:
            per_weight = signals.setdefault(part, {})
            per_weight[v.ref()] = signal if v.ref() not in per_weight else per_weight[v.ref()] + signal
    result = None
    for part, per_weight in signals.items():
        weights = [ref.deref() for ref in per_weight]
        term = part.factor * layer.transpose_stacked(list(per_weight.values()), weights)
        result = term if result is None else result + term
    return result


def _single_part_groups(layer: LinearLayer, groups) -> bool:
    """Whether every group is one term ``(a, V_g)`` with the same ``a`` and a modified ``V_g`` (alpha-beta, gamma on
    non-negative inputs), so the groups can be computed side by side along the output's last axis."""
    if len(groups) < 2 or not layer.stacks_along_last_axis or any(len(g.terms) != 1 for g in groups):
        return False
    part = groups[0].terms[0][0]
    return all(g.terms[0][0] is part and g.terms[0][1] is not layer.weights for g in groups)


def _distribute_side_by_side(layer: LinearLayer, relevance, groups, epsilon: float) -> tf.Tensor:
    """:func:`_distribute` with the groups' outputs side by side: one op with the weights stacked, the signals
    formed on the stacked output and one transposed op, without splitting or re-joining tensors."""
    part = groups[0].terms[0][0]
    weights = layer.stacked_weights([g.terms[0][1] for g in groups])
    z = layer.apply(part.forward, weights)
    if any(g.bias is not None for g in groups):
        reference = next(g.bias for g in groups if g.bias is not None)
        z = z + tf.concat([tf.zeros_like(reference) if g.bias is None else g.bias for g in groups], axis=-1)
    numerators = []
    for group in groups:
        numerator = relevance if group.mask is None else tf.where(group.mask, relevance, tf.zeros((), relevance.dtype))
        if group.coefficient != 1:
            numerator = numerator * tf.constant(group.coefficient, relevance.dtype)
        numerators.append(numerator)
    signal = tf.math.divide_no_nan(tf.concat(numerators, axis=-1), stabilised(z, epsilon))
    return part.factor * layer.transpose(signal, weights)


def _forward(layer: LinearLayer, groups) -> dict:
    """``(part, V.ref()) -> V a`` for every term; the model's own output for ``(x, W)``."""
    wanted: dict = {}  # part -> distinct weights
    for group in groups:
        for part, v in group.terms:
            if not (part is layer.x_part and v is layer.weights):
                wanted.setdefault(part, {})[v.ref()] = v
    outputs = {(layer.x_part, layer.weights.ref()): layer.z}
    for part, weights in wanted.items():
        for ref, output in zip(weights, layer.apply_stacked(part.forward, list(weights.values())), strict=True):
            outputs[(part, ref)] = output
    return outputs


def _denominator(layer: LinearLayer, group: _Group, outputs: dict) -> tf.Tensor:
    """``sum_(a, V) V a + bias``; the model's own ``W x + b`` for the unmodified layer."""
    (part, v), *others = group.terms
    if not others and part is layer.x_part and v is layer.weights and group.bias is layer.bias:
        return layer.z_with_bias
    z = sum(outputs[(p, w.ref())] for p, w in group.terms)
    return layer.plus_bias(z, group.bias)


def _pairs(*pairs):
    return [(a, v) for a, v in pairs if a is not None]


def _bias(layer: LinearLayer, use_bias: bool):
    return layer.bias if use_bias else None


def _part(bias, part):
    return None if bias is None else part(bias)


# ----------------------------------------------------------------------------------------------------------------
# Which rule applies to which op, and the rules of the other op types
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LRPSettings:
    """What the op rules of one LRP explanation read.

    Attributes
    ----------
    rule_for : callable
        ``rule_for(op) -> LayerRule`` for each dense/convolution op.
    epsilon : float
        Stabiliser at batch norm and scalings by a constant (pooling and residual sums use the plain z-rule, as
        iNNvestigate and zennit).
    bias : bool
        Whether the weightless ops' denominators include a following bias (batch norm's shift).
    maxpool : str
        'max' (winner takes all) or 'avg' (proportional to the inputs).
    path : Path
        The explained path.
    """

    rule_for: Callable[[tf.Operation], LayerRule]
    path: Path
    epsilon: float = 0.0
    bias: bool = True
    maxpool: str = "max"


def rule_selector(rules: Mapping, default: LayerRule, first_layer_ops=frozenset(), first_layer=None):
    """``rule_for(op)``: ``first_layer`` for ops in ``first_layer_ops``, else the first entry of ``rules`` whose key
    matches the op (an op type such as 'Conv2D', 'dense' for MatMul, 'conv' for any convolution, or an fnmatch
    pattern on the op name or one of its '/'-separated scopes, e.g. Keras layer names), else ``default``."""

    def matches(key: str, op: tf.Operation) -> bool:
        op_type = layer_type(op)
        if key == op_type or (key == "dense" and op_type in DENSE_TYPES) or (key == "conv" and op_type in CONV_TYPES):
            return True
        return fnmatch.fnmatchcase(op.name, key) or any(fnmatch.fnmatchcase(s, key) for s in op.name.split("/"))

    def rule_for(op):
        if first_layer is not None and op in first_layer_ops:
            return first_layer
        for key, rule in rules.items():
            if matches(key, op):
                return rule
        return default

    return rule_for


def weighted_layer(op: tf.Operation, grads, settings: LRPSettings) -> list:
    """A dense/convolution op: the rule ``settings.rule_for(op)`` chooses, applied to the layer with the batch norm
    that follows it folded in (:func:`..linear_ops.batch_norm_after`; ``grads`` is then the batch norm output's
    relevance, which its ops pass unchanged)."""
    try:
        compute = equivalent_of_call(op) if ops.is_a(op.type, ops.CALL) else None
        layer = LinearLayer(op, settings.path, compute, fold_batch_norm=True)
    except ValueError:  # both operands depend on the input (a product): no LRP rule, keep the gradient
        return list(original_gradient(op, *grads))
    result = [None] * len(op.inputs)
    index = next(i for i, t in enumerate(op.inputs) if t is layer.x)  # the call's input, for a wrapped layer
    result[index] = settings.rule_for(op).propagate(layer, grads[0])
    return result


_BATCH_NORM_TYPES = ops.having(ops.BATCH_NORM)
_STABILISED_TYPES = frozenset({"Mul", "RealDiv", *_BATCH_NORM_TYPES})  # batch norm, fused or not


def weightless_linear(op: tf.Operation, grads, settings: LRPSettings) -> list:
    """z-rule for average pooling, Mean and Sum; z/epsilon rule for batch norm and scalings by a parameter:
    ``R_i = x_i * [grad of R / z]_i``, with the following bias add looked ahead when ``settings.bias``."""
    add, _, _ = following_bias(op, settings.path) if settings.bias else (None, None, None)
    z = (op if add is None else add).outputs[0]
    epsilon = settings.epsilon if op.type in _STABILISED_TYPES else 0.0
    signal = tf.math.divide_no_nan(grads[0], stabilised(z, epsilon))
    gradients = original_gradient(op, signal, *grads[1:])
    gradients = list(gradients) if isinstance(gradients, list | tuple) else [gradients]
    return [
        None if g is None or settings.path.is_parameter(x) or not x.dtype.is_floating else x * g
        for x, g in zip(op.inputs, gradients, strict=False)
    ] + [None] * (len(op.inputs) - len(gradients))


def batch_norm(op: tf.Operation, grads, settings: LRPSettings) -> list:
    """Fused batch normalisation ``y = s x + t`` (inference; with the statistics of its input, see
    :func:`_batch_statistics_norm`): folded into the layer before it, it passes relevance
    unchanged (the layer's rule distributes it); elsewhere the z/epsilon rule with its shift ``t`` as the bias, or,
    without biases (``settings.bias`` False), unchanged, which conserves it."""
    if op.get_attr("is_training"):
        return _batch_statistics_norm(op, grads, settings)
    if not settings.bias or folded_into_layer(op, settings.path):
        return [grads[0]] + [None] * (len(op.inputs) - 1)
    return weightless_linear(op, grads, settings)


def _batch_statistics_norm(op: tf.Operation, grads, settings: LRPSettings) -> list:
    """A fused batch norm normalising by the statistics of its own input (``is_training``; tf_keras'
    LayerNormalization runs as one on its input reshaped so that each token is a channel): ``y = g (x - mu) / sigma
    + beta`` with ``mu``, ``sigma`` over every axis but the channel axis. With ``sigma`` held constant it is an affine
    layer ``y = A x + beta``, and gets the rule of :func:`normalisation`: ``R_x = x A^T (R / (z + eps sign z))``,
    ``A^T s = g / sigma (s - mean(s))``, ``z = y`` (``y - beta`` without biases)."""
    x, gamma, beta = op.inputs[:3]
    rank = x.shape.rank
    channel = 1 if op.get_attr("data_format").decode().startswith("NC") else rank - 1
    axes = [a for a in range(rank) if a != channel]
    shape = [-1 if a == channel else 1 for a in range(rank)]
    _, variance = tf.nn.moments(x, axes, keepdims=True)
    scale = tf.reshape(gamma, shape) * tf.math.rsqrt(variance + tf.constant(op.get_attr("epsilon"), x.dtype))
    z = op.outputs[0] if settings.bias else op.outputs[0] - tf.reshape(beta, shape)
    signal = tf.math.divide_no_nan(grads[0], stabilised(z, settings.epsilon))
    centred = signal - tf.reduce_mean(signal, axis=axes, keepdims=True)
    return [x * scale * centred] + [None] * (len(op.inputs) - 1)


def pass_through(op: tf.Operation, grads, settings) -> list:
    """Relevance unchanged to the non-parameter input (activations, bias additions, constant scalings)."""
    relevance, shape = grads[0], op.outputs[0].shape
    data = settings.path.data_inputs(op)
    return [relevance if i in data and x.shape.is_compatible_with(shape) else None for i, x in enumerate(op.inputs)]


def activation(activation, relevance: tf.Tensor, settings) -> tf.Tensor:
    """An activation written as several ops (gelu, swish, ...) passes relevance unchanged, as any activation."""
    return relevance


def normalisation(layer, relevance: tf.Tensor, settings: LRPSettings) -> tf.Tensor:
    """A layer or RMS normalisation (:mod:`..normalisation`) with its normaliser held constant is an affine layer
    ``y = A x + b``: the epsilon rule ``R_x = x A^T (R / (z + eps sign(z)))`` with ``z = y``, or ``z = A x``
    without biases (``settings.bias`` False), ``eps = settings.epsilon`` (CP-LRP's and AttnLRP's rule)."""
    z = layer.y if settings.bias else layer.linear_part()
    signal = tf.math.divide_no_nan(relevance, stabilised(z, settings.epsilon))
    return layer.x * layer.affine_gradient(signal)


def add(op: tf.Operation, grads, settings) -> list:
    """A bias addition passes relevance through; a sum of two paths splits it: ``R_i = x_i R / (a + b)`` (summed
    over the broadcast dimensions of an input that is broadcast)."""
    if len(settings.path.data_inputs(op)) < 2:
        return pass_through(op, grads, settings)
    signal = tf.math.divide_no_nan(grads[0], op.outputs[0])
    return [x * g for x, g in zip(op.inputs, original_gradient(op, signal), strict=True)]


def subtract(op: tf.Operation, grads, settings) -> list:
    """Subtracting a parameter (a bias) passes relevance through; a difference of two paths keeps its gradient."""
    if len(settings.path.data_inputs(op)) < 2:
        return pass_through(op, grads, settings)
    return list(original_gradient(op, *grads))


def scale(op: tf.Operation, grads, settings) -> list:
    """Multiplication/division by a parameter is a linear op (with the bias a following Add of a parameter adds:
    unfused batch normalisation ``x * c + d`` gets the same relevance as the fused op). A product with a modulating
    factor (a sigmoid gate, a normaliser ``1 / sigma`` outside a recognised normalisation layer; the explainer cuts it
    from the path, :func:`..activations.modulating_factor`) treats the factor as that constant: the other input gets
    the whole relevance, the factor none. Any other product of two paths has no LRP rule and keeps its gradient (the
    explainer reports it)."""
    if len(settings.path.data_inputs(op)) < 2:
        if folded_into_layer(op, settings.path):  # batch norm's scale, folded into the layer before it
            return pass_through(op, grads, settings)
        return weightless_linear(op, grads, settings)
    index = next((i for i in range(len(op.inputs)) if (op, i) in settings.path.cut), None)
    if index is None:
        return list(original_gradient(op, *grads))
    signal_index = 1 - index
    signal, relevance = op.inputs[signal_index], grads[0]
    result = [None] * len(op.inputs)
    output_shape = op.outputs[0].shape
    if signal.shape.rank == output_shape.rank and signal.shape.is_compatible_with(output_shape):
        result[signal_index] = relevance
    else:  # the signal is broadcast: the z-rule with the factor as the weight sums its share over the broadcast
        spread = original_gradient(op, tf.math.divide_no_nan(relevance, op.outputs[0]))[signal_index]
        result[signal_index] = signal * spread
    return result


def max_pool(op: tf.Operation, grads, settings: LRPSettings) -> list:
    """Winner takes all (the max-pool gradient), or with ``maxpool='avg'`` the z-rule of average pooling over the
    same windows: ``R_i = x_i sum_j R_j / sum_(i in window j) x_i``."""
    if settings.maxpool != "avg":
        gradient = original_gradient(op, *grads)
        return list(gradient) if isinstance(gradient, list | tuple) else [gradient] + [None] * (len(op.inputs) - 1)
    x = op.inputs[0]
    if op.type == "MaxPoolV2":
        ksize, strides = (tf.get_static_value(t).tolist() for t in op.inputs[1:3])
    else:
        ksize, strides = op.get_attr("ksize"), op.get_attr("strides")
    padding, data_format = op.get_attr("padding").decode(), op.get_attr("data_format").decode()
    pooled = tf.nn.avg_pool2d(x, ksize, strides, padding, data_format=data_format)
    signal = tf.math.divide_no_nan(grads[0], pooled)
    spread = tf.raw_ops.AvgPoolGrad(
        orig_input_shape=tf.shape(x), grad=signal, ksize=ksize, strides=strides, padding=padding,
        data_format=data_format,
    )  # fmt: skip
    return [x * spread] + [None] * (len(op.inputs) - 1)


def select(op: tf.Operation, grads, settings) -> list:
    """``where(c, a, b)`` (an attention mask, a clipped value) passes each output's relevance to the input it took,
    as its gradient does; the condition gets none."""
    return [None, *list(original_gradient(op, *grads))[1:]]


RULES = {
    **{t: weighted_layer for t in WEIGHTED_TYPES | ops.having(ops.CALL)},
    **{t: weightless_linear for t in ops.having(ops.AVG_POOL) | ops.having(ops.REDUCTION)},
    **{t: batch_norm for t in _BATCH_NORM_TYPES},
    **{t: pass_through for t in ops.having(ops.ACTIVATION) | {"BiasAdd", "Neg"}},
    **{t: add for t in ("Add", "AddV2")},
    **{t: scale for t in ("Mul", "RealDiv", "Div")},
    "Sub": subtract,
    **{t: max_pool for t in ops.having(ops.MAX_POOL)},
    **{t: select for t in ("Select", "SelectV2")},
}

# Ops whose own gradient already moves relevance correctly (they rearrange or select values, without mixing them).
STRUCTURAL_TYPES = ops.having(ops.STRUCTURAL)
