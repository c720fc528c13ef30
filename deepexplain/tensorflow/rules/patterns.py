"""PatternNet and PatternAttribution in the graph: the statistics a pattern is fitted from, and the backward rule
that replaces a layer's kernel by its pattern (Kindermans et al. 2018, "Learning how to explain neural networks:
PatternNet and PatternAttribution", ICLR, Sec. 3-4).

Every kernel op ``y = W x`` is seen as one linear neuron per output unit ``o`` whose samples are the rows of ``x``
(a dense layer), every position of the axes the kernel does not index (a dense layer applied per token, Keras'
EinsumDense), or the input patches of every output position (a convolution; for a transposed convolution the
patches of its zero-upsampled input). The statistics of the two-component estimator (Eq. 8) are sums over those
samples, ``sum x m``, ``sum x y m`` (``m`` the unit's mask), and per unit ``sum m``, ``sum y m``, ``sum y^2 m``,
``sum y`` and the sample count. The kernel-shaped sums are the op's own kernel gradient with ``m`` (or ``y m``) as
the incoming signal, so convolutions never materialise patches (for a transposed convolution the kernel gradient is
a convolution with the roles of input and output swapped) and every op type whose kernel gradient TensorFlow knows
is handled by the same code. :data:`LAYOUTS` says, per op type, which kernel and output axes index the units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from deepexplain.errors import InvalidInputError, UnsupportedOpError
from deepexplain.tensorflow import ops
from deepexplain.tensorflow.graph import Path, groups_of, layer_type, weight_name, weight_origin, weight_plumbing
from deepexplain.tensorflow.overrides import clone_op, function_body
from deepexplain.tensorflow.rules.linear_ops import LinearLayer, equivalent_of_call, following_bias

PATTERN_TYPES = ("linear", "relu", "relu.negative")
STATISTICS = ("sum_xm", "sum_xym", "count", "sum_ym", "sum_yym", "sum_y", "rows")
"""What :func:`statistics` gives per layer, in this order (kernel-shaped, kernel-shaped, then per unit)."""
SUPPORTED = ("Dense (also on inputs of rank > 2), EinsumDense, Conv1D/2D/3D (strided, dilated), DepthwiseConv1D/2D, "
             "SeparableConv1D/2D and Conv1D/2D/3DTranspose")  # fmt: skip

# ops between a layer and its activation that keep one value per unit (bias, batch norm, a residual addition)
_TOWARDS_ACTIVATION = frozenset({"BiasAdd", "Add", "AddV2", "Sub", "Mul", "Identity", "Snapshot", "Cast", "Reshape",
                                 "Squeeze", "ExpandDims", *ops.having(ops.BATCH_NORM)})  # fmt: skip
# ops that only lay a layer's output out anew before its bias (Keras' Dense on rank-3 inputs reshapes the rows of its
# MatMul back into tokens; a dilated convolution is a convolution between SpaceToBatchND and BatchToSpaceND)
_OUTPUT_LAYOUT = frozenset({"Reshape", "Squeeze", "ExpandDims", "Identity", "Snapshot", "BatchToSpaceND"})


@dataclass(frozen=True, eq=False)
class KernelLayout:
    """Where each element of the kernel an op reads lies in the model's kernel (which the op may read reshaped, as
    Keras' Conv1D does, or transposed, as EinsumDense does): patterns are stored in the model's layout.

    Attributes
    ----------
    shape : tuple
        The model's kernel shape.
    index : ndarray of int
        The op's kernel shape; each element's flat index in the model's kernel.
    identity : bool
        Whether the op reads the kernel as the model stores it (``index`` is ``arange``): no element is moved.
    """

    shape: tuple
    index: np.ndarray
    identity: bool = False

    def to_op(self, array) -> np.ndarray:
        """An array of the model's kernel shape laid out as the op reads it."""
        if self.identity:
            return np.asarray(array).reshape(self.index.shape)
        return np.asarray(array).reshape(-1)[self.index]

    def to_model(self, array) -> np.ndarray:
        """The inverse of :meth:`to_op`."""
        array = np.asarray(array)
        if self.identity:
            return array.reshape(self.shape)
        result = np.empty(array.size, array.dtype)
        result[self.index.reshape(-1)] = array.reshape(-1)
        return result.reshape(self.shape)


def _kernel_layout(weights: tf.Tensor) -> KernelLayout:
    """The layout of the weight input ``weights`` relative to its origin (replaying its reshapes and transposes on
    the element indices; the op's own layout when a step is not static)."""
    op_shape = tuple(weights.shape.as_list())
    chain = weight_plumbing(weights)
    value, _ = weight_origin(weights)
    if chain and value.shape.is_fully_defined():
        index = np.arange(value.shape.num_elements()).reshape(value.shape.as_list())
        for step in chain:
            if step.type == "Transpose":
                perm = tf.get_static_value(step.inputs[1])
                if perm is None:
                    break
                index = index.transpose(perm)
            elif step.outputs[0].shape.is_fully_defined():
                index = index.reshape(step.outputs[0].shape.as_list())
            else:
                break
        else:
            if index.shape == op_shape:
                return KernelLayout(tuple(value.shape.as_list()), index)
    return KernelLayout(op_shape, np.arange(int(np.prod(op_shape))).reshape(op_shape), identity=True)


@dataclass(eq=False)
class KernelLayer:
    """A kernel op of the explained path with the layout of its kernel and its output.

    Attributes
    ----------
    op : tf.Operation
        The op of the path (a function call for a layer Keras runs as an XLA function).
    layer : LinearLayer
        The op as a layer ``z = W x``.
    key : str
        The model's name for the kernel (the Keras layer), or the op's name.
    layout : KernelLayout
        The model's kernel shape and how the op reads it.
    unit_axes : tuple of int
        The axes of the op's kernel that index the output units (the last of a dense kernel; the last two of a
        depthwise kernel).
    output_axes : tuple of int
        The axes of ``z`` that index the units, in the order of ``unit_axes`` (the flattened units of both agree;
        a depthwise convolution's output channel is its kernel's (channel, multiplier)); every other axis of ``z``
        indexes samples.
    chain : list of tf.Operation
        The layout ops between ``z`` and the tensor its bias is added to (:data:`_OUTPUT_LAYOUT`), whose first axis
        is the batch.
    """

    op: tf.Operation
    layer: LinearLayer
    key: str
    layout: KernelLayout
    unit_axes: tuple
    output_axes: tuple
    chain: list

    @property
    def shape(self) -> tuple:
        """The model's kernel shape (what patterns are stored in)."""
        return self.layout.shape

    @property
    def unit_shape(self) -> tuple:
        """The per-unit statistics' shape, broadcasting against the op's kernel."""
        kernel = self.layer.weights.shape.as_list()
        return tuple(kernel[a] if a in self.unit_axes else 1 for a in range(len(kernel)))

    @property
    def outer(self) -> tf.Tensor:
        """The layer's output laid out by the model (after :attr:`chain`): its first axis is the batch."""
        return self.chain[-1].outputs[0] if self.chain else self.layer.z

    def to_layer(self, tensor: tf.Tensor) -> tf.Tensor:
        """``tensor``, laid out like :attr:`outer`, in the layout of ``z`` (the positions a dilated convolution
        computes and then crops get 0): the adjoint of :attr:`chain`."""
        for step in reversed(self.chain):
            if step.type == "BatchToSpaceND":
                tensor = tf.space_to_batch_nd(tensor, step.inputs[1], step.inputs[2])
            else:
                tensor = tf.reshape(tensor, tf.shape(step.inputs[0]))
        return tensor

    @property
    def units(self) -> int:
        """The number of output units."""
        return int(np.prod([self.layer.z.shape[a] for a in self.output_axes]))

    def per_unit(self, tensor: tf.Tensor, weights: tf.Tensor | None = None) -> tf.Tensor:
        """``tensor * weights`` (``z``-shaped; :meth:`sample_weights`) summed over the samples (every axis but the
        units), shaped :attr:`unit_shape`.

        Where the units are the trailing axes (channels last, dense layers) the sum is a matrix-vector product, which
        reads the tensor once at memory speed (a reduction over the leading axes is several times slower on CPU),
        and weights of one value per row are its vector: no product of the tensor's size is formed."""
        rank = tensor.shape.rank
        if self.output_axes == tuple(range(rank - len(self.output_axes), rank)):
            if weights is not None and _per_row(weights):
                by_row = tf.reshape(tensor, [-1, _row_size(tensor)])  # (rows, positions x units)
                summed = tf.linalg.matvec(by_row, tf.reshape(weights, [-1]), transpose_a=True)
                return tf.reshape(tf.reduce_sum(tf.reshape(summed, [-1, self.units]), axis=0), self.unit_shape)
            if weights is not None:
                tensor = tensor * weights
            samples = tf.reshape(tensor, [-1, self.units])
            ones = tf.ones(tf.shape(samples)[:1], samples.dtype)
            return tf.reshape(tf.linalg.matvec(samples, ones, transpose_a=True), self.unit_shape)
        if weights is not None:
            tensor = tensor * weights
        kept = sorted(self.output_axes)
        summed = tf.reduce_sum(tensor, axis=[a for a in range(rank) if a not in kept])
        order = [kept.index(a) for a in self.output_axes]
        if order != sorted(order):
            summed = tf.transpose(summed, order)
        return tf.reshape(summed, self.unit_shape)

    def sample_count(self, weights: tf.Tensor | None) -> tf.Tensor:
        """The samples of each unit (the sum of :meth:`sample_weights` over them; None: each sample once), shaped
        :attr:`unit_shape`."""
        if weights is None:
            z = self.layer.z
            return tf.fill(self.unit_shape, tf.cast(tf.size(z, tf.int64) // self.units, z.dtype))
        if not _per_row(weights):
            return self.per_unit(weights)
        per_row = _row_size(self.layer.z)
        return tf.fill(self.unit_shape, tf.reduce_sum(weights) * tf.cast(per_row // self.units, weights.dtype))

    def sample_weights(self, valid: tf.Tensor) -> tf.Tensor:
        """1 at a sample of the data, 0 at padding rows (``valid`` 0) and at the positions a dilated convolution
        computes and crops: one value per row (broadcasting against ``z``) when ``z`` is laid out as the model lays
        it out, else ``z``-shaped."""
        outer = self.outer
        valid = tf.cast(valid, outer.dtype)
        if self.chain or self.layer.op.type == "MatMul":
            # a layer that folds positions into the batch axis before its bias (a hand-written tensordot) does it
            # batch-major, as tf.reshape of a batch-first tensor does (z's shape is not read: see statistics)
            rows = tf.shape(outer)[0] if self.chain else tf.shape(self.layer.x)[0]
            valid = tf.reshape(tf.tile(valid[:, None], [1, rows // tf.shape(valid)[0]]), [-1])
        by_row = tf.reshape(valid, [-1] + [1] * (outer.shape.rank - 1))
        return self.to_layer(tf.broadcast_to(by_row, tf.shape(outer))) if self.chain else by_row


def _per_row(weights: tf.Tensor) -> bool:
    """Whether :meth:`KernelLayer.sample_weights` gave one weight per row."""
    return weights.shape[1:].num_elements() == 1


def _row_size(tensor: tf.Tensor):
    """The values per row of ``tensor`` (static where known: fewer ops to trace and optimise)."""
    size = tensor.shape[1:].num_elements()
    return size if size is not None else tf.size(tensor) // tf.shape(tensor)[0]


def _static_or_dynamic(tensor: tf.Tensor) -> list:
    """``tensor``'s shape, each dimension static where known."""
    dims = tensor.shape.as_list()
    if None not in dims[1:]:
        return [-1 if dims[0] is None else dims[0], *dims[1:]]
    dynamic = tf.shape(tensor)
    return [dynamic[i] if d is None else d for i, d in enumerate(dims)]


def kernel_layers(path: Path) -> tuple[list[KernelLayer], list[tf.Operation]]:
    """``(layers, others)``: the path's kernel ops that patterns are defined for (:data:`LAYOUTS`), ordered by key,
    and the other ops with a kernel (a grouped convolution, a batched product with a parameter) that have none."""
    layers, others = [], []
    for op in path.ops:
        kind = layer_type(op)
        if not ops.is_a(kind, ops.DENSE) and not ops.is_a(kind, ops.CONV):
            if _calls_a_kernel_op(op, path):
                others.append(op)
            continue
        try:
            compute = equivalent_of_call(op) if ops.is_a(op.type, ops.CALL) else None
            layer = LinearLayer(op, path, compute)
        except ValueError:  # a product of two tensors that depend on the input: not a layer
            continue
        layout = LAYOUTS.get(layer.op.type)
        axes = layout(layer) if layout is not None and layer.weights.shape.is_fully_defined() else None
        if axes is None:
            others.append(op)
            continue
        key = weight_name(layer.weights, path.weight_names) or op.name
        chain = _output_chain(layer.z, path)
        layers.append(KernelLayer(op, layer, key, _kernel_layout(layer.weights), *axes, chain))
    return sorted(layers, key=lambda k: k.key), others


def _calls_a_kernel_op(op: tf.Operation, path: Path) -> bool:
    """Whether ``op`` is a function call on the path whose body has a kernel op that is not a layer patterns know
    (Keras 3 runs a grouped convolution as an XLA function of one Conv2D with ``groups`` > 1)."""
    if not ops.is_a(op.type, ops.CALL) or not path.data_inputs(op):
        return False
    body = function_body(op)
    return body is not None and any(o.type in ops.WEIGHTED for o in body[0])


def _output_chain(z: tf.Tensor, path: Path) -> list[tf.Operation]:
    chain = []
    while True:
        consumers = path.consumers(z)
        if len(consumers) != 1 or consumers[0].type not in _OUTPUT_LAYOUT or consumers[0].inputs[0] is not z:
            return chain
        chain.append(consumers[0])
        z = consumers[0].outputs[0]


def _channel_axis(layer: LinearLayer) -> int:
    channels_last = layer.op.get_attr("data_format").decode() in ("NHWC", "NDHWC")
    return layer.z.shape.rank - 1 if channels_last else 1


def _matmul(layer: LinearLayer):
    op = layer.op
    if layer.data_index != 0 or op.get_attr("transpose_a"):
        return None  # rows of x are not the samples
    return ((0,) if op.get_attr("transpose_b") else (1,)), (1,)


def _batch_matmul(layer: LinearLayer):
    """``x (N, ..., C) @ W (C, U)``: a dense layer applied at every position (Keras' EinsumDense)."""
    op = layer.op
    if layer.data_index != 0 or layer.weights.shape.rank != 2 or op.get_attr("adj_x"):
        return None
    return ((0,) if op.get_attr("adj_y") else (1,)), (layer.z.shape.rank - 1,)


def _einsum(layer: LinearLayer):
    """An einsum of the data and a kernel: the kernel's axes that the output keeps index the units, those it shares
    with the data are contracted; the output's other axes (the batch first) index samples."""
    inputs, output = layer.op.get_attr("equation").decode().replace(" ", "").split("->")
    terms = inputs.split(",")
    if len(terms) != 2 or "." in terms[layer.weight_index]:
        return None
    kernel = terms[layer.weight_index]
    x, out = _expanded(terms[layer.data_index], layer.x.shape.rank), _expanded(output, layer.z.shape.rank)
    if x is None or out is None or len(set(kernel)) != len(kernel) or x[0] in kernel or out[:1] != x[:1]:
        return None
    if any(c not in x and c not in out for c in kernel) or any(c not in kernel and c not in out for c in x):
        return None  # an axis summed away outside the product: no sample is a row of the data
    units = tuple(a for a, c in enumerate(kernel) if c in out)
    return units, tuple(out.index(kernel[a]) for a in units)


def _expanded(term: str, rank: int | None) -> str | None:
    """An einsum term with its ellipsis written out as digits (which no einsum subscript is)."""
    if rank is None or term.count("...") > 1:
        return None
    if "..." in term:
        term = term.replace("...", "0123456789"[: rank - len(term) + 3])
    return term if len(term) == rank else None


def _conv(layer: LinearLayer):
    return (layer.weights.shape.rank - 1,), (_channel_axis(layer),)


def _depthwise(layer: LinearLayer):
    return (2, 3), (_channel_axis(layer),)


def _transposed(layer: LinearLayer):
    """A transposed convolution's kernel is (..., output channels, input channels)."""
    return (layer.weights.shape.rank - 2,), (_channel_axis(layer),)


LAYOUTS = {"MatMul": _matmul, **dict.fromkeys(["BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"], _batch_matmul),
           "Einsum": _einsum, "Conv2D": _conv, "Conv3D": _conv, "DepthwiseConv2dNative": _depthwise,
           "Conv2DBackpropInput": _transposed, "Conv3DBackpropInputV2": _transposed}  # fmt: skip
"""Op type -> ``layout(layer) -> (unit axes of the kernel, unit axes of the output)``, None for an op of the type
that patterns are not defined for."""


def activation_gate(kernel: KernelLayer, path: Path) -> tf.Tensor:
    """The tensor whose sign says whether a unit is active, laid out like ``z``: the output of the first activation
    after the layer (through its bias, batch norm or a residual addition); the layer's output with its bias when no
    activation follows (iNNvestigate's convention: at the logits the mask is ``z + b > 0``)."""
    return kernel.to_layer(_gate(kernel, path))


def active_mask(kernel: KernelLayer, path: Path, pattern_type: str) -> tf.Tensor:
    """1 where a unit is active ('relu': its :func:`activation_gate` > 0; 'relu.negative': <= 0), laid out like
    ``z``; one pass over the gate where the activation is >= 0 (a ReLU's sign is the mask)."""
    gate = _gate(kernel, path)
    z = kernel.layer.z
    if ops.is_a(gate.op.type, ops.NONNEGATIVE):
        sign = tf.sign(tf.cast(gate, z.dtype))
        mask = sign if pattern_type == "relu" else 1 - sign
    else:
        mask = tf.cast(gate > 0 if pattern_type == "relu" else gate <= 0, z.dtype)
    return kernel.to_layer(mask)


def _gate(kernel: KernelLayer, path: Path) -> tf.Tensor:
    """:func:`activation_gate` laid out like :attr:`KernelLayer.outer` (the activation's own output when shapes
    agree)."""
    outer = kernel.outer
    size = outer.shape[1:].num_elements()
    tensor = outer
    while True:
        consumers = path.consumers(tensor)
        if len(consumers) != 1:
            break
        consumer = consumers[0]
        if ops.is_a(consumer.type, ops.ACTIVATION):
            gate = consumer.outputs[0]
            return gate if gate.shape.as_list() == outer.shape.as_list() else tf.reshape(gate, tf.shape(outer))
        out = consumer.outputs[0]
        same_size = out.shape[1:].num_elements() == size if size is not None else out.shape == outer.shape
        if consumer.type not in _TOWARDS_ACTIVATION or not same_size or not _carries_one_value(consumer, tensor, path):
            break
        tensor = out
    bias_add, _, _ = following_bias(outer.op, path)
    return outer if bias_add is None else bias_add.outputs[0]


def _carries_one_value(op: tf.Operation, tensor: tf.Tensor, path: Path) -> bool:
    """Whether ``op`` maps ``tensor`` elementwise: its other inputs are parameters, or (an addition) a tensor of the
    same shape."""
    if ops.is_a(op.type, ops.BATCH_NORM):
        return op.inputs[0] is tensor
    others = [t for t in op.inputs if t is not tensor and t.dtype.is_floating]
    if op.type in ("Add", "AddV2"):
        return all(path.is_parameter(t) or t.shape == tensor.shape for t in others)
    return all(path.is_parameter(t) for t in others)


@dataclass(eq=False)
class LayerSums:
    """One layer's statistics of a batch as traced: ``tensors``, and ``finish(values)`` -> the arrays of
    :data:`STATISTICS` (float64) from their values. What is only reshaped, broadcast, split or summed over a few
    positions is done by ``finish`` in numpy: an op traced costs more (tracing, first-call optimisation, ~0.3 ms
    each, on every fit) than such a step on the host costs per batch."""

    tensors: list
    finish: Callable[[list], list]


class GraphSums:
    """The statistics of a batch added up over the batches of a fit inside the traced function, in float64
    (integers in int64) variables: ``tf.cast`` of each batch's sum, then ``assign_add`` in place, the same float64
    additions numpy would make, but the kernel-sized sums never leave TensorFlow per batch (each batch's copy to
    numpy and its float64 addition there, out of cache, cost ~35 ms of a 0.58 s fit of bench-cnn). :meth:`take`
    reads the totals once, at the end of a fit.

    The variables belong to the method object that traced them (no module state). They hold zeros of the sums'
    shapes when made, after :meth:`take` and after :meth:`arm`; :meth:`release` empties them, so that nothing
    kernel-sized is held between the fits of a kept fitter (a function run on released totals fails on their shape:
    it adds nothing wrong). No ``tf.cond`` chooses between assigning a first batch and adding a later one: one made
    every first fit ~80 ms longer (tracing it, and its first-call optimisation).

    Parameters
    ----------
    tensors : list of tf.Tensor
        One batch's sums, as traced (fully defined shapes: see :meth:`supports`).

    Attributes
    ----------
    state : str
        'zero' (the totals are zeros), 'added' (set by the caller once the function has run) or 'released'.
    """

    def __init__(self, tensors: list):
        self._shapes = [t.shape.as_list() for t in tensors]
        # made eagerly, outside the function being traced, which captures them; not lifted, so that tf.function does
        # not see variables made by its first trace (it would trace the model a second time, +0.17 s on bench-cnn)
        with tf.init_scope():
            self._totals = [tf.Variable(tf.zeros(shape, _total_dtype(t.dtype)), trainable=False,
                                        shape=tf.TensorShape(None), name="pattern_sums",
                                        experimental_enable_variable_lifting=False)
                            for shape, t in zip(self._shapes, tensors, strict=True)]  # fmt: skip
        self.state = "zero"

    @staticmethod
    def supports(tensors: list) -> bool:
        """Whether ``tensors`` are being traced into a function run eagerly (a live model's
        :class:`~deepexplain.tensorflow.runners.FunctionRunner`; a TF1 session's graph would need the variables
        initialised in the user's session), not compiled with XLA (whose compiled shapes would change with the
        totals'), with fully defined shapes (every batch's sums of one shape, as numpy's in-place addition needs
        too)."""
        if not tf.inside_function():
            return False
        from tensorflow.python.ops import control_flow_util  # jit_compile=True traces in an XLA context

        if control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()):
            return False
        with tf.init_scope():
            eager = tf.executing_eagerly()
        return eager and all(t.shape.is_fully_defined() for t in tensors)

    def add(self, tensors: list) -> list:
        """Add one batch's ``tensors`` to the totals, in the graph; returns no tensor to fetch."""
        for total, t in zip(self._totals, tensors, strict=True):
            # a raw op: the variable's assign_add method traces several times slower (every first fit's cost)
            tf.raw_ops.AssignAddVariableOp(resource=total.handle, value=tf.cast(t, total.dtype))
        return []

    def take(self) -> list | None:
        """The totals as numpy arrays (None: nothing was added since they were zeroed), and zeros in their place."""
        if self.state != "added":
            return None
        values = [np.asarray(total.read_value()) for total in self._totals]  # no copy: the totals are replaced next
        self.arm()
        return values

    def arm(self) -> None:
        """Zeros in the totals (a fit starts)."""
        if self.state != "zero":
            for total, shape in zip(self._totals, self._shapes, strict=True):
                total.assign(tf.zeros(shape, total.dtype), read_value=False)
            self.state = "zero"

    def release(self) -> None:
        """Empty the totals (a kept fitter between fits); :meth:`arm` before the next fit."""
        if self.state != "released":
            for total in self._totals:
                total.assign(tf.zeros([0], total.dtype), read_value=False)
            self.state = "released"


def _total_dtype(dtype: tf.DType) -> tf.DType:
    return tf.int64 if dtype.is_integer else tf.float64


class Batch:
    """The batch's row weights ``valid`` (0 for padding rows) as the statistics of every layer read them, each
    derived tensor traced once per graph.

    Attributes
    ----------
    padded : bool
        Whether ``valid`` can be 0 anywhere: only inputs with a fixed batch size are padded (see
        ``GradientMethod.fit_tensors``); otherwise every row counts once and nothing is weighted.
    """

    def __init__(self, valid: tf.Tensor, path: Path):
        self.valid = valid
        self.padded = any(x.shape.rank and x.shape[0] is not None for x in path.inputs)
        self._rows: dict = {}

    def row(self, dtype) -> tf.Tensor:
        """``valid`` as a ``(1, N)`` matrix of ``dtype``: the vector of sums over the batch's rows as matrix products
        (which read a tensor once at memory speed; a reduction over its leading axes is slower on CPU)."""
        if dtype not in self._rows:
            self._rows[dtype] = tf.reshape(tf.cast(self.valid, dtype), [1, -1])
        return self._rows[dtype]


def statistics(kernel: KernelLayer, path: Path, batch: Batch, pattern_type: str) -> LayerSums:
    """The sums :data:`STATISTICS` of one layer over a batch's samples, weighted by ``batch.valid`` (0 for padding
    rows).

    The sums of ``y m`` and ``y^2 m`` are ``w_o^T sum x m`` and ``w_o^T sum x y m`` (``y = w_o^T x``): kernel-sized
    products instead of passes over the layer's output (the output of a dense ReLU layer is the smaller: it is
    summed). Weights of one value per row weight whichever is smaller, the layer's input or the mask; where every
    sample counts once nothing is weighted. Where the samples' sums
    follow from one row (:func:`_input_sums`), 'linear' needs one kernel gradient (:func:`_linear_sums`), and a
    'relu' ('relu.negative') layer whose activation is a ReLU of ``z + b`` (Keras' Dense and Conv with
    activation='relu') is fitted from the ReLU's output (and input) alone (:func:`_relu_sums`)."""
    counted = not batch.padded and not any(step.type == "BatchToSpaceND" for step in kernel.chain)
    relu = _relu_of_bias(kernel, path) if pattern_type != "linear" else None
    if relu is not None:
        return _relu_sums(kernel, *relu, pattern_type, batch, counted)
    if pattern_type == "linear" and counted and _has_input_sums(kernel):
        return _linear_sums(kernel, batch)
    return _mask_sums(kernel, path, batch, pattern_type, counted)


def _mask_sums(kernel: KernelLayer, path: Path, batch: Batch, pattern_type: str, counted: bool) -> LayerSums:
    """Any layer: the mask of the active samples (:func:`active_mask`, all 1 for 'linear') and two kernel gradients,
    ``sum x m`` and ``sum x y m``."""
    layer, z = kernel.layer, kernel.layer.z
    # per-row weights also serve as the vector of the per-unit sums (all 1 where every sample counts)
    weights = kernel.sample_weights(batch.valid) if not counted or _rows_are_the_batch(kernel) else None
    scale = None if counted else weights  # what the samples are multiplied by (None: 1)
    on_input = _weighs_input(kernel, scale)
    x = _times_rows(layer.x, scale) if on_input else None
    signal_scale = None if on_input else scale
    if pattern_type == "linear":
        mask = tf.ones_like(z) if signal_scale is None else tf.broadcast_to(signal_scale, tf.shape(z))
    else:
        mask = _scaled(active_mask(kernel, path, pattern_type), signal_scale)
    sizes = _kernel_sizes(layer)
    sum_xm, sum_xym = kernel_gradient(layer, mask, x, sizes), kernel_gradient(layer, z * mask, x, sizes)
    products = _times_kernel(kernel, tf.stack([sum_xm, sum_xym]))
    rank, unit_shape, units = z.shape.rank, kernel.unit_shape, kernel.units
    if counted and kernel.output_axes == tuple(range(rank - len(kernel.output_axes), rank)):
        # the units are the trailing axes: sums over the rows here, over the positions in numpy
        vector = batch.row(z.dtype) if weights is not None else None
        tensors = [sum_xm, sum_xym, _row_sums(mask, vector), products, _row_sums(z, vector), tf.size(z, tf.int64)]
    else:
        tensors = [sum_xm, sum_xym, kernel.per_unit(mask, weights if signal_scale is None else None), products,
                   kernel.per_unit(z, weights), kernel.sample_count(weights)]  # fmt: skip
        counted = False

    def finish(values):
        sum_xm, sum_xym, count, products, sum_y, rows = values
        if counted:
            count, sum_y = _per_unit_sums(count, units), _per_unit_sums(sum_y, units)
            rows = np.full(unit_shape, rows // units, np.float64)
        return [sum_xm, sum_xym, np.reshape(count, unit_shape), products[0].reshape(unit_shape),
                products[1].reshape(unit_shape), np.reshape(sum_y, unit_shape), rows]  # fmt: skip

    return LayerSums(tensors, finish)


def _linear_sums(kernel: KernelLayer, batch: Batch) -> LayerSums:
    """'linear' where every sample counts and the samples' sum is the kernel gradient of one row
    (:func:`_input_sums`): ``sum x m = sum x`` for every unit, ``sum y = w^T sum x``, ``sum x y`` one kernel
    gradient."""
    layer, z = kernel.layer, kernel.layer.z
    summed = _sum_of_rows(kernel, batch, layer.x)
    sum_x = _input_sums(kernel, summed)
    sum_xym = kernel_gradient(layer, z)
    products = _times_kernel(kernel, tf.expand_dims(sum_xym, 0))
    tensors = [sum_x, sum_xym, products, layer.apply(summed), tf.size(z, tf.int64)]
    shape, unit_shape, units = kernel.layer.weights.shape.as_list(), kernel.unit_shape, kernel.units

    def finish(values):
        sum_x, sum_xym, sum_yym, z_summed, size = values
        sum_y = _per_unit_sums(z_summed, units).reshape(unit_shape)
        rows = np.full(unit_shape, size // units, np.float64)
        # every sample is a sample of every unit: sum x m = sum x, sum m = the rows, sum y m = sum y
        return [np.broadcast_to(sum_x, shape), sum_xym, rows, sum_y, sum_yym.reshape(unit_shape), sum_y, rows]

    return LayerSums(tensors, finish)


def _relu_sums(kernel: KernelLayer, a: tf.Tensor, g: tf.Tensor, bias: tf.Tensor, pattern_type: str, batch: Batch,
               counted: bool) -> LayerSums:  # fmt: skip
    """A layer ``a = relu(g)``, ``g = z + b``, where ``z`` is never read: ``sum y = w^T sum x`` (the op on the sum
    of the input rows) and ``y = g - b``, so that

    - 'relu': ``m = sign(a)`` and ``sum x y m = sum x a - b sum x m`` (``a = g m``): from ``a`` alone, so
      TensorFlow keeps the layer's convolution, bias and ReLU one fused op;
    - 'relu.negative': ``m = 1 - sign(a)`` (``g <= 0``) and ``sum x y m = sum x min(g, 0) - b sum x m``
      (``min(g, 0) = g m``): the convolution and its bias stay fused.

    A dense layer (MatMul) forms ``y m = a - b m`` (or ``min(g, 0) - b m``) on its output instead, whose row sums
    give ``sum y m`` and ``sum y^2 m``. Exact as sums (``g`` is the model's own ``z + b``; the float32 rounding of the
    bias addition is what remains)."""
    layer, z = kernel.layer, kernel.layer.z
    weights = None if counted else kernel.sample_weights(batch.valid)
    on_input = _weighs_input(kernel, weights)
    x = _times_rows(layer.x, weights) if on_input else layer.x
    scale = None if on_input else weights
    active = tf.sign(a)
    if pattern_type == "relu":
        mask, signal = active, a
    else:
        mask, signal = 1 - active, tf.minimum(g, tf.zeros((), g.dtype))
    mask, signal = _scaled(mask, scale), _scaled(signal, scale)
    sizes = _kernel_sizes(layer)
    sum_xm = kernel_gradient(layer, mask, x, sizes)
    unit_shape, units = kernel.unit_shape, kernel.units
    b = tf.cast(bias, z.dtype)
    # per-unit sums as products with a row vector; weights are 0 or 1, so that weighting a weighted mask is harmless
    vector = batch.row(z.dtype) if weights is None else tf.reshape(weights, [1, -1])
    if counted and not _rows_are_the_batch(kernel):
        vector = None  # rows of a matrix product may be the batch's tokens
    if layer.op.type == "MatMul":
        # a dense layer's output is smaller than its kernel: y m = signal - b m (the units its last axis) is formed
        # on it, and sum y m, sum y^2 m = sum (y m)^2 (m is 0 or 1) are its row sums, instead of b sum x m and w^T of
        # both kernel-sized sums (five passes over the kernel's size; measured 2-3 % of a bench-cnn fit)
        masked_y = signal - b * mask
        sum_xym = kernel_gradient(layer, masked_y, x, sizes)
        products = _row_sums(tf.concat([masked_y, masked_y * masked_y], axis=-1), vector)
    else:  # a convolution's output is larger than its kernel
        if kernel.unit_axes != (len(unit_shape) - 1,):
            b = tf.reshape(b, unit_shape)
        sum_xym = kernel_gradient(layer, signal, x, sizes) - b * sum_xm
        products = _times_kernel(kernel, tf.stack([sum_xm, sum_xym]))
    if weights is None:
        summed = _sum_of_rows(kernel, batch, x)
    else:  # the input rows weighted (the weights are 0 or 1: weighting x weighted is harmless)
        summed = tf.reshape(_row_sums(layer.x, vector), [1, *_static_or_dynamic(layer.x)[1:]])
    tensors = [sum_xm, sum_xym, _row_sums(mask, vector), products, layer.apply(summed),
               tf.size(a, tf.int64) if counted else kernel.sample_count(weights)]  # fmt: skip

    def finish(values):
        sum_xm, sum_xym, count, products, z_summed, rows = values
        products = np.reshape(products, (2, -1))  # (2, units), or a dense layer's (1, 2 units)
        count = _per_unit_sums(count, units).reshape(unit_shape)
        rows = np.full(unit_shape, rows // units, np.float64) if counted else rows
        return [sum_xm, sum_xym, count, products[0].reshape(unit_shape), products[1].reshape(unit_shape),
                _per_unit_sums(z_summed, units).reshape(unit_shape), rows]  # fmt: skip

    return LayerSums(tensors, finish)


def _per_unit_sums(values: np.ndarray, units: int) -> np.ndarray:
    """Values of the units along the last axis, summed over every other axis (float64)."""
    return np.asarray(values, np.float64).reshape(-1, units).sum(axis=0)


def _sum_of_rows(kernel: KernelLayer, batch: Batch, x: tf.Tensor) -> tf.Tensor:
    """The rows of the layer's input ``x`` summed, ``(1, *x.shape[1:])``, as a product with a row of ones (which
    reads ``x`` once at memory speed; ``reduce_sum`` over the rows took 1.5-2.5x as long, measured on CPU): the
    batch's row where the layer's rows are the batch's, else (a matrix product, whose rows may be tokens) ones
    for each row of ``x``."""
    if _rows_are_the_batch(kernel):
        return tf.reshape(_row_sums(x, batch.row(x.dtype)), [1, *_static_or_dynamic(x)[1:]])
    return tf.matmul(tf.ones_like(x[:, :1]), x, transpose_a=True)  # MatMul: x is (rows, inputs)


def _row_sums(tensor: tf.Tensor, vector: tf.Tensor | None) -> tf.Tensor:
    """The rows of ``tensor`` summed, weighted by ``vector`` (``(1, rows)``; None: each row once), ``(1, values
    per row)``."""
    if vector is None:
        return tf.reduce_sum(tensor, axis=0, keepdims=True)
    return tf.matmul(vector, tf.reshape(tensor, [-1, _row_size(tensor)]))


def _weighs_input(kernel: KernelLayer, weights: tf.Tensor | None) -> bool:
    """Whether per-row ``weights`` are cheaper on the layer's input than on its output's signals."""
    if weights is None or not _per_row(weights):
        return False
    inputs, outputs = kernel.layer.x.shape[1:].num_elements(), kernel.layer.z.shape[1:].num_elements()
    return None not in (inputs, outputs) and inputs < outputs


def _rows_are_the_batch(kernel: KernelLayer) -> bool:
    """Whether the rows of the layer's output are the batch's (no layout op, and not a matrix product, whose rows
    may be the batch's tokens): :meth:`KernelLayer.sample_weights` is then ``valid`` as one value per row."""
    return not kernel.chain and kernel.layer.op.type != "MatMul"


def _scaled(tensor: tf.Tensor, scale: tf.Tensor | None) -> tf.Tensor:
    return tensor if scale is None else tensor * scale


def _kernel_sizes(layer: LinearLayer):
    """The kernel's shape as the one constant the kernel-gradient convolutions of a layer share (a list where no
    convolution needs it)."""
    shape = layer.weights.shape.as_list()
    return tf.constant(shape, tf.int32) if layer.op.type in ("Conv2D", "Conv3D") else shape


def kernel_gradient(layer: LinearLayer, signal: tf.Tensor, x: tf.Tensor | None = None, shape=None) -> tf.Tensor:
    """``sum over samples of x * signal``, kernel-shaped: :meth:`LinearLayer.weight_gradient` (the op on the data
    ``x``, default its own, with a kernel of ``shape``, default its own), written as the one op TensorFlow's
    gradient of a dense layer or a 2-D/3-D convolution computes, so that no forward clone, input gradient or shape
    op is traced."""
    op = layer.op
    x = layer.x if x is None else x
    shape = layer.weights.shape.as_list() if shape is None else shape
    if op.type == "MatMul":  # the data on the left, not transposed (_matmul)
        if op.get_attr("transpose_b"):
            return tf.matmul(signal, x, transpose_a=True)
        return tf.matmul(x, signal, transpose_a=True)
    if op.type == "Conv2D":
        return tf.raw_ops.Conv2DBackpropFilter(
            input=x, filter_sizes=shape, out_backprop=signal, strides=op.get_attr("strides"),
            use_cudnn_on_gpu=op.get_attr("use_cudnn_on_gpu"), padding=op.get_attr("padding"),
            explicit_paddings=op.get_attr("explicit_paddings"), data_format=op.get_attr("data_format"),
            dilations=op.get_attr("dilations"),
        )  # fmt: skip
    if op.type == "Conv3D":
        return tf.raw_ops.Conv3DBackpropFilterV2(
            input=x, filter_sizes=shape, out_backprop=signal, strides=op.get_attr("strides"),
            padding=op.get_attr("padding"), data_format=op.get_attr("data_format"), dilations=op.get_attr("dilations"),
        )  # fmt: skip
    if x is layer.x and list(shape) == layer.weights.shape.as_list():
        return layer.weight_gradient(signal)
    return layer.weight_gradient(signal, x, tf.zeros(shape, signal.dtype))


def _times_kernel(kernel: KernelLayer, sums: tf.Tensor) -> tf.Tensor:
    """``w_o^T sums_o`` per unit of each of the kernel-shaped ``sums`` (stacked along a first axis), shaped
    ``(len(sums), *the units)``."""
    weights = kernel.layer.weights
    axes = [a + 1 for a in range(weights.shape.rank) if a not in kernel.unit_axes]
    return tf.reduce_sum(weights * sums, axis=axes)  # broadcast along the first axis


# the kernel ops whose kernel has one unit axis that the data does not have (a kernel of one unit then reads every
# input of a sample) and whose rows are the batch's
_ONE_UNIT_AXIS = frozenset({"MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Conv2D", "Conv3D"})


def _has_input_sums(kernel: KernelLayer) -> bool:
    """Whether :func:`_input_sums` applies: an op of :data:`_ONE_UNIT_AXIS` whose output the model does not lay out
    anew (its rows are weighted per row)."""
    return not kernel.chain and kernel.layer.op.type in _ONE_UNIT_AXIS


def _input_sums(kernel: KernelLayer, summed: tf.Tensor) -> tf.Tensor:
    """``sum x`` over the samples, shaped like the kernel with one unit, from ``summed``, the sum of the input rows
    (one row): the op's kernel gradient with one unit and a signal of ones on that row (the samples' sum by
    linearity: no patch is formed, and the gradient reads one row instead of a batch)."""
    layer, z = kernel.layer, kernel.layer.z
    dims = _static_or_dynamic(z)
    ones = tf.ones([1] + [1 if a in kernel.output_axes else dims[a] for a in range(1, len(dims))], z.dtype)
    one_unit = [1 if i in kernel.unit_axes else d for i, d in enumerate(layer.weights.shape.as_list())]
    return kernel_gradient(layer, ones, summed, one_unit)


def _relu_of_bias(kernel: KernelLayer, path: Path):
    """``(a, g, b)`` when the layer's output goes through its bias ``b`` straight into a ReLU: ``g = z + b`` its
    input, ``a`` its output (the units along the last axis, ``b`` one value per unit); else None."""
    z = kernel.layer.z
    if not _has_input_sums(kernel) or kernel.output_axes != (z.shape.rank - 1,):
        return None
    bias_add, bias, _ = following_bias(kernel.op, path)
    if bias_add is None or bias.shape.rank != 1 or bias.shape[0] != kernel.units:
        return None
    if bias_add.type == "BiasAdd" and bias_add.get_attr("data_format").decode() not in ("NHWC", "NDHWC", "N..C"):
        return None
    consumers = path.consumers(bias_add.outputs[0])
    if len(consumers) != 1 or consumers[0].type != "Relu":
        return None
    return consumers[0].outputs[0], bias_add.outputs[0], bias


def _times_rows(x: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
    """``x`` with each row multiplied by its weight (``weights``: one per row of the layer's output)."""
    return x * tf.reshape(weights, [-1] + [1] * (x.shape.rank - 1))


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


def check_layers(layers: list[KernelLayer], others: list, path: Path, method: str) -> None:
    """The path has kernel layers, all of which patterns are defined for.

    Raises
    ------
    UnsupportedOpError
        Naming each kernel op patterns have no layout for and the layers they have.
    InvalidInputError
        When the path has no kernel layer.
    """
    if others:
        names = ", ".join(_described(op, path) for op in others)
        raise UnsupportedOpError(
            f"{method}: patterns are defined for {SUPPORTED} layers (kernels of the data on the right-hand side, "
            f"not grouped); the path from X to T also has {names}"
        )
    if not layers:
        raise InvalidInputError(f"{method}: the model has no dense or convolution layer between X and T")


def _described(op: tf.Operation, path: Path) -> str:
    """``'layer (what)'``: the model's name of the op's kernel (its op name when none is known) and its kind."""
    names = [weight_name(t, path.weight_names) for t in op.inputs if t.dtype.is_floating or t.dtype == tf.resource]
    name = next((n for n in names if n), op.name)
    kind = layer_type(op)
    if ops.is_a(op.type, ops.CALL) and kind == op.type:
        inner = [o for o in function_body(op)[0] if o.type in ops.WEIGHTED]
        groups = groups_of(inner[0]) if len(inner) == 1 and inner[0].type == "Conv2D" else None
        kind = f"Conv2D with groups={groups}" if groups else "a function of " + ", ".join(o.type for o in inner)
    return f"{name} ({kind})"


def check_patterns(layers: list[KernelLayer], others: list, patterns, path: Path, method: str) -> None:
    """Every layer of the path has a pattern of its kernel's shape; no op with a kernel is left without one."""
    check_layers(layers, others, path, method)
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


@dataclass(frozen=True, eq=False)
class QualityRows:
    """A kernel op as ``groups`` linear layers ``y = x^T K`` (Kindermans et al. 2018, Eq. 1: one neuron per unit
    whose samples are rows ``x``), the layout :func:`quality_statistics` sums in: a depthwise convolution is one
    group per input channel (each reads its own patches), any other op one group.

    Attributes
    ----------
    perm : tuple of int
        The op's kernel axes in the order that, reshaped to ``(groups, inputs, units)``, gives the matrices ``K``
        (numpy: ``kernel.transpose(perm).reshape(groups, -1, units)``; the units flattened as the op's output axes).
    groups : int
    inputs : int
        The values of a row (of one group).
    patches : callable
        ``x -> (groups, samples, inputs)``: the rows of every sample of a batch.
    arrange : callable
        A tensor laid out like ``z`` (the output, a gate, weights) -> ``(groups, samples, units)``, its samples in
        the order of ``patches``.
    """

    perm: tuple
    groups: int
    inputs: int
    patches: Callable[[tf.Tensor], tf.Tensor]
    arrange: Callable[[tf.Tensor], tf.Tensor]

    def matrix(self, kernel: tf.Tensor) -> tf.Tensor:
        """The op's kernel as ``(groups, inputs, units)``."""
        moved = tf.transpose(kernel, self.perm) if list(self.perm) != sorted(self.perm) else kernel
        return tf.reshape(moved, [self.groups, self.inputs, -1])


def quality_rows(kernel: KernelLayer, path: Path) -> QualityRows:
    """How :func:`quality_statistics` reads a layer's samples: as the data's rows (dense layers, also applied per
    token, and einsums: the data's axes that the kernel contracts), or as the patches of a convolution's output
    positions (also transposed, 3-D, dilated, depthwise), which are the op applied with one-hot kernels (a kernel
    whose output channel ``d`` reads input ``d`` of a patch alone: exact, any padding, stride or dilation).

    Raises
    ------
    UnsupportedOpError
        For an einsum whose kernel shares an axis with both its data and its output (each index of that axis would
        be a layer of its own), naming the layer.
    """
    layer, z = kernel.layer, kernel.layer.z
    op, rank = layer.op, z.shape.rank
    shape = layer.weights.shape.as_list()

    def rows(tensor, size):
        return tf.reshape(tensor, [1, -1, size])

    if op.type in ("MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"):
        transposed = op.get_attr("transpose_b" if op.type == "MatMul" else "adj_y")
        units, size = (shape[0], shape[1]) if transposed else (shape[1], shape[0])
        return QualityRows((1, 0) if transposed else (0, 1), 1, size, lambda x: rows(x, size),
                           lambda t: rows(t, units))  # fmt: skip
    if op.type == "Einsum":
        inputs, output = op.get_attr("equation").decode().replace(" ", "").split("->")
        terms = inputs.split(",")
        letters = terms[layer.weight_index]
        data = _expanded(terms[layer.data_index], layer.x.shape.rank)
        out = _expanded(output, rank)
        shared = [c for c in letters if c in data and c in out]
        if shared:
            raise UnsupportedOpError(
                f"signal_quality: {_described(kernel.op, path)}: its kernel axis {shared[0]!r} indexes both its data "
                "and its output, so each of its indices is a layer of its own; rate the layer without it"
            )
        contracted = [a for a, c in enumerate(letters) if c in data]
        units = [a for a, c in enumerate(letters) if c in out]
        samples = [c for c in out if c not in letters]
        x_perm = [data.index(c) for c in samples] + [data.index(letters[a]) for a in contracted]
        z_perm = [out.index(c) for c in samples] + [out.index(letters[a]) for a in units]
        size, unit_count = int(np.prod([shape[a] for a in contracted])), int(np.prod([shape[a] for a in units]))
        return QualityRows(tuple(contracted + units), 1, size, lambda x: rows(tf.transpose(x, x_perm), size),
                           lambda t: rows(tf.transpose(t, z_perm), unit_count))  # fmt: skip
    channel = _channel_axis(layer)

    def channels_last(tensor):
        if channel == rank - 1:
            return tensor
        return tf.transpose(tensor, [0, *range(2, rank), 1])

    dtype = z.dtype
    if op.type == "DepthwiseConv2dNative":
        kh, kw, channels, multiplier = shape
        size = kh * kw
        one_hot = tf.tile(tf.reshape(tf.eye(size, dtype=dtype), [kh, kw, 1, size]), [1, 1, channels, 1])

        def grouped(tensor, per_group):
            return tf.transpose(tf.reshape(channels_last(tensor), [-1, channels, per_group]), [1, 0, 2])

        return QualityRows((2, 0, 1, 3), channels, size, lambda x: grouped(layer.apply(x, one_hot), size),
                           lambda t: grouped(t, multiplier))  # fmt: skip
    if op.type in ("Conv2DBackpropInput", "Conv3DBackpropInputV2"):
        *spatial, units, channels = shape  # a transposed convolution's kernel is (..., output, input)
        size = int(np.prod(spatial)) * channels
        one_hot = tf.reshape(tf.eye(size, dtype=dtype), [*spatial, channels, size])
        one_hot = tf.transpose(one_hot, [*range(len(spatial)), len(spatial) + 1, len(spatial)])
        sizes = op.inputs[0]  # the output's shape, whose channels become the patch's size

        def patches(x):
            new_sizes = tf.tensor_scatter_nd_update(sizes, [[channel]], tf.constant([size], sizes.dtype))
            replaced = clone_op(op, {0: new_sizes, layer.data_index: x, layer.weight_index: one_hot})
            return rows(channels_last(replaced.outputs[0]), size)

        perm = (*range(len(spatial)), len(spatial) + 1, len(spatial))
        return QualityRows(perm, 1, size, patches, lambda t: rows(channels_last(t), units))
    *spatial, channels, units = shape  # Conv2D, Conv3D
    size = int(np.prod(spatial)) * channels
    one_hot = tf.reshape(tf.eye(size, dtype=dtype), [*spatial, channels, size])
    return QualityRows(tuple(range(len(shape))), 1, size, lambda x: rows(channels_last(layer.apply(x, one_hot)), size),
                       lambda t: rows(channels_last(t), units))  # fmt: skip


def quality_statistics(kernel: KernelLayer, path: Path, valid: tf.Tensor) -> list[tf.Tensor]:
    """The sums :data:`QUALITY_STATISTICS` of one layer over a batch (samples weighted by ``valid``), from which the
    quality of any linear or two-component signal estimator of the layer follows (Kindermans et al. 2018, Eq. 3),
    each with a first axis of the groups of :func:`quality_rows` (the row count is one for all)."""
    layer, z = kernel.layer, kernel.layer.z
    layout = quality_rows(kernel, path)
    weights = kernel.sample_weights(valid)
    # the same for every unit, one per sample (0 at padding rows and cropped positions)
    w = layout.arrange(tf.broadcast_to(weights, tf.shape(z)) if _per_row(weights) else weights)[:1, :, :1]
    x = layout.patches(layer.x) * w  # padding rows are zero rows
    y, gate = layout.arrange(z), layout.arrange(activation_gate(kernel, path))
    # float64 from here: the statistics are rated as covariances (sums minus products of means) of layers whose
    # input can be near-singular, where float32 sums per batch made rho depend on the batching (~1e-3)
    x, w, y = (tf.cast(t, tf.float64) for t in (x, w, y))
    mask = tf.cast(gate > 0, tf.float64) * w
    z_pos, z_neg = y * mask, y * (w - mask)

    def cross(t):
        return tf.matmul(x, t, transpose_a=True)

    return [layout.matrix(layer.weights), tf.reduce_sum(w), tf.reduce_sum(x, 1), cross(x), cross(mask), cross(z_pos),
            cross(z_neg), tf.reduce_sum(mask, 1), tf.reduce_sum(z_pos, 1), tf.reduce_sum(z_neg, 1),
            tf.reduce_sum(z_pos * z_pos, 1), tf.reduce_sum(z_neg * z_neg, 1)]  # fmt: skip
