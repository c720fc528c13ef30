"""The op catalogue: what each TensorFlow op type is, written once for every rule family and the path analysis.

Each op type has a set of *traits*; rule tables and checks ask for the types having a trait (:func:`having`) or for
the traits of one op (:func:`traits`), instead of keeping op-type lists of their own.
"""

from __future__ import annotations

from types import MappingProxyType

# An elementwise nonlinearity y = f(x) of one data input: DeepLIFT's Rescale, eLRP's ratio, LRP's pass-through.
ACTIVATION = "activation"
# Any elementwise nonlinear function of one input (activations, exp, rsqrt, erf, ...): DeepLIFT's Rescale applies.
UNARY_NONLINEAR = "unary_nonlinear"
# Piecewise-linear activations whose one kink is at 0 (guided backprop, deconvnet; DeepLIFT's plain secant).
RELU_LIKE = "relu_like"
# f(x) = 0 wherever x <= 0 (eLRP's sign-free ratio).
ZERO_BELOW_ZERO = "zero_below_zero"
# The output is >= 0 whatever the input.
NONNEGATIVE = "nonnegative"
# The output is >= 0 when the data inputs are (pooling, reshapes, selections).
SIGN_PRESERVING = "sign_preserving"
MAX_POOL = "max_pool"
AVG_POOL = "avg_pool"
REDUCTION = "reduction"  # Mean, Sum: a weighted sum with constant weights
BATCH_NORM = "batch_norm"  # fused inference batch normalisation y = s x + t
# Dense ops (a matrix product) and convolutions: with one data and one parameter input, a layer z = W x.
DENSE = "dense"
CONV = "conv"
TRANSPOSED = "transposed"  # a transposed convolution: its output shape is its first input
# Linear in each input separately: a product when two inputs depend on the explained input.
MULTILINEAR = "multilinear"
# Linear (or affine) in each input that depends on the explained input.
LINEAR = "linear"
# Linear in the first input only (a division by a constant).
LINEAR_IN_FIRST = "linear_in_first"
# Moves or selects values without mixing them: its own gradient moves relevance correctly.
STRUCTURAL = "structural"
BIAS_ADD = "bias_add"  # adds its second input (a bias, when it is a parameter)
# Each output element depends on the input elements at the same position only (after broadcasting): what an
# activation written as several ops (gelu, swish, mish) is made of.
ELEMENTWISE = "elementwise"
CALL = "call"  # a call of a function (its body is opaque to the rules)
INPUT = "input"  # a placeholder
CUSTOM_GRADIENT = "custom_gradient"  # IdentityN: carries tf.custom_gradient's gradient closure
# TF1 (non-functional) control flow: a loop is a cycle through these ops, in frames of its own.
V1_CONTROL_FLOW = "v1_control_flow"

_ACTIVATIONS = {
    "Relu": {RELU_LIKE, ZERO_BELOW_ZERO, NONNEGATIVE},
    "Relu6": {RELU_LIKE, ZERO_BELOW_ZERO, NONNEGATIVE},
    "LeakyRelu": {RELU_LIKE},
    "Elu": set(),
    "Selu": set(),
    "Sigmoid": {NONNEGATIVE},
    "Tanh": set(),
    "Softplus": {NONNEGATIVE},
    "Softsign": set(),
}
# Elementwise unary math that is not a neural-network activation by itself (parts of gelu, mish, normalisations).
_UNARY_MATH = {
    "Erf": set(),
    "Erfc": {NONNEGATIVE},
    "Exp": {NONNEGATIVE},
    "Expm1": set(),
    "Log": set(),
    "Log1p": set(),
    "Square": {NONNEGATIVE},
    "Sqrt": {NONNEGATIVE},
    "Rsqrt": {NONNEGATIVE},
    "Reciprocal": set(),
    "Inv": set(),
    "Abs": {NONNEGATIVE},
    "Sin": set(),
    "Cos": set(),
    "Sign": set(),
}
_BINARY_ELEMENTWISE = {"Mul", "AddV2", "Add", "Sub", "RealDiv", "Div", "Maximum", "Minimum", "Pow",
                       "SquaredDifference", "BiasAdd", "DivNoNan", "TruncateDiv"}  # fmt: skip
_STRUCTURAL = {
    "Identity", "IdentityN", "Snapshot", "Reshape", "Squeeze", "ExpandDims", "Transpose", "ConcatV2", "Concat",
    "Pack", "Unpack", "Split", "SplitV", "Slice", "StridedSlice", "Pad", "PadV2", "MirrorPad", "Cast",
    "Placeholder", "PlaceholderWithDefault",
}  # fmt: skip
_SIGN_PRESERVING = {"MaxPool", "MaxPoolV2", "AvgPool", "AvgPool3D", "Mean", "Reshape", "Identity", "Snapshot",
                    "Squeeze", "ExpandDims", "Transpose", "Pad", "MirrorPad", "ConcatV2", "Pack", "StridedSlice",
                    "Slice", "Cast"}  # fmt: skip
_LINEAR_OTHER = {
    "StopGradient", "PreventGradient", "Neg", "Add", "AddV2", "AddN", "Sub", "BiasAdd", "Sum", "Mean", "AvgPool",
    "AvgPool3D", "Tile", "GatherV2", "Gather", "ResourceGather", "Fill", "ZerosLike", "OnesLike", "Shape", "Size",
    "Rank", "BroadcastTo", "Reverse", "ReverseV2", "DepthToSpace", "SpaceToDepth", "SpaceToBatchND",
    "BatchToSpaceND", "ResizeNearestNeighbor", "ResizeBilinear", "FusedBatchNorm", "FusedBatchNormV2",
    "FusedBatchNormV3", "Cumsum", "Const", "ReadVariableOp", "VariableV2", "Enter", "Exit", "TensorListFromTensor",
    "TensorListStack", "TensorListGetItem", "TensorListSetItem", "TensorListReserve",
}  # fmt: skip
_DENSE = {"MatMul", "BatchMatMul", "BatchMatMulV2", "BatchMatMulV3", "Einsum"}
_CONV = {"Conv2D", "Conv3D", "DepthwiseConv2dNative", "Conv2DBackpropInput", "Conv3DBackpropInputV2"}


def _catalogue() -> dict:
    table: dict[str, set] = {}

    def add(types, *names):
        for op_type in types:
            table.setdefault(op_type, set()).update(names)

    for op_type, extra in _ACTIVATIONS.items():
        add([op_type], ACTIVATION, UNARY_NONLINEAR, ELEMENTWISE, *extra)
    for op_type, extra in _UNARY_MATH.items():
        add([op_type], UNARY_NONLINEAR, ELEMENTWISE, *extra)
    add(_BINARY_ELEMENTWISE, ELEMENTWISE)
    add({"Neg", "Cast", "Identity", "Snapshot", "StopGradient"}, ELEMENTWISE)
    add(_STRUCTURAL, STRUCTURAL, LINEAR)
    add(_SIGN_PRESERVING, SIGN_PRESERVING)
    add(_LINEAR_OTHER, LINEAR)
    add({"MaxPool", "MaxPoolV2"}, MAX_POOL)
    add({"AvgPool", "AvgPool3D"}, AVG_POOL)
    add({"Mean", "Sum"}, REDUCTION)
    add({"FusedBatchNorm", "FusedBatchNormV2", "FusedBatchNormV3"}, BATCH_NORM)
    add(_DENSE, DENSE, MULTILINEAR)
    add(_CONV, CONV, MULTILINEAR)
    add({"Conv2DBackpropInput", "Conv3DBackpropInputV2"}, TRANSPOSED)
    add({"Mul"}, MULTILINEAR)
    add({"RealDiv", "Div", "DivNoNan", "TruncateDiv"}, LINEAR_IN_FIRST)
    add({"BiasAdd", "Add", "AddV2"}, BIAS_ADD)
    add({"PartitionedCall", "StatefulPartitionedCall"}, CALL)
    add({"Placeholder", "PlaceholderWithDefault"}, INPUT)
    add({"IdentityN"}, CUSTOM_GRADIENT)
    add({"Enter", "RefEnter", "Exit", "RefExit", "Merge", "RefMerge", "Switch", "RefSwitch", "NextIteration",
         "RefNextIteration", "LoopCond"}, V1_CONTROL_FLOW)  # fmt: skip
    return {op_type: frozenset(names) for op_type, names in table.items()}


CATALOGUE = MappingProxyType(_catalogue())
"""Op type -> frozenset of traits."""


def traits(op_type: str) -> frozenset:
    """The traits of an op type (empty for a type the catalogue does not know)."""
    return CATALOGUE.get(op_type, frozenset())


def having(*wanted: str) -> frozenset:
    """The op types that have every trait in ``wanted``."""
    return frozenset(t for t, names in CATALOGUE.items() if names.issuperset(wanted))


def is_a(op_type: str, trait: str) -> bool:
    """Whether ``op_type`` has ``trait``."""
    return trait in CATALOGUE.get(op_type, ())


WEIGHTED = having(DENSE) | having(CONV)
"""Dense and convolution types: with one data and one parameter input they are layers ``z = W x`` for LRP."""
