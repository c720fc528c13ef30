"""The Explainer: one method compiled once on one (target, input) pair of a graph, run on numpy batches."""

from __future__ import annotations

import warnings

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from deepexplain.errors import (
    InvalidInputError,
    InvalidTypeError,
    NotConnectedError,
    UnsupportedOpError,
    describe_shape,
)
from deepexplain.selection import selection_weights
from deepexplain.tensorflow.methods.base import GradientMethod, shapes_match
from deepexplain.tensorflow.overrides import overridden_gradients
from deepexplain.tensorflow.topology import as_list, learning_phase_feeds, nonlinear_ops, path_ops

# Rows per session run when the caller gives no batch_size: as many as fit this many bytes of input.
DEFAULT_INPUT_BYTES_PER_RUN = 16 * 2**20

_EMBEDDING_HINT = (
    "If X holds token ids fed to an embedding lookup, explain the embedding output instead: pass the tensor the "
    "embedding returns as X and feed the embedded vectors as xs (then sum the attributions over the embedding "
    "dimension to get one score per token)."
)


class Explainer:
    """An attribution method compiled once for target ``T`` and input(s) ``X``; :meth:`run` adds no ops.

    Built by :meth:`deepexplain.tensorflow.DeepExplain.get_explainer`; not constructed directly.

    Parameters
    ----------
    method_name : str
        The registry name of the method (for messages).
    method : GradientMethod or PerturbationMethod
        The method's declaration.
    T : tf.Tensor
        Target tensor; its first dimension is the batch.
    X : tf.Tensor or list of tf.Tensor
        Input tensor(s) to attribute to.
    session : tf.compat.v1.Session
        Session that runs ``T``'s graph.
    progress : bool
        Default for showing a progress bar on long runs.
    """

    def __init__(self, method_name, method, T, X, session, progress=True):
        self.method_name = method_name
        self.method = method
        self.session = session
        self.progress = progress
        self._target = T
        self._inputs = as_list(X)
        self._multiple_inputs = isinstance(X, list | tuple)
        self._sample_shapes = [tuple(x.shape.as_list()[1:]) for x in self._inputs]
        self._fixed_rows = _fixed_batch_rows(self._inputs)
        needs_gradient = isinstance(method, GradientMethod) and method.needs_gradient
        self._path = path_ops(self._inputs, T, differentiable=needs_gradient)
        if not self._path:
            raise NotConnectedError(_not_connected_message(T, self._inputs, needs_gradient))
        if needs_gradient and method.covers_all_ops:  # checked before anything is added to the graph
            self._check_coverage(method)
        elif needs_gradient and method.rules:
            self._warn_uncovered_ops(method)
        extra_feeds = learning_phase_feeds(T)
        self._extra_tensors, self._extra_values = list(extra_feeds), list(extra_feeds.values())

        graph = T.graph
        with graph.as_default(), tf.name_scope("deepexplain"):
            self._weights = tf.compat.v1.placeholder(T.dtype, shape=None, name="target_weights")
            weighted = T * self._weights
            self._forward_fn = self._target_fn = None
            if T.shape.rank:
                row_values = tf.reduce_sum(tf.reshape(weighted, [tf.shape(weighted)[0], -1]), axis=1)
                self._forward_fn = session.make_callable(row_values, self._feed_list())
            self._gradient_fn = None
            if needs_gradient:
                self._gradient_fn = self._compile_gradients(method, weighted)

    # ------------------------------------------------------------------------------------------------------------
    # Compilation
    # ------------------------------------------------------------------------------------------------------------

    def _feed_list(self, reference_index=None):
        extra = [reference_index] if reference_index is not None else []
        return self._inputs + [self._weights] + extra + self._extra_tensors

    def _compile_gradients(self, method, weighted):
        self._reference_index = None
        if method.uses_references:
            self._reference_index = tf.compat.v1.placeholder(tf.int32, shape=[None], name="reference_index")
        settings = method.graph_settings(self._reference_index, self._path, self._inputs)
        with overridden_gradients(self._path, method.rules, settings):
            if method.seeds_relevance:  # relevance starts as the weighted output's value
                seed = tf.nn.relu(self._target) * self._weights if method.explains_positive_output else weighted
                gradients = tf.gradients(self._target, self._inputs, grad_ys=seed)
            else:
                gradients = tf.gradients(weighted, self._inputs)
        if all(g is None for g in gradients):
            raise NotConnectedError(_not_connected_message(self._target, self._inputs, True))
        self._gradient_tensors = [
            tf.zeros_like(x) if g is None else g for g, x in zip(gradients, self._inputs, strict=True)
        ]
        return self.session.make_callable(self._gradient_tensors, self._feed_list(self._reference_index))

    def _check_coverage(self, method):
        """Every op on the path needs a rule (or must only move values); otherwise an error, or with
        ``strict=False`` a warning and the op's gradient."""
        input_ops = {x.op for x in self._inputs}
        covered = set(method.rules) | method.gradient_rule_types | method.structural_types
        uncovered = [op for op in self._path if op.type not in covered and op not in input_ops]
        if not uncovered:
            return
        listing = ", ".join(f"'{op.name}' ({op.type})" for op in uncovered[:5]) + (" ..." if len(uncovered) > 5 else "")
        hint = ""
        if any(op.type == "Softmax" for op in uncovered):
            hint = " T should be the logits (the input of the softmax), not the probabilities."
        message = (
            f"{self.method_name}: no rule covers op(s) {listing} on the path from X to T.{hint} Supported op types: "
            f"{sorted(covered - {'Placeholder', 'PlaceholderWithDefault'})}."
        )
        if method.strict:
            raise UnsupportedOpError(f"{message} Pass strict=False to use their gradient instead (with a warning).")
        warnings.warn(f"{message} Their plain gradient is used (strict=False).", UserWarning, stacklevel=4)  # caller

    def _warn_uncovered_ops(self, method):
        for op in nonlinear_ops(self._path, self._inputs):
            if op.type not in method.rules and op.type not in method.gradient_rule_types:
                warnings.warn(
                    f"{self.method_name}: op '{op.name}' of type {op.type} on the path from X to T is nonlinear and "
                    f"has no {self.method_name} rule; its plain gradient is used, so the attributions may be wrong "
                    f"(supported nonlinearities: {sorted(set(method.rules) | method.gradient_rule_types)})",
                    UserWarning,
                    stacklevel=4,  # the caller of get_explainer
                )

    # ------------------------------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------------------------------

    def run(self, xs, ys=None, batch_size=None, progress=None, neuron_selection=None):
        """Attributions of the weighted target ``sum(ys * T)`` for the samples ``xs``.

        Parameters
        ----------
        xs : ndarray or list of ndarray
            Input batch (one array per input tensor when ``X`` is a list), first dimension the samples.
        ys : ndarray, optional
            Weights of ``T``'s units per sample, shaped ``(N, *T.shape[1:])``, e.g. one-hot targets. Default: all
            units of ``T`` summed.
        batch_size : int, optional
            Maximum rows per session run. Sampling methods put their steps/samples into the batch dimension, so this
            bounds memory whatever the number of steps. Results do not depend on it. Default: as many rows as fit
            16 MB of input.
        progress : bool, optional
            Show a progress bar when the run takes more than ~2 s (default: the explainer's setting).
        neuron_selection : 'max_activation', 'all', int or sequence of int, optional
            iNNvestigate's way to pick the explained output instead of ``ys``: each sample's largest output, the sum
            of all outputs, one output index (into a sample's flattened ``T``) for every sample, or one per sample.

        Returns
        -------
        ndarray or list of ndarray
            Attributions shaped like ``xs`` (a list when ``X`` is a list), except for shapley_sampling with
            ``sampling_dims``, shaped ``(N, *sampled dims)`` as in DeepExplain.
        """
        xs = self._check_xs(xs)
        rows_per_run = self._rows_per_run(batch_size, xs)
        if neuron_selection is not None:
            ys = self._selected_neurons(neuron_selection, ys, xs, rows_per_run)
        ys = self._check_ys(ys, len(xs[0]))
        show_progress = self.progress if progress is None else bool(progress)
        if isinstance(self.method, GradientMethod):
            if self.method.needs_gradient:
                result = self._attribute_gradients(xs, ys, rows_per_run, show_progress)
            else:
                rng = np.random.default_rng(getattr(self.method, "seed", None)) if self.method.is_random else None
                result = self.method.without_gradient(xs, rng)
        else:
            self._require_forward()
            engine_rows = rows_per_run if (batch_size is not None or self._fixed_rows) else None
            result = self.method.attribute(self._forward(ys), xs, engine_rows, show_progress)
        return result if self._multiple_inputs else result[0]

    def completeness_error(self, xs, ys=None, batch_size=None, attributions=None):
        """Per sample, ``sum(attributions) - (f(x) - mean_m f(reference_m))`` with ``f = sum(ys * T)``.

        Zero (to float precision) for DeepLIFT and DeepSHAP, tends to zero with more steps for integrated gradients
        and in expectation for expected gradients.

        Parameters
        ----------
        xs, ys, batch_size
            As for :meth:`run`.
        attributions : ndarray or list of ndarray, optional
            The result of ``run(xs, ys)``; computed when not given.

        Returns
        -------
        ndarray
            ``(N,)`` completeness error per sample.

        Raises
        ------
        InvalidInputError
            When the method does not promise completeness.
        """
        if not getattr(self.method, "promises_completeness", False):
            raise InvalidInputError(
                f"{self.method_name} does not promise completeness; the check exists for intgrad, deeplift, "
                "deepshap and expected_gradients"
            )
        self._require_forward()
        xs = self._check_xs(xs)
        ys = self._check_ys(ys, len(xs[0]))
        if attributions is None:
            attributions = self.run(xs if self._multiple_inputs else xs[0], ys, batch_size)
        n = len(xs[0])
        forward = self._forward(ys, self._rows_per_run(batch_size, xs))
        references = self.method.completeness_references(xs)
        count = len(references[0])
        f_x = forward(xs, np.arange(n))
        reference_rows = [np.broadcast_to(r[None], (n, *r.shape)).reshape((-1,) + r.shape[1:]) for r in references]
        f_ref = forward(reference_rows, np.repeat(np.arange(n), count)).reshape(n, count).mean(axis=1)
        total = sum(np.asarray(a, dtype=np.float64).reshape(n, -1).sum(axis=1) for a in as_list(attributions))
        return total - (f_x - f_ref)

    # ------------------------------------------------------------------------------------------------------------
    # Running
    # ------------------------------------------------------------------------------------------------------------

    def _selected_neurons(self, selection, ys, xs, rows_per_run) -> np.ndarray:
        if ys is not None:
            raise InvalidInputError("pass either ys or neuron_selection, not both")
        self._require_forward()
        n, shape = len(xs[0]), tuple(self._target.shape.as_list()[1:])
        if None in shape:
            raise InvalidInputError(
                f"neuron_selection needs T with a static shape; T ({self._target.name}) has shape "
                f"{describe_shape(self._target.shape)}: pass ys instead"
            )

        def outputs():
            if self._target_fn is None:  # made on first use: most explainers never need T's values
                self._target_fn = self.session.make_callable(self._target, self._feed_list())
            size = self._fixed_rows or rows_per_run
            rows = [[x[lo : lo + size] for x in xs] for lo in range(0, n, size)]
            return np.concatenate([self._call(self._target_fn, r, self._ones())[: len(r[0])] for r in rows])

        return selection_weights(selection, n, shape, self._target.dtype.as_numpy_dtype, outputs)

    def _require_forward(self):
        if self._forward_fn is None:
            raise InvalidInputError(
                f"{self.method_name} needs T with a batch dimension; T ({self._target.name}) is a scalar"
            )

    def _forward(self, ys, rows_per_run=None):
        """``forward(rows, owners) -> (k,)``: the weighted target of each row, for the perturbation engine."""

        def forward(rows, owners):
            k = len(owners)
            size = rows_per_run or self._fixed_rows or k
            values = np.empty(k, dtype=np.float64)
            for lo in range(0, k, size):
                hi = min(k, lo + size)
                weights = self._ones() if ys is None else ys[owners[lo:hi]]
                values[lo:hi] = self._call(self._forward_fn, [r[lo:hi] for r in rows], weights)[: hi - lo]
            return values

        return forward

    def _attribute_gradients(self, xs, ys, rows_per_run, progress):
        method, n_total = self.method, len(xs[0])
        steps = method.rows_per_sample
        group = max(1, (rows_per_run - method.reference_rows) // steps)
        rng = np.random.default_rng(getattr(method, "seed", None)) if method.is_random else None
        results = [np.empty(x.shape, dtype=np.result_type(x.dtype, np.float32)) for x in xs]
        total_runs = -(-n_total * steps // max(1, rows_per_run - method.reference_rows))
        with tqdm(total=total_runs, delay=2, disable=not progress, desc=self.method_name, unit="run") as bar:
            for start in range(0, n_total, group):
                stop = min(n_total, start + group)
                expansion = method.expand([x[start:stop] for x in xs], rng)
                gradients = self._gradients_of_rows(expansion, ys, start, stop, rows_per_run, bar)
                for i, (g, factor) in enumerate(zip(gradients, expansion.factors, strict=True)):
                    g = g.reshape((steps, stop - start) + g.shape[1:])
                    results[i][start:stop] = method.finalize(_weighted_sum(expansion.weights, g, factor))
        return results

    def _gradients_of_rows(self, expansion, ys, start, stop, rows_per_run, bar):
        points = expansion.points
        total = len(points[0])
        outputs = [np.empty(p.shape, dtype=np.result_type(p.dtype, np.float32)) for p in points]
        if ys is not None:
            ys_group = ys[start:stop]
            y_rows = np.broadcast_to(ys_group[None], (total // len(ys_group), *ys_group.shape))
            y_rows = y_rows.reshape((total,) + ys_group.shape[1:])
        for lo, hi in _chunks(total, expansion.reference_ids, rows_per_run):
            rows = [p[lo:hi] for p in points]
            weights = self._ones() if ys is None else y_rows[lo:hi]
            extra = []
            if expansion.references is not None:
                rows, weights, index = self._append_references(rows, weights, expansion, lo, hi, ys is not None)
                extra = [index]
            for out, g in zip(outputs, self._call(self._gradient_fn, rows, weights, extra), strict=True):
                out[lo:hi] = g[: hi - lo]
            bar.update(1)
        return outputs

    def _append_references(self, rows, weights, expansion, lo, hi, weighted):
        """Rows ``lo:hi`` followed by padding (to a fixed batch size) and the references they need, which go last so
        that rules can read a single reference as the last row; weights padded with zeros; each row's reference
        row index (padding and references refer to themselves)."""
        used, position = np.unique(expansion.reference_ids[lo:hi], return_inverse=True)
        count = hi - lo
        pad = self._fixed_rows - count - len(used) if self._fixed_rows else 0
        rows = [
            np.concatenate([r, np.zeros((pad, *r.shape[1:]), r.dtype), ref[used]])
            for r, ref in zip(rows, expansion.references, strict=True)
        ]
        if weighted:
            weights = np.concatenate([weights, np.zeros((pad + len(used), *weights.shape[1:]), weights.dtype)])
        first = count + pad
        index = np.concatenate([position.reshape(-1) + first, np.arange(count, first + len(used))])
        return rows, weights, index

    def _call(self, fn, rows, weights, extra=()):
        """One session run on ``rows`` (padded to the input's fixed batch size, if it has one)."""
        count = len(rows[0])
        if self._fixed_rows and count != self._fixed_rows:
            pad = self._fixed_rows - count
            rows = [np.concatenate([r, np.zeros((pad,) + r.shape[1:], r.dtype)]) for r in rows]
            if np.ndim(weights) and len(weights) == count:
                weights = np.concatenate([weights, np.zeros((pad,) + weights.shape[1:], weights.dtype)])
            extra = [np.concatenate([e, np.arange(count, count + pad)]) for e in extra]
        return fn(*rows, weights, *extra, *self._extra_values)

    def _ones(self):
        return np.ones((1,) * max(1, self._target.shape.rank or 0), dtype=self._target.dtype.as_numpy_dtype)

    # ------------------------------------------------------------------------------------------------------------
    # Validation (before any session run)
    # ------------------------------------------------------------------------------------------------------------

    def _check_xs(self, xs) -> list:
        if self._multiple_inputs:
            if not isinstance(xs, list | tuple):
                raise InvalidInputError(
                    f"X is a list of {len(self._inputs)} tensors, so xs must be a list of {len(self._inputs)} arrays; "
                    f"got {type(xs).__name__}"
                )
            if len(xs) != len(self._inputs):
                raise InvalidInputError(
                    f"List of input tensors and input data have different lengths ({len(self._inputs)} and {len(xs)})"
                )
            arrays = list(xs)
        else:
            arrays = [xs]
        checked = []
        for array, x, shape in zip(arrays, self._inputs, self._sample_shapes, strict=True):
            try:
                array = np.asarray(array, dtype=x.dtype.as_numpy_dtype)
            except (TypeError, ValueError) as error:
                raise InvalidTypeError(f"xs for {x.name} cannot be converted to {x.dtype.name}: {error}") from None
            if array.ndim != len(shape) + 1 or not shapes_match(array.shape[1:], shape):
                raise InvalidInputError(
                    f"xs for {x.name} has shape {describe_shape(array.shape)}, but X expects "
                    f"{describe_shape(x.shape)} (first dimension: samples)"
                )
            checked.append(array)
        counts = [len(a) for a in checked]
        if len(set(counts)) > 1:
            raise InvalidInputError(
                "Evaluation in batches requires all inputs to have the same number of samples (the first "
                f"dimension); got {counts}"
            )
        return checked

    def _check_ys(self, ys, n):
        if ys is None:
            return None
        if self._target.shape.rank == 0:
            raise InvalidInputError(f"ys cannot weight T ({self._target.name}): T is a scalar with no batch dimension")
        ys = np.asarray(ys, dtype=self._target.dtype.as_numpy_dtype)
        if ys.ndim == 0 or len(ys) != n:
            raise InvalidInputError(
                "When provided, ys must have the same batch size as xs "
                f"(xs has batch size {n} and ys {len(ys) if ys.ndim else 'a scalar'})"
            )
        expected = tuple(self._target.shape.as_list()[1:])
        if not shapes_match(ys.shape[1:], expected):
            raise InvalidInputError(
                f"ys has shape {describe_shape(ys.shape)}, but T ({self._target.name}) has shape "
                f"{describe_shape(self._target.shape)}: ys must be shaped (N, *T.shape[1:])"
            )
        return ys

    def _rows_per_run(self, batch_size, xs) -> int:
        minimum = 2 if self._uses_references() else 1
        if batch_size is not None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
                raise InvalidInputError(f"batch_size must be a positive integer or None; got {batch_size!r}")
        if self._fixed_rows:
            rows = self._fixed_rows
            if rows < minimum:
                raise InvalidInputError(
                    f"{self.method_name} runs each sample's reference input in the same batch, but X has a fixed batch "
                    f"dimension of {rows}; build X with batch dimension None"
                )
            return rows
        if batch_size is not None:
            if batch_size < minimum:
                raise InvalidInputError(
                    f"batch_size of {self.method_name} must be at least {minimum} (a row and its reference input); "
                    f"got {batch_size}"
                )
            return int(batch_size)
        row_bytes = sum(int(np.prod(x.shape[1:])) * x.itemsize for x in xs) or 1
        return max(minimum, DEFAULT_INPUT_BYTES_PER_RUN // row_bytes)

    def _uses_references(self):
        return isinstance(self.method, GradientMethod) and self.method.uses_references


def _weighted_sum(weights: np.ndarray, gradients: np.ndarray, factor) -> np.ndarray:
    """``sum_r weights[r] * factor[r] * gradients[r]`` over the leading (step) axis, without BLAS (whose thread
    start-up costs more than this sum) and without a full-size product when the factor is the same for every step."""
    constant_factor = factor is None or factor.shape[0] == 1
    total = np.zeros(gradients.shape[1:], dtype=gradients.dtype)
    for weight, gradient, row_factor in zip(
        weights, gradients, [None] * len(weights) if constant_factor else factor, strict=True
    ):
        total += gradients.dtype.type(weight) * (gradient if row_factor is None else gradient * row_factor)
    if factor is not None and constant_factor:
        total *= factor[0]
    return total


def _chunks(total: int, reference_ids, rows_per_run: int):
    """``(lo, hi)`` ranges of rows such that each range plus the distinct references it needs fits one run."""
    lo = 0
    while lo < total:
        hi = min(total, lo + rows_per_run)
        if reference_ids is not None:
            hi = min(hi, lo + rows_per_run - 1)
            while hi - lo + len(np.unique(reference_ids[lo:hi])) > rows_per_run:
                hi = lo + rows_per_run - len(np.unique(reference_ids[lo:hi]))
        yield lo, hi
        lo = hi


def _fixed_batch_rows(inputs) -> int | None:
    sizes = {x.shape.as_list()[0] for x in inputs if x.shape.rank}
    sizes.discard(None)
    if len(sizes) > 1:
        raise InvalidInputError(f"The input tensors have different fixed batch sizes: {sorted(sizes)}")
    return sizes.pop() if sizes else None


def _names(tensors) -> str:
    return ", ".join(t.name for t in tensors)


def _not_connected_message(target, inputs, needs_gradient: bool) -> str:
    integer_inputs = [x.name for x in inputs if not x.dtype.is_floating]
    if needs_gradient and integer_inputs:
        reason = f"X ({', '.join(integer_inputs)}) is not a floating-point tensor, so no gradient can flow into it"
    elif needs_gradient:
        reason = (
            f"T ({target.name}) has no differentiable path from X ({_names(inputs)}) (only through an integer "
            "cast, an argmax or an index)"
        )
    else:
        reason = f"T ({target.name}) does not depend on X ({_names(inputs)})"
    return f"{reason}. {_EMBEDDING_HINT}"
