"""Gradient overrides: how a rule set replaces the gradient of some op types while an explanation is built.

``tf.gradients`` asks each op for its gradient function through ``ops.get_gradient_function``, which returns the
op's Python-side ``_gradient_function`` when one is set (before looking at the ``_gradient_op_type`` attribute and the
registry by type). While one explanation graph is built (:func:`overridden_gradients`), the ops of the explained
path whose type has a rule get :func:`_dispatch` there; it calls the rule that the *active rule set* holds for the
op's type. The active rule set lives in a :class:`contextvars.ContextVar`, so it is per thread (and per asyncio
task) and is set only for the duration of one ``tf.gradients`` call.

Nothing in the graph itself changes: no attribute is written on any op (TensorFlow warns about, and will refuse,
attribute changes on ops a session has run), a graph built before the :class:`DeepExplain` context works, and
training gradients requested later, or a ``GraphDef`` exported later, are TensorFlow's own.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

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
    """

    rules: Mapping[str, Rule]
    settings: object = None


_ACTIVE: contextvars.ContextVar[ActiveRules | None] = contextvars.ContextVar("deepexplain_active_rules", default=None)

# Setting the ops' gradient functions, building gradients and restoring them is one critical section per process:
# two threads that explain the *same* graph at once must not restore them while the other is still differentiating.
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


@contextlib.contextmanager
def overridden_gradients(path_ops: Iterable[tf_ops.Operation], rules: Mapping[str, Rule], settings: object = None):
    """Within this block, ``tf.gradients`` through ``path_ops`` uses ``rules`` (op type -> rule).

    Parameters
    ----------
    path_ops : iterable of tf.Operation
        The ops between the explained inputs and the target; those whose type has a rule are overridden.
    rules : mapping
        Op type -> rule.
    settings : object
        Forwarded to every rule.

    Notes
    -----
    The ops' Python-side gradient functions are set on entry and restored on exit; the graph is left as it was
    found (apart from the ops the block adds). A user's own gradient override on an op whose type has a rule is
    bypassed inside the block only.
    """
    overridden = [op for op in path_ops if op.type in rules]
    with _GRAPH_EDIT_LOCK:
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
        token = _ACTIVE.set(ActiveRules(rules=dict(rules), settings=settings))
        try:
            yield
        finally:
            _ACTIVE.reset(token)
            for op, function in zip(overridden, previous, strict=True):
                op._gradient_function = function
