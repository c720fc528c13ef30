"""DeepLIFT multipliers (Shrikumar et al. 2017, ICML, "Learning Important Features Through Propagating Activation
Differences").

The reference activations come from the same forward pass as the inputs: the reference inputs are the last rows of
the batch, and ``settings.reference_index`` (an int32 tensor, one entry per row) names, for each row, the row holding
its reference. Every rule therefore sees ``x`` and ``x_ref = gather(x, reference_index)`` side by side; with a single
reference (``settings.single_reference``) that is simply the last row, broadcast, which saves a gather per layer.
"""

from __future__ import annotations

import tensorflow as tf

from deepexplain.tensorflow.rules.common import gradient_of_input, max_pool_backward, with_unused_inputs
from deepexplain.tensorflow.topology import ELEMENTWISE_NONLINEAR, POOLING_NONLINEAR

# Below this |delta x| the secant is numerically meaningless (float32) and the multiplier falls back to the
# gradient; the contribution multiplier * delta_x is ~0 either way, so summation-to-delta is unaffected.
DELTA_TOLERANCE = 1e-5


def reference_of(tensor: tf.Tensor, settings) -> tf.Tensor:
    """Each row's reference row of ``tensor`` (one broadcastable row when there is a single reference)."""
    if settings.single_reference:
        return tensor[-1:]
    return tf.gather(tensor, settings.reference_index)


def difference_from_reference(tensor: tf.Tensor, settings) -> tf.Tensor:
    """``tensor - reference_of(tensor)``, built once per tensor and explanation graph (a ReLU's output difference
    is the next max-pool's input difference)."""
    key = tensor.ref()
    if key not in settings.differences:
        settings.differences[key] = tensor - reference_of(tensor, settings)
    return settings.differences[key]


def _secant(op: tf.Operation, grad: tf.Tensor, delta_out: tf.Tensor, delta_in: tf.Tensor) -> tf.Tensor:
    usable = tf.abs(delta_in) > DELTA_TOLERANCE
    safe_delta_in = tf.where(usable, delta_in, tf.constant(1, delta_in.dtype))
    return tf.where(usable, delta_out / safe_delta_in, gradient_of_input(op, grad))


def rescale(op: tf.Operation, grads, settings) -> list:
    """Rescale rule (Shrikumar et al. 2017, Sec. 3.3): multiplier ``(f(x) - f(x_ref)) / (x - x_ref)``.

    For a smooth ``f`` the secant is computed only where ``|x - x_ref|`` is large enough for float32; elsewhere
    the multiplier is the gradient ``f'(x)``.
    """
    (grad,) = grads
    x, y = op.inputs[0], op.outputs[0]
    delta_in = difference_from_reference(x, settings)
    delta_out = grad * difference_from_reference(y, settings)
    return with_unused_inputs(op, _secant(op, grad, delta_out, delta_in))


def rescale_piecewise_linear(op: tf.Operation, grads, settings) -> list:
    """Rescale rule for ReLU, ReLU6 and leaky ReLU: their secants lie between the slopes of their pieces, so the
    plain quotient is numerically safe; where ``x == x_ref`` exactly, the multiplier is 0 (the unit's contribution
    ``multiplier * (x - x_ref)`` is 0 either way; Captum uses the gradient there)."""
    (grad,) = grads
    x, y = op.inputs[0], op.outputs[0]
    secant = tf.math.divide_no_nan(difference_from_reference(y, settings), difference_from_reference(x, settings))
    return with_unused_inputs(op, grad * secant)


def max_pool(op: tf.Operation, grads, settings) -> list:
    """Max-pooling with exact summation-to-delta (the cross-maximum rule Captum's DeepLift also uses).

    Each window's output difference ``max(x) - max(x_ref)`` is split at ``m = max(max(x), max(x_ref))`` into
    ``m - max(x_ref)``, given to the argmax of ``x``, and ``max(x) - m``, given to the argmax of ``x_ref``; every
    input then gets multiplier ``contribution / (x - x_ref)``. A part is non-zero only where ``|x - x_ref|`` is at
    least as large, so each multiplier lies in [0, 1] times the incoming gradient, and the contributions of a window
    sum exactly to its output difference. Where ``x == x_ref`` the multiplier is 0. (The plain gradient, used by the
    original DeepLIFT paper for max-pooling, does not keep summation-to-delta.)
    """
    (grad,) = grads
    x, y = op.inputs[0], op.outputs[0]
    x_ref, y_ref = reference_of(x, settings), reference_of(y, settings)
    cross_max = tf.maximum(y, y_ref)
    to_input_argmax, to_reference_argmax = grad * (cross_max - y_ref), grad * (y - cross_max)
    window = _non_overlapping_window(op)
    if window is not None and settings.single_reference:
        # The reference's argmax is the same for every row: route its part with a 0/1 mask computed on the single
        # reference row and nearest upsampling, instead of a MaxPoolGrad over the whole batch.
        reference_mask = max_pool_backward(op, x_ref, y_ref, tf.ones_like(y_ref))
        contribution = max_pool_backward(op, x, y, to_input_argmax) + reference_mask * _upsample(
            to_reference_argmax, window
        )
    else:
        if settings.single_reference:  # MaxPoolGrad needs full-size tensors
            x_ref, y_ref = tf.broadcast_to(x_ref, tf.shape(x)), tf.broadcast_to(y_ref, tf.shape(y))
        contribution = max_pool_backward(op, x, y, to_input_argmax) + max_pool_backward(
            op, x_ref, y_ref, to_reference_argmax
        )
    return with_unused_inputs(op, tf.math.divide_no_nan(contribution, difference_from_reference(x, settings)))


def _non_overlapping_window(op: tf.Operation) -> tuple[int, int] | None:
    """(kh, kw) when the NHWC max-pool tiles its (statically shaped) input with disjoint windows, else None."""
    if op.type != "MaxPool" or op.get_attr("data_format") != b"NHWC":
        return None
    ksize, strides = list(op.get_attr("ksize")), list(op.get_attr("strides"))
    _, height, width, channels = op.inputs[0].shape.as_list()
    if ksize != strides or ksize[0] != 1 or ksize[3] != 1 or None in (height, width, channels):
        return None
    if height % ksize[1] or width % ksize[2]:
        return None
    return ksize[1], ksize[2]


def _upsample(pooled: tf.Tensor, window: tuple[int, int]) -> tf.Tensor:
    """Repeat each pooled value over its (kh, kw) window: (N, h, w, C) -> (N, h*kh, w*kw, C)."""
    kh, kw = window
    _, height, width, channels = pooled.shape.as_list()
    spread = tf.reshape(pooled, [-1, height, 1, width, 1, channels])
    return tf.reshape(tf.tile(spread, [1, 1, kh, 1, kw, 1]), [-1, height * kh, width * kw, channels])


PIECEWISE_LINEAR = frozenset({"Relu", "Relu6", "LeakyRelu"})
RULES = {
    **{op_type: rescale for op_type in ELEMENTWISE_NONLINEAR - PIECEWISE_LINEAR},
    **{op_type: rescale_piecewise_linear for op_type in PIECEWISE_LINEAR},
    **{op_type: max_pool for op_type in POOLING_NONLINEAR},
}
