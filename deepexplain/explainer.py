"""The Explainer: one attribution method compiled once for one model (or one ``T``/``X`` pair of a graph).

Every method runs through here, whatever the model: the method's declaration (:mod:`deepexplain.tensorflow.methods`)
says which rows to evaluate and which backward rules to use, the runner (:mod:`deepexplain.tensorflow.runners`)
says where the model's tensors live, and this module does the rest once for all: it validates the inputs and the
target before anything runs, builds the explanation graph (rules active only while its ``tf.gradients`` is built),
compiles it once per kind and input signature, and runs the rows in calls of at most ``batch_size`` rows.
"""

from __future__ import annotations

import threading

import numpy as np
import tensorflow as tf
from tqdm.auto import tqdm

from deepexplain import batching, targets
from deepexplain.errors import (
    InvalidInputError,
    InvalidTypeError,
    NotConnectedError,
    UnsupportedOpError,
    warn,
)
from deepexplain.inputs import InputSpec, as_arrays
from deepexplain.tensorflow import ops
from deepexplain.tensorflow.activations import find_activations, modulating_factor, rules_for
from deepexplain.tensorflow.graph import Path, called_layer, describe_ops
from deepexplain.tensorflow.methods import check_method, declaration_of, make_method, method_name
from deepexplain.tensorflow.methods.base import Expansion, GradientMethod
from deepexplain.tensorflow.methods.gradient import noisy_copies
from deepexplain.tensorflow.normalisation import Normalisation, find_normalisations
from deepexplain.tensorflow.overrides import has_custom_gradient, overridden_gradients
from deepexplain.tensorflow.runners import FunctionRunner, SessionRunner

_EMBEDDING_HINT = (
    "If X holds token ids fed to an embedding lookup, explain the embedding output instead: pass the tensor the "
    "embedding returns as X and feed the embedded vectors as xs (then sum the attributions over the embedding "
    "dimension to get one score per token); with a Keras model, pass layer='<the embedding layer>'."
)


class Explainer:
    """An attribution method compiled once for a model; numpy in, numpy out.

    Parameters
    ----------
    method : str or GradientMethod subclass
        A name of :data:`deepexplain.METHODS` ('saliency', 'grad*input', 'intgrad', 'deeplift', 'lrp.epsilon', ...),
        or a declaration class of one's own (:class:`deepexplain.tensorflow.methods.base.GradientMethod`).
        Positional only, so that ``method=`` is free for the base method of ``noise_tunnel``.
    model : keras.Model, tf_keras.Model, tf.Module, callable or path
        A Keras 3 or tf_keras model (Sequential, functional or subclassed), any callable that maps a batch to
        outputs (a ``tf.function``), or the path of a saved model (``.keras``, ``.h5``, SavedModel directory). The
        live model is explained: its variables are read at every run, never copied, so after ``set_weights`` or more
        training the explainer explains the new weights.
    output : int or str, optional
        Which output of a model with several outputs (index or name). Default: the first.
    layer : str or layer, optional
        Attribute to this layer's output instead of the model input (e.g. ``'embedding'`` for per-token,
        per-dimension attributions of a text model); ``xs`` are still the model's inputs.
    jit_compile : bool
        Compile the explanation with XLA (``tf.function(jit_compile=True)``); the numbers are the same.
    progress : bool
        Show a progress bar on runs longer than ~2 s.
    taps : sequence of str or layer, optional
        Layers whose outputs a conditional backward pass reads and masks (:class:`deepexplain.crp.CondAttribution`
        builds its explainers so); nothing is compiled at construction then.
    **method_kwargs
        The method's arguments (``steps``, ``baseline``, ``epsilon``, ...; see the README's table).

    Notes
    -----
    The explanation is traced once per input signature (known from a functional model, else from the first
    ``xs``; a dimension that differs between calls, such as a sequence length, becomes dynamic instead of being
    traced again) and once more per callable ``target``; ``run`` adds nothing after that. Methods of the LRP and
    DeepLIFT families explain the logits of a model whose output is a softmax (their rules need them; the argmax is
    the same); other methods explain the output as it is, with a warning that names :func:`strip_softmax`.

    Examples
    --------
    >>> explainer = deepexplain.Explainer('intgrad', model, steps=50)      # doctest: +SKIP
    >>> a = explainer.run(xs, target='max')                                  # doctest: +SKIP
    """

    def __init__(self, method, /, model=None, *, output=None, layer=None, jit_compile=False, progress=True, taps=(),
                 **method_kwargs):  # fmt: skip
        check_method(method, method_kwargs)  # before anything else: no model is loaded or traced for a typo
        self.method_name = method_name(method)
        self._declaration = declaration_of(method)
        self.progress = bool(progress)
        self.method_kwargs = dict(method_kwargs)
        declaration = self._declaration
        explains_logits = getattr(declaration, "explains_logits", False)
        if isinstance(model, SessionRunner | FunctionRunner):
            if output is not None or layer is not None or jit_compile:
                raise InvalidInputError("output=, layer= and jit_compile= apply to models, not to graph tensors")
            if getattr(declaration, "uses_layer", False) and getattr(model, "layer", None) is None:
                raise InvalidInputError(
                    f"{self.method_name} reads a layer's feature maps: pass layer=<the tensor of the feature maps, "
                    "(N, H, W, C)>"
                )
            self.runner, self.adapter, self._default_target = model, None, "all"
        else:
            from deepexplain.adapters.keras import ModelAdapter

            if model is None:
                raise InvalidTypeError("Explainer needs a model: Explainer(method, model, **method_kwargs)")
            tap = self.method_name if getattr(declaration, "uses_layer", False) else None
            wraps = getattr(declaration, "wraps_method", False)  # noise goes onto the model inputs: no cut here
            self.adapter = ModelAdapter(model, output=output, layer=None if wraps else layer, tap=tap, taps=taps)
            self.runner = self.adapter.runner(explain_logits=explains_logits, jit_compile=jit_compile)
            self._default_target = "max"
        self.model = getattr(self.adapter, "model", None)
        graph_target = getattr(self.runner, "target", None)
        self._output_label = f"T ({graph_target.name})" if graph_target is not None else "the output"
        self._lock = threading.RLock()
        self._compiled: dict = {}
        self._warned: set = set()
        self._specs = self.runner.input_specs
        self._multiple_inputs = self.runner.multiple_inputs  # None: known from the first xs
        shapes = [s.shape for s in self._specs] if self._specs is not None else [None]
        self.method = make_method(declaration, shapes, self.method_kwargs)  # argument errors before any tracing
        self._method_shapes = shapes
        self._inner = None
        if self._layout().whole_batch:
            self._check_whole_batch_method()
        if getattr(self.method, "wraps_method", False):  # the base method, compiled once, on the same model
            inner_model = self.runner if self.adapter is None else self.adapter.model
            self._inner = Explainer(self.method.method, inner_model, output=output, layer=layer,
                                    jit_compile=jit_compile, progress=False, **self.method.method_kwargs)  # fmt: skip
        elif self._specs is not None and not taps and not getattr(self.runner, "taps", ()):
            self._compile_default()

    # ------------------------------------------------------------------------------------------------------------
    # Public API
    # ------------------------------------------------------------------------------------------------------------

    def run(self, xs, target=None, batch_size=None, progress=None, *, ys=None, neuron_selection=None):
        """Attributions for the batch ``xs``.

        Parameters
        ----------
        xs : ndarray or list of ndarray
            Model input(s) (one array per input tensor when there are several), first dimension the samples.
        target : optional
            Which output is explained (:mod:`deepexplain.targets`): 'max' (each sample's largest output; alias
            'max_activation'), 'all' (the sum of all outputs), an int (that unit of a sample's flattened output),
            one int per sample, weights shaped like the output (DeepExplain's ``ys``; a float array passed here is
            taken as such, so ``run(xs, ys, batch_size)`` of the original API works), or a callable mapping the output
            tensor to one score per sample (compiled once per callable object: reuse the same function). Default:
            'max' for a model, the sum of ``T`` for a DeepExplain ``T``.
        batch_size : int, optional
            Maximum rows per model call. Methods put their steps/samples/perturbations into the batch dimension, so
            this bounds memory whatever the method needs; results do not depend on it. Default: as many rows as fit
            16 MB of input.
        progress : bool, optional
            Show a progress bar when the run takes more than ~2 s (default: the explainer's setting).
        ys : ndarray, optional
            Weights of the output units per sample, shaped ``(N, *output.shape[1:])`` (DeepExplain's argument).
        neuron_selection : optional
            iNNvestigate's name for ``target``.

        Returns
        -------
        ndarray or list of ndarray
            Attributions shaped like ``xs`` (like the layer's output with ``layer``); a list for several inputs.
            shapley_sampling with ``sampling_dims`` gives ``(N, *sampled dims)`` as in DeepExplain.
        """
        request, inputs, specs, method, rows = self._prepare(xs, target, ys, neuron_selection, batch_size)
        n = len(inputs[0])
        show_progress = self.progress if progress is None else bool(progress)
        if getattr(method, "needs_fit", False) and not method.fitted:
            raise InvalidInputError(f"{self.method_name} learns from data first: call explainer.fit(data) before run")
        if getattr(method, "uses_layer", False):  # one map per sample, whatever the inputs
            return self._warn_non_finite(self._layer_maps(method, request, inputs, specs, rows, show_progress))
        if getattr(method, "reads_attention", False):  # per token, from the model's attention probabilities
            compiled = self._compile("attention", None, specs)
            parts = [[a[: hi - lo] for a in self._call(compiled, [x[lo:hi] for x in inputs])]
                     for lo, hi in batching.chunks(n, self.runner.fixed_rows or rows)]  # fmt: skip
            return method.rollout([np.concatenate(layer) for layer in zip(*parts, strict=True)])
        compiled = None
        if self._inner is not None:
            result = self._noise_tunnel(method, request, inputs, specs, rows, show_progress)
        elif isinstance(method, GradientMethod) and not method.needs_gradient:
            rng = np.random.default_rng(getattr(method, "seed", None)) if method.is_random else None
            result = method.without_gradient(inputs, rng)
        elif isinstance(method, GradientMethod):
            compiled = self._compile("gradients", request.score, specs)
            request.check(n, compiled.output_shape, self._output_label)
            result = self._attribute_gradients(method, compiled, request, inputs, specs, rows, show_progress)
        else:
            forward = self._forward(request, inputs, specs, rows)
            result = method.attribute(forward, inputs, rows, show_progress)
        if not (compiled is not None and _relevance_checked(method, compiled)):  # else _check_relevance said it
            self._warn_non_finite(result)
        if self._inner is not None:
            return result if self._multiple_inputs or len(result) > 1 else result[0]
        return result if self._multiple_inputs else result[0]

    def _warn_non_finite(self, result):
        """Warn (never silently) when finite inputs gave NaN or inf attributions, naming the samples; ``result``
        is returned as it is."""
        arrays = result if isinstance(result, list | tuple) else [result]
        bad = np.zeros(len(arrays[0]), bool)
        for a in arrays:
            a = np.asarray(a)
            if a.dtype.kind in "fc":
                bad |= ~np.isfinite(a.reshape(len(a), -1)).all(axis=1)
        if bad.any():
            hint = " (the model's output is not finite there)"
            if getattr(self.method, "divides_by_activations", False):
                cure = self._cure("an epsilon rule such as lrp.epsilon, with its biases, is stable there")
                hint = f" (relevance divided by near-zero pre-activations, e.g. a convolution and batch norm; {cure})"
            self._warn_non_finite_rows(bad, hint)
        return result

    def _warn_non_finite_rows(self, bad: np.ndarray, hint: str) -> None:
        rows = np.flatnonzero(bad)
        warn(
            f"{self.method_name} gave non-finite attributions (NaN or inf) for {len(rows)} of {len(bad)} "
            f"sample(s) (first: sample {rows[0]}) from finite inputs{hint}",
            RuntimeWarning,
        )

    def _cure(self, otherwise: str) -> str:
        """What to do when a method's denominators vanish: keep the biases, or ``otherwise``."""
        if getattr(self.method, "bias", True) is False:
            return (
                "bias=False leaves the biases (batch norm's shift too) out of the denominators, which then vanish: "
                "keep bias=True"
            )
        return otherwise

    def fit(self, data, batch_size=None, progress=None):
        """Learn what the method needs from ``data`` in one streaming pass (methods with ``needs_fit``: pattern
        estimators), then explain with it.

        Parameters
        ----------
        data : ndarray, list of ndarray, tf.data.Dataset or iterable of batches
            Model inputs (one array per input for several); batches of a dataset or iterable are used as they come.
        batch_size : int, optional
            Rows per model call when ``data`` is an array (default: the explainer's row budget).
        progress : bool, optional
            Show a progress bar (default: the explainer's setting).

        Returns
        -------
        Explainer
            ``self``, fitted.
        """
        method = self.method
        if not getattr(method, "needs_fit", False):
            raise InvalidInputError(f"{self.method_name} learns nothing from data: call run(xs) directly")
        batching.check_batch_size(batch_size)
        show = self.progress if progress is None else bool(progress)
        with self._lock:
            rows = None
            for batch in tqdm(batching.batches(data, batch_size or 1024), disable=not show, desc="fit", delay=2):
                arrays = self._model_arrays(batch)
                rows = rows or self._rows(batch_size, arrays)
                inputs = self.runner.explained_inputs(arrays, rows)
                specs = self._specs_for(inputs)
                method = self._method_for(specs)
                compiled = self._compile("fit", None, specs)
                for lo, hi in batching.chunks(len(inputs[0]), rows):
                    valid = np.ones(hi - lo, np.float32)  # padding rows (a fixed batch size) get 0
                    method.fit_batch(self._call(compiled, [x[lo:hi] for x in inputs], [valid]))
            if rows is None:
                raise InvalidInputError("data holds no samples to fit on")
            method.fit_end()
            # explanations compiled before depended on the unfitted statistics
            self._compiled = {k: v for k, v in self._compiled.items() if k[0] == "fit"}
        return self

    def scores_of(self, xs, target=None, *, ys=None, batch_size=None):
        """The explained score of perturbed copies of ``xs``, for the metrics (:mod:`deepexplain.metrics`).

        Returns
        -------
        inputs : list of ndarray
            ``xs`` as the arrays the model is fed.
        forward : callable
            ``forward(rows, owners) -> (k,)``: the score of each row of ``rows`` (a list of arrays, one per input)
            for the target of sample ``owners[i]`` of ``xs`` ('max': that clean sample's largest output).
        """
        request, inputs, specs, _, rows = self._prepare(xs, target, ys, None, batch_size)
        return inputs, self._forward(request, inputs, specs, rows)

    def target_weights(self, xs, target=None, *, ys=None, batch_size=None):
        """The target of each sample of ``xs`` as weights of the output units ``(N, *output.shape[1:])`` ('max'
        resolved on ``xs`` itself), to explain modified copies of the samples for the same output; None for 'all'
        and for a callable target, which need no resolving."""
        request, inputs, specs, _, rows = self._prepare(xs, target, ys, None, batch_size)
        return self._weights_of(request, inputs, specs, rows)

    def _weights_of(self, request, inputs, specs, rows, compiled=None):
        """The weights of the output units fed with each sample's rows, ``(N, *output.shape[1:])`` ('max' resolved
        on ``inputs`` themselves, in calls of at most ``rows`` rows); None for 'all' and for a callable target.
        ``compiled`` gives the output's shape and dtype (default: the outputs' compilation)."""
        if request.score is not None or request.kind == "all":
            return None
        compiled = compiled or self._compile("outputs", None, specs)
        return request.weights(len(inputs[0]), compiled.output_shape, compiled.weights_dtype,
                               lambda: self._outputs(request, inputs, specs, rows))  # fmt: skip

    def inputs_of(self, xs, batch_size=None) -> tuple:
        """``(arrays, signature, rows per call)`` of ``xs``, checked before anything runs: what a conditional
        program (:mod:`deepexplain.crp`) is run on with :meth:`run_program`."""
        inputs, specs, _, rows = self._checked_inputs(xs, batch_size)
        return inputs, specs, rows

    def run_program(self, program, rows: list, feeds: list, specs) -> list:
        """The outputs of a conditional program (compiled once per program and signature) on ``rows`` (one array
        per input) and its extra inputs ``feeds``."""
        return self._call(self._compile("conditional", program, specs), rows, feeds)

    def completeness_error(self, xs, target=None, batch_size=None, *, ys=None, attributions=None):
        """Per sample, ``sum(attributions) - (f(x) - mean_m f(reference_m))`` with ``f`` the explained score.

        Zero (to float precision) for DeepLIFT and DeepSHAP, tends to zero with more steps for integrated gradients
        and in expectation for expected gradients.

        Parameters
        ----------
        xs, target, batch_size, ys
            As for :meth:`run`.
        attributions : ndarray or list of ndarray, optional
            The result of ``run(xs, target)``; computed when not given.

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
        if self._layout().whole_batch:
            raise InvalidInputError(
                f"{self.runner.whole_batch_description()}: there is no output per sample to compare each sample's "
                "attributions with (their total is sum(T(xs)) - sum(T(references)))"
            )
        request, inputs, specs, method, rows = self._prepare(xs, target, ys, None, batch_size)
        n = len(inputs[0])
        if attributions is None:
            attributions = self.run(xs, target=None if ys is not None else target, batch_size=batch_size, ys=ys)
        forward = self._forward(request, inputs, specs, rows)
        references = method.completeness_references(inputs)
        count = len(references[0])
        f_x = forward(inputs, np.arange(n))
        reference_rows = [np.broadcast_to(r[None], (n, *r.shape)).reshape((-1,) + r.shape[1:]) for r in references]
        f_ref = forward(reference_rows, np.repeat(np.arange(n), count)).reshape(n, count).mean(axis=1)
        attributions = attributions if isinstance(attributions, list | tuple) else [attributions]
        total = sum(np.asarray(a, dtype=np.float64).reshape(n, -1).sum(axis=1) for a in attributions)
        return total - (f_x - f_ref)

    # ------------------------------------------------------------------------------------------------------------
    # Inputs, signatures, method instances
    # ------------------------------------------------------------------------------------------------------------

    def _prepare(self, xs, target, ys, neuron_selection, batch_size):
        """Everything checked before the model runs: ``(target, explained input arrays, signature, method
        instance, rows per call)``."""
        request = targets.parse(target, ys, neuron_selection, self._default_target)
        if self._layout().whole_batch:
            self._check_whole_batch_run(request, batch_size)
        inputs, specs, method, rows = self._checked_inputs(xs, batch_size, request)
        return request, inputs, specs, method, rows

    def _checked_inputs(self, xs, batch_size, request=None) -> tuple:
        """``(explained input arrays, signature, method instance, rows per call)`` of ``xs``, checked (and against
        ``request``'s per-sample target) before the model runs."""
        arrays = self._model_arrays(xs)
        if request is not None:
            request.check(len(arrays[0]))
        batching.check_batch_size(batch_size)
        inputs = self.runner.explained_inputs(arrays, self._rows(batch_size, arrays))
        specs = self._specs_for(inputs)
        method = self._method_for(specs)
        return inputs, specs, method, self._rows(batch_size, inputs, method)

    def _model_arrays(self, xs) -> list:
        specs, multiple = self.runner.model_specs, self.runner.multiple_model_inputs
        if specs is None:  # a model that says nothing of its inputs before it runs
            multiple = isinstance(xs, list | tuple) and len(xs) > 1 and all(hasattr(a, "shape") for a in xs)
            specs = [_spec_from_data(a, i) for i, a in enumerate(xs if multiple else [xs])]
        return as_arrays(xs, specs, multiple=multiple)

    def _specs_for(self, inputs: list) -> tuple:
        """The signature the explanation is compiled for: the runner's, or one relaxed from the data (a dimension
        seen with two sizes becomes dynamic)."""
        if self._specs is not None:
            return tuple(self._specs)
        with self._lock:
            seen = getattr(self, "_data_specs", None)
            data = [_spec_from_data(a, i) for i, a in enumerate(inputs)]
            if self._multiple_inputs is None:
                self._multiple_inputs = len(data) > 1
            if seen is None or len(seen) != len(data):
                self._data_specs = tuple(data)
            else:
                self._data_specs = tuple(_relaxed(old, new) for old, new in zip(seen, data, strict=True))
            return self._data_specs

    def _method_for(self, specs):
        shapes = [s.shape for s in specs]
        if len(shapes) != len(self._method_shapes) or any(
            old is None and new is not None for old, new in zip(self._method_shapes, shapes, strict=True)
        ):
            with self._lock:
                self.method = make_method(self._declaration, shapes, self.method_kwargs)
                self._method_shapes = shapes
        return self.method

    def _check_whole_batch_method(self) -> None:
        """A ``T`` whose rows are not the samples' is a function of the whole batch: it is explained by gradient
        methods, with all samples fed together (one run per step of the method) and DeepLIFT's references as a
        batch of their own (as DeepExplain runs them); what reads one output per sample is refused."""
        method = self.method
        per_sample = (
            not isinstance(method, GradientMethod)
            or any(getattr(method, flag, False) for flag in ("uses_layer", "reads_attention", "needs_fit",
                                                              "wraps_method"))
            or bool(method.row_input_specs)
        )  # fmt: skip
        if per_sample:
            raise InvalidInputError(
                f"{self.runner.whole_batch_description()}; {self.method_name} needs one output per sample: make the "
                "first dimension of T the batch of X"
            )

    def _check_whole_batch_run(self, request, batch_size) -> None:
        """The target and batch size a ``T`` whose rows are not the samples' allows (see
        :meth:`_check_whole_batch_method`): its sum or weights of its units, and all samples in one run unless
        ``batch_size`` is ``T``'s first dimension (DeepExplain's rule)."""
        if request.kind not in ("all", "weights"):
            raise InvalidInputError(
                f"target: {self.runner.whole_batch_description()}; only the sum of T (target=None) or weights of its "
                f"units (ys) can be explained; got target={request.value!r}"
            )
        batching.check_batch_size(batch_size)
        rows = self.runner.target_rows
        if batch_size is not None and batch_size != rows:
            raise InvalidInputError(
                "When using batch evaluation, the first dimension of the target tensor must be compatible with the "
                f"batch size. Found {rows} instead (batch_size={batch_size}; {self.runner.whole_batch_description()}"
                "; batch_size=None feeds all samples together)"
            )

    def _rows(self, batch_size, arrays, method=None) -> int:
        return self._layout(method).rows_per_run(batch_size, arrays, self.method_name)

    def _layout(self, method=None) -> batching.RowLayout:
        """How the rows of ``method``'s calls are laid out (None: the rows of plain calls, without references)."""
        return batching.RowLayout.of(self.runner, method)

    # ------------------------------------------------------------------------------------------------------------
    # Compilation
    # ------------------------------------------------------------------------------------------------------------

    def _compile_default(self):
        """Compile what the first run needs now, so that errors and warnings surface at construction."""
        specs = tuple(self._specs)
        if getattr(self.method, "uses_layer", False):
            for kind in ("maps",) if self.method.needs_gradient else ("activations", "row_values"):
                self._compile(kind, None, specs)
        elif getattr(self.method, "reads_attention", False):
            self._compile("attention", None, specs)
        elif isinstance(self.method, GradientMethod):
            if self.method.needs_fit:
                self._compile("fit", None, specs)
            if self.method.needs_gradient:
                self._compile("gradients", None, specs)
            if (
                self.method.promises_completeness
                and not self._layout().whole_batch
                and isinstance(self.runner, SessionRunner)
            ):
                self._compile("row_values", None, specs)  # so that completeness_error adds no ops to the graph later
        else:
            self._compile("row_values", None, specs)

    def _compile(self, kind: str, score, specs) -> _Compiled:
        key = (kind, score, specs)
        with self._lock:
            if key not in self._compiled:
                compiled = _Compiled(self._weights_dtype(specs))
                build = {"gradients": self._build_gradients, "row_values": self._build_row_values,
                         "outputs": self._build_outputs, "fit": self._build_fit, "maps": self._build_maps,
                         "activations": self._build_activations, "attention": self._build_attention,
                         "conditional": self._build_conditional,
                         "relevance_sums": self._build_relevance_sums}[kind](score, compiled)  # fmt: skip
                compiled.run = self.runner.compile(build, self._extra_specs(kind, compiled, score), specs)
                self._compiled[key] = compiled
                fresh = [m for m in compiled.messages if m not in self._warned]  # once per explainer, not per kind
                if fresh:
                    self._warned.update(fresh)
                    warn(" ".join(fresh))
            return self._compiled[key]

    def _extra_specs(self, kind: str, compiled: _Compiled, program=None) -> list:
        if kind in ("outputs", "activations", "attention"):
            return []
        if kind == "conditional":
            return program.extra_specs(compiled.weights_dtype)
        if kind == "fit":
            return [tf.TensorSpec((None,), tf.float32, name="row_valid")]
        weights = tf.TensorSpec(None, tf.as_dtype(compiled.weights_dtype), name="target_weights")
        if kind == "row_values":
            return [weights]
        extra = [weights, tf.TensorSpec((), tf.bool, name="select_max")]
        references = self._layout(self.method).references
        if references == "apart":  # a batch of their own, like X's
            extra.extend(
                tf.TensorSpec(x.shape, x.dtype, name=f"reference_{i}") for i, x in enumerate(self.runner.inputs)
            )
        elif references is not None:  # in the batch: each row's reference row
            extra.append(tf.TensorSpec((None,), tf.int32, name="reference_index"))
        return extra + list(self.method.row_input_specs)

    def _weights_dtype(self, specs) -> np.dtype:
        """The dtype the target weights are fed in (cast to the output's dtype in the graph)."""
        if isinstance(self.runner, SessionRunner):
            return np.dtype(self.runner.target.dtype.as_numpy_dtype)
        floating = [s.dtype for s in specs if np.issubdtype(s.dtype, np.floating)]
        return np.dtype(floating[0]) if floating else np.dtype(np.float32)

    def _target_tensor(self, output: tf.Tensor, score, compiled: _Compiled) -> tf.Tensor:
        """The explained tensor: the output, or the callable target's score of it (one value per sample)."""
        if score is not None:
            target = score(output)
            if not isinstance(target, tf.Tensor) or target.shape.rank != 1:
                shape = getattr(target, "shape", type(target).__name__)
                raise InvalidInputError(
                    f"target callable must return one score per sample (shape (N,)); got shape {shape}"
                )
        else:
            target = output
        compiled.output_shape = None if target.shape.rank is None else tuple(target.shape.as_list()[1:])
        compiled.output_dtype = target.dtype
        return target

    def _cast_weights(self, weights: tf.Tensor, target: tf.Tensor) -> tf.Tensor:
        return weights if weights.dtype == target.dtype else tf.cast(weights, target.dtype)

    def _build_gradients(self, score, compiled: _Compiled):
        """The method's gradients; for a relevance method also each row's seed (``sum R`` at the output), so that
        :meth:`_check_relevance` can compare the input relevance with it at no extra model call."""

        def build(traced, extras):
            target = self._target_tensor(traced.output, score, compiled)
            self._check_softmax(target, compiled)
            # a row's seed is its sample's only where T's rows are the samples'
            seeds = [] if _checks_relevance(self.method) and not self._layout().whole_batch else None
            gradients = self._rule_gradients(target, traced.inputs, extras, compiled, seed_sums=seeds)
            compiled.checks_relevance = bool(seeds)
            return gradients + (seeds or [])

        return build

    def _build_relevance_sums(self, score, compiled: _Compiled):
        """Diagnosis of a relevance explosion: each row's seed, then, for every op whose rule ran (in the order
        the backward pass reached them, from the output down), the row's sums of the absolute relevance it received
        and of that it passed to its data inputs; ``compiled.recorded_ops`` names them."""

        def build(traced, extras):
            target = self._target_tensor(traced.output, score, compiled)
            seeds, recorded = [], []
            self._rule_gradients(target, traced.inputs, extras, compiled, seed_sums=seeds, record=recorded)
            compiled.recorded_ops = [op.name for op, _, _ in recorded]
            return seeds + [t for _, received, passed in recorded for t in (received, passed)]

        return build

    def _rule_gradients(self, target, inputs, extras, compiled: _Compiled, program=None, seed_sums=None,
                        record=None) -> list:  # fmt: skip
        """The method's backward pass from the weighted ``target`` to ``inputs``, its rules active while the
        gradients are built; with ``program`` (a conditional backward pass, :mod:`deepexplain.crp`), what the
        program's backward returns, its gates added to the rules. ``seed_sums`` (a list) receives each row's
        sum of the seed relevance; ``record`` (a list) receives ``(op, received, passed)`` for every op whose rule
        runs (:func:`_recording`)."""
        method = self.method
        path = self._path(inputs, target)
        if not path:
            raise NotConnectedError(_not_connected_message(target, inputs, True))
        activations = find_activations(path) if method.rules else {}
        normalisations = find_normalisations(path) if method.normalisation_rule else []
        in_normalisation = {op for n in normalisations for op in n.region}
        activations = {head: a for head, a in activations.items() if head not in in_normalisation}
        if method.products in ("factor", "uniform"):  # modulating factors are constants: no signal enters them
            inside = {op for a in activations.values() for op in a.region} | in_normalisation
            factor = method.products == "factor"
            cut = [
                (op, modulating_factor(op, path, gates=factor, attention=factor)) for op in path.ops if op not in inside
            ]
            path = path.without([(op, i) for op, i in cut if i is not None])
        if program is not None:
            program.check_path(path)  # before the rules are checked: a layer off the path is the first thing to say
        self._check_rules(method, path, [*activations.values(), *normalisations], target, compiled)
        apart = self._layout(method).references == "apart"
        if apart:
            path.forward_ops()  # the reference pass can be copied: checked before any op is added
        extra = extras()
        reference_index = weights = seed = None
        references = []
        if program is None:
            references = extra[2 : 2 + (len(inputs) if apart else 1)] if method.uses_references else []
            reference_index = references[0] if references and not apart else None
            path.row_inputs = extra[2 + len(references) :]
        if program is None or program.start is None:  # a program's start layer seeds itself
            weights = self._explained_weights(target, extra)
            if method.seeds_relevance:  # relevance starts as the weighted output's value
                seed = (tf.nn.relu(target) if method.explains_positive_output else target) * weights
                if seed_sums is not None:
                    seed_sums.append(_row_sums(seed))
        if apart:
            settings = method.graph_settings(None, path, reference_inputs=references)
        else:
            settings = method.graph_settings(reference_index, path)
        op_rules = method.op_rules(path)
        if method.activation_rule:
            op_rules.update(rules_for(activations.values(), method.activation_rule))
        if normalisations:
            op_rules.update(rules_for(normalisations, method.normalisation_rule))
        if program is not None:
            op_rules = program.gated(op_rules, method.rules, extra)
        rules = method.rules
        if record is not None:
            rules = {t: _recording(rule, path, record) for t, rule in rules.items()}
            op_rules = {op: _recording(rule, path, record) for op, rule in op_rules.items()}
        with overridden_gradients(path.ops, rules, settings, op_rules):
            if program is not None:
                gradients = program.backward(target, inputs, extra, seed)
            elif seed is not None:
                gradients = tf.gradients(target, inputs, grad_ys=seed)
            else:
                gradients = tf.gradients(target * weights, inputs)
        compiled.messages.extend(f"{self.method_name}: {note}." for note in path.notes)
        if program is not None:
            return gradients
        if all(g is None for g in gradients):
            raise NotConnectedError(_not_connected_message(target, inputs, True))
        return [tf.zeros_like(x) if g is None else g for g, x in zip(gradients, inputs, strict=True)]

    def _explained_weights(self, target: tf.Tensor, extra: list) -> tf.Tensor:
        """The target weights fed (``extra[0]``), or each row's largest unit where ``extra[1]`` (select max: one flag,
        or one per row) is on."""
        weights, select_max = self._cast_weights(extra[0], target), extra[1]
        if not target.shape.rank:
            return weights
        if select_max.shape.rank:  # one flag per row, broadcast over the output's units
            select_max = tf.reshape(select_max, [-1] + [1] * (target.shape.rank - 1))
        return tf.where(select_max, _one_hot_max(target), weights)

    def _build_attention(self, score, compiled: _Compiled):
        """The attention probabilities of the model's ``MultiHeadAttention`` layers, in forward order."""
        from deepexplain.tensorflow.methods.attention import attention_probabilities

        def build(traced, extras):
            model = getattr(self.adapter, "model", None)
            layers = [] if model is None or not hasattr(model, "_flatten_layers") else [
                layer.name for layer in model._flatten_layers(include_self=False, recursive=True)
                if type(layer).__name__ == "MultiHeadAttention"]  # fmt: skip
            found = attention_probabilities(traced.output.graph, layers)
            if not found:
                raise InvalidInputError(
                    f"{self.method_name} reads the attention of Keras MultiHeadAttention layers; the model has none"
                    + ("" if model is not None else " (it needs a Keras model)")
                )
            for probabilities in found:
                if probabilities.shape[-1] != probabilities.shape[-2]:
                    raise InvalidInputError(
                        f"{self.method_name} multiplies self-attention matrices (T x T); {probabilities.name} has "
                        f"shape {probabilities.shape} (cross-attention)"
                    )
            return [tf.cast(p, tf.float32) for p in found]

        return build

    def _build_conditional(self, program, compiled: _Compiled):
        """A conditional backward pass (:mod:`deepexplain.crp`): ``program`` reads the runner's taps, seeds the
        relevance, masks it at the tapped layers and says what comes out."""

        def build(traced, extras):
            bound = program.bind(traced, self.method)
            target = self._target_tensor(traced.output, None, compiled) if bound.start is None else bound.start
            return self._rule_gradients(target, traced.inputs, extras, compiled, bound)

        return build

    def _build_maps(self, score, compiled: _Compiled):
        """A CAM of the gradient family: the layer's feature maps and the gradient of the weighted score with
        respect to them, in one trace; guided backpropagation of the inputs too for Guided Grad-CAM."""
        method = self.method

        def build(traced, extras):
            target = self._target_tensor(traced.output, score, compiled)
            self._check_softmax(target, compiled)
            layer = traced.layer
            size = _input_size(traced.inputs[0], layer, method)
            guided = self._rule_gradients(target, traced.inputs[:1], extras, compiled)[0] if method.rules else None
            weights = self._explained_weights(target, extras())
            (gradients,) = tf.gradients(target * weights, [layer])
            if gradients is None:
                raise NotConnectedError(f"the explained output does not depend on the layer's output {layer.name}")
            maps = method.finish(method.maps(tf.cast(layer, tf.float32), tf.cast(gradients, tf.float32)), size)
            return [maps if guided is None else tf.cast(guided, tf.float32) * maps[..., None]]

        return build

    def _build_activations(self, score, compiled: _Compiled):
        def build(traced, extras):
            _input_size(traced.inputs[0], traced.layer, self.method)
            return [tf.cast(traced.layer, tf.float32)]

        return build

    def _build_row_values(self, score, compiled: _Compiled):
        def build(traced, extras):
            softmax = getattr(self.method, "softmax", False)  # Score-CAM weighs channels by probabilities
            output = _softmax_of(traced.output, self.method_name) if softmax else traced.output
            target = self._target_tensor(output, score, compiled)
            self._check_softmax(traced.output if softmax else target, compiled)
            if not Path(traced.inputs, target, differentiable=False):
                raise NotConnectedError(_not_connected_message(target, traced.inputs, False))
            if not target.shape.rank:
                raise InvalidInputError(f"{self.method_name} needs T with a batch dimension; T is a scalar")
            (weights,) = extras()
            weighted = target * self._cast_weights(weights, target)
            return [tf.reduce_sum(tf.reshape(weighted, [tf.shape(weighted)[0], -1]), axis=1)]

        return build

    def _build_outputs(self, score, compiled: _Compiled):
        def build(traced, extras):
            return [self._target_tensor(traced.output, score, compiled)]

        return build

    def _build_fit(self, score, compiled: _Compiled):
        def build(traced, extras):
            target = self._target_tensor(traced.output, score, compiled)
            path = self._path(traced.inputs, target)
            (valid,) = extras()
            return list(self.method.fit_tensors(path, valid))

        return build

    def _path(self, inputs, target) -> Path:
        """The differentiable path from ``inputs`` to ``target``, its weights named by the model's layers."""
        path = Path(inputs, target, differentiable=True)
        path.weight_names = self.adapter.weight_names() if self.adapter is not None else {}
        return path

    def _check_softmax(self, target: tf.Tensor, compiled: _Compiled) -> None:
        from deepexplain.adapters.keras import softmax_input

        if self.adapter is not None:
            if softmax_input(target) is not None:
                compiled.messages.append(
                    f"{self.method_name}: the explained output comes out of a softmax, so the attributions explain "
                    "probabilities, which saturate; explain the logits with deepexplain.strip_softmax(model)."
                )
            return
        explained = getattr(self.runner, "target", None)
        method = self.method
        rules = getattr(method, "rules", None) or {}
        uncovered = (rules or getattr(method, "covers_all_ops", False)) and "Softmax" not in rules
        if explained is None or softmax_input(explained) is None or uncovered:
            return  # methods with rules name a softmax they have no rule for among such ops (_check_rules)
        compiled.messages.append(
            f"{self.method_name}: T ({explained.name}) comes out of a softmax, so the attributions explain "
            "probabilities, which saturate; explain the logits (the softmax's input) instead."
        )

    def _check_rules(self, method, path: Path, regions: list, target, compiled: _Compiled) -> None:
        """Every nonlinear op on the path needs a rule of the method: one error (LRP, ``strict=True``) or one
        warning for all ops that have none, naming their types, counts and places, before the graph changes."""
        if not method.needs_gradient or not (method.rules or method.covers_all_ops):
            return
        covered_by_activation = set()
        for region in regions:  # activations (when the method has an activation rule) and normalisation layers
            if method.activation_rule is not None or isinstance(region, Normalisation):
                covered_by_activation |= region.region
        types = set(method.rules) | method.gradient_rule_types
        if method.covers_all_ops:
            types |= method.structural_types
            candidates = [op for op in path.ops if not path.is_input(op)]
        else:
            candidates = path.nonlinear_ops()
        uncovered = [
            op for op in candidates if op not in covered_by_activation and not _has_rule(op, types, path, method)
        ]
        if not uncovered:
            return
        listing = describe_ops(uncovered)
        hint = ""
        explained = getattr(self.runner, "target", None)  # T of the TF1 API (``target`` is its weighted sum)
        if target.op.type == "Softmax" or any(
            op.type == "Softmax" and (op is target.op or (explained is not None and op is explained.op))
            for op in uncovered
        ):
            hint = " T comes out of a softmax: explain the logits (the softmax's input) instead" + (
                ", e.g. with deepexplain.strip_softmax(model)." if self.adapter is not None else "."
            )
        if method.covers_all_ops:
            supported = sorted(types - ops.having(ops.INPUT))
            message = (
                f"{self.method_name}: no rule covers these ops on the path from X to T: {listing}.{hint} Supported "
                f"op types: {supported}; a product of two tensors that depend on the input has no rule."
            )
            if method.strict:
                only_softmax = hint and all(op is target.op for op in uncovered)
                more = "" if only_softmax else " Pass strict=False to use their gradient instead (with a warning)."
                raise UnsupportedOpError(message + more)
            compiled.messages.append(message + " Their plain gradient is used (strict=False).")
            return
        compiled.messages.append(
            f"{self.method_name}: these nonlinear ops on the path from X to T have no {self.method_name} rule and "
            f"use their plain gradient, so the attributions may be wrong: {listing}.{hint}"
        )

    # ------------------------------------------------------------------------------------------------------------
    # Running the backward family
    # ------------------------------------------------------------------------------------------------------------

    def _attribute_gradients(self, method, compiled, request, xs, specs, rows_per_run, progress):
        n_total = len(xs[0])
        in_graph_max = request.kind == "max" and method.evaluates_at_samples and compiled.output_shape
        ys = None if in_graph_max else self._weights_of(request, xs, specs, rows_per_run, compiled)
        rng = np.random.default_rng(getattr(method, "seed", None)) if method.is_random else None
        if method.iterative:
            return self._attribute_iteratively(method, compiled, xs, ys, rows_per_run, rng, progress)
        steps = method.rows_per_sample
        layout = self._layout(method)
        group, total_runs = layout.groups(n_total, rows_per_run, steps, method.reference_rows)
        results = [None] * len(xs)
        seeds = np.full(n_total, np.nan) if steps == 1 and _checks_relevance(method) else None  # filled by the calls
        quiet = not progress or total_runs == 1  # one run shows no progress; an enabled bar costs ~0.1 ms to make
        with tqdm(total=total_runs, delay=2, disable=quiet, desc=self.method_name, unit="run") as bar:
            for start in range(0, n_total, group):
                stop = min(n_total, start + group)
                expansion = method.expand([x[start:stop] for x in xs], rng)
                row_seeds = None if seeds is None else seeds[start:stop]
                gradients = self._gradients_of_rows(compiled, expansion, ys, bool(in_graph_max), start, stop,
                                                    rows_per_run, bar, row_seeds)  # fmt: skip
                parts = [
                    method.finalize(_weighted_sum(expansion.weights, g.reshape((steps, stop - start, *g.shape[1:])), f))
                    for g, f in zip(gradients, expansion.factors, strict=True)
                ]
                for i, part in enumerate(method.summarize(parts, [x[start:stop] for x in xs], start)):
                    if results[i] is None:
                        dtype = np.result_type(xs[i].dtype, np.float32)
                        results[i] = np.empty((n_total, *part.shape[1:]), dtype=dtype)
                    results[i][start:stop] = part
        if seeds is not None and _relevance_checked(method, compiled):
            self._check_relevance(results, seeds, (request.score, specs), xs, ys, bool(in_graph_max))
        return results

    def _check_relevance(self, results, seeds, signature, xs, ys, in_graph_max) -> None:
        """Warn when a row's input relevance is not finite, its sum exceeds ``RELEVANCE_GROWTH`` times its seed
        (the explained output's value, what a conserving rule keeps) or its absolute sum ``RELEVANCE_SIZE`` times
        (huge values of both signs, even where they cancel to the right sum): the relevance exploded. The first
        such row is explained once more with every rule's relevance summed (:meth:`_build_relevance_sums`) to name
        the op where it grew most. Rows whose output is not finite get the plain non-finite warning."""
        n = len(seeds)
        with np.errstate(invalid="ignore", over="ignore"):
            total = sum(np.asarray(r, np.float64).reshape(n, -1).sum(axis=1) for r in results)
            size = sum(np.abs(np.asarray(r, np.float64)).reshape(n, -1).sum(axis=1) for r in results)
            off = (np.abs(total) > RELEVANCE_GROWTH * np.abs(seeds)) | (size > RELEVANCE_SIZE * np.abs(seeds))
            bad = np.isfinite(seeds) & (~np.isfinite(size) | off)
        if not np.isfinite(seeds).all():
            self._warn_non_finite_rows(~np.isfinite(seeds), " (the model's output is not finite there)")
        if not bad.any():
            return
        row = int(np.flatnonzero(bad)[0])
        seed, row_ys = seeds[row], None if ys is None else ys[row : row + 1]
        where = self._where_relevance_explodes(signature, [x[row : row + 1] for x in xs], row_ys, in_graph_max)
        ratio = (
            f"absolute sum {size[row] / abs(seed):.3g} times the output's |{seed:.3g}|, sum {total[row]:.3g}"
            if np.isfinite(size[row])
            else "not finite"
        )
        cure = self._cure("a larger epsilon, or lrp.epsilon_plus / lrp.alpha_1_beta_0, is stable there")
        warn(
            f"{self.method_name}: relevance exploded for {int(bad.sum())} of {n} sample(s) (first: sample {row}, "
            f"attributions' {ratio}){where}: relevance divided by pre-activations near zero; {cure}",
            RuntimeWarning,
        )

    def _where_relevance_explodes(self, signature, rows, ys, in_graph_max) -> str:
        """Where the relevance of one row grew: the op whose rule multiplied the absolute relevance most (it
        passes down more than it receives: a division by a near-zero sum), and where it became non-finite;
        ``signature`` is ``(score, specs)`` of the explanation."""
        diagnosis = self._compile("relevance_sums", *signature)
        weights = self._ones(diagnosis) if ys is None else ys
        values = [float(np.asarray(v).reshape(-1)[0]) for v in self._call(diagnosis, rows, [weights, in_graph_max])]
        received, passed = np.array(values[1::2]), np.array(values[2::2])
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            growth = np.where(np.isfinite(passed) & (received > 0), passed / received, 0.0)
        where = ""
        if len(growth) and growth.max() > 1:
            where = (
                f"; it grows most at op '{diagnosis.recorded_ops[int(growth.argmax())]}' (which passes down "
                f"{growth.max():.3g} times the absolute relevance it receives)"
            )
        born = np.flatnonzero(np.isfinite(received) & ~np.isfinite(passed))
        if len(born):
            where += f"; it is not finite from op '{diagnosis.recorded_ops[int(born[0])]}' on"
        return where

    def _attribute_iteratively(self, method, compiled, xs, ys, rows_per_run, rng, progress):
        """An iterative method on groups of at most ``rows_per_run`` samples: each of its gradient calls is one
        batched call for the whole group."""
        n_total = len(xs[0])
        results = [np.empty(x.shape, np.result_type(x.dtype, np.float32)) for x in xs]
        no_bar = tqdm(disable=True)
        with tqdm(total=n_total, delay=2, disable=not progress, desc=self.method_name, unit="sample") as bar:
            for start in range(0, n_total, rows_per_run):
                stop = min(n_total, start + rows_per_run)

                def gradients(points, start=start, stop=stop):
                    expansion = Expansion(points=list(points), weights=np.ones(1), factors=[None] * len(points))
                    return self._gradients_of_rows(compiled, expansion, ys, False, start, stop, rows_per_run, no_bar)

                for result, part in zip(results, method.iterate(gradients, [x[start:stop] for x in xs], rng),
                                        strict=True):  # fmt: skip
                    result[start:stop] = part
                bar.update(stop - start)
        return results

    def _gradients_of_rows(self, compiled, expansion, ys, in_graph_max, start, stop, rows_per_run, bar, seeds=None):
        """The compiled gradients of the expansion's rows, chunked; ``seeds`` (an array of one value per row)
        receives each row's seed relevance where the compiled function returns it."""
        points = expansion.points
        total = len(points[0])
        outputs = [np.empty(p.shape, dtype=np.result_type(p.dtype, np.float32)) for p in points]
        if ys is not None:
            ys_group = ys[start:stop]
            y_rows = np.broadcast_to(ys_group[None], (total // len(ys_group), *ys_group.shape))
            y_rows = y_rows.reshape((total,) + ys_group.shape[1:])
        select = np.asarray(in_graph_max)
        references = expansion.references
        layout = self._layout(self.method)
        placed = layout.references if references is not None else None
        for lo, hi in layout.ranges(total, stop - start, rows_per_run, expansion.reference_ids):
            rows = [p[lo:hi] for p in points]
            weights = self._ones(compiled) if ys is None else y_rows[lo:hi]
            extra = [select]
            row_values = [v[lo:hi] for v in expansion.row_values or ()]
            taken = slice(0, hi - lo)  # where rows lo:hi are in the call
            if placed == "apart":  # each row's reference, in a batch of their own
                extra.extend(
                    ref[expansion.reference_ids[lo:hi]].astype(r.dtype) for ref, r in zip(references, rows, strict=True)
                )
            elif placed is not None:
                append = self._append_reference_blocks if placed == "blocks" else self._append_references
                rows, weights, index, taken = append(rows, weights, expansion, lo, hi, ys is not None)
                extra.append(index)
                row_values = [_placed(v, taken, len(rows[0])) for v in row_values]
            extra.extend(row_values)
            results = self._call(compiled, rows, [weights, *extra])
            if compiled.checks_relevance:
                seed = results.pop()
                if seeds is not None:
                    seeds[lo:hi] = seed[taken]
            for out, g in zip(outputs, results, strict=True):
                out[lo:hi] = g[taken]
            bar.update(1)
        return outputs

    def _append_references(self, rows, weights, expansion, lo, hi, weighted):
        """Rows ``lo:hi`` followed by padding (to a fixed batch size) and the references they need, which go last so
        that rules can read a single reference as the last row; weights padded with zeros; each row's reference
        row index (padding and references refer to themselves); where rows ``lo:hi`` are in the call."""
        used, position = np.unique(expansion.reference_ids[lo:hi], return_inverse=True)
        count = hi - lo
        fixed = self.runner.fixed_rows
        pad = fixed - count - len(used) if fixed else 0
        rows = [
            np.concatenate([r, np.zeros((pad, *r.shape[1:]), r.dtype), ref[used].astype(r.dtype)])
            for r, ref in zip(rows, expansion.references, strict=True)
        ]
        if weighted:
            weights = np.concatenate([weights, np.zeros((pad + len(used), *weights.shape[1:]), weights.dtype)])
        first = count + pad
        index = np.concatenate([position.reshape(-1) + first, np.arange(count, first + len(used))]).astype(np.int32)
        return rows, weights, index, slice(0, count)

    def _append_reference_blocks(self, rows, weights, expansion, lo, hi, weighted):
        """Rows ``lo:hi`` in blocks of one size, one block per reference they need: its rows (in their order), zero
        rows up to the block's size (weight zero), and the reference last. Every row of a block refers to the
        block's last row, so that the rules view the batch as ``(blocks, block rows, ...)`` and broadcast each
        reference over its block (:mod:`deepexplain.tensorflow.rules.deeplift`); with one reference this is the
        layout of :meth:`_append_references` without padding. Also returns where rows ``lo:hi`` are in the call."""
        used, position = np.unique(expansion.reference_ids[lo:hi], return_inverse=True)
        counts = np.bincount(position, minlength=len(used))
        size = int(counts.max()) + 1
        order = np.argsort(position, kind="stable")
        rank = np.empty(hi - lo, dtype=np.int64)
        rank[order] = np.arange(hi - lo) - np.repeat(np.cumsum(counts) - counts, counts)
        taken = position * size + rank
        closing = np.arange(len(used)) * size + size - 1
        length = len(used) * size
        blocked = []
        for r, ref in zip(rows, expansion.references, strict=True):
            out = np.zeros((length, *r.shape[1:]), r.dtype)
            out[taken] = r
            out[closing] = ref[used]
            blocked.append(out)
        if weighted:
            weights = _placed(weights, taken, length)
        index = np.repeat(closing, size).astype(np.int32)
        return blocked, weights, index, taken

    def _call(self, compiled, rows, extra=()) -> list:
        """One model call on ``rows`` and the extra inputs (weights, indices, per-row values), padded to the input's
        fixed batch size if it has one (rows with references come padded by :meth:`_append_references`)."""
        count, fixed = len(rows[0]), self.runner.fixed_rows
        if fixed and count != fixed:
            rows = [_padded(r, fixed) for r in rows]
            extra = [_padded(e, fixed) if np.ndim(e) and len(e) == count else e for e in extra]
        return compiled.run(rows, list(extra))

    def _ones(self, compiled) -> np.ndarray:
        rank = len(compiled.output_shape) + 1 if compiled.output_shape is not None else 1
        return np.ones((1,) * rank, dtype=compiled.weights_dtype)

    # ------------------------------------------------------------------------------------------------------------
    # Layer maps (the CAM family)
    # ------------------------------------------------------------------------------------------------------------

    def _layer_maps(self, method, request, inputs, specs, rows, progress) -> np.ndarray:
        n = len(inputs[0])
        if not method.needs_gradient:  # Score-CAM: the feature maps, then masked forward passes
            compiled = self._compile("activations", None, specs)
            parts = [self._call(compiled, [x[lo:hi] for x in inputs])[0][: hi - lo] for lo, hi in
                     batching.chunks(n, rows)]  # fmt: skip
            forward = self._forward(request, inputs, specs, rows)
            return method.attribute_maps(forward, inputs, np.concatenate(parts), rows, progress)
        compiled = self._compile("maps", request.score, specs)
        request.check(n, compiled.output_shape, self._output_label)
        in_graph_max = request.kind == "max" and bool(compiled.output_shape)
        ys = None if in_graph_max else self._weights_of(request, inputs, specs, rows, compiled)
        parts = []
        for lo, hi in tqdm(list(batching.chunks(n, rows)), delay=2, disable=not progress, desc=self.method_name):
            weights = self._ones(compiled) if ys is None else ys[lo:hi]
            extra = [weights, np.asarray(in_graph_max)]
            parts.append(self._call(compiled, [x[lo:hi] for x in inputs], extra)[0][: hi - lo])
        return np.concatenate(parts)

    # ------------------------------------------------------------------------------------------------------------
    # Noise over a base method
    # ------------------------------------------------------------------------------------------------------------

    def _noise_tunnel(self, method, request, inputs, specs, rows, progress) -> list:
        """The base method on ``method.samples`` noisy copies of each sample, the copies of a group of samples in
        one run of the base explainer (at most ``rows`` rows per model call), combined per sample."""
        for i, x in enumerate(inputs):
            if not np.issubdtype(x.dtype, np.floating):
                raise InvalidInputError(f"{self.method_name} adds noise to the inputs; input {i} holds {x.dtype}")
        n, copies = len(inputs[0]), method.samples
        ys = self._weights_of(request, inputs, specs, rows)  # every copy explains its clean sample's output
        rng = np.random.default_rng(method.seed)
        group = max(1, rows // copies)
        results = None
        for start in tqdm(range(0, n, group), delay=2, disable=not progress, desc=self.method_name):
            stop = min(n, start + group)
            noisy = [noisy_copies(x[start:stop], copies, method.noise_level, rng) for x in inputs]
            flat = [c.reshape((-1, *c.shape[2:])) for c in noisy]
            if ys is None:
                target = {"target": request.value if request.score is not None else "all"}
            else:
                part = ys[start:stop]
                target = {"ys": np.broadcast_to(part[None], (copies, *part.shape)).reshape((-1, *part.shape[1:]))}
            out = self._inner.run(flat if len(flat) > 1 else flat[0], batch_size=rows, progress=False, **target)
            out = out if isinstance(out, list) else [out]
            parts = [method.combine(o.reshape((copies, stop - start, *o.shape[1:]))) for o in out]
            if results is None:
                results = [np.empty((n, *p.shape[1:]), p.dtype) for p in parts]
            for result, p in zip(results, parts, strict=True):
                result[start:stop] = p
        return results

    # ------------------------------------------------------------------------------------------------------------
    # Forward evaluations
    # ------------------------------------------------------------------------------------------------------------

    def _outputs(self, request, xs, specs, rows_per_run) -> np.ndarray:
        """The explained output on ``xs`` (for target 'max'), in calls of at most ``rows_per_run`` rows."""
        compiled = self._compile("outputs", request.score, specs)
        parts = [self._call(compiled, [x[lo:hi] for x in xs])[0][: hi - lo] for lo, hi in
                 batching.chunks(len(xs[0]), self.runner.fixed_rows or rows_per_run)]  # fmt: skip
        return np.concatenate(parts)

    def _forward(self, request, xs, specs, rows_per_run):
        """``forward(rows, owners) -> (k,)``: the explained score of each row, for the perturbation engine."""
        compiled = self._compile("row_values", request.score, specs)
        request.check(len(xs[0]), compiled.output_shape, self._output_label)
        ys = self._weights_of(request, xs, specs, rows_per_run, compiled)
        ones = self._ones(compiled)

        def forward(rows, owners):
            k = len(owners)
            size = self.runner.fixed_rows or rows_per_run
            values = np.empty(k, dtype=np.float64)
            for lo in range(0, k, size):
                hi = min(k, lo + size)
                weights = ones if ys is None else ys[owners[lo:hi]]
                values[lo:hi] = self._call(compiled, [r[lo:hi] for r in rows], [weights])[0][: hi - lo]
            return values

        return forward


class _Compiled:
    """One compiled explanation: the callable, what its output is, and what the user should hear about it."""

    def __init__(self, weights_dtype: np.dtype):
        self.run = None
        self.weights_dtype = weights_dtype
        self.output_shape: tuple | None = None
        self.output_dtype = tf.float32
        self.messages: list[str] = []
        self.checks_relevance = False  # the last output is each row's seed relevance (relevance methods)
        self.recorded_ops: list[str] = []


# A conserving relevance rule keeps sum R equal to the explained output; an epsilon or a bias absorbs some of it.
# Input relevance summing to more than RELEVANCE_GROWTH times the output, or with an absolute sum above
# RELEVANCE_SIZE times it (huge values of both signs), is an explosion (near-zero denominators), not a rule's choice.
# (An output near 0 makes |R| / |f| large with no explosion: relevance the size of the contributions is ~100-1000
# times such an output, hence the larger bound on the absolute sum.)
RELEVANCE_GROWTH = 100.0
RELEVANCE_SIZE = 1e4


def _checks_relevance(method) -> bool:
    """Whether the input relevance of ``method`` is compared with its seed (LRP rules and Deep Taylor)."""
    return bool(getattr(method, "seeds_relevance", False) and getattr(method, "divides_by_activations", False))


def _relevance_checked(method, compiled: _Compiled) -> bool:
    """Whether :meth:`Explainer._check_relevance` ran on this explanation (one row per sample, seeds returned)."""
    return compiled.checks_relevance and method.rows_per_sample == 1


def _row_sums(t: tf.Tensor) -> tf.Tensor:
    """Per row (the first axis), the sum of ``t``."""
    if t.shape.rank == 1:
        return t
    return tf.reduce_sum(tf.reshape(t, [tf.shape(t)[0], -1]), axis=1)


def _recording(rule, path: Path, record: list):
    """``rule``, also appending ``(op, received, passed)`` to ``record``: per row, the sums of the absolute relevance
    the op receives and of that it gives its data inputs."""

    def recorded(op, grads, settings):
        result = rule(op, grads, settings)
        parts = [result[i] for i in path.data_inputs(op) if i < len(result) and result[i] is not None]
        parts = [_row_sums(tf.abs(g)) for g in parts if g.shape.rank]
        if parts and grads and grads[0] is not None and grads[0].shape.rank:
            record.append((op, _row_sums(tf.abs(grads[0])), tf.add_n(parts) if len(parts) > 1 else parts[0]))
        return result

    return recorded


def _has_rule(op: tf.Operation, types, path: Path, method) -> bool:
    # a product (or quotient) of two tensors that depend on the input
    product = len(path.data_inputs(op)) > 1 and (
        ops.is_a(op.type, ops.MULTILINEAR) or ops.is_a(op.type, ops.LINEAR_IN_FIRST)
    )
    factor_cut = method.products in ("factor", "uniform") and any((op, i) in path.cut for i in range(len(op.inputs)))
    if product and factor_cut:
        return True  # linear in its other input once the modulating factor is a constant
    if op.type not in types:
        return False
    if op.type == "IdentityN" and has_custom_gradient(op):
        return False  # a custom gradient that is not a recognised activation: its closure is opaque
    if ops.is_a(op.type, ops.CALL) and called_layer(op) is None:
        return False  # a function call whose body is not one dense/convolution op is opaque
    if product:  # matrix and elementwise products: AttnLRP's uniform rule, DeepLIFT's midpoint (Shapley) rule
        return method.products in ("uniform", "shapley") and (ops.is_a(op.type, ops.DENSE) or op.type == "Mul")
    return True


def _input_size(x: tf.Tensor, layer: tf.Tensor, method):
    """The spatial sizes of input ``x`` that the layer's maps are stretched to (None without upsampling)."""
    rank = layer.shape.rank
    if rank is None or rank < 3:
        raise InvalidInputError(f"{method.name} needs feature maps (N, H, W, C) or (N, T, C); got {layer.shape}")
    if method.upsample is None:
        return None
    if rank not in (3, 4) or x.shape.rank != rank:
        raise InvalidInputError(
            f"{method.name}: the feature maps {layer.shape} cannot be stretched to the input {x.shape} (upsampling "
            "takes (N, H, W, C) maps to an (N, H', W', C') input, or (N, T, C) to (N, T', C')); pass upsample=None"
        )
    static = x.shape[1 : rank - 1]
    return tuple(static) if None not in static else tf.shape(x)[1 : rank - 1]


def _softmax_of(output: tf.Tensor, method: str) -> tf.Tensor:
    """The softmax of the logits ``output`` over its last axis."""
    if output.shape.rank is not None and output.shape.rank >= 2 and output.shape[-1] == 1:
        raise InvalidInputError(
            f"{method}: the softmax of an output with one unit is 1 for every input; pass softmax=False to weigh the "
            "channels by the output itself"
        )
    return tf.nn.softmax(output, axis=-1)


def _placed(values: np.ndarray, positions, rows: int) -> np.ndarray:
    """``values`` at ``positions`` of ``rows`` zero rows."""
    out = np.zeros((rows, *values.shape[1:]), values.dtype)
    out[positions] = values
    return out


def _padded(values: np.ndarray, rows: int) -> np.ndarray:
    """``values`` followed by zero rows up to ``rows`` (padding and reference rows feed zeros)."""
    return np.concatenate([values, np.zeros((rows - len(values), *values.shape[1:]), values.dtype)])


def _one_hot_max(target: tf.Tensor) -> tf.Tensor:
    """One-hot weights of each row's largest unit (any output rank)."""
    flat = tf.reshape(target, [tf.shape(target)[0], -1])
    hot = tf.one_hot(tf.argmax(flat, axis=1), tf.shape(flat)[1], dtype=target.dtype)
    return tf.reshape(hot, tf.shape(target))


def _weighted_sum(weights: np.ndarray, gradients: np.ndarray, factor) -> np.ndarray:
    """``sum_r weights[r] * factor[r] * gradients[r]`` over the leading (step) axis, accumulated in float64 (a sum
    of many float32 steps drifts: a linear model's integrated gradients would come out as 0.9999993, not 1), without
    BLAS (whose thread start-up costs more than this sum) and without a full-size product when the factor is the
    same for every step."""
    if len(weights) == 1:  # one row per sample: no sum to accumulate
        total = gradients[0] * gradients.dtype.type(weights[0])
        return total * factor[0] if factor is not None else total
    constant_factor = factor is None or factor.shape[0] == 1
    total = np.zeros(gradients.shape[1:], dtype=np.float64)
    for weight, gradient, row_factor in zip(
        weights, gradients, [None] * len(weights) if constant_factor else factor, strict=True
    ):
        # the product in float64: a scalar times a float32 array stays float32 (NEP 50 for Python floats, numpy 1's
        # value-based casting for numpy scalars too), which rounds every weight (1/500 becomes 0.0020000001: 250
        # such steps give 0.50000002, not 0.5)
        term = gradient if row_factor is None else np.multiply(gradient, row_factor, dtype=np.float64)
        total += np.multiply(term, float(weight), dtype=np.float64)
    if factor is not None and constant_factor:
        total *= factor[0]
    return total.astype(np.result_type(gradients.dtype, np.float32), copy=False)


def _spec_from_data(array, index: int) -> InputSpec:
    array = np.asarray(array)
    dtype = np.dtype(np.float32) if np.issubdtype(array.dtype, np.floating) else array.dtype
    return InputSpec(f"input {index}", dtype, tuple(array.shape[1:]))


def _relaxed(old: InputSpec, new: InputSpec) -> InputSpec:
    if old.shape is None or len(old.shape) != len(new.shape) or old.dtype != new.dtype:
        return new
    shape = tuple(o if o == s else None for o, s in zip(old.shape, new.shape, strict=True))
    return InputSpec(old.name, old.dtype, shape)


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


def explain(method, /, model, xs, target=None, ys=None, layer=None, batch_size=None, output=None, jit_compile=False,
            progress=True, **method_kwargs):  # fmt: skip
    """One-shot attribution: ``Explainer(method, model, ...).run(xs, target, ...)``.

    See :class:`Explainer` for the arguments; compile an :class:`Explainer` to explain many batches.
    """
    explainer = Explainer(
        method, model, layer=layer, output=output, jit_compile=jit_compile, progress=progress, **method_kwargs
    )
    return explainer.run(xs, target=target, ys=ys, batch_size=batch_size)


__all__ = ["Explainer", "explain"]
