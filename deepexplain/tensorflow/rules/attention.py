"""AttnLRP's rules for what transformers are made of (Achtibat et al. 2024, "AttnLRP: Attention-Aware Layer-Wise
Relevance Propagation for Transformers", ICML), on top of the LRP rules of :mod:`.lrp`.

- The attention softmax ``s = softmax(x)`` (Prop. 3.1, a Taylor decomposition at ``x`` with the bias):
  ``R_x = x (R - s sum(R))`` along the softmax axis; ``-inf`` scores (masked positions) count as 0, as ``lxt`` does.
- A product of two tensors that both depend on the input (query x key, attention x value, a gated unit; Prop. 3.2
  and 3.3, the uniform rule after the epsilon rule): each factor gets half, ``R_a = a [d z / d a]^T (R / (2 z +
  eps sign(2 z)))`` for a matrix product ``z`` (eps: ``settings.product_epsilon``), ``R / 2`` for an elementwise one.
- Layer and RMS normalisation with the normaliser held constant (Prop. 3.4; :func:`.lrp.normalisation`), GELU/SiLU
  and the other activations passing relevance unchanged (the identity rule, Eq. 9), and the epsilon rule at linear
  layers come from :mod:`.lrp`.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

from deepexplain.tensorflow import ops
from deepexplain.tensorflow.overrides import original_gradient
from deepexplain.tensorflow.rules import lrp
from deepexplain.tensorflow.rules.linear_ops import stabilised

# Products of two activations that the uniform rule splits: matrix products and elementwise multiplication.
PRODUCT_TYPES = ops.having(ops.DENSE) | {"Mul"}


@dataclass(frozen=True)
class AttnSettings(lrp.LRPSettings):
    """:class:`.lrp.LRPSettings` and the stabiliser of products of two activations."""

    product_epsilon: float = 1e-8


def softmax(op: tf.Operation, grads, settings) -> list:
    """``R_x = x (R - s sum_j R_j)`` (AttnLRP, Prop. 3.1); what gradient x input gives in ``lxt``'s efficient mode."""
    x, s, relevance = op.inputs[0], op.outputs[0], grads[0]
    x = tf.where(tf.math.is_inf(x), tf.zeros_like(x), x)
    return [x * (relevance - s * tf.reduce_sum(relevance, axis=-1, keepdims=True))]


def uniform_product(base):
    """The uniform rule at a product of two activations; ``base`` (the LRP rule) for a product with a parameter or
    with a factor the explainer holds constant (a normaliser outside a recognised normalisation layer)."""

    def rule(op: tf.Operation, grads, settings) -> list:
        path = settings.path
        data = path.data_inputs(op)
        if len(data) < 2 or any((op, i) in path.cut for i in data):
            return base(op, grads, settings)
        relevance, z = grads[0], op.outputs[0]
        share = tf.constant(1.0 / len(data), relevance.dtype)
        shape = z.shape.as_list() if z.shape.rank is not None else None
        if (
            op.type == "Mul"
            and shape is not None
            and all(op.inputs[i].shape.rank is not None and op.inputs[i].shape.as_list() == shape for i in data)
        ):
            return [relevance * share if i in data else None for i in range(len(op.inputs))]
        count = tf.constant(float(len(data)), z.dtype)
        signal = tf.math.divide_no_nan(relevance, stabilised(count * z, settings.product_epsilon))
        gradients = original_gradient(op, signal)
        gradients = list(gradients) if isinstance(gradients, list | tuple) else [gradients]
        gradients += [None] * (len(op.inputs) - len(gradients))
        return [
            x * g if i in data and g is not None else None
            for i, (x, g) in enumerate(zip(op.inputs, gradients, strict=True))
        ]

    return rule


RULES = {
    **lrp.RULES,
    "Softmax": softmax,
    **{t: uniform_product(lrp.RULES[t]) for t in PRODUCT_TYPES},
}
