"""The explained part of a graph: the ops between the inputs ``X`` and the target ``T``, and which tensors are
parameters.

A *parameter* (a weight, a bias, a batch-norm statistic) is a tensor that ``T`` depends on and that no path from
``X`` reaches. This is the only definition that holds in both kinds of graph the library explains: in a TF1 graph
weights are variables or constants, but inside a ``tf.function`` the captured variables enter as ``Placeholder`` ops,
exactly like the inputs, so "depends on no placeholder" does not identify weights there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cached_property

import tensorflow as tf

from deepexplain.tensorflow import ops
from deepexplain.tensorflow.overrides import function_body


def as_list(tensors) -> list:
    """A tensor or a list/tuple of tensors, as a list."""
    return list(tensors) if isinstance(tensors, list | tuple) else [tensors]


def _closure(start: Iterable[tf.Operation], neighbours) -> set[tf.Operation]:
    seen: set[tf.Operation] = set()
    stack = list(start)
    while stack:
        op = stack.pop()
        if op not in seen:
            seen.add(op)
            stack.extend(neighbours(op))
    return seen


def ancestors_of(tensor: tf.Tensor) -> set[tf.Operation]:
    """The ops ``tensor`` is computed from, its own op included."""
    return _closure([tensor.op], lambda op: [t.op for t in op.inputs])


def _differentiable(tensor: tf.Tensor) -> bool:
    # variant tensors carry differentiable TensorLists through functional loops (Keras' LSTM)
    return tensor.dtype.is_floating or tensor.dtype.is_complex or tensor.dtype == tf.variant


class Path:
    """The ops a gradient from ``target`` to ``inputs`` flows through, and what the rules ask of them.

    Parameters
    ----------
    inputs : sequence of tf.Tensor
        The explained inputs ``X``.
    target : tf.Tensor
        The explained tensor ``T``.
    differentiable : bool
        Follow dependence through floating-point (and variant) tensors only: a gradient cannot flow through an
        integer cast or an index.
    cut : collection of (tf.Operation, int)
        Inputs of ops that no signal passes (a factor that a rule treats as a constant): ops reached only through
        them are not on the path.
    """

    def __init__(self, inputs: Sequence[tf.Tensor], target: tf.Tensor, differentiable: bool = True, cut=()):
        self.inputs = list(inputs)
        self.target = target
        self._input_ops = {x.op for x in self.inputs}
        ancestors = ancestors_of(target)
        self._ancestors = ancestors
        # every op of T's graph that depends on X at all (any dtype): what is not among them is a parameter
        self._dependent = _closure(
            [x.op for x in self.inputs if x.op in ancestors],
            lambda op: [c for out in op.outputs for c in out.consumers() if c in ancestors],
        )

        def followed(tensor):
            return not differentiable or _differentiable(tensor)

        downstream = _closure(
            [x.op for x in self.inputs if x.op in ancestors and followed(x)],
            lambda op: [c for out in op.outputs if followed(out) for c in out.consumers() if c in ancestors],
        )
        self._differentiable = differentiable
        self.cut = frozenset(cut)
        if target.op not in downstream:
            self.ops: list[tf.Operation] = []
        else:
            on_path = _closure(
                [target.op],
                lambda op: [
                    t.op
                    for i, t in enumerate(op.inputs)
                    if followed(t) and t.op in downstream and (op, i) not in self.cut
                ],
            )
            self.ops = sorted(on_path, key=lambda op: op.name)
        self.op_set = frozenset(self.ops)
        self.notes: list[str] = []  # what rules found while the explanation was built (said once, by the explainer)
        self.row_inputs: list = []  # the method's extra per-row input tensors (GradientMethod.row_input_specs)
        self.weight_names: dict = {}  # variable handle ref -> the model's name for it (see weight_name)

    def note(self, message: str) -> None:
        """Record something the user should hear about this explanation (a rule's fallback, ...)."""
        if message not in self.notes:
            self.notes.append(message)

    def without(self, cut) -> Path:
        """The same path with the inputs ``cut`` ((op, input index) pairs) passing no signal."""
        path = Path(self.inputs, self.target, self._differentiable, self.cut | frozenset(cut))
        path.row_inputs, path.weight_names = self.row_inputs, self.weight_names
        return path

    def __bool__(self) -> bool:
        return bool(self.ops)

    def is_input(self, op: tf.Operation) -> bool:
        """Whether ``op`` produces one of the explained inputs."""
        return op in self._input_ops

    def is_parameter(self, tensor: tf.Tensor) -> bool:
        """Whether ``tensor`` does not depend on the explained inputs (a weight, a bias, a constant).

        Tensors the explanation added later (modified weights such as ``W+``) are judged by their inputs.
        """
        op = tensor.op
        if op in self._ancestors:
            return op not in self._dependent
        return all(self.is_parameter(t) for t in op.inputs)

    def forward_ops(self) -> list[tf.Operation]:
        """The ops computed from the inputs on the way to the target (through any dtype), in an order that runs them
        (inputs first): what a copy of the forward pass on other inputs copies.

        Raises
        ------
        UnsupportedOpError
            For TF1 control flow (``Enter``/``Merge``/...): its loops are cycles, in frames of their own, which no
            copy op by op reproduces.
        """
        from deepexplain.errors import UnsupportedOpError

        done, order = set(self._input_ops), []
        stack = [self.target.op]
        while stack:
            op = stack[-1]
            if op in done:
                stack.pop()
                continue
            if ops.is_a(op.type, ops.V1_CONTROL_FLOW):
                raise UnsupportedOpError(
                    f"op '{op.name}' ({op.type}) is TF1 control flow, which cannot be copied op by op (the separate "
                    "reference pass for an output whose rows are not the samples' needs it); make the first "
                    "dimension of T the batch of X"
                )
            waiting = [t.op for t in op.inputs if t.op not in done and t.op in self._dependent]
            if waiting:
                stack.extend(waiting)
                continue
            stack.pop()
            done.add(op)
            order.append(op)
        return order

    def data_inputs(self, op: tf.Operation) -> list[int]:
        """Indices of the floating-point inputs of ``op`` that depend on the explained inputs."""
        return [i for i, t in enumerate(op.inputs) if t.dtype.is_floating and not self.is_parameter(t)]

    def consumers(self, tensor: tf.Tensor) -> list[tf.Operation]:
        """The consumers of ``tensor`` on the path (ops added by other explanations are not)."""
        return [c for c in tensor.consumers() if c in self.op_set]

    def is_nonnegative(self, tensor: tf.Tensor, depth: int = 16) -> bool:
        """Whether ``tensor`` is >= 0 for every input, as far as the graph shows (a ReLU, a pooled ReLU, ...)."""
        op = tensor.op
        if ops.is_a(op.type, ops.NONNEGATIVE):
            return True
        if not ops.is_a(op.type, ops.SIGN_PRESERVING) or depth == 0:
            return False
        data = [op.inputs[i] for i in self.data_inputs(op)]
        return bool(data) and all(self.is_nonnegative(t, depth - 1) for t in data)

    @cached_property
    def first_weighted_ops(self) -> frozenset:
        """The dense/convolution ops nearest to the inputs: reachable from them without passing another such op."""
        found, seen = set(), set()
        stack = [c for x in self.inputs for c in self.consumers(x)]
        while stack:
            op = stack.pop()
            if op in seen:
                continue
            seen.add(op)
            if layer_type(op) in ops.WEIGHTED:
                found.add(op)
                continue
            stack.extend(c for out in op.outputs for c in self.consumers(out))
        return frozenset(found)

    def nonlinear_ops(self) -> list[tf.Operation]:
        """The path ops that are not linear in the path's tensors (what gradient-based rules must handle)."""
        found = []
        for op in self.ops:
            if self.is_input(op) or ops.is_a(op.type, ops.LINEAR):
                continue
            if ops.is_a(op.type, ops.CALL) and called_layer(op) is not None:
                continue  # a function wrapping one convolution is as linear as the convolution
            dependent = self.data_inputs(op)
            if ops.is_a(op.type, ops.MULTILINEAR) and len(dependent) <= 1:
                continue
            if ops.is_a(op.type, ops.LINEAR_IN_FIRST) and dependent == [0]:
                continue
            found.append(op)
        return found


_CALL_BODY_PLUMBING = frozenset({"Placeholder", "ReadVariableOp", "Identity", "NoOp", "Const"})
LAYER_BODY_TYPES = frozenset({"Conv2D", "Conv3D", "DepthwiseConv2dNative", "MatMul"})


def called_layer(op: tf.Operation) -> tf.Operation | None:
    """The one dense/convolution op in the body of a function call ``op`` (Keras 3 runs grouped convolutions as an
    XLA-compiled function of one ``Conv2D``), else None. Only the body is read; nothing is added to the graph."""
    if not ops.is_a(op.type, ops.CALL):
        return None
    body = function_body(op)
    if body is None:
        return None
    compute = [o for o in body[0] if o.type not in _CALL_BODY_PLUMBING]
    if len(compute) != 1 or compute[0].type not in LAYER_BODY_TYPES:
        return None
    inner = compute[0]
    if len(body[2]) != 1 or not _returns(body[2][0], inner.outputs[0]):
        return None
    if inner.type == "Conv2D" and groups_of(inner) not in (1, channels_of(inner)):
        return None  # grouped, but not depthwise: no CPU kernel computes it outside XLA
    return inner


def _returns(output: tf.Tensor, tensor: tf.Tensor) -> bool:
    while output is not tensor and output.op.type == "Identity":
        output = output.op.inputs[0]
    return output is tensor


def channels_of(conv: tf.Operation):
    """Input channels of a convolution (None when not static)."""
    x = conv.inputs[0]
    axis = -1 if conv.get_attr("data_format") == b"NHWC" else 1
    return x.shape.as_list()[axis] if x.shape.rank else None


def groups_of(conv: tf.Operation):
    """How many groups a ``Conv2D`` splits its channels into (1: an ordinary convolution)."""
    kernel = conv.inputs[1].shape
    channels, kernel_in = channels_of(conv), kernel.as_list()[2] if kernel.rank == 4 else None
    if channels is None or kernel_in is None:
        return None
    return channels // kernel_in


def layer_type(op: tf.Operation) -> str:
    """The op's type, or for a function call wrapping one dense/convolution op (:func:`called_layer`), that op's."""
    if ops.is_a(op.type, ops.CALL):
        inner = called_layer(op)
        if inner is not None:
            return inner.type
    return op.type


_WEIGHT_PLUMBING = frozenset({"Identity", "Snapshot", "Cast", "ExpandDims", "Reshape", "Squeeze", "Transpose"})


def weight_plumbing(tensor: tf.Tensor) -> list[tf.Operation]:
    """The reshapes, transposes and casts a weight input is made of its origin with (Keras' Conv1D expands its
    kernel, EinsumDense reshapes and transposes it), nearest the origin first."""
    chain = []
    while tensor.op.type in _WEIGHT_PLUMBING and tensor.op.inputs:
        chain.append(tensor.op)
        tensor = tensor.op.inputs[0]
    return chain[::-1]


def weight_origin(tensor: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """``(value, handle)`` of a weight input: the tensor it is before :func:`weight_plumbing`, and what that value is
    read from (a variable's resource handle; the value itself for a constant or a TF1 reference variable)."""
    chain = weight_plumbing(tensor)
    if chain:
        tensor = chain[0].inputs[0]
    handle = tensor.op.inputs[0] if tensor.op.type == "ReadVariableOp" else tensor
    return tensor, handle


def weight_name(tensor: tf.Tensor, names) -> str | None:
    """The model's name for the weight ``tensor`` reads (``names``: variable handle ``ref()`` -> name), looking
    through a ``tf.function``'s captures to the variable outside; None when ``names`` does not know it."""
    _, handle = weight_origin(tensor)
    candidates = [handle]
    captures = getattr(handle.graph, "captures", None)  # a FuncGraph: captured handles enter as placeholders
    if handle.op.type == "Placeholder" and captures:
        candidates += [external for external, internal in captures if internal is handle]
    for candidate in candidates:
        if candidate.ref() in names:
            return names[candidate.ref()]
    return None


def describe_ops(op_list: Sequence[tf.Operation], names_per_type: int = 3) -> str:
    """``'Mul ×4 (dense/mul, dense_1/mul, ...), Einsum ×1 (attention/einsum)'``: op types with counts and names."""
    counts = Counter(op.type for op in op_list)
    parts = []
    for op_type, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        names = [op.name for op in op_list if op.type == op_type]
        shown = ", ".join(names[:names_per_type]) + (", ..." if len(names) > names_per_type else "")
        parts.append(f"{op_type} ×{count} ({shown})")
    return ", ".join(parts)


def learning_phase_feeds(target: tf.Tensor) -> dict:
    """Feeds that put a tf_keras graph into inference mode: {keras_learning_phase placeholder: False}."""
    ancestors = _closure([target.op], lambda op: [t.op for t in op.inputs] + list(op.control_inputs))
    return {
        op.outputs[0]: op.outputs[0].dtype.as_numpy_dtype(0)
        for op in ancestors
        if op.type in ("Placeholder", "PlaceholderWithDefault")
        and op.name.split("/")[-1].startswith("keras_learning_phase")
    }
