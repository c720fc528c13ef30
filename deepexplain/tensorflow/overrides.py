"""Gradient overrides: how a rule set replaces the gradient of some op types while an explanation is built.

TensorFlow picks an op's gradient function by the op's ``_gradient_op_type`` attribute when it has one, else by its
type. We register a single gradient function under :data:`OVERRIDE_NAME` once per process; it dispatches, at graph
construction time, to the rule that the *active rule set* holds for the op's type, or to the op's own gradient when
no rule set is active. The active rule set lives in a :class:`contextvars.ContextVar`, so it is per thread (and per
asyncio task) and is set only for the duration of one ``tf.gradients`` call.

The attribute is written only on the ops of the explained path, only while the explanation graph is built, and is
restored afterwards (:func:`overridden_gradients`): a graph built before the :class:`DeepExplain` context works, and
training gradients requested later, or a ``GraphDef`` exported later, are unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from tensorflow.core.framework import attr_value_pb2
from tensorflow.python.framework import ops as tf_ops

OVERRIDE_NAME = "DeepExplainGrad"
_ATTR = "_gradient_op_type"

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
    """

    rules: Mapping[str, Rule]
    settings: object = None


_ACTIVE: contextvars.ContextVar[ActiveRules | None] = contextvars.ContextVar("deepexplain_active_rules", default=None)

# Tagging ops, building gradients and restoring the tags is one critical section per process: two threads that
# explain the *same* graph at once must not restore tags while the other is still differentiating through them.
_GRAPH_EDIT_LOCK = threading.RLock()


def original_gradient(op: tf_ops.Operation, *grads):
    """The gradient TensorFlow registers for the type of ``op``."""
    return tf_ops._gradient_registry.lookup(op.type)(op, *grads)


def _dispatch(op: tf_ops.Operation, *grads):
    active = _ACTIVE.get()
    rule = active.rules.get(op.type) if active is not None else None
    if rule is None:
        return original_gradient(op, *grads)
    return rule(op, grads, active.settings)


def _register_once() -> None:
    try:
        tf_ops.RegisterGradient(OVERRIDE_NAME)(_dispatch)
    except KeyError:  # already registered in this process (e.g. the module was reloaded)
        pass


_register_once()


def _current_gradient_name(op: tf_ops.Operation) -> str | None:
    try:
        return op.get_attr(_ATTR).decode()
    except ValueError:
        return None


@contextlib.contextmanager
def overridden_gradients(path_ops: Iterable[tf_ops.Operation], rules: Mapping[str, Rule], settings: object = None):
    """Within this block, ``tf.gradients`` through ``path_ops`` uses ``rules`` (op type -> rule).

    Parameters
    ----------
    path_ops : iterable of tf.Operation
        The ops between the explained inputs and the target; those whose type has a rule are tagged.
    rules : mapping
        Op type -> rule.
    settings : object
        Forwarded to every rule.

    Notes
    -----
    Ops are tagged on entry and restored on exit, so the graph is left as it was found (apart from the ops the block
    adds). A user's own gradient override on an op whose type has a rule is bypassed inside the block only.
    """
    tagged = [op for op in path_ops if op.type in rules]
    with _GRAPH_EDIT_LOCK:
        previous = {op.name: _current_gradient_name(op) for op in tagged}
        for op in tagged:
            op._set_attr(_ATTR, attr_value_pb2.AttrValue(s=OVERRIDE_NAME.encode()))
        token = _ACTIVE.set(ActiveRules(rules=dict(rules), settings=settings))
        try:
            yield
        finally:
            _ACTIVE.reset(token)
            for op in tagged:
                value = previous[op.name]
                if value is None:
                    op._clear_attr(_ATTR)
                else:
                    op._set_attr(_ATTR, attr_value_pb2.AttrValue(s=value.encode()))
