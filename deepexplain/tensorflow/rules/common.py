"""Pieces shared by the rule families."""

from __future__ import annotations

import tensorflow as tf

from deepexplain.tensorflow.overrides import original_gradient


def gradient_of_input(op: tf.Operation, grad: tf.Tensor) -> tf.Tensor:
    """The op's own gradient with respect to its first input."""
    result = original_gradient(op, grad)
    return result[0] if isinstance(result, list | tuple) else result


def with_unused_inputs(op: tf.Operation, first_input_gradient: tf.Tensor) -> list:
    """Pad a first-input gradient with ``None`` for the op's other inputs (ksize/strides of MaxPoolV2, alpha...)."""
    return [first_input_gradient] + [None] * (len(op.inputs) - 1)


def max_pool_backward(op: tf.Operation, x: tf.Tensor, y: tf.Tensor, grad: tf.Tensor) -> tf.Tensor:
    """Route ``grad`` (shaped like the pool's output) to the argmax of each window of ``x`` (whose max-pool is ``y``).

    This is the max-pool gradient evaluated at another input than the op's own.
    """
    if op.type == "MaxPoolV2":
        return tf.raw_ops.MaxPoolGradV2(
            orig_input=x,
            orig_output=y,
            grad=grad,
            ksize=op.inputs[1],
            strides=op.inputs[2],
            padding=op.get_attr("padding"),
            data_format=op.get_attr("data_format"),
        )
    return tf.raw_ops.MaxPoolGrad(
        orig_input=x,
        orig_output=y,
        grad=grad,
        ksize=op.get_attr("ksize"),
        strides=op.get_attr("strides"),
        padding=op.get_attr("padding"),
        explicit_paddings=op.get_attr("explicit_paddings"),
        data_format=op.get_attr("data_format"),
    )
