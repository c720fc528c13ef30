"""Which ops lie between the explained inputs and the target, and what kind they are."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import tensorflow as tf

# Elementwise nonlinearities y = f(x) that the modified chain rules (eLRP, DeepLIFT) handle.
ELEMENTWISE_NONLINEAR = frozenset(
    {"Relu", "Elu", "Selu", "Sigmoid", "Tanh", "Softplus", "Softsign", "LeakyRelu", "Relu6"}
)
POOLING_NONLINEAR = frozenset({"MaxPool", "MaxPoolV2"})

# Ops that are linear (or affine) in each input that depends on X, so their own gradient is already the right
# multiplier for DeepLIFT and eLRP. An op with two X-dependent inputs among MULTILINEAR is a product, not linear.
_LINEAR = frozenset(
    {
        "Identity", "IdentityN", "StopGradient", "PreventGradient", "Snapshot", "Cast", "Neg",
        "Add", "AddV2", "AddN", "Sub", "BiasAdd", "Sum", "Mean", "AvgPool", "AvgPool3D",
        "Reshape", "Squeeze", "ExpandDims", "Transpose", "ConcatV2", "Concat", "Pack", "Unpack", "Split", "SplitV",
        "Slice", "StridedSlice", "Pad", "PadV2", "MirrorPad", "Tile", "GatherV2", "Gather", "ResourceGather",
        "Fill", "ZerosLike", "OnesLike", "Shape", "Size", "Rank", "BroadcastTo", "Reverse", "ReverseV2",
        "DepthToSpace", "SpaceToDepth", "SpaceToBatchND", "BatchToSpaceND", "ResizeNearestNeighbor",
        "ResizeBilinear", "FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3", "Cumsum",
        "Placeholder", "PlaceholderWithDefault", "Const", "ReadVariableOp", "VariableV2", "Enter", "Exit",
        "TensorListFromTensor", "TensorListStack", "TensorListGetItem", "TensorListSetItem", "TensorListReserve",
    }
)  # fmt: skip
_MULTILINEAR = frozenset(
    {"MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Conv1D", "Conv2D", "Conv3D",
     "DepthwiseConv2dNative", "Conv2DBackpropInput", "Conv3DBackpropInputV2", "Mul", "Einsum", "Tensordot"}
)  # fmt: skip
# Linear in the numerator only.
_LINEAR_IN_FIRST = frozenset({"RealDiv", "Div", "DivNoNan", "TruncateDiv"})


def as_list(tensors) -> list:
    """A tensor or a list/tuple of tensors, as a list."""
    return list(tensors) if isinstance(tensors, list | tuple) else [tensors]


def path_ops(inputs: Sequence[tf.Tensor], target: tf.Tensor, differentiable: bool = False) -> list[tf.Operation]:
    """Ops that depend on any of ``inputs`` and that ``target`` depends on (the ops a gradient flows through).

    With ``differentiable``, dependence is followed through floating-point (and variant) tensors only (a gradient
    cannot flow through an integer cast or an index). Returns the ops sorted by name; empty when there is no such path.
    """

    def followed(tensor):
        # variant tensors carry differentiable TensorLists through functional loops (Keras' LSTM)
        return not differentiable or tensor.dtype.is_floating or tensor.dtype.is_complex or tensor.dtype == tf.variant

    ancestors = _closure([target.op], lambda op: [t.op for t in op.inputs])
    downstream = _closure(
        [x.op for x in inputs if x.op in ancestors and followed(x)],
        lambda op: [c for out in op.outputs if followed(out) for c in out.consumers() if c in ancestors],
    )
    if target.op not in downstream:
        return []
    on_path = _closure([target.op], lambda op: [t.op for t in op.inputs if followed(t) and t.op in downstream])
    return sorted(on_path, key=lambda op: op.name)


def _closure(start: Iterable[tf.Operation], neighbours) -> set[tf.Operation]:
    seen: set[tf.Operation] = set()
    stack = list(start)
    while stack:
        op = stack.pop()
        if op not in seen:
            seen.add(op)
            stack.extend(neighbours(op))
    return seen


def nonlinear_ops(ops: Iterable[tf.Operation], inputs: Sequence[tf.Tensor]) -> list[tf.Operation]:
    """The ops among ``ops`` (a path from ``inputs``) that are not linear in the path's tensors."""
    ops = list(ops)
    on_path = set(ops)
    input_ops = {x.op for x in inputs}
    found = []
    for op in ops:
        if op in input_ops or op.type in _LINEAR:
            continue
        dependent = [i for i, t in enumerate(op.inputs) if t.op in on_path]
        if op.type in _MULTILINEAR and len(dependent) <= 1:
            continue
        if op.type in _LINEAR_IN_FIRST and dependent == [0]:
            continue
        found.append(op)
    return found


def learning_phase_feeds(target: tf.Tensor) -> dict:
    """Feeds that put a tf_keras graph into inference mode: {keras_learning_phase placeholder: False}."""
    ancestors = _closure([target.op], lambda op: [t.op for t in op.inputs] + list(op.control_inputs))
    return {
        op.outputs[0]: op.outputs[0].dtype.as_numpy_dtype(0)
        for op in ancestors
        if op.type in ("Placeholder", "PlaceholderWithDefault")
        and op.name.split("/")[-1].startswith("keras_learning_phase")
    }
