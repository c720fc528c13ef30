"""DeepLIFT multipliers (Shrikumar et al. 2017, ICML, "Learning Important Features Through Propagating Activation
Differences").

The reference activations come from the same forward pass as the inputs: the reference inputs are extra rows of the
batch, and ``settings.reference_index`` (an int32 tensor, one entry per row) names, for each row, the row holding its
reference. Every rule therefore sees ``x`` and ``x_ref = gather(x, reference_index)`` side by side.
"""

from __future__ import annotations

import tensorflow as tf

from deepexplain.tensorflow.rules.common import gradient_of_input, max_pool_backward, with_unused_inputs
from deepexplain.tensorflow.topology import ELEMENTWISE_NONLINEAR, POOLING_NONLINEAR

# Below this |delta x| the secant is numerically meaningless (float32) and the multiplier falls back to the
# gradient; the contribution multiplier * delta_x is ~0 either way, so summation-to-delta is unaffected.
DELTA_TOLERANCE = 1e-5


def _secant(op: tf.Operation, grad: tf.Tensor, delta_out: tf.Tensor, delta_in: tf.Tensor) -> tf.Tensor:
    usable = tf.abs(delta_in) > DELTA_TOLERANCE
    safe_delta_in = tf.where(usable, delta_in, tf.ones_like(delta_in))
    return tf.where(usable, delta_out / safe_delta_in, gradient_of_input(op, grad))


def rescale(op: tf.Operation, grads, settings) -> list:
    """Rescale rule (Shrikumar et al. 2017, Sec. 3.3): multiplier ``(f(x) - f(x_ref)) / (x - x_ref)``."""
    (grad,) = grads
    x, y = op.inputs[0], op.outputs[0]
    index = settings.reference_index
    delta_in = x - tf.gather(x, index)
    delta_out = grad * (y - tf.gather(y, index))
    return with_unused_inputs(op, _secant(op, grad, delta_out, delta_in))


def max_pool(op: tf.Operation, grads, settings) -> list:
    """Max-pooling with exact summation-to-delta (the cross-maximum rule Captum's DeepLift also uses).

    Each window's output difference ``max(x) - max(x_ref)`` is split at ``m = max(max(x), max(x_ref))`` into
    ``m - max(x_ref)``, given to the argmax of ``x``, and ``max(x) - m``, given to the argmax of ``x_ref``; every
    input then gets multiplier ``contribution / (x - x_ref)``. Both parts land on positions where ``x - x_ref`` is
    non-zero whenever they are non-zero, so the contributions of each window sum exactly to its output difference.
    (The plain gradient, used by the original DeepLIFT paper for max-pooling, does not keep summation-to-delta.)
    """
    (grad,) = grads
    x, y = op.inputs[0], op.outputs[0]
    index = settings.reference_index
    x_ref, y_ref = tf.gather(x, index), tf.gather(y, index)
    cross_max = tf.maximum(y, y_ref)
    contribution = max_pool_backward(op, x, y, grad * (cross_max - y_ref)) + max_pool_backward(
        op, x_ref, y_ref, grad * (y - cross_max)
    )
    return with_unused_inputs(op, _secant(op, grad, contribution, x - x_ref))


RULES = {
    **{op_type: rescale for op_type in ELEMENTWISE_NONLINEAR},
    **{op_type: max_pool for op_type in POOLING_NONLINEAR},
}
