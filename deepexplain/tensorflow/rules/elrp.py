"""epsilon-LRP as a modified gradient (Bach et al. 2015; reformulation of Ancona et al. 2018, ICLR, Sec. 3.2).

For a network of linear layers and elementwise nonlinearities, eps-LRP relevance equals ``x * g`` where ``g`` is
the gradient computed with every nonlinearity ``y = f(z)`` replaced by the ratio ``y / (z + eps * sign(z))``
(Ancona et al. 2018, Prop. 1). Linear ops and max-pooling (winner-takes-all) keep their gradients. On ReLU networks
the ratio is 1 where z > 0 and 0 elsewhere, so eps-LRP tends to grad*input as eps -> 0.
"""

from __future__ import annotations

import tensorflow as tf

from deepexplain.tensorflow import ops
from deepexplain.tensorflow.activations import modulating_factor
from deepexplain.tensorflow.overrides import original_gradient
from deepexplain.tensorflow.rules.common import with_unused_inputs
from deepexplain.tensorflow.rules.linear_ops import stabilised


def _ratio(grad: tf.Tensor, z: tf.Tensor, y: tf.Tensor, epsilon: float) -> tf.Tensor:
    return grad * y / stabilised(z, epsilon)


def ratio(op: tf.Operation, grads, settings) -> list:
    """``grad * f(z) / (z + eps * sign(z))`` with sign(0) = +1, so the denominator is never zero."""
    return with_unused_inputs(op, _ratio(grads[0], op.inputs[0], op.outputs[0], settings.epsilon))


def ratio_of_activation(activation, grad: tf.Tensor, settings) -> tf.Tensor:
    """The same ratio at an activation written as several ops (gelu, swish, ...), ``f(x) / x`` of the region."""
    return _ratio(grad, activation.x, activation.y, settings.epsilon)


def ratio_zero_below_zero(op: tf.Operation, grads, settings) -> list:
    """The same ratio for ReLU and ReLU6, where ``f(z) = 0`` for ``z < 0``: ``f(z) / (z + eps)`` with 0 wherever the
    denominator vanishes (there ``f(z) = 0`` too), which needs no sign."""
    (grad,) = grads
    z, y = op.inputs[0], op.outputs[0]
    return with_unused_inputs(op, grad * tf.math.divide_no_nan(y, z + tf.constant(settings.epsilon, z.dtype)))


def constant_factor(op: tf.Operation, grads, settings) -> list:
    """A product with a modulating factor (a gate, a normaliser; :func:`..activations.modulating_factor`) is a
    scaling by a constant, as in LRP: the factor gets no signal. Any other product keeps its gradient."""
    gradients = list(original_gradient(op, *grads))
    index = modulating_factor(op, settings.path)
    if index is not None:
        gradients[index] = None
    return gradients


ZERO_BELOW_ZERO = ops.having(ops.ZERO_BELOW_ZERO)
RULES = {
    **{op_type: ratio for op_type in ops.having(ops.UNARY_NONLINEAR) - ZERO_BELOW_ZERO},
    **{op_type: ratio_zero_below_zero for op_type in ZERO_BELOW_ZERO},
    **{op_type: constant_factor for op_type in ("Mul", "RealDiv", "Div")},
}
