"""Guided backpropagation and deconvnet: rules that filter the backward signal at ReLUs.

- Guided backpropagation (Springenberg et al. 2015, "Striving for Simplicity: The All Convolutional Net", Fig. 1):
  at a ReLU, pass the signal only where both the forward input and the incoming signal are positive.
- Deconvnet (Zeiler & Fergus 2014, ECCV, Sec. 2.1): at a ReLU, pass the positive part of the incoming signal,
  whatever the forward input was.

Both apply to ReLU-like ops (``Relu``, ``Relu6``, ``LeakyRelu``; for the latter two the op's own gradient is applied
to the positive part of the signal in guided backpropagation), as iNNvestigate does for ReLU activations.
"""

from __future__ import annotations

import tensorflow as tf

from deepexplain.tensorflow import ops
from deepexplain.tensorflow.rules.common import gradient_of_input, with_unused_inputs

RELU_LIKE = ops.having(ops.RELU_LIKE)


def guided(op: tf.Operation, grads, settings) -> list:
    """The op's gradient applied to the positive part of the incoming signal."""
    (grad,) = grads
    return with_unused_inputs(op, gradient_of_input(op, tf.nn.relu(grad)))


def deconvnet(op: tf.Operation, grads, settings) -> list:
    """The positive part of the incoming signal (the forward input is ignored)."""
    (grad,) = grads
    return with_unused_inputs(op, tf.nn.relu(grad))


GUIDED_RULES = {op_type: guided for op_type in RELU_LIKE}
DECONVNET_RULES = {op_type: deconvnet for op_type in RELU_LIKE}
