"""Runners: where an explanation graph is built and how it runs on numpy arrays.

The methods, rules, targets and batching are the same for every model; what differs is where the model's tensors
live. A runner offers one operation, :meth:`compile`: it hands a *build* function the model's tensors (the explained
inputs ``X`` and the output ``T``) in a graph where the explanation can be added, and returns a callable that runs
the tensors the build returned on numpy arrays.

- :class:`SessionRunner`: a TF1 graph and its session (the DeepExplain context, tf_keras with eager execution off).
  The explanation's ops are added to that graph once, then run with ``Session.make_callable``.
- :class:`FunctionRunner`: a live model (Keras 3, tf_keras, ``tf.Module``, SavedModel, any callable) in eager mode.
  The build runs inside a ``tf.function`` that calls the model itself: the model's variables are captured, never
  copied, so an explainer always explains the current weights, and custom gradients keep their closures.
  ``jit_compile=True`` compiles the whole explanation with XLA.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from deepexplain.inputs import InputSpec
from deepexplain.tensorflow.graph import learning_phase_feeds
from deepexplain.tensorflow.overrides import GRAPH_EDIT_LOCK, flat_call, session_callable


@dataclass(frozen=True)
class Traced:
    """The model's tensors in the graph where an explanation is built.

    Attributes
    ----------
    inputs : list of tf.Tensor
        The explained inputs ``X`` (the model's inputs, or a layer's output).
    output : tf.Tensor
        The explained output ``T`` (first dimension the batch, or a scalar; in a TF1 graph also a tensor whose rows
        are not the samples', see :attr:`SessionRunner.rows_are_samples`).
    layer : tf.Tensor or None
        The output of the layer a CAM method reads (its feature maps), computed on the way from ``inputs`` to
        ``output``; None for other methods.
    taps : tuple of tf.Tensor
        Outputs of the layers a concept attribution reads (:mod:`deepexplain.crp`), computed on the way from
        ``inputs`` to ``output``, in the order they were asked for.
    """

    inputs: list
    output: tf.Tensor
    layer: tf.Tensor | None = None
    taps: tuple = ()


Build = Callable[[Traced, Callable[[], list]], list]
"""``build(traced, extras) -> output tensors``; ``extras()`` gives the extra input tensors (weights, indices), made
on first call (so that a build that fails before needing them adds nothing to a shared graph)."""

Compiled = Callable[[Sequence[np.ndarray], Sequence[np.ndarray]], list]
"""``compiled(input_arrays, extra_arrays) -> list of numpy arrays``."""


def _spec_of(tensor: tf.Tensor, name: str | None = None) -> InputSpec:
    shape = None if tensor.shape.rank is None else tuple(tensor.shape.as_list()[1:])
    return InputSpec(name or tensor.name, np.dtype(tensor.dtype.as_numpy_dtype), shape)


class SessionRunner:
    """Explanations in a TF1 graph, run by its session.

    Parameters
    ----------
    session : tf.compat.v1.Session
    target : tf.Tensor
        ``T``.
    inputs : list of tf.Tensor
        ``X``; fed with the explained arrays. When ``X`` is a layer's output, ``model_inputs`` are the placeholders
        that compute it (see :meth:`explained_inputs`).
    model_inputs : list of tf.Tensor, optional
        The model's input placeholders, when ``inputs`` are not them.
    layer : tf.Tensor, optional
        The feature maps a CAM method reads (:attr:`Traced.layer`).
    taps : sequence of tf.Tensor, optional
        The layer outputs a concept attribution reads (:attr:`Traced.taps`).
    """

    def __init__(self, session, target: tf.Tensor, inputs: list, model_inputs: list | None = None,
                 multiple_inputs: bool | None = None, layer: tf.Tensor | None = None, taps=()):  # fmt: skip
        self.session = session
        self.layer = layer
        self.taps = tuple(taps)
        self.graph = session.graph
        self.target = target
        self.inputs = list(inputs)
        self.model_inputs = list(model_inputs) if model_inputs is not None else None
        feeds = learning_phase_feeds(target)
        self._extra_tensors, self._extra_values = list(feeds), list(feeds.values())
        self.input_specs = [_spec_of(x) for x in self.inputs]
        sizes = {x.shape.as_list()[0] for x in self.inputs if x.shape.rank}
        sizes.discard(None)
        if len(sizes) > 1:
            from deepexplain.errors import InvalidInputError

            raise InvalidInputError(f"The input tensors have different fixed batch sizes: {sorted(sizes)}")
        self.fixed_rows = sizes.pop() if sizes else None
        # T's first dimension fixed while X's batch is free: T broadcasts or sums over the batch (X1 * w with w of
        # shape (2, 2), reduce_sum(axis=0)), so its rows are not the samples' and the batch is one input of T
        self.target_rows = None
        if self.fixed_rows is None and target.shape.rank and target.shape.as_list()[0] is not None:
            self.target_rows = target.shape.as_list()[0]
        self.output_names = [target.name]
        self.multiple_inputs = len(self.inputs) > 1 if multiple_inputs is None else bool(multiple_inputs)
        self.multiple_model_inputs = self.multiple_inputs if model_inputs is None else len(model_inputs) > 1

    @property
    def model_specs(self) -> list:
        """Specs of the arrays a caller passes (the model inputs)."""
        return [_spec_of(x) for x in (self.model_inputs or self.inputs)]

    def compile(self, build: Build, extra_specs: Sequence[tf.TensorSpec], specs=None) -> Compiled:
        """Add the explanation to the graph (once) and return the callable that runs it."""
        with GRAPH_EDIT_LOCK, self.graph.as_default(), tf.name_scope("deepexplain"):
            made: list = []

            def extras():
                if not made:
                    made.extend(tf.compat.v1.placeholder(s.dtype, s.shape, name=s.name) for s in extra_specs)
                return made

            outputs = build(Traced(self.inputs, self.target, self.layer, self.taps), extras)
            extras()
            function = session_callable(self.session, outputs, self.inputs + made + self._extra_tensors)
        values = self._extra_values

        def run(arrays, extra_arrays):
            self._check_open()
            try:
                return list(function(*arrays, *extra_arrays, *values))
            except tf.errors.InvalidArgumentError as error:
                if self.rows_are_samples:
                    raise
                from deepexplain.errors import InvalidInputError  # the fed rows do not broadcast with T's fixed rows

                raise InvalidInputError(
                    f"{self.whole_batch_description()}; fed together, the {len(arrays[0])} samples do not fit it: "
                    f"{_what_failed(error)}"
                ) from None

        return run

    @property
    def rows_are_samples(self) -> bool:
        """Whether ``T``'s rows are the samples' (else the samples are fed together, as one input of ``T``)."""
        return self.target_rows is None

    def whole_batch_description(self) -> str:
        """What a ``T`` whose rows are not the samples' is, for messages."""
        return (
            f"T ({self.target.name}) has shape {self.target.shape}: its first dimension is fixed while X's batch is "
            "free, so T's rows are not the samples' (T broadcasts or sums over the batch)"
        )

    def _check_open(self) -> None:
        if getattr(self.session, "_closed", False):
            from deepexplain.errors import InvalidInputError

            raise InvalidInputError("the session this explainer runs in is closed")

    def explained_inputs(self, arrays: list, rows: int) -> list:
        """The arrays fed to ``X``: the model inputs themselves, or the layer output they give."""
        self._check_open()
        if self.model_inputs is None:
            return arrays
        return _in_chunks(
            lambda part: self.session.run(self.inputs, dict(zip(self.model_inputs, part, strict=True))), arrays, rows
        )


def _what_failed(error: tf.errors.OpError) -> str:
    """The op and the reason of a session's error, without TensorFlow's traceback lines."""
    skipped = ("[[", "File ", "Detected at node", "Node:", "Graph execution error")
    lines = [line.strip() for line in error.message.splitlines()]
    reasons = [line for line in lines if line and not line.startswith(skipped) and not line.endswith(":")]
    op = f"op '{error.op.name}': " if getattr(error, "op", None) is not None else ""
    return op + (reasons[-1] if reasons else lines[0])


class FunctionRunner:
    """Explanations built inside a ``tf.function`` that calls a live model.

    Parameters
    ----------
    trace : callable
        ``trace(input_tensors) -> Traced``: calls the model on the (symbolic) inputs inside the function being
        traced (see :class:`deepexplain.adapters.keras.ModelAdapter`).
    input_specs : list of InputSpec or None
        What the explained inputs take; None when known only from the first arrays (a subclassed model, a callable).
    head : callable, optional
        ``head(input_tensors) -> list of tensors``: the explained inputs computed from the model's inputs, when they
        are a layer's output (``layer=``).
    model_specs : list of InputSpec or None
        Specs of the model's own inputs (those of ``head``); default ``input_specs``.
    jit_compile : bool
        Compile every explanation with XLA.
    """

    fixed_rows = None
    rows_are_samples = True  # a model's output has one row per sample

    def __init__(self, trace, input_specs, head=None, model_specs=None, jit_compile: bool = False, output_names=()):
        self._trace = trace
        self.input_specs = input_specs
        self._head = head
        self._model_specs = model_specs
        self.jit_compile = bool(jit_compile)
        self.output_names = list(output_names)
        self._head_functions: dict = {}

    @property
    def model_specs(self):
        return self._model_specs if self._head is not None else self.input_specs

    @property
    def multiple_inputs(self) -> bool | None:
        """Whether there are several explained inputs (None: not known before the first arrays)."""
        return None if self.input_specs is None else len(self.input_specs) > 1

    @property
    def multiple_model_inputs(self) -> bool | None:
        return None if self.model_specs is None else len(self.model_specs) > 1

    def compile(self, build: Build, extra_specs: Sequence[tf.TensorSpec], specs: Sequence[InputSpec]) -> Compiled:
        """Trace the model and the explanation into one concrete function over ``specs`` (None dimensions stay
        dynamic) and the extra inputs."""
        count = len(specs)

        def explanation(*args):
            traced = self._trace(list(args[:count]))
            return build(traced, lambda: list(args[count:]))

        signature = [tf.TensorSpec((None, *s.shape), tf.as_dtype(s.dtype)) for s in specs] + list(extra_specs)
        function = tf.function(explanation, jit_compile=self.jit_compile, autograph=False)
        call = flat_call(function.get_concrete_function(*signature), [spec.dtype for spec in signature])

        def run(arrays, extra_arrays):
            return [t.numpy() for t in call(*arrays, *extra_arrays)]

        return run

    def explained_inputs(self, arrays: list, rows: int) -> list:
        """The arrays fed to ``X``: the model inputs themselves, or the layer output they give (``layer=``)."""
        if self._head is None:
            return arrays
        key = tuple((a.shape[1:], a.dtype.str) for a in arrays)
        if key not in self._head_functions:
            signature = [tf.TensorSpec((None, *a.shape[1:]), tf.as_dtype(a.dtype)) for a in arrays]
            self._head_functions[key] = tf.function(self._head, autograph=False).get_concrete_function(*signature)
        head = self._head_functions[key]
        return _in_chunks(lambda part: [t.numpy() for t in head(*part)], arrays, rows)


def _in_chunks(function, arrays: list, rows: int) -> list:
    """``function(part) -> list of arrays`` on slices of at most ``rows`` rows, the results joined again."""
    parts = [function([a[lo : lo + rows] for a in arrays]) for lo in range(0, len(arrays[0]), rows)]
    return [np.concatenate([p[i] for p in parts]) for i in range(len(parts[0]))]
