"""Connection weights (Olden & Jackson 2002, Ecological Modelling 154; Olden, Joy & Death 2004, Ecological Modelling
178, "An accurate comparison of methods for quantifying variable importance in artificial neural networks using
simulated data") as backward rules keyed by op type.

The importance of input ``i`` for output ``k`` is the sum over all paths from ``i`` to ``k`` of the product of the
weights along the path: for a dense network ``W_1 W_2 ... W_L`` (Olden et al. 2004, Sec. 2.4), whatever the
activations. That is the backward pass with every activation replaced by the identity; biases drop out of a gradient
by themselves. Convolutions and average pooling keep their own (linear) gradient, the transposed op, as in innsight's
``ConnectionWeights``. Max-pooling is not linear: innsight (with its default ``winner_takes_all = TRUE``) takes the
max-pool gradient at a constant input, which sends each window's signal to its first (top-left) element; we do the
same, deterministically, so the result stays independent of the input.
"""

from __future__ import annotations

import tensorflow as tf

from deepexplain.tensorflow import ops
from deepexplain.tensorflow.overrides import clone_op
from deepexplain.tensorflow.rules.common import max_pool_backward, with_unused_inputs

# innsight treats a final softmax as the activation of the output layer, which the method ignores like any other.
IDENTITY_TYPES = ops.having(ops.ACTIVATION) | {"Softmax"}


def identity(op: tf.Operation, grads, settings) -> list:
    """An activation passes the signal unchanged (it is replaced by the identity)."""
    return with_unused_inputs(op, grads[0])


def identity_activation(activation, grad: tf.Tensor, settings) -> tf.Tensor:
    """An activation written as several ops (gelu, swish, ...) is replaced by the identity too."""
    return grad


def max_pool_first_element(op: tf.Operation, grads, settings) -> list:
    """Each window's signal goes to its first (top-left) valid element: the max-pool gradient at an input that
    decreases strictly in row-major order, whose maximum in any window (padding included) is that element."""
    x = op.inputs[0]
    ramp = _decreasing_ramp(x, op.get_attr("data_format"))
    pooled = clone_op(op, {0: ramp}).outputs[0]
    return with_unused_inputs(op, max_pool_backward(op, ramp, pooled, grads[0]))


def _decreasing_ramp(x: tf.Tensor, data_format: bytes) -> tf.Tensor:
    """``-(h * width + w)`` at every position, shaped like ``x`` (NHWC or NCHW)."""
    shape = tf.shape(x)
    channels_first = data_format.startswith(b"NC")
    height, width = (shape[2], shape[3]) if channels_first else (shape[1], shape[2])
    ramp = -tf.cast(tf.range(height)[:, None] * width + tf.range(width)[None, :], x.dtype)
    ramp = ramp[None, None] if channels_first else ramp[None, :, :, None]
    return tf.broadcast_to(ramp, shape)


RULES = {
    **{op_type: identity for op_type in IDENTITY_TYPES},
    **{op_type: max_pool_first_element for op_type in ops.having(ops.MAX_POOL)},
}
