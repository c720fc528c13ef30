"""Layer-wise relevance propagation (Bach et al. 2015, PLoS ONE; Montavon et al. 2019, "Layer-Wise Relevance
Propagation: An Overview") as backward rules keyed by op type.

The backward signal is the relevance itself, seeded with the explained output's value. Through a linear op
``z = W x (+ b)`` the z/epsilon rule gives each input ``R_i = x_i * sum_j w_ji R_j / (z_j + eps sign(z_j))``
(Montavon et al. 2019, Eq. 3-4), computed as ``x * (the op's own gradient of R / z)``. Activations, bias additions and
scalings by a constant pass relevance unchanged; max-pooling passes it to the maximum (its own gradient); the sum of
two paths (residual ``Add``) splits it in proportion to the summands. With ``bias=False`` the denominators leave the
bias out, so every layer conserves relevance exactly.
"""

from __future__ import annotations

import tensorflow as tf

from deepexplain.tensorflow.overrides import original_gradient
from deepexplain.tensorflow.topology import ELEMENTWISE_NONLINEAR

_BIAS_OPS = frozenset({"BiasAdd", "Add", "AddV2"})
_INPUT_OPS = frozenset({"Placeholder", "PlaceholderWithDefault"})


def is_parameter(tensor: tf.Tensor) -> bool:
    """Whether ``tensor`` is a weight/bias: it depends on no placeholder (constants, variables, reshaped ones)."""
    stack, seen = [tensor.op], set()
    while stack:
        op = stack.pop()
        if op in seen:
            continue
        if op.type in _INPUT_OPS:
            return False
        seen.add(op)
        stack.extend(t.op for t in op.inputs)
    return True


def _stabilised(z: tf.Tensor, epsilon: float) -> tf.Tensor:
    if epsilon == 0:
        return z
    eps = tf.constant(epsilon, z.dtype)
    return z + tf.where(z >= 0, eps, -eps)


def _output_with_bias(op: tf.Operation) -> tf.Tensor:
    """The op's output plus the bias a single following BiasAdd/Add of a parameter adds to it."""
    z = op.outputs[0]
    consumers = z.consumers()
    if len(consumers) == 1 and consumers[0].type in _BIAS_OPS:
        add = consumers[0]
        others = [t for t in add.inputs if t is not z]
        if others and all(is_parameter(t) for t in others):
            return add.outputs[0]
    return z


def linear(op: tf.Operation, grads, settings) -> list:
    """z/epsilon rule for MatMul, convolutions, average pooling, Mean and batch normalisation."""
    relevance = grads[0]
    z = _output_with_bias(op) if settings.bias else op.outputs[0]
    denominator = _stabilised(z, settings.epsilon)
    signal = tf.math.divide_no_nan(relevance, denominator)
    gradients = original_gradient(op, signal, *grads[1:])
    gradients = list(gradients) if isinstance(gradients, list | tuple) else [gradients]
    return [
        None if g is None or is_parameter(x) or not x.dtype.is_floating else x * g
        for x, g in zip(op.inputs, gradients, strict=False)
    ] + [None] * (len(op.inputs) - len(gradients))


def pass_through(op: tf.Operation, grads, settings) -> list:
    """Relevance unchanged to the non-parameter input (activations, bias additions, constant scalings)."""
    relevance = grads[0]
    return [
        relevance if x.dtype.is_floating and not is_parameter(x) and x.shape == op.outputs[0].shape else None
        for x in op.inputs
    ]


def add(op: tf.Operation, grads, settings) -> list:
    """A bias addition passes relevance through; a sum of two paths splits it: ``R_i = x_i R / (a + b)``."""
    if any(is_parameter(x) for x in op.inputs) or op.inputs[0].shape != op.inputs[1].shape:
        return pass_through(op, grads, settings)
    signal = tf.math.divide_no_nan(grads[0], _stabilised(op.outputs[0], settings.epsilon))
    return [x * signal for x in op.inputs]


def subtract(op: tf.Operation, grads, settings) -> list:
    """Subtracting a parameter (a bias) passes relevance through; a difference of two paths keeps its gradient."""
    if any(is_parameter(x) for x in op.inputs):
        return pass_through(op, grads, settings)
    return list(original_gradient(op, *grads))


def scale(op: tf.Operation, grads, settings) -> list:
    """Multiplication/division by a parameter is a linear op (with the bias a following Add of a parameter adds:
    unfused batch normalisation ``x * c + d`` gets the same relevance as the fused op); a product of two paths has
    no LRP rule and keeps its gradient."""
    if any(is_parameter(x) for x in op.inputs):
        return linear(op, grads, settings)
    return list(original_gradient(op, *grads))


RULES = {
    **{t: linear for t in ("MatMul", "Conv2D", "Conv3D", "DepthwiseConv2dNative", "AvgPool", "AvgPool3D")},
    **{t: linear for t in ("Mean", "Sum")},
    **{t: linear for t in ("FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3")},
    **{t: pass_through for t in ELEMENTWISE_NONLINEAR | {"BiasAdd"}},
    **{t: add for t in ("Add", "AddV2")},
    **{t: scale for t in ("Mul", "RealDiv")},
    "Sub": subtract,
}
