"""A linear op of the graph (dense or convolution) seen as a layer ``z = W x (+ b)`` that rules can re-apply.

Relevance rules re-run a layer with modified inputs or weights (``W+ = max(W, 0)``, ``W**2``, ones) and need its
transposed application ``W^T s`` (the op's own gradient). :class:`LinearLayer` clones the op with replaced inputs
and asks TensorFlow's gradient registry for the clone's gradient, so every op type whose gradient TensorFlow knows
(MatMul, Conv2D, Conv3D, DepthwiseConv2dNative, transposed convolutions) is handled by the same code.

A per-channel affine map right after a layer (inference batch normalisation, fused or as Keras writes it,
``x * s + t``) can be folded into it (:func:`batch_norm_after`): the layer is then ``z = (W s) x + (s b + t)``, as
zennit's canonizers and Montavon et al. 2019 (Sec. 10.3) make one layer of a convolution and its batch norm, so that
sign-splitting rules (alpha-beta, z+, gamma) see the signs of the weights the output really has.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import tensorflow as tf

from deepexplain.tensorflow import ops
from deepexplain.tensorflow.graph import Path, called_layer, channels_of, groups_of
from deepexplain.tensorflow.overrides import clone_op, function_body, original_gradient

DENSE_TYPES = ops.having(ops.DENSE)
CONV_TYPES = ops.having(ops.CONV)  # Keras' Conv1D is an ExpandDims -> Conv2D -> Squeeze
WEIGHTED_TYPES = ops.WEIGHTED
RESHAPING_TYPES = frozenset({"Reshape", "Squeeze", "ExpandDims", "Identity"})  # keep the memory order


def stabilised(z: tf.Tensor, epsilon: float) -> tf.Tensor:
    """``z + epsilon * sign(z)`` with ``sign(0) = 1`` (Montavon et al. 2019, Eq. 4's stabiliser)."""
    if epsilon == 0:
        return z
    eps = tf.constant(epsilon, z.dtype)
    return z + tf.where(z >= 0, eps, -eps)


def positive(t: tf.Tensor) -> tf.Tensor:
    return tf.nn.relu(t)


def negative(t: tf.Tensor) -> tf.Tensor:
    return tf.minimum(t, tf.zeros((), t.dtype))


@dataclass(eq=False)
class Part:
    """An input part ``a`` of a relevance rule (x, x+, x-, ones, a bound): the layer is re-applied to ``forward``
    and its transposed signal multiplied by ``factor``. For constant parts ``forward`` is a single row that
    broadcasts over the batch (its forward pass costs one row, not a batch)."""

    forward: tf.Tensor
    factor: tf.Tensor


class LinearLayer:
    """A dense/convolution op ``z = W x`` with the bias a single following BiasAdd/Add of a parameter adds.

    Parameters
    ----------
    op : tf.Operation
        An op of a type in :data:`WEIGHTED_TYPES` with one input that depends on the explained inputs (the data)
        and one parameter input (the weights).
    path : Path
        The explained path: which inputs are parameters; consumers outside it (ops added by other explanations) are
        ignored when looking for the bias addition.
    compute : tf.Operation, optional
        An op computing the same as ``op`` that the rules re-apply and transpose instead (for a function call that
        wraps one convolution, see :func:`called_layer`); ``op``'s output and bias remain the layer's.
    fold_batch_norm : bool
        Fold a per-channel affine map that follows the layer (batch norm, :func:`batch_norm_after`) into it: the
        layer's weights, bias, ``z`` and ``z_with_bias`` are then the folded layer's (its ops pass relevance
        unchanged, :func:`folded_into_layer`). Only for layers whose units are the output's last axis, not for
        function calls.
    """

    def __init__(self, op: tf.Operation, path: Path, compute: tf.Operation | None = None, fold_batch_norm=False):
        outer, op = op, compute if compute is not None else op
        self.op = op
        self.path = path
        floating = [i for i, t in enumerate(op.inputs) if t.dtype.is_floating]
        # a cut input (attention probabilities held constant: CP-LRP) plays the weights' part
        data = [i for i in path.data_inputs(op) if (op, i) not in path.cut]
        weights = [i for i in floating if i not in data]
        if len(data) != 1 or len(weights) != 1:
            raise ValueError(f"op '{op.name}' ({op.type}) is not a layer with one data and one weight input")
        self.data_index, self.weight_index = data[0], weights[0]
        self.x = op.inputs[self.data_index]
        self._kernel = op.inputs[self.weight_index]
        self._output = outer.outputs[0]
        self._bias_add, self._bias, self._reshaped = following_bias(outer, path, through_reshapes=True)
        self.x_part = Part(self.x, self.x)
        self._weight_axis, self._output_axis = _stacking_axes(op, self.data_index)
        unit_shape = _kernel_unit_shape(op, self.data_index) if compute is None else None
        self.batch_norm = batch_norm_after(_layer_output(outer, path), path) if fold_batch_norm and unit_shape else None
        self._unit_shape = unit_shape

    @cached_property
    def _scale_and_shift(self) -> tuple:
        return self.batch_norm.scale_and_shift(self._output.shape[-1])

    @cached_property
    def weights(self) -> tf.Tensor:
        """The kernel, times the folded batch norm's scale along its output units when there is one."""
        if self.batch_norm is None:
            return self._kernel
        return self._kernel * tf.reshape(self._scale_and_shift[0], self._unit_shape)

    @cached_property
    def bias(self) -> tf.Tensor | None:
        """The bias (``s b + t`` with a folded batch norm ``s x + t``), or None."""
        if self.batch_norm is None:
            return self._bias
        scale, shift = self._scale_and_shift
        return shift if self._bias is None else scale * _per_unit(self._bias, scale.shape[0]) + shift

    @cached_property
    def z(self) -> tf.Tensor:
        """``W x`` without bias, as the model computes it (for a folded batch norm, ``s W x``)."""
        if self.batch_norm is None:
            return self._output
        return self._output * self._scale_and_shift[0]

    @property
    def z_with_bias(self) -> tf.Tensor:
        """``W x + b`` as the model computes it (``W x`` when there is no bias)."""
        if self.batch_norm is not None:
            output = self.batch_norm.output
        elif self._bias_add is None:
            return self.z
        else:
            output = self._bias_add.outputs[0]
        return tf.reshape(output, tf.shape(self.z)) if output.shape.rank != self.z.shape.rank else output

    @cached_property
    def nonnegative_input(self) -> bool:
        """Whether the data input is provably >= 0 (then the rules skip the terms of negative inputs)."""
        return self.path.is_nonnegative(self.x)

    def by_sign(self, relevance: tf.Tensor, rule: Callable[[Part, Part | None, tf.Tensor], tf.Tensor]) -> tf.Tensor:
        """``rule(x+, x-, relevance)`` for a rule that treats positive and negative inputs apart; ``x-`` is None
        (its terms vanish) when the input is >= 0: provably so in the graph, or, checked at run time, in the batch
        (e.g. images in [0, 1]).

        The run-time choice is a ``tf.cond``: only the branch taken runs, and XLA compiles it.
        """
        if self.nonnegative_input:
            return rule(self.x_part, None, relevance)
        nonnegative_batch = tf.reduce_all(self.x >= tf.zeros((), self.x.dtype))

        def cheap():
            return rule(self.x_part, None, relevance)

        def full():
            x_pos, x_neg = positive(self.x), negative(self.x)
            return rule(Part(x_pos, x_pos), Part(x_neg, x_neg), relevance)

        return tf.cond(nonnegative_batch, cheap, full)

    def constant_part(self, value) -> Part:
        """A part equal to ``value`` (a scalar or an array broadcasting to one sample) at every sample."""
        factor = tf.constant(np.asarray(value), self.x.dtype)
        one_row = self.op.type in ("Conv2D", "Conv3D", "DepthwiseConv2dNative") or (
            self.op.type == "MatMul" and self.data_index == 0
        )  # (a transposed convolution takes its output shape, batch included, as an input)
        row = self.x[:1] if one_row else self.x
        return Part(tf.zeros_like(row) + factor, factor)

    @property
    def stacks_along_last_axis(self) -> bool:
        """Whether weights stacked along their output axis give outputs side by side along the last axis (and
        biases stacked along their last axis line up with them)."""
        aligned_bias = self.batch_norm is not None or self._bias is None or not self._reshaped
        return aligned_bias and self._weight_axis is not None and self._output_axis in (-1, self.z.shape.rank - 1)

    def stacked_weights(self, weights: list) -> tf.Tensor:
        """The weight tensors concatenated along their output axis (one op computes all their outputs)."""
        return tf.concat(weights, axis=self._weight_axis)

    def apply_stacked(self, x: tf.Tensor, weights: list) -> list:
        """``[apply(x, w) for w in weights]`` as one op on the weights stacked along their output axis."""
        if len(weights) == 1 or self._weight_axis is None:
            return [self.apply(x, w) for w in weights]
        stacked = self.apply(x, tf.concat(weights, axis=self._weight_axis))
        return tf.split(stacked, len(weights), axis=self._output_axis)

    def transpose_stacked(self, signals: list, weights: list) -> tf.Tensor:
        """``sum_k W_k^T signals[k]`` as one transposed op on the stacked weights and signals."""
        if len(weights) == 1:
            return self.transpose(signals[0], None if weights[0] is self.weights else weights[0])
        if self._weight_axis is None:
            return sum(self.transpose(g, w) for g, w in zip(signals, weights, strict=True))
        stacked_weights = tf.concat(weights, axis=self._weight_axis)
        clone = self._clone(self.x, stacked_weights)
        return original_gradient(clone, tf.concat(signals, axis=self._output_axis))[self.data_index]

    def weight_gradient(self, signal: tf.Tensor, x: tf.Tensor | None = None, weights: tf.Tensor | None = None):
        """``sum over rows of x * signal``, shaped like the weights: the op's gradient with respect to its weights
        (for a convolution, a kernel-gradient convolution: no patches are materialised), of the op on the data input
        ``x`` and with ``weights`` of another shape (fewer output units) when given. Two signals cost less as two
        such ops than as one on signals concatenated along the output axis (measured on CPU: the copy costs more)."""
        op = self.op if x is None and weights is None else self._clone(self.x if x is None else x, weights)
        return original_gradient(op, signal)[self.weight_index]

    def apply(self, x: tf.Tensor, weights: tf.Tensor | None = None) -> tf.Tensor:
        """The op on input ``x`` with ``weights`` (default: its own), without bias."""
        return self._clone(x, weights).outputs[0]

    def transpose(self, signal: tf.Tensor, weights: tf.Tensor | None = None) -> tf.Tensor:
        """``W^T signal``: the gradient of the op (with ``weights``) with respect to its data input."""
        if weights is None and self.batch_norm is not None:  # (W s)^T g = W^T (s g)
            signal = signal * self._scale_and_shift[0]
        op = self.op if weights is None else self._clone(self.x, weights)
        return original_gradient(op, signal)[self.data_index]

    def plus_bias(self, z: tf.Tensor, bias: tf.Tensor | None) -> tf.Tensor:
        """``z + bias`` with ``bias`` (the layer's bias or an elementwise function of it) broadcast as the op's bias
        addition broadcasts it (NCHW bias adds and reshapes between the op and its bias addition included)."""
        if bias is None:
            return z
        if self.batch_norm is not None:  # a folded bias is one value per unit, the output's last axis
            return z + bias
        if self._reshaped:  # the bias as the bias addition sees it, laid out like the op's output (exact: 0 + b)
            bias = tf.reshape(self._add_bias(tf.zeros_like(self._bias_add.outputs[0]), bias), tf.shape(self.z))
            return z + bias
        return self._add_bias(z, bias)

    def _add_bias(self, z: tf.Tensor, bias: tf.Tensor) -> tf.Tensor:
        if self._bias_add.type == "BiasAdd":
            return tf.nn.bias_add(z, bias, data_format=self._bias_add.get_attr("data_format").decode())
        return z + bias

    def _clone(self, x: tf.Tensor, weights: tf.Tensor | None) -> tf.Operation:
        weights = self.weights if weights is None and self.batch_norm is not None else weights
        replacements = {self.data_index: x} if weights is None else {self.data_index: x, self.weight_index: weights}
        return clone_op(self.op, replacements)


def equivalent_of_call(op: tf.Operation) -> tf.Operation:
    """An op in the current graph computing what the call ``op`` computes (see :func:`called_layer`): its body's
    layer op on the call's inputs, the weights read from the same live variables; a depthwise-grouped ``Conv2D``
    becomes a ``DepthwiseConv2dNative`` (which CPUs run without XLA)."""
    inner = called_layer(op)
    _, placeholders, _ = function_body(op)
    outer = {p.ref(): t for p, t in zip(placeholders, op.inputs, strict=False)}

    def value(t: tf.Tensor) -> tf.Tensor:
        if t.ref() in outer:
            return outer[t.ref()]
        if t.op.type == "ReadVariableOp":
            return tf.raw_ops.ReadVariableOp(resource=value(t.op.inputs[0]), dtype=t.dtype)
        if t.op.type == "Identity":
            return value(t.op.inputs[0])
        raise ValueError(f"cannot map {t.name} of the body of {op.name} to the calling graph")

    x, kernel = value(inner.inputs[0]), value(inner.inputs[1])
    if inner.type == "Conv2D" and groups_of(inner) == channels_of(inner) and channels_of(inner) != 1:
        kh, kw, _, out = kernel.shape.as_list()
        depthwise = tf.reshape(kernel, [kh, kw, channels_of(inner), out // channels_of(inner)])
        result = tf.nn.depthwise_conv2d(
            x, depthwise, strides=inner.get_attr("strides"), padding=inner.get_attr("padding").decode(),
            data_format=inner.get_attr("data_format").decode(), dilations=_spatial(inner, "dilations"),
        )  # fmt: skip
        return result.op
    return clone_op(inner, {0: x, 1: kernel})


def _spatial(conv: tf.Operation, attr: str) -> list:
    values = conv.get_attr(attr)
    return values[1:3] if conv.get_attr("data_format") == b"NHWC" else values[2:4]


def _stacking_axes(op: tf.Operation, data_index: int) -> tuple:
    """``(weight axis, output axis)`` along which several weight tensors can be stacked into one op whose output
    holds each one's output side by side; ``(None, None)`` where outputs would interleave (depthwise)."""
    if op.type == "MatMul":
        if data_index == 0:  # x @ W: output columns are W's columns (rows when transpose_b)
            return (0 if op.get_attr("transpose_b") else 1), 1
        return (1 if op.get_attr("transpose_a") else 0), 0  # W @ x: output rows are W's rows
    if op.type in ("Conv2D", "Conv3D"):
        channels_last = op.get_attr("data_format").decode() in ("NHWC", "NDHWC")
        return -1, (-1 if channels_last else 1)
    return None, None  # depthwise: outputs would interleave; transposed convolutions: the output shape is an input


def _single_consumer(tensor: tf.Tensor, path: Path) -> tf.Operation | None:
    consumers = path.consumers(tensor)
    return consumers[0] if len(consumers) == 1 else None


def following_bias(op: tf.Operation, path: Path, through_reshapes: bool = False):
    """``(add op, bias, reshaped)``: the single BiasAdd/Add of a parameter that consumes the op's output on the path
    (with ``through_reshapes``, also after a chain of reshapes such as Keras' Conv1D squeeze), or
    ``(None, None, False)``."""
    z = op.outputs[0]
    z, consumer = _past_reshapes(z, path) if through_reshapes else (z, _single_consumer(z, path))
    reshaped = z is not op.outputs[0]
    if consumer is not None and ops.is_a(consumer.type, ops.BIAS_ADD):
        others = [t for t in consumer.inputs if t is not z]
        if len(others) == 1 and path.is_parameter(others[0]):
            return consumer, others[0], reshaped
    return None, None, False


# ----------------------------------------------------------------------------------------------------------------
# Batch normalisation folded into the layer before it
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class BatchNorm:
    """An inference batch normalisation ``y = s x + t`` per unit of the last axis, applied to a layer's output.

    Attributes
    ----------
    ops : tuple of tf.Operation
        Its ops (a fused batch norm; or the ``Mul`` by ``s`` and the ``Add`` of ``t`` as Keras and
        ``tf.nn.batch_normalization`` write it), which pass relevance unchanged once folded.
    output : tf.Tensor
        ``y``.
    """

    ops: tuple
    output: tf.Tensor
    scale: tf.Tensor | None = None
    shift: tf.Tensor | None = None

    def scale_and_shift(self, units: int) -> tuple:
        """``(s, t)``, each of shape ``(units,)`` (new ops: call while building the explanation)."""
        if self.scale is None:  # fused: s = gamma / sqrt(variance + eps), t = beta - mean s
            fused = self.ops[0]
            _, gamma, beta, mean, variance = fused.inputs[:5]
            scale = gamma * tf.math.rsqrt(variance + tf.constant(fused.get_attr("epsilon"), variance.dtype))
            return scale, beta - mean * scale
        scale = _per_unit(self.scale, units)
        return scale, tf.zeros_like(scale) if self.shift is None else _per_unit(self.shift, units)


def batch_norm_after(tensor: tf.Tensor, path: Path) -> BatchNorm | None:
    """The batch normalisation that is the only consumer of ``tensor`` on the path, if there is one: a fused
    inference batch norm in a channels-last layout, or a ``Mul`` by a parameter with one value per unit of the last
    axis (or one value), optionally followed by the ``Add``/``AddV2`` of such a parameter. None otherwise."""
    consumer = _single_consumer(tensor, path)
    if consumer is None or tensor.shape.rank is None or tensor.shape.rank < 2:
        return None
    if ops.is_a(consumer.type, ops.BATCH_NORM):
        inference = not consumer.get_attr("is_training")
        channels_last = consumer.get_attr("data_format").decode() in ("NHWC", "NDHWC")
        if consumer.inputs[0] is tensor and inference and channels_last:
            return BatchNorm((consumer,), consumer.outputs[0])
        return None
    if consumer.type != "Mul" or not _is_per_unit(_other_input(consumer, tensor), tensor, path):
        return None
    following = _single_consumer(consumer.outputs[0], path)
    if following is not None and following.type in ("Add", "AddV2"):
        shift = _other_input(following, consumer.outputs[0])
        if _is_per_unit(shift, consumer.outputs[0], path):
            return BatchNorm((consumer, following), following.outputs[0], _other_input(consumer, tensor), shift)
    return BatchNorm((consumer,), consumer.outputs[0], _other_input(consumer, tensor))


def folded_into_layer(op: tf.Operation, path: Path) -> bool:
    """Whether ``op`` belongs to a batch norm that :class:`LinearLayer` folds into the layer before it (``op`` then
    passes relevance unchanged: the layer's rule already distributes it)."""
    producer = op.inputs[0].op if ops.is_a(op.type, ops.BATCH_NORM) else None
    if producer is None:
        data = [op.inputs[i] for i in path.data_inputs(op)]
        if len(data) != 1:
            return False
        producer = data[0].op
    if ops.is_a(producer.type, ops.BIAS_ADD) and len(path.data_inputs(producer)) == 1:
        producer = producer.inputs[path.data_inputs(producer)[0]].op
    while producer.type in RESHAPING_TYPES and len(producer.inputs):
        producer = producer.inputs[0].op
    if producer.type not in WEIGHTED_TYPES:
        return False
    try:
        layer = LinearLayer(producer, path, fold_batch_norm=True)
    except ValueError:
        return False
    return layer.batch_norm is not None and op in layer.batch_norm.ops


def _layer_output(op: tf.Operation, path: Path) -> tf.Tensor:
    """The layer's output with its bias, after the reshapes that follow it (Keras' Conv1D squeeze)."""
    add, _, _ = following_bias(op, path, through_reshapes=True)
    return add.outputs[0] if add is not None else _past_reshapes(op.outputs[0], path)[0]


def _past_reshapes(z: tf.Tensor, path: Path) -> tuple:
    """``(tensor, its single consumer or None)`` after the chain of single-consumer reshapes that follows ``z``."""
    consumer = _single_consumer(z, path)
    while consumer is not None and consumer.type in RESHAPING_TYPES:
        z = consumer.outputs[0]
        consumer = _single_consumer(z, path)
    return z, consumer


def _kernel_unit_shape(op: tf.Operation, data_index: int) -> list | None:
    """How a per-unit vector reshapes to scale the kernel along the output units, for layers whose units are the
    output's last axis; None for the others (no folding)."""
    if op.type == "MatMul":
        if data_index != 0:
            return None
        return [-1, 1] if op.get_attr("transpose_b") else [-1]
    if op.type not in _CONV_KERNEL_UNITS or op.get_attr("data_format").decode() not in ("NHWC", "NDHWC"):
        return None
    kernel = op.inputs[1]
    if op.type == "DepthwiseConv2dNative":
        return None if kernel.shape.rank is None or None in kernel.shape[2:] else list(kernel.shape[2:])
    return _CONV_KERNEL_UNITS[op.type]


_CONV_KERNEL_UNITS = {"Conv2D": [-1], "Conv3D": [-1], "DepthwiseConv2dNative": None,
                      "Conv2DBackpropInput": [-1, 1], "Conv3DBackpropInputV2": [-1, 1]}  # fmt: skip


def _other_input(op: tf.Operation, tensor: tf.Tensor) -> tf.Tensor | None:
    others = [t for t in op.inputs if t is not tensor]
    return others[0] if len(op.inputs) == 2 and len(others) == 1 else None


def _is_per_unit(value: tf.Tensor | None, tensor: tf.Tensor, path: Path) -> bool:
    """Whether ``value`` is a parameter with one value per unit of ``tensor``'s last axis, or a single value."""
    if value is None or not value.dtype.is_floating or not path.is_parameter(value) or value.shape.rank is None:
        return False
    dims = value.shape.as_list()
    if any(d != 1 for d in dims[:-1]) or len(dims) > tensor.shape.rank:
        return False
    return not dims or dims[-1] in (1, tensor.shape[-1])


def _per_unit(value: tf.Tensor, units: int) -> tf.Tensor:
    return tf.broadcast_to(tf.reshape(value, [-1]), [units])
