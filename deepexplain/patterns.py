"""Patterns: the signal directions PatternNet and PatternAttribution explain with, learned from data.

Kindermans et al. 2018, "Learning how to explain neural networks: PatternNet and PatternAttribution", ICLR
(arXiv 1705.05598). A layer's kernel ``w`` is a *filter*: it cancels the distractor in its input and so shows it,
which is what the gradient shows. The *signal* direction of each unit is its pattern ``a = cov[x, y] / w^T cov[x, y]``
(Eq. 7; Haufe et al. 2014), or, for a ReLU unit, the same statistics over the samples where it is active (Eq. 8).

>>> patterns = deepexplain.fit_patterns(model, x_train)                       # doctest: +SKIP
>>> a = deepexplain.Explainer('pattern.attribution', model, patterns=patterns).run(xs)   # doctest: +SKIP
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping

import numpy as np

from deepexplain.dataset import ExplainerTask
from deepexplain.errors import InvalidInputError


class Patterns(Mapping):
    """Fitted patterns: a read-only mapping from a layer's name (a Keras model) or its kernel op's name (a TF1
    graph) to an array of the layer kernel's shape.

    Parameters
    ----------
    arrays : mapping
        Name -> pattern array.
    pattern_type : str, optional
        The estimator they were fitted with ('linear', 'relu', 'relu.negative'), or None when not known.
    """

    def __init__(self, arrays: Mapping, pattern_type: str | None = None):
        self._arrays = {}
        for key, value in arrays.items():
            array = np.array(value, dtype=np.float32, copy=True)
            if not np.all(np.isfinite(array)):
                raise InvalidInputError(f"patterns[{key!r}] has {int(np.sum(~np.isfinite(array)))} non-finite values")
            array.setflags(write=False)
            self._arrays[str(key)] = array
        self.pattern_type = pattern_type

    def __getitem__(self, key) -> np.ndarray:
        return self._arrays[key]

    def __iter__(self):
        return iter(self._arrays)

    def __len__(self) -> int:
        return len(self._arrays)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {v.shape}" for k, v in self._arrays.items())
        return f"Patterns(pattern_type={self.pattern_type!r}, {{{shapes}}})"

    def save(self, path: str | os.PathLike) -> None:
        """Write the patterns to ``path`` (an ``.npz`` file, read back by :meth:`load`)."""
        names = list(self._arrays)
        np.savez(path, names=np.array(names, dtype=str), pattern_type=np.array(self.pattern_type or "", dtype=str),
                 **{f"pattern_{i}": self._arrays[name] for i, name in enumerate(names)})  # fmt: skip

    @classmethod
    def load(cls, path: str | os.PathLike) -> Patterns:
        """Patterns written by :meth:`save`.

        Raises
        ------
        InvalidInputError
            When the file does not exist or was not written by :meth:`save`.
        """
        try:
            with np.load(path, allow_pickle=False) as data:
                names = [str(n) for n in data["names"]]
                arrays = {name: data[f"pattern_{i}"] for i, name in enumerate(names)}
                pattern_type = str(data["pattern_type"]) or None
        except (OSError, KeyError, ValueError) as error:
            raise InvalidInputError(f"cannot read patterns from {os.fspath(path)!r}: {error}") from None
        return cls(arrays, pattern_type)


def fit_patterns(model, data, *, pattern_type="relu", batch_size=256, progress=True, output=None, engine="local",
                 num_workers=None) -> Patterns:  # fmt: skip
    """Fit the pattern of every kernel layer of ``model`` on ``data``, in one streaming pass.

    Kernel layers: Dense (on inputs of any rank: applied per token), EinsumDense (MultiHeadAttention's projections),
    Conv1D/2D/3D (strided, dilated), DepthwiseConv1D/2D, SeparableConv1D/2D and Conv1D/2D/3DTranspose, and their
    TensorFlow ops. Each output unit is one linear neuron whose samples are the rows, or every position of the axes
    its kernel does not index (the tokens of a per-token layer, the patches of a convolution's output positions,
    for a transposed convolution those of its zero-upsampled input).

    Parameters
    ----------
    model : keras.Model, callable or path
        As for :class:`deepexplain.Explainer` (a model ending in a softmax is fitted on its logits).
    data : ndarray, list of ndarray, tf.data.Dataset or iterable of batches
        Inputs of the model (a batched dataset; one array per input for several inputs).
    pattern_type : {'relu', 'linear', 'relu.negative'}
        The signal estimator (Kindermans et al. 2018): 'linear' (Eq. 7, ``S_a``), 'relu' (the positive component
        ``a+`` of Eq. 8, over the samples where the unit's activation is > 0; what PatternNet on ReLU networks
        uses), 'relu.negative' (``a-``, activation <= 0).
    batch_size : int
        Rows per model call when ``data`` is an array; the patterns do not depend on it.
    progress : bool
        Show a progress bar.
    output : int or str, optional
        Which output of a model with several outputs.
    engine : {'local', 'ray'}
        'ray': the statistics of each shard of ``data`` are computed on a Ray Data actor pool
        (:func:`deepexplain.explain_dataset` says how; ``data`` then is anything it takes) and added in the order
        of the shards, so the patterns equal the local fit's.
    num_workers : int, optional
        Ray actors (default: the cluster's CPUs).

    Returns
    -------
    Patterns
        Keyed by layer name; each pattern has its kernel's shape and ``w_o^T a_o = 1`` for every unit ``o`` that is
        active on some sample (a unit never active gets 0).

    Raises
    ------
    UnsupportedOpError
        Before any data is read, for a kernel layer patterns are not defined for (a grouped convolution), naming it.

    Notes
    -----
    Each batch costs the model's forward pass and, per layer, two kernel-gradient products (``sum x m`` and
    ``sum x y m``, computed as the op's kernel gradient, so convolutions materialise no patches; one for 'linear',
    whose ``sum x`` is the kernel gradient of one row, the sum of the batch's rows). A layer that is a ReLU of its
    output plus bias (Keras' Dense/Conv with activation='relu') is fitted from the ReLU's output alone for 'relu'
    (``sum x y m = sum x relu(z + b) - b sum x m``), so TensorFlow keeps its convolution, bias and ReLU one fused
    op, and from the ReLU's input ``g = z + b`` for 'relu.negative' (``sum x y m = sum x min(g, 0) - b sum x m``; a
    dense layer forms ``y m`` on its output, which is smaller than its kernel). Two kernel gradients cost about two
    forward passes of the layer, so a fit costs about three forward passes of its data plus tracing the model once
    (~0.08 s on bench-cnn). That trace is kept with a Keras model (as Keras keeps its ``predict`` function), so
    another ``fit_patterns`` of the same model and ``pattern_type``/``output`` traces nothing; weights are read live,
    and a model whose layers, their activations or its weight variables have changed since is traced anew. It is
    not copied or pickled with the model. Sums within a batch are in the model's dtype, across batches float64 (for a
    live model added up inside the traced function, never copied to numpy per batch); what is held during a fit is
    six kernel-sized float64 sums per layer, freed after it. Statistics are sums, so fits of parts of a dataset merge
    exactly.
    """
    from deepexplain import stream

    stream.check_engine(engine, num_workers)
    if engine == "ray":
        return _fitted_on_ray(model, data, output, pattern_type, batch_size, num_workers, progress)
    fitter = _Fitters.of(model, pattern_type, output) if _is_keras_model(model) else None
    if fitter is None:
        fitter = PatternFitter(model, pattern_type=pattern_type, batch_size=batch_size, progress=progress,
                               output=output)  # fmt: skip
    return fitter.fit(data, batch_size=batch_size, progress=progress)


class PatternFitter:
    """:func:`fit_patterns` for repeated fits of one model (other datasets, parts of one, the weights changed in
    between): the model and the statistics are traced and compiled once, at construction (~0.08 s on bench-cnn on
    a 2-core CPU, about 0.4 forward passes of 4096 rows), and each :meth:`fit` is one streaming pass.
    :func:`fit_patterns` keeps one with a Keras model; a fitter of one's own serves other callables too.

    Parameters
    ----------
    model, pattern_type, batch_size, progress, output
        As for :func:`fit_patterns`.

    Examples
    --------
    >>> fitter = deepexplain.patterns.PatternFitter(model)             # doctest: +SKIP
    >>> patterns = [fitter.fit(part) for part in parts]                 # doctest: +SKIP
    """

    def __init__(self, model, *, pattern_type="relu", batch_size=256, progress=True, output=None):
        from deepexplain.explainer import Explainer
        from deepexplain.tensorflow.methods.patterns import PatternStatistics

        self.batch_size = batch_size
        self._explainer = Explainer(PatternStatistics, model, output=output, progress=progress,
                                    pattern_type=pattern_type)  # fmt: skip
        self._lock = threading.Lock()  # one fit at a time: the sums are the fitter's

    @property
    def pattern_type(self) -> str:
        return self._explainer.method.pattern_type

    def fit(self, data, *, batch_size=None, progress=None) -> Patterns:
        """The patterns of ``data`` alone (as :func:`fit_patterns`; nothing of earlier fits is kept).

        Parameters
        ----------
        data : ndarray, list of ndarray, tf.data.Dataset or iterable of batches
            As for :func:`fit_patterns`.
        batch_size : int, optional
            Rows per model call for this fit (default: the fitter's).
        progress : bool, optional
            Show a progress bar for this fit (default: the fitter's setting).
        """
        method = self._explainer.method
        with self._lock:
            method.reset()
            try:
                rows = self.batch_size if batch_size is None else batch_size
                self._explainer.fit(data, batch_size=rows, progress=progress)
                return Patterns(method.patterns(), method.pattern_type)
            finally:
                method.release()  # the float64 sums (six per kernel element) are not kept between fits


def _is_keras_model(model) -> bool:
    """Whether ``model`` is a Keras model object (whose trace :class:`_Fitters` may keep with it)."""
    return callable(getattr(model, "get_weights", None)) and hasattr(model, "layers") and hasattr(model, "weights")


class _Fitters:
    """The :class:`PatternFitter` of each ``(pattern_type, output)`` that :func:`fit_patterns` traced for one Keras
    model, kept as an attribute of the model (so that its trace lives and dies with the model, and no module state
    holds models), with what the trace was made of: the model's layers, their activations and its weight variables
    (compared by identity). A copy or a pickle of the model starts without any."""

    ATTRIBUTE = "_deepexplain_pattern_fitters"

    def __init__(self):
        self._lock = threading.Lock()
        self._fitters: dict = {}  # (pattern_type, output) -> (structure, fitter)

    @classmethod
    def of(cls, model, pattern_type, output) -> PatternFitter | None:
        """The fitter of ``model`` for these arguments, traced now when there is none for the model as it is
        (None: the model takes no attribute, or the arguments are not hashable; the caller then traces one)."""
        fitters = model.__dict__.get(cls.ATTRIBUTE) if hasattr(model, "__dict__") else None
        if fitters is None:
            fitters = cls()
            try:
                object.__setattr__(model, cls.ATTRIBUTE, fitters)  # not Keras' tracked __setattr__: no weight of it
            except (AttributeError, TypeError):
                return None
        try:
            key = (pattern_type, output)
            hash(key)
        except TypeError:
            return None
        structure = _structure(model)
        with fitters._lock:
            known = fitters._fitters.get(key)
            if known is not None and _same(known[0], structure):
                return known[1]
            fitter = PatternFitter(model, pattern_type=pattern_type, output=output, progress=False)
            fitters._fitters[key] = (structure, fitter)
            return fitter

    def __copy__(self):
        return _Fitters()

    def __deepcopy__(self, memo):
        return _Fitters()

    def __reduce__(self):
        return _Fitters, ()


def _structure(model) -> tuple:
    """What a traced fit of ``model`` depends on besides the weights' values: its layers, each layer's activation
    and the weight variables (objects, compared by identity: a popped, added or rebuilt layer, another activation
    or a replaced variable makes another structure)."""
    layers = tuple(model.layers)
    return layers, tuple(getattr(layer, "activation", None) for layer in layers), tuple(model.weights)


def _same(a: tuple, b: tuple) -> bool:
    return all(len(x) == len(y) and all(u is v for u, v in zip(x, y, strict=True)) for x, y in zip(a, b, strict=True))


def _fitted_on_ray(model, data, output, pattern_type, batch_size, num_workers, progress) -> Patterns:
    from deepexplain import stream
    from deepexplain.dataset import _run_job
    from deepexplain.tensorflow.methods.patterns import PatternStatistics

    task = _FitTask(PatternStatistics, model, output, None, {"pattern_type": pattern_type}, batch_size)
    sums = stream.Sums()
    # the task is set up (compiled: the layers to fit) and checked on one sample in the driver too
    _run_job(task, data, None, None, None, {}, "ray", num_workers, None, progress, "fit", {}, sink=sums)
    method = task.setup().method
    method.set_statistics(sums.result())
    return Patterns(method.patterns(), method.pattern_type)


class _FitTask(ExplainerTask):
    """One shard's pattern statistics (float64 sums, flattened), merged by :class:`deepexplain.stream.Sums`."""

    columns: list | None = None

    def __call__(self, columns: dict) -> list:
        inputs = [columns[c] for c in self.columns]
        self._explainer.fit(inputs if len(inputs) > 1 else inputs[0], batch_size=self.batch_size, progress=False)
        return self._explainer.method.take_statistics()


def _fitted(explainer, data, batch_size) -> Patterns:
    """The patterns of a compiled :class:`PatternStatistics` explainer fitted on ``data`` (the TF1 context's)."""
    explainer.fit(data, batch_size=batch_size)
    method = explainer.method
    return Patterns(method.patterns(), method.pattern_type)


def signal_quality(model, data, patterns=None, *, batch_size=256, per_unit=False, progress=True, output=None) -> dict:
    """How well a signal estimator separates signal from distractor at each layer: Kindermans et al. 2018, Eq. 3,

        rho(S) = 1 - max_v corr(w^T x, v^T (x - S(x))),

    per unit (the best ``v`` is the least-squares regression of ``y = w^T x`` on the distractor estimate
    ``x - S(x)``; in-sample), averaged over the units of the layer. 1: what the estimator leaves behind tells
    nothing about the output; the gradient's estimator scores far lower (the paper's Fig. 3).

    Parameters
    ----------
    model, data, batch_size, progress, output
        As for :func:`fit_patterns`.
    patterns : Patterns, optional
        The estimator to rate: None rates the gradient's, ``S_w(x) = w w^T x / |w|^2``; 'linear' patterns
        ``S_a(x) = a w^T x``; 'relu' ('relu.negative') patterns the two-component estimator of Eq. 8, with the
        patterns as its positive (negative) part and the other part fitted on ``data``.
    per_unit : bool
        Return each unit's rho (an array per layer, NaN for a unit whose output does not vary) instead of the mean.

    Returns
    -------
    dict
        Layer name -> rho, for every kernel layer :func:`fit_patterns` fits: dense layers (also applied per token),
        EinsumDense (as one matrix product or an Einsum op), convolutions (1-D to 3-D, strided, dilated),
        transposed convolutions (their samples the patches of the zero-upsampled input) and depthwise convolutions
        (each input channel's units rated on that channel's patches, as a layer of its own).

    Raises
    ------
    UnsupportedOpError
        Before any data is read, for a kernel layer that cannot be rated (a grouped convolution, an einsum whose
        kernel shares an axis with both its data and output), naming it.

    Notes
    -----
    Rate patterns on other data than they were fitted on: on its own fitting data the 'linear' estimator scores 1
    by construction (its distractor estimate is uncorrelated with ``y`` there). An input direction the data never
    varies in (a pixel that is always 0, a dead ReLU before a dense layer) in which the estimator puts some signal
    gives rho = 0: there ``x - S(x)`` is ``-S(x)`` and reveals ``y`` exactly; the gradient's estimator does this
    wherever the kernel has weight on such an input.

    The pass holds, per layer, the input's covariance (``D x D`` for ``D`` inputs per unit: a dense layer's inputs, a
    convolution's patch size) and six ``D x units`` sums; each convolution's patches are extracted batch by batch,
    as the layer's op with one-hot kernels (exact, whatever the padding, stride, dilation or transposition).
    The maximal correlation is ``sqrt(g^T G^+ g / var(y))`` with ``G`` the covariance of ``x - S(x)`` and ``g`` its
    covariance with ``y``; ``G`` is the input covariance plus a rank-5 term per unit, so one eigendecomposition per
    layer serves every unit (Woodbury's identity; the covariance's eigenvalues floored at 1e-9 of the largest).
    """
    from deepexplain.explainer import Explainer
    from deepexplain.tensorflow.methods.patterns import QualityStatistics

    if patterns is not None and not isinstance(patterns, Patterns):  # before the model is traced
        raise InvalidInputError(f"patterns must be a deepexplain.Patterns or None; got {type(patterns).__name__}")
    return _quality(Explainer(QualityStatistics, model, output=output, progress=progress), data, patterns,
                    batch_size, per_unit)  # fmt: skip


def _quality(explainer, data, patterns, batch_size, per_unit) -> dict:
    """:func:`signal_quality` of a compiled :class:`QualityStatistics` explainer (a model's, or a TF1 graph's)."""
    if patterns is not None and not isinstance(patterns, Patterns):
        raise InvalidInputError(f"patterns must be a deepexplain.Patterns or None; got {type(patterns).__name__}")
    explainer.fit(data, batch_size=batch_size)
    method = explainer.method
    result = {}
    for key in method.layers:
        if patterns is not None and key not in patterns:
            raise InvalidInputError(f"signal_quality: patterns has no entry for layer {key!r}")
        given = None if patterns is None else method.matrices(key, patterns[key])
        kind = patterns.pattern_type if patterns is not None else None
        sums = method.sums[key]
        # one layer y = x^T K per group (a depthwise convolution's input channels), its units in the op's order
        rho = np.concatenate([_layer_quality([s if s.ndim == 0 else s[g] for s in sums],
                                             None if given is None else given[g], kind)
                              for g in range(len(sums[0]))])  # fmt: skip
        result[key] = rho if per_unit else float(np.nanmean(rho)) if np.any(np.isfinite(rho)) else float("nan")
    return result


def _layer_quality(sums: list, given: np.ndarray | None, kind: str | None) -> np.ndarray:
    """rho per unit from the sums of :class:`QualityStatistics` of one group; ``given``: the patterns as that
    group's ``(inputs, units)`` matrix (None: the gradient's estimator), fitted with ``kind``."""
    kernel, n, sum_x, sum_xx, sum_xm, sum_xz, sum_xz_neg, count, sum_z, sum_z_neg, sum_zz, sum_zz_neg = sums
    mean_x = sum_x / n
    covariance = sum_xx / n - np.outer(mean_x, mean_x)
    mean_z, mean_z_neg = sum_z / n, sum_z_neg / n
    c_pos = sum_xz / n - mean_x[:, None] * mean_z  # cov[x, z+] per unit, (D, units)
    c_neg = sum_xz_neg / n - mean_x[:, None] * mean_z_neg
    v_pos, v_neg = sum_zz / n - mean_z**2, sum_zz_neg / n - mean_z_neg**2
    v_cross = -mean_z * mean_z_neg  # z+ z- = 0 row by row
    mean_y = mean_z + mean_z_neg

    def fitted(sum_xy, sum_xmask, active):
        """The pattern over the rows of one component (the estimator of fit_patterns, from these sums)."""
        safe = active + (active == 0)
        cov = (sum_xy - sum_xmask * mean_y) / safe
        norm = np.sum(kernel * cov, axis=0)
        return cov / (norm + (norm == 0))

    positive = fitted(sum_xz, sum_xm, count)
    negative = fitted(sum_xz_neg, sum_x[:, None] - sum_xm, n - count)
    if given is None:
        a = b = kernel / np.sum(kernel**2, axis=0)
    else:
        given = np.asarray(given, np.float64)
        pairs = {"linear": (given, given), "relu": (given, negative), "relu.negative": (positive, given)}
        a, b = pairs[kind or "linear"]
    # w^T a = 1 makes w^T (x - S(x)) = 0 exactly; restore it in float64 (patterns are stored in float32), else the
    # rounding leaves a trace of y in that direction that the regression would find
    a, b = a / _nonzero(np.sum(kernel * a, axis=0)), b / _nonzero(np.sum(kernel * b, axis=0))
    var_y = v_pos + v_neg + 2 * v_cross
    g = c_pos + c_neg - a * (v_pos + v_cross) - b * (v_cross + v_neg)  # cov[x - S(x), y]
    direction = kernel / _nonzero(np.linalg.norm(kernel, axis=0))
    g = g - direction * np.sum(direction * g, axis=0)  # w is in the null space of cov[x - S(x)]: leave it out
    scale = max(np.trace(covariance) / len(covariance), np.finfo(float).tiny)
    # the input covariance, its eigenvalues floored (float32 sums leave it slightly indefinite; directions the data
    # never varies in get the floor instead of an infinite weight)
    values, vectors = np.linalg.eigh(covariance)
    inverse = 1 / np.maximum(values, 1e-9 * max(values.max(), np.finfo(float).tiny))

    def solve(m):
        return vectors @ (inverse[:, None] * (vectors.T @ m))

    # cov[x - S(x)] + scale * w w^T = covariance + U K U^T with U = [a, b, c+, c-, w] per unit
    basis = np.stack([a, b, c_pos, c_neg, direction], axis=1)
    solved_g = solve(g)
    solved_u = solve(basis.reshape(len(covariance), -1)).reshape(basis.shape)
    rho = np.full(kernel.shape[1], np.nan)
    for o in np.flatnonzero(var_y > 1e-12 * max(np.max(var_y), np.finfo(float).tiny)):
        u, x_u, x_g = basis[:, :, o], solved_u[:, :, o], solved_g[:, o]
        k = np.zeros((5, 5))
        k[:2, :2] = [[v_pos[o], v_cross[o]], [v_cross[o], v_neg[o]]]
        k[0, 2] = k[2, 0] = k[1, 3] = k[3, 1] = -1.0
        k[4, 4] = scale
        inner = u.T @ x_g
        explained = g[:, o] @ x_g - inner @ np.linalg.solve(np.linalg.inv(k) + u.T @ x_u, inner)
        rho[o] = 1 - np.sqrt(np.clip(explained / var_y[o], 0, 1))
    return rho


def _nonzero(values: np.ndarray) -> np.ndarray:
    return values + (values == 0)


__all__ = ["PatternFitter", "Patterns", "fit_patterns", "signal_quality"]
