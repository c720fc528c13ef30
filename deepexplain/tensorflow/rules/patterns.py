"""PatternNet and PatternAttribution in the graph: the statistics a pattern is fitted from, and the backward rule
that replaces a layer's kernel by its pattern (Kindermans et al. 2018, "Learning how to explain neural networks:
PatternNet and PatternAttribution", ICLR, Sec. 3-4).

Every dense/convolution op ``y = W x`` is seen as one linear neuron per output unit ``o`` whose samples are the
rows of ``x`` (a dense layer) or the input patches of every output position (a convolution). The statistics of the
two-component estimator (Eq. 8) are sums over those samples, ``sum x m``, ``sum x y m`` (``m`` the unit's mask), and
per unit ``sum m``, ``sum y m``, ``sum y^2 m``, ``sum y`` and the sample count. The kernel-shaped sums are the op's
own kernel gradient with ``m`` (or ``y m``) as the incoming signal, so convolutions never materialise patches and
every op type whose kernel gradient TensorFlow knows is handled by the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from deepexplain.errors import InvalidInputError
from deepexplain.tensorflow import ops
from deepexplain.tensorflow.graph import Path, layer_type, weight_name, weight_origin
from deepexplain.tensorflow.rules.linear_ops import LinearLayer, equivalent_of_call

PATTERN_TYPES = ("linear", "relu", "relu.negative")
KERNEL_TYPES = frozenset({"MatMul", "Conv2D", "Conv3D", "DepthwiseConv2dNative"})
STATISTICS = ("sum_xm", "sum_xym", "count", "sum_ym", "sum_yym", "sum_y", "rows")
"""What :func:`statistics` gives per layer, in this order (kernel-shaped, kernel-shaped, then per unit)."""

# ops between a layer and its activation that keep one value per unit (bias, batch norm, a residual addition)
_TOWARDS_ACTIVATION = frozenset({"BiasAdd", "Add", "AddV2", "Sub", "Mul", "Identity", "Snapshot", "Cast", "Reshape",
                                 "Squeeze", "ExpandDims", *ops.having(ops.BATCH_NORM)})  # fmt: skip


@dataclass(eq=False)
class KernelLayer:
    """A dense/convolution op of the explained path with the layout of its kernel.

    Attributes
    ----------
    op : tf.Operation
        The op of the path (a function call for a layer Keras runs as an XLA function).
    layer : LinearLayer
        The op as a layer ``z = W x``.
    key : str
        The model's name for the kernel (the Keras layer), or the op's name.
    shape : tuple
        The kernel's own shape (patterns are stored in it; the op may read it reshaped, as Keras' Conv1D does).
    unit_axes : tuple of int
        The kernel axes that index the output units (the last; the last two of a depthwise kernel).
    output_axis : int
        The axis of ``z`` that indexes the output units (channels).
    """

    op: tf.Operation
    layer: LinearLayer
    key: str
    shape: tuple
    unit_axes: tuple
    output_axis: int

    @property
    def unit_shape(self) -> tuple:
        """The per-unit statistics' shape, broadcasting against the kernel."""
        kernel = self.layer.weights.shape.as_list()
        return tuple(kernel[a] if a in self.unit_axes else 1 for a in range(len(kernel)))


def kernel_layers(path: Path) -> tuple[list[KernelLayer], list[tf.Operation]]:
    """``(layers, others)``: the path's dense/convolution ops that patterns are defined for, ordered by key, and the
    other ops with a weight input (transposed convolutions, batched products with a parameter) that have none."""
    layers, others = [], []
    for op in path.ops:
        kind = layer_type(op)
        if not ops.is_a(kind, ops.DENSE) and not ops.is_a(kind, ops.CONV):
            continue
        try:
            compute = equivalent_of_call(op) if ops.is_a(op.type, ops.CALL) else None
            layer = LinearLayer(op, path, compute)
        except ValueError:  # a product of two tensors that depend on the input: not a layer
            continue
        layout = _layout(layer)
        if layout is None:
            others.append(op)
            continue
        value, _ = weight_origin(layer.weights)
        shape = tuple(value.shape.as_list()) if value.shape.is_fully_defined() else None
        kernel_shape = tuple(layer.weights.shape.as_list())
        if shape is None or int(np.prod(shape)) != int(np.prod(kernel_shape)):
            shape = kernel_shape
        key = weight_name(layer.weights, path.weight_names) or op.name
        layers.append(KernelLayer(op, layer, key, shape, *layout))
    return sorted(layers, key=lambda k: k.key), others


def _layout(layer: LinearLayer):
    """``(unit axes of the kernel, unit axis of the output)``, or None for an op patterns are not defined for."""
    op = layer.op
    if op.type not in KERNEL_TYPES or not layer.weights.shape.is_fully_defined():
        return None
    rank = layer.weights.shape.rank
    if op.type == "MatMul":
        if layer.data_index != 0 or op.get_attr("transpose_a"):
            return None  # rows of x are not the batch
        return ((0,) if op.get_attr("transpose_b") else (1,)), 1
    channels_last = op.get_attr("data_format").decode() in ("NHWC", "NDHWC")
    output_axis = layer.z.shape.rank - 1 if channels_last else 1
    if op.type == "DepthwiseConv2dNative":
        return (2, 3), output_axis
    return (rank - 1,), output_axis


def activation_gate(kernel: KernelLayer, path: Path) -> tf.Tensor:
    """The tensor whose sign says whether a unit is active: the output of the first activation after the layer
    (through its bias, batch norm or a residual addition), reshaped like ``z``; the layer's output with its bias
    when no activation follows (iNNvestigate's convention: at the logits the mask is ``z + b > 0``)."""
    z = kernel.layer.z
    size = z.shape[1:].num_elements()
    tensor = z
    while True:
        consumers = path.consumers(tensor)
        if len(consumers) != 1:
            break
        consumer = consumers[0]
        if ops.is_a(consumer.type, ops.ACTIVATION):
            return tf.reshape(consumer.outputs[0], tf.shape(z))
        out = consumer.outputs[0]
        same_size = out.shape[1:].num_elements() == size if size is not None else out.shape == z.shape
        if consumer.type not in _TOWARDS_ACTIVATION or not same_size or not _carries_one_value(consumer, tensor, path):
            break
        tensor = out
    return kernel.layer.z_with_bias


def _carries_one_value(op: tf.Operation, tensor: tf.Tensor, path: Path) -> bool:
    """Whether ``op`` maps ``tensor`` elementwise: its other inputs are parameters, or (an addition) a tensor of the
    same shape."""
    if ops.is_a(op.type, ops.BATCH_NORM):
        return op.inputs[0] is tensor
    others = [t for t in op.inputs if t is not tensor and t.dtype.is_floating]
    if op.type in ("Add", "AddV2"):
        return all(path.is_parameter(t) or t.shape == tensor.shape for t in others)
    return all(path.is_parameter(t) for t in others)


def statistics(kernel: KernelLayer, path: Path, valid: tf.Tensor, pattern_type: str) -> list[tf.Tensor]:
    """The sums :data:`STATISTICS` of one layer over a batch's rows weighted by ``valid`` (0 for padding rows).

    The sums of ``y m`` and ``y^2 m`` are ``w_o^T sum x m`` and ``w_o^T sum x y m`` (``y = w_o^T x``): kernel-sized
    products instead of passes over the layer's output."""
    z = kernel.layer.z
    rank = z.shape.rank
    valid = tf.cast(valid, z.dtype)
    by_row = tf.reshape(valid, [-1] + [1] * (rank - 1))
    if pattern_type == "linear":
        mask = tf.broadcast_to(by_row, tf.shape(z))
    else:
        gate = activation_gate(kernel, path)
        mask = tf.cast(gate > 0 if pattern_type == "relu" else gate <= 0, z.dtype) * by_row
    sum_xm, sum_xym = kernel.layer.weight_gradient(mask), kernel.layer.weight_gradient(z * mask)
    weights = kernel.layer.weights
    kernel_axes = [a for a in range(weights.shape.rank) if a not in kernel.unit_axes]
    output_axes = [a for a in range(rank) if a != kernel.output_axis]
    units = int(np.prod([weights.shape[a] for a in kernel.unit_axes]))
    positions = tf.cast(tf.size(z) // tf.shape(z)[0], z.dtype) / units

    def per_unit(t):
        return tf.reshape(t, kernel.unit_shape)

    sample_sums = tf.reduce_sum(z, axis=output_axes[1:]) if rank > 2 else z  # (N, units)
    return [
        sum_xm,
        sum_xym,
        per_unit(tf.reduce_sum(mask, axis=output_axes)),
        tf.reduce_sum(weights * sum_xm, axis=kernel_axes, keepdims=True),
        tf.reduce_sum(weights * sum_xym, axis=kernel_axes, keepdims=True),
        per_unit(tf.linalg.matvec(sample_sums, valid, transpose_a=True)),
        per_unit(tf.fill([units], tf.reduce_sum(valid) * positions)),
    ]


def pattern_rule(kernel_of, project: bool):
    """The backward rule of a dense/convolution op: the transposed op with the kernel ``kernel_of(layer)`` (the
    pattern A for PatternNet, ``W * A`` for PatternAttribution) instead of ``W``; the bias plays no part.

    ``project``: divide the signal by its largest magnitude per sample where it has more than one non-batch axis
    (iNNvestigate's ``reverse_project_bottleneck_layers``; the result is then defined up to scale only)."""

    def rule(op: tf.Operation, grads, settings) -> list:
        compute = equivalent_of_call(op) if ops.is_a(op.type, ops.CALL) else None
        layer = LinearLayer(op, settings.path, compute)
        signal = layer.transpose(grads[0], kernel_of(layer))
        if project and signal.shape.rank is not None and signal.shape.rank > 2:
            signal = projected(signal)
        result = [None] * len(op.inputs)
        result[next(i for i, t in enumerate(op.inputs) if t is layer.x)] = signal
        return result

    return rule


def projected(signal: tf.Tensor) -> tf.Tensor:
    """``signal / max |signal|`` per sample (0 stays 0), so that each sample's largest magnitude is 1."""
    axes = list(range(1, signal.shape.rank))
    scale = tf.reduce_max(tf.abs(signal), axis=axes, keepdims=True)
    return tf.math.divide_no_nan(signal, scale)


def constant(array: np.ndarray, dtype) -> tf.Tensor:
    """``array`` as a tensor outside any function being traced (an eager tensor a ``tf.function`` captures by
    reference instead of embedding a copy in its graph; a constant of a TF1 graph)."""
    with tf.init_scope():
        return tf.constant(np.asarray(array), dtype=dtype)


def check_patterns(layers: list[KernelLayer], others: list, patterns, method: str) -> None:
    """Every layer of the path has a pattern of its kernel's shape; no op with a kernel is left without one."""
    if others:
        names = ", ".join(f"{op.name} ({layer_type(op)})" for op in others)
        raise InvalidInputError(
            f"{method}: patterns exist for dense, convolution and depthwise convolution layers only; the path from X "
            f"to T also has {names}"
        )
    if not layers:
        raise InvalidInputError(f"{method}: the model has no dense or convolution layer between X and T")
    missing = [k.key for k in layers if k.key not in patterns]
    if missing:
        known = sorted(patterns)
        shown = f"{known[:8]}{' ...' if len(known) > 8 else ''}"
        raise InvalidInputError(
            f"{method}: patterns has no entry for layer(s) {missing}; it has {shown} (patterns of another model? fit "
            "them on this one with deepexplain.fit_patterns)"
        )
    wrong = [(k.key, k.shape, np.shape(patterns[k.key])) for k in layers if tuple(np.shape(patterns[k.key])) != k.shape]
    if wrong:
        listing = ", ".join(f"{key}: kernel {kernel}, pattern {pattern}" for key, kernel, pattern in wrong)
        raise InvalidInputError(f"{method}: patterns do not match the model's kernels: {listing}")


QUALITY_STATISTICS = ("kernel", "rows", "sum_x", "sum_xx", "sum_xm", "sum_xz", "sum_xz_neg", "count", "sum_z",
                      "sum_z_neg", "sum_zz", "sum_zz_neg")  # fmt: skip
"""What :func:`quality_statistics` gives per layer: the kernel as a matrix, the row count, moments of the input
rows ``x`` (patches of a convolution), and with ``z = y m`` and ``z_neg = y (1 - m)`` (``m`` the 'relu' mask)
their cross moments with ``x`` and their own moments per unit."""


def quality_layer(kernel: KernelLayer) -> bool:
    """Whether :func:`quality_statistics` handles the layer: a dense layer, or a 2-D convolution (also Keras' Conv1D)
    in NHWC with SAME or VALID padding, whose input patches it extracts."""
    op = kernel.layer.op
    if op.type == "MatMul":
        return not op.get_attr("transpose_b")
    return (op.type == "Conv2D" and op.get_attr("data_format") == b"NHWC"
            and op.get_attr("padding") in (b"SAME", b"VALID"))  # fmt: skip


def quality_statistics(kernel: KernelLayer, path: Path, valid: tf.Tensor) -> list[tf.Tensor]:
    """The sums :data:`QUALITY_STATISTICS` of one layer over a batch (rows weighted by ``valid``), from which the
    quality of any linear or two-component signal estimator of the layer follows (Kindermans et al. 2018, Eq. 3)."""
    layer, z = kernel.layer, kernel.layer.z
    weights = layer.weights
    units = int(weights.shape[-1])
    if layer.op.type == "MatMul":
        rows, matrix = layer.x, weights
    else:
        kh, kw = weights.shape[0], weights.shape[1]
        patches = tf.image.extract_patches(
            layer.x, sizes=[1, kh, kw, 1], strides=layer.op.get_attr("strides"),
            rates=layer.op.get_attr("dilations"), padding=layer.op.get_attr("padding").decode(),
        )  # fmt: skip
        rows, matrix = patches, tf.reshape(weights, [-1, units])
    weight = tf.reshape(tf.cast(valid, z.dtype), [-1] + [1] * (z.shape.rank - 1)) * tf.ones_like(z[..., :1])
    x = tf.reshape(rows * weight, [-1, matrix.shape[0]])  # padding rows are zero rows
    w = tf.reshape(weight, [-1, 1])
    y = tf.reshape(z, [-1, units])
    gate = tf.reshape(activation_gate(kernel, path), [-1, units])
    # float64 from here: the statistics are rated as covariances (sums minus products of means) of layers whose
    # input can be near-singular, where float32 sums per batch made rho depend on the batching (~1e-3)
    x, w, y = (tf.cast(t, tf.float64) for t in (x, w, y))
    mask = tf.cast(gate > 0, tf.float64) * w
    z_pos, z_neg = y * mask, y * (w - mask)

    def cross(t):
        return tf.matmul(x, t, transpose_a=True)

    return [matrix, tf.reduce_sum(w), tf.reduce_sum(x, 0), cross(x), cross(mask), cross(z_pos), cross(z_neg),
            tf.reduce_sum(mask, 0), tf.reduce_sum(z_pos, 0), tf.reduce_sum(z_neg, 0), tf.reduce_sum(z_pos * z_pos, 0),
            tf.reduce_sum(z_neg * z_neg, 0)]  # fmt: skip
