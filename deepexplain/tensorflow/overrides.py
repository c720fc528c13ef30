"""Gradient overrides: how a rule set replaces the gradient of some ops while an explanation is built.

All access to TensorFlow's private API lives in this module, each use behind a check that fails loudly when a
TensorFlow version stops behaving as relied on (checked on 2.16.1 and 2.21):

- ``tf.gradients`` asks each op for its gradient function through ``ops.get_gradient_function``, which returns the
  op's Python-side ``_gradient_function`` when one is set (before the ``_gradient_op_type`` attribute and the registry
  by type). While one explanation graph is built (:func:`overridden_gradients`), the ops of the explained path that
  have a rule get :func:`_dispatch` there; it calls the rule that the *active rule set* holds for the op (per op,
  then per op type). The active rule set lives in a :class:`contextvars.ContextVar`, so it is per thread (and per
  asyncio task) and set only for the duration of one ``tf.gradients`` call. This holds in a TF1 graph and inside a
  ``tf.function`` (``tf.GradientTape`` does not consult it: it looks gradients up by op type).
- :func:`original_gradient` reads the gradient registry, honouring the ``_gradient_op_type`` attribute that
  ``tf.custom_gradient`` and ``gradient_override_map`` set.
- :func:`clone_op` creates an op of the same type and attributes with other inputs.
- :func:`session_callable` runs a TF1 explanation through ``Session._make_callable_from_options`` (what tf_keras'
  graph-mode backend uses): ``Session.make_callable`` with feeds is ``Session.run`` with a feed dict, whose Python
  costs ~0.3 ms a call. Without it, the public ``make_callable``.
- :func:`flat_call` calls a ``tf.function``'s concrete function through ``ConcreteFunction._call_flat`` (what its
  ``__call__`` ends in): the public call first binds the arguments to the function's signature, ~0.2 ms a call.
  Without it, the public call.

Nothing in the graph itself changes: no attribute is written on any op (TensorFlow warns about, and will refuse,
attribute changes on ops a session has run), a graph built before the :class:`DeepExplain` context works, and
training gradients requested later, or a ``GraphDef`` exported later, are TensorFlow's own.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops

Rule = Callable[..., list]
"""A rule ``rule(op, grads, settings) -> list of input gradients`` (one entry per op input, None for no gradient)."""


@dataclass(frozen=True)
class ActiveRules:
    """What the dispatcher needs while one explanation graph is built.

    Attributes
    ----------
    rules : mapping
        Op type -> rule.
    settings : object
        Passed to each rule (the method's parameters and any tensors the rules read, e.g. reference indices).
    op_rules : mapping
        tf.Operation -> rule, taking precedence over ``rules`` (the ops of an activation written as several ops).
    """

    rules: Mapping[str, Rule]
    settings: object = None
    op_rules: Mapping = field(default_factory=dict)


_ACTIVE: contextvars.ContextVar[ActiveRules | None] = contextvars.ContextVar("deepexplain_active_rules", default=None)

# Setting the ops' gradient functions, building gradients and restoring them is one critical section per process:
# two threads that explain the *same* graph at once must not restore them while the other is still differentiating.
GRAPH_EDIT_LOCK = threading.RLock()


def _registered_name(op: tf_ops.Operation) -> str:
    try:
        return op.get_attr("_gradient_op_type").decode()
    except ValueError:
        return op.type


def original_gradient(op: tf_ops.Operation, *grads):
    """The gradient TensorFlow registers for ``op`` (a custom gradient's closure included)."""
    return tf_ops._gradient_registry.lookup(_registered_name(op))(op, *grads)


def has_custom_gradient(op: tf_ops.Operation) -> bool:
    """Whether ``op`` carries a gradient registered under another name than its type (``tf.custom_gradient``)."""
    return _registered_name(op) != op.type


def _dispatch(op: tf_ops.Operation, *grads):
    active = _ACTIVE.get()
    if active is None:
        return original_gradient(op, *grads)
    rule = active.op_rules.get(op) or active.rules.get(op.type)
    if rule is None:
        return original_gradient(op, *grads)
    return rule(op, grads, active.settings)


@contextlib.contextmanager
def overridden_gradients(
    path_ops: Iterable[tf_ops.Operation], rules: Mapping[str, Rule], settings: object = None, op_rules=None
):
    """Within this block, ``tf.gradients`` through ``path_ops`` uses ``rules`` (op type -> rule) and ``op_rules``
    (op -> rule).

    Parameters
    ----------
    path_ops : iterable of tf.Operation
        The ops between the explained inputs and the target; those with a rule are overridden.
    rules : mapping
        Op type -> rule.
    settings : object
        Forwarded to every rule.
    op_rules : mapping, optional
        tf.Operation -> rule, for single ops (taking precedence over ``rules``).

    Notes
    -----
    The ops' Python-side gradient functions are set on entry and restored on exit; the graph is left as it was
    found (apart from the ops the block adds). A user's own gradient override on an overridden op is bypassed inside
    the block only.
    """
    op_rules = dict(op_rules or {})
    overridden = [op for op in path_ops if op.type in rules or op in op_rules]
    with GRAPH_EDIT_LOCK:
        previous = [op._gradient_function for op in overridden]
        for op in overridden:
            op._gradient_function = _dispatch
        if overridden and tf_ops.get_gradient_function(overridden[0]) is not _dispatch:
            for op, function in zip(overridden, previous, strict=True):
                op._gradient_function = function
            raise RuntimeError(
                "this TensorFlow version does not consult Operation._gradient_function in tf.gradients, which "
                "deepexplain's rule-based methods rely on (TensorFlow 2.16 to 2.21 do)"
            )
        token = _ACTIVE.set(ActiveRules(rules=dict(rules), settings=settings, op_rules=op_rules))
        try:
            yield
        finally:
            _ACTIVE.reset(token)
            for op, function in zip(overridden, previous, strict=True):
                op._gradient_function = function


def plain_gradients(ys, xs, grad_ys=None, stop_gradients=None) -> list:
    """``tf.gradients`` with every op's own gradient, also while :func:`overridden_gradients` is active (a rule that
    needs a true derivative, e.g. of an activation written as several ops); ``stop_gradients`` are held constant."""
    token = _ACTIVE.set(None)
    try:
        return tf.gradients(ys, xs, grad_ys=grad_ys, stop_gradients=stop_gradients)
    finally:
        _ACTIVE.reset(token)


def clone_op(op: tf_ops.Operation, replacements: dict) -> tf_ops.Operation:
    """A copy of ``op`` (same type and attributes) with the inputs at the indices of ``replacements`` replaced.

    The copy goes into the default graph: inside ``tf.cond`` that is the branch's function graph, which captures
    the outer tensors it reads. Private attributes (``_class``, ``_gradient_op_type``, ...) are not copied.
    """
    inputs = list(op.inputs)
    for index, tensor in replacements.items():
        inputs[index] = tensor
    attrs = {key: value for key, value in op.node_def.attr.items() if not key.startswith("_")}
    return tf.compat.v1.get_default_graph()._create_op_internal(
        op.type, inputs, dtypes=[o.dtype for o in op.outputs], attrs=attrs, name=f"{op.name}_modified"
    )


def session_callable(session, fetches: list, feeds: list) -> Callable[..., list]:
    """``run(*arrays) -> list of ndarray``: the values of ``fetches`` with ``feeds`` fed ``arrays`` (in order), by
    the session's callable API (see the module docstring; the arrays are cast to the feeds' dtypes and made
    contiguous, which the callable API does not do), or by ``make_callable`` where the session lacks it."""
    make = getattr(session, "_make_callable_from_options", None)
    if make is None:
        return session.make_callable(fetches, feeds)
    from tensorflow.core.protobuf import config_pb2

    options = config_pb2.CallableOptions()
    options.feed.extend(t.name for t in feeds)
    options.fetch.extend(t.name for t in fetches)
    callable_ = make(options)
    dtypes = [tf.as_dtype(t.dtype).as_numpy_dtype for t in feeds]

    def run(*arrays):
        return callable_(*(_contiguous(a, dtype) for a, dtype in zip(arrays, dtypes, strict=True)))

    return run


def flat_call(concrete, dtypes: list) -> Callable[..., list]:
    """``run(*arrays) -> outputs`` of the concrete function ``concrete``, whose inputs are one tensor of each of
    ``dtypes`` (in order, as it was traced), called flat (see the module docstring); the arrays are converted to
    tensors of those dtypes. The captured inputs (the model's variables) are read at each call, as the public call
    does."""
    call_flat = getattr(concrete, "_call_flat", None)
    if call_flat is None:
        return concrete

    def run(*arrays):
        tensors = [tf.constant(a, dtype) for a, dtype in zip(arrays, dtypes, strict=True)]
        return call_flat(tensors, concrete.captured_inputs)

    return run


def _contiguous(array, dtype) -> np.ndarray:
    array = np.asarray(array, dtype)
    return array if array.flags.c_contiguous else np.ascontiguousarray(array)  # (ascontiguousarray makes scalars 1-D)


def inline_function(function, inputs: list) -> list:
    """The outputs of the concrete function ``function`` on ``inputs``, with its body (and every function it calls)
    imported into the current graph instead of one opaque call op, so that rules reach its ops.

    Variables stay live: the function's captured resource handles are fed to the imported ``ReadVariableOp`` ops,
    nothing is frozen. Functional control flow (``While``/``If``) stays as it is. Uses Grappler's function inlining,
    the pass ``convert_variables_to_constants_v2`` relies on (a private function of TensorFlow; checked on 2.16.1
    and 2.21).
    """
    from tensorflow.python.framework import convert_to_constants

    inline = getattr(convert_to_constants, "_run_inline_graph_optimization", None)
    if inline is None:
        raise RuntimeError(
            "this TensorFlow version has no convert_to_constants._run_inline_graph_optimization, which deepexplain "
            "uses to explain SavedModels and tf.function callables with rules (TensorFlow 2.16 to 2.21 have it); "
            "pass a Keras model instead"
        )
    graph_def = inline(function, lower_control_flow=False, aggressive_inlining=True)
    placeholders = list(function.inputs)
    feeds = list(inputs) + [tf.identity(handle) for handle in function.captured_inputs]
    input_map = {p.name: t for p, t in zip(placeholders, feeds, strict=True)}
    return tf.graph_util.import_graph_def(
        graph_def, input_map=input_map, return_elements=[t.name for t in function.outputs], name="inlined"
    )


def function_body(op: tf_ops.Operation):
    """``(ops, inputs, outputs)`` of the function a ``PartitionedCall``/``StatefulPartitionedCall`` op calls (its
    body graph's ops, the placeholders that receive the call's inputs, the tensors it returns), or None when the
    body is not available in Python (TensorFlow keeps it in the calling graph's function library:
    ``Graph._get_function``, checked on 2.16.1 and 2.21)."""
    try:
        name = op.get_attr("f").name
    except ValueError:
        return None
    lookup = getattr(op.graph, "_get_function", None)
    function = lookup(name) if lookup is not None else None
    graph = getattr(function, "graph", None)
    if graph is None:
        return None
    return graph.get_operations(), list(graph.inputs), list(graph.outputs)
