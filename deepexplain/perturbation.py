"""Perturbation attributions on any numpy forward function.

Occlusion, Shapley value sampling, exact Shapley values and feature ablation share one recipe: for every sample,
evaluate the model on a fixed number of perturbed copies of it (*rows*), then combine the output differences. Each
method is a *plan* that says two things only:

* ``perturb(owners, j)``: which features of row ``j`` of sample ``owners`` are replaced by the baseline;
* ``combine(n0, outputs)``: how the outputs of complete samples ``n0, n0 + 1, ...`` become attributions.

:func:`_sweep` does everything else once for every method: it builds the rows chunk by chunk with numpy, evaluates
them in calls of at most ``batch_size`` rows, and hands each sample's outputs to its plan as soon as they are
complete. Memory therefore stays bounded by ``batch_size`` rows (plus one sample's outputs) whatever the job.

The model is seen only through a *forward function*::

    forward(rows: list[np.ndarray], owners: np.ndarray) -> np.ndarray

``rows`` holds one array per model input, shaped ``(k, *sample_shape_i)``; ``owners`` (int, ``(k,)``) gives the index
in ``xs`` of the sample each row was made from, so a wrapper can pick that sample's target; the function returns the
``k`` scalar outputs being explained. This module never imports TensorFlow: the TF session path and the Keras path
wrap their models into such a function.

Players
-------
The Shapley methods and feature ablation perturb *players*, groups of features switched to the baseline together.
By default every element of every input is a player; ``feature_mask`` (equal ids form one player, as in Captum) or,
for :func:`shapley_sampling`, ``sampling_dims`` (elements that share an index on those dimensions, as in the original
DeepExplain) group them.

Per-input arguments
-------------------
With several model inputs, ``baseline``, ``feature_mask``, ``window_shape`` and ``step`` take either one value shared
by every input or a ``list`` with exactly one entry per input; ``sampling_dims`` takes one list of dimensions or a
list of such lists (or ``None``) per input. A tuple or a numpy array is always a single shared value.
"""

import functools
import inspect
import math
import warnings

import numpy as np
from tqdm.auto import tqdm

from deepexplain.batching import DEFAULT_INPUT_BYTES_PER_RUN
from deepexplain.errors import InvalidInputError, InvalidTypeError
from deepexplain.resampling import stretch

__all__ = ("occlusion", "shapley_sampling", "shapley_exact", "feature_ablation", "kernel_shap", "lime", "rise",
           "rise_masks")  # fmt: skip

# The default batch holds about this many bytes of model input per forward call (the library's one row budget).
_BATCH_BYTES = DEFAULT_INPUT_BYTES_PER_RUN
# Rows are built this many bytes at a time, a block that stays in a core's cache.
_BLOCK_BYTES = 2**20
# Exact Shapley values evaluate 2**players rows per sample.
_MAX_EXACT_PLAYERS = 16


def _masks_per_sample(function):
    """Let ``feature_mask`` give each sample its own players: a mask with one more dimension than a sample, shaped
    ``(N, ...)`` and broadcastable to ``(N, *sample_shape)`` (as :func:`deepexplain.segments` returns), runs the
    method sample by sample, each with its mask; the seed's generator goes on from one sample to the next."""
    signature = inspect.signature(function)

    @functools.wraps(function)
    def run(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = bound.arguments
        xs = [arguments["xs"]] if isinstance(arguments["xs"], np.ndarray) else list(arguments["xs"])
        masks = _per_input(arguments["feature_mask"], len(xs))
        per_sample = [m is not None and np.ndim(m) == np.ndim(x) for m, x in zip(masks, xs, strict=True)]
        if not any(per_sample):
            return function(**arguments)
        n = len(xs[0])
        for i, (mask, own) in enumerate(zip(masks, per_sample, strict=True)):
            if own and len(mask) not in (1, n):
                raise InvalidInputError(
                    f"feature_mask of input {i} has one mask per sample: expected {n} masks (one per sample of xs), "
                    f"got {len(mask)}"
                )
        forward, progress = arguments["forward"], arguments["progress"]
        if "seed" in arguments:
            arguments["seed"] = np.random.default_rng(arguments["seed"])
        parts = []
        for k in tqdm(range(n), desc=function.__name__, unit="sample", delay=2, disable=not progress):
            sample_masks = [m[k if len(m) > 1 else 0] if own else m for m, own in zip(masks, per_sample, strict=True)]
            one = {**arguments, "xs": [x[k : k + 1] for x in xs], "progress": False,
                   "feature_mask": sample_masks if len(xs) > 1 else sample_masks[0],
                   "forward": lambda rows, owners, k=k: forward(rows, owners + k)}  # fmt: skip
            parts.append(function(**one))
        return [np.concatenate([p[i] for p in parts]) for i in range(len(xs))]

    return run


# -----------------------------------------------------------------------------
# Public methods
# -----------------------------------------------------------------------------


def occlusion(forward, xs, window_shape=None, step=None, baseline=0.0, batch_size=None, progress=True):
    """Occlusion: how much the output drops when a sliding window of the input is replaced by a baseline.

    Every window position (a window of ``window_shape`` moved by ``step`` over one sample, as
    ``skimage.util.view_as_windows`` places them) is replaced by ``baseline`` while everything else stays intact,
    giving ``delta_w = f(x) - f(x with window w replaced)``. A feature receives the drops of all windows that cover
    it, divided by their total size::

        a_i = sum(delta_w for w covering i) / sum(size(w) for w covering i)

    which is the original DeepExplain's formula (with window 1 it is ``f(x) - f(x with x_i replaced)``). With several
    inputs the windows of each input are occluded in turn while the other inputs stay intact.

    Parameters
    ----------
    forward : callable
        ``forward(rows, owners) -> outputs`` (see the module docstring): one array per input shaped
        ``(k, *sample_shape)``, the int array ``(k,)`` of source samples, returning ``k`` scalar outputs.
    xs : list of numpy.ndarray
        One array per model input, each ``(N, *sample_shape_i)`` with the same ``N``. A single array is taken as a
        one-input model.
    window_shape : int or tuple of int or list, optional
        Shape of the occluded window: an int is used along every non-batch dimension, a tuple gives one size per
        non-batch dimension. Default 1. A list with one entry per input gives each input its own window.
    step : int or tuple of int or list, optional
        Distance between consecutive windows, per non-batch dimension like ``window_shape``. Default 1.
    baseline : float or numpy.ndarray or list, optional
        Value the window is replaced with: a scalar or an array shaped like one sample (cast to the input's dtype).
        A list with one entry per input gives each input its own baseline. Default 0.
    batch_size : int, optional
        Most rows per ``forward`` call. Default: as many as keep a call's inputs around 16 MB (at least 1).
        Results do not depend on it.
    progress : bool, optional
        Show a progress bar over forward calls when the job takes longer than about 2 s. Default True.

    Returns
    -------
    list of numpy.ndarray
        One array per input, shaped like that input, float32 for float32 or float16 inputs and float64 otherwise.
        Features that no window covers (``step`` larger than ``window_shape``, or a window that does not tile the
        input) are NaN, and a ``UserWarning`` says so before the model is called.

    Raises
    ------
    TypeError
        ``forward`` is not callable, or an argument has the wrong type.
    ValueError
        Inputs with different sample counts, a ``window_shape`` or ``step`` of the wrong length, not positive, or a
        window larger than the input, a baseline of the wrong shape, ``batch_size`` < 1. All are checked before the
        first forward call.

    References
    ----------
    .. [1] M. D. Zeiler and R. Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014.
    .. [2] M. Ancona, E. Ceolini, C. Öztireli and M. Gross, "Towards better understanding of gradient-based
       attribution methods for Deep Neural Networks", ICLR 2018.
    """
    inputs = _Inputs(forward, xs, batch_size)
    n_inputs = len(inputs.shapes)
    windows = [
        _window_spec(w, shape, "window_shape", i)
        for i, (w, shape) in enumerate(zip(_per_input(window_shape, n_inputs), inputs.shapes, strict=True))
    ]
    steps = [
        _window_spec(s, shape, "step", i)
        for i, (s, shape) in enumerate(zip(_per_input(step, n_inputs), inputs.shapes, strict=True))
    ]
    for i, (window, shape) in enumerate(zip(windows, inputs.shapes, strict=True)):
        if any(w > n for w, n in zip(window, shape, strict=True)):
            raise InvalidInputError(
                f"window_shape {window} of input {i} is larger than one sample of it, shape {shape}"
            )
    inputs.set_baseline(baseline)
    plan = _OcclusionPlan(inputs, windows, steps)
    return _sweep(forward, inputs, plan, batch_size, progress, "occlusion")


@_masks_per_sample
def shapley_sampling(
    forward,
    xs,
    samples=5,
    sampling_dims=None,
    feature_mask=None,
    baseline=0.0,
    seed=None,
    antithetic=False,
    batch_size=None,
    progress=True,
):
    """Shapley values estimated by sampling permutations of the players (Castro et al., 2009).

    For each sample, ``samples`` random orders of its players are drawn. Walking an order from ``x``, the players
    are switched to the baseline one by one; a player's value in that order is ``f(before) - f(after)`` its switch,
    and its estimate is the mean over orders. Each order's values sum exactly to ``f(x) - f(baseline)``, so the
    estimate is complete; it converges to the Shapley value as ``samples`` grows. One order over ``P`` players
    costs ``P + 1`` rows (``x`` itself through the all-baseline input).

    Parameters
    ----------
    forward : callable
        ``forward(rows, owners) -> outputs``, see :func:`occlusion`.
    xs : list of numpy.ndarray
        One array per model input, each ``(N, *sample_shape_i)``.
    samples : int, optional
        Permutations per sample (in total, antithetic pairs included). Default 5.
    sampling_dims : list of int, optional
        Non-batch dimensions (1 = the first dimension after the batch) whose indices define the players: the
        elements sharing an index on all of them form one player, e.g. ``[1, 2]`` = the pixels of an NHWC image,
        ``[3]`` = its channels. With several inputs, one list for all or a list of lists (or ``None``) per input.
        Default: every element is a player. Cannot be combined with ``feature_mask``.
    feature_mask : numpy.ndarray of int or list, optional
        Integer ids broadcastable to one sample of the input; elements with equal ids form one player (ids are
        shared across inputs, as in Captum). With several inputs, a list with one mask (or ``None``: every element
        its own player) per input.
    baseline : float or numpy.ndarray or list, optional
        Value a switched-off player takes: a scalar or an array shaped like one sample. Default 0.
    seed : int or numpy.random.Generator, optional
        Seed of ``numpy.random.default_rng``; the same seed gives the same permutations. Default: fresh entropy.
    antithetic : bool, optional
        Pair each drawn permutation with its reverse, which cancels much of the sampling variance. ``samples``
        must then be even. Default False.
    batch_size : int, optional
        Most rows per ``forward`` call; default about 16 MB of inputs per call. Results do not depend on it.
    progress : bool, optional
        Show a progress bar when the job takes longer than about 2 s. Default True.

    Returns
    -------
    list of numpy.ndarray
        One array per input. With ``sampling_dims``, DeepExplain's shape ``(N, *[x.shape[d] for d in
        sampling_dims])`` (one value per player, axes in the order of ``sampling_dims``); otherwise the input's own
        shape, every element holding its player's value.

    Raises
    ------
    TypeError
        ``forward`` not callable, a non-integer ``samples`` or ``feature_mask``, other wrong types.
    ValueError
        ``samples`` < 1, odd ``samples`` with ``antithetic``, ``sampling_dims`` empty, repeated, containing the batch
        dimension 0 or out of range, ``feature_mask`` not broadcastable to a sample, both ``sampling_dims`` and
        ``feature_mask``, a baseline of the wrong shape, inputs with different sample counts, ``batch_size`` < 1.
        All are checked before the first forward call.

    References
    ----------
    .. [1] J. Castro, D. Gómez and J. Tejada, "Polynomial calculation of the Shapley value based on sampling",
       Computers & Operations Research 36(5), 2009.
    .. [2] R. Mitchell, J. Cooper, E. Frank and G. Holmes, "Sampling Permutations for Shapley Value Estimation",
       JMLR 23(43), 2022 (antithetic permutations).
    """
    inputs = _Inputs(forward, xs, batch_size)
    samples = _check_samples(samples, 5)
    if antithetic and samples % 2:
        raise InvalidInputError(
            f"antithetic=True pairs each permutation with its reverse: samples must be even, got {samples}"
        )
    players = _players(inputs, sampling_dims, feature_mask)
    inputs.set_baseline(baseline)
    plan = _SamplingPlan(inputs, players, samples, np.random.default_rng(seed), bool(antithetic))
    return _sweep(forward, inputs, plan, batch_size, progress, "shapley_sampling")


@_masks_per_sample
def shapley_exact(forward, xs, feature_mask=None, baseline=0.0, batch_size=None, progress=True):
    """Exact Shapley values, enumerating all ``2**P`` coalitions of the ``P`` players of every sample.

    With ``v(S)`` the output on ``x`` whose players outside ``S`` take the baseline, player ``i`` gets::

        phi_i = sum over S not containing i of |S|! (P - |S| - 1)! / P! * (v(S + {i}) - v(S))

    The values of a sample sum to ``f(x) - f(baseline)``. Costs ``2**P`` rows per sample, so ``P`` is limited to 16.

    Parameters
    ----------
    forward : callable
        ``forward(rows, owners) -> outputs``, see :func:`occlusion`.
    xs : list of numpy.ndarray
        One array per model input, each ``(N, *sample_shape_i)``.
    feature_mask : numpy.ndarray of int or list, optional
        Groups features into players, see :func:`shapley_sampling`. Default: every element is a player.
    baseline : float or numpy.ndarray or list, optional
        Value of an absent player: a scalar or an array shaped like one sample. Default 0.
    batch_size : int, optional
        Most rows per ``forward`` call; default about 16 MB of inputs per call. Results do not depend on it.
    progress : bool, optional
        Show a progress bar when the job takes longer than about 2 s. Default True.

    Returns
    -------
    list of numpy.ndarray
        One array per input shaped like it, every element holding its player's value.

    Raises
    ------
    TypeError
        ``forward`` not callable, a non-integer ``feature_mask``, other wrong types.
    ValueError
        More than 16 players, ``feature_mask`` not broadcastable to a sample, a baseline of the wrong shape, inputs
        with different sample counts, ``batch_size`` < 1. All are checked before the first forward call.

    References
    ----------
    .. [1] L. S. Shapley, "A value for n-person games", Contributions to the Theory of Games II, 1953.
    """
    inputs = _Inputs(forward, xs, batch_size)
    players = _players(inputs, None, feature_mask)
    if players.count > _MAX_EXACT_PLAYERS:
        raise InvalidInputError(
            f"shapley_exact evaluates 2**P rows per sample and accepts at most {_MAX_EXACT_PLAYERS} players, got "
            f"{players.count}; group features into fewer players with feature_mask, or use shapley_sampling"
        )
    inputs.set_baseline(baseline)
    plan = _ExactPlan(inputs, players)
    return _sweep(forward, inputs, plan, batch_size, progress, "shapley_exact")


@_masks_per_sample
def feature_ablation(forward, xs, feature_mask=None, baseline=0.0, batch_size=None, progress=True):
    """Feature ablation: the output drop when one player alone is replaced by the baseline.

    Player ``i`` gets ``f(x) - f(x with player i at the baseline)``. With the default players (every element) this is
    occlusion with a window of 1. Costs ``P + 1`` rows per sample.

    Parameters
    ----------
    forward : callable
        ``forward(rows, owners) -> outputs``, see :func:`occlusion`.
    xs : list of numpy.ndarray
        One array per model input, each ``(N, *sample_shape_i)``.
    feature_mask : numpy.ndarray of int or list, optional
        Groups features into players ablated together, see :func:`shapley_sampling`. Default: every element.
    baseline : float or numpy.ndarray or list, optional
        Value of an ablated player: a scalar or an array shaped like one sample. Default 0.
    batch_size : int, optional
        Most rows per ``forward`` call; default about 16 MB of inputs per call. Results do not depend on it.
    progress : bool, optional
        Show a progress bar when the job takes longer than about 2 s. Default True.

    Returns
    -------
    list of numpy.ndarray
        One array per input shaped like it, every element holding its player's value.

    Raises
    ------
    TypeError
        ``forward`` not callable, a non-integer ``feature_mask``, other wrong types.
    ValueError
        ``feature_mask`` not broadcastable to a sample, a baseline of the wrong shape, inputs with different sample
        counts, ``batch_size`` < 1. All are checked before the first forward call.

    References
    ----------
    .. [1] M. D. Zeiler and R. Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014.
    .. [2] M. Ancona, E. Ceolini, C. Öztireli and M. Gross, "Towards better understanding of gradient-based
       attribution methods for Deep Neural Networks", ICLR 2018.
    """
    inputs = _Inputs(forward, xs, batch_size)
    players = _players(inputs, None, feature_mask)
    inputs.set_baseline(baseline)
    plan = _AblationPlan(inputs, players)
    return _sweep(forward, inputs, plan, batch_size, progress, "feature_ablation")


@_masks_per_sample
def kernel_shap(forward, xs, feature_mask=None, samples=None, baseline=0.0, seed=None, batch_size=None,
                progress=True):  # fmt: skip
    """Shapley values by KernelSHAP: the weighted linear regression of the outputs of coalitions of players
    (Lundberg & Lee 2017, Theorem 2 and Eqs. 8-9).

    With ``v(z)`` the output on ``x`` whose players outside coalition ``z`` take the baseline, the values ``phi``
    minimise ``sum_z pi(z) (v(z) - v(0) - z . phi)**2`` subject to ``sum(phi) = v(1) - v(0)`` (efficiency, enforced
    exactly), with the Shapley kernel ``pi(z) = (P - 1) / (C(P, |z|) |z| (P - |z|))``. When ``samples`` covers all
    ``2**P - 2`` proper coalitions they are all enumerated and the result is the exact Shapley value; otherwise
    ``samples`` coalitions are drawn from the kernel (a size ``s`` with probability proportional to
    ``(P - 1) / (s (P - s))``, then a uniform subset of that size) in complementary pairs, each weighing the same.
    Costs ``samples + 2`` rows per sample.

    Parameters
    ----------
    forward, xs, baseline, batch_size, progress
        As :func:`shapley_exact`.
    feature_mask : numpy.ndarray of int or list, optional
        Groups features into players, see :func:`shapley_sampling` (equal ids are one player across inputs; a mask
        with a leading sample dimension gives each sample its own). Default: every element is a player.
    samples : int, optional
        Coalitions per sample. Default ``2 * P + 2048`` (shap's ``nsamples='auto'``), all of them when fewer.
    seed : int or numpy.random.Generator, optional
        Seed of the coalitions drawn (sample after sample, so they do not depend on ``batch_size``).

    Returns
    -------
    list of numpy.ndarray
        One array per input shaped like it, every element holding its player's value; per sample they sum to
        ``f(x) - f(baseline)``.

    Raises
    ------
    TypeError, ValueError
        As :func:`shapley_exact`, and for ``samples`` < 1; checked before the first forward call. Fewer coalitions
        than ``2 * P`` warn: the regression is then barely determined.

    References
    ----------
    .. [1] S. M. Lundberg and S.-I. Lee, "A Unified Approach to Interpreting Model Predictions", NeurIPS 2017.
    .. [2] I. Covert and S.-I. Lee, "Improving KernelSHAP: Practical Shapley Value Estimation via Linear
       Regression", AISTATS 2021 (paired sampling).
    """
    inputs = _Inputs(forward, xs, batch_size)
    players = _players(inputs, None, feature_mask)
    p = players.count
    samples = _check_samples(samples, 2 * p + 2048)
    if p > 1 and samples < 2 * p and samples < 2**p - 2:
        warnings.warn(
            f"kernel_shap: {samples} coalitions for {p} players barely determine the regression; give samples >= "
            f"{2 * p} (2 per player) or group features into fewer players with feature_mask",
            UserWarning,
            stacklevel=2,
        )
    inputs.set_baseline(baseline)
    plan = _KernelShapPlan(inputs, players, samples, np.random.default_rng(seed))
    return _sweep(forward, inputs, plan, batch_size, progress, "kernel_shap")


@_masks_per_sample
def lime(forward, xs, feature_mask=None, samples=1000, kernel_width=0.25, alpha=1.0, baseline=0.0, seed=None,
         batch_size=None, progress=True):  # fmt: skip
    """LIME: the coefficients of a weighted ridge regression of the outputs on random coalitions of players
    (Ribeiro et al. 2016, Eqs. 1-2), as the ``lime`` package explains images.

    Row 0 of a sample is ``x`` itself; the others keep each player with probability 1/2 (the rest take the
    baseline). A coalition ``z`` weighs ``sqrt(exp(-d(z)**2 / kernel_width**2))`` with ``d`` the cosine distance
    between ``z`` and the all-present coalition (1 for the empty one), and the players' values are the
    coefficients of ``Ridge(alpha)`` with an unpenalised intercept fitted with those weights (lime's
    ``LimeBase``; ``alpha=0`` is weighted least squares). Costs ``samples`` rows per sample.

    Parameters
    ----------
    forward, xs, feature_mask, baseline, batch_size, progress
        As :func:`kernel_shap`.
    samples : int, optional
        Coalitions per sample, ``x`` included. Default 1000 (lime's ``num_samples``).
    kernel_width : float, optional
        Width of the exponential kernel on the cosine distance. Default 0.25 (lime's for images).
    alpha : float, optional
        Ridge penalty (>= 0). Default 1 (lime's ``Ridge(alpha=1)``).
    seed : int or numpy.random.Generator, optional
        Seed of the coalitions drawn (sample after sample, so they do not depend on ``batch_size``).

    Returns
    -------
    list of numpy.ndarray
        One array per input shaped like it, every element holding its player's coefficient.

    Raises
    ------
    TypeError, ValueError
        As :func:`shapley_exact`, for ``samples`` < 1, ``kernel_width`` <= 0 or ``alpha`` < 0; checked before the
        first forward call. Fewer than ``P + 1`` coalitions warn: the regression is then underdetermined.

    References
    ----------
    .. [1] M. T. Ribeiro, S. Singh and C. Guestrin, "'Why Should I Trust You?': Explaining the Predictions of Any
       Classifier", KDD 2016.
    """
    inputs = _Inputs(forward, xs, batch_size)
    samples = _check_samples(samples, 1000)
    for name, value, low in (("kernel_width", kernel_width, 0.0), ("alpha", alpha, None)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise InvalidTypeError(f"{name} must be a number, got {type(value).__name__}")
        if not (value > low if low is not None else value >= 0) or not np.isfinite(value):
            raise InvalidInputError(f"{name} must be {'> 0' if low is not None else '>= 0'} and finite, got {value}")
    players = _players(inputs, None, feature_mask)
    if samples < players.count + 1:
        warnings.warn(
            f"lime: {samples} coalitions for {players.count} players leave the regression underdetermined; give "
            f"samples >= {players.count + 1} or group features into fewer players with feature_mask",
            UserWarning,
            stacklevel=2,
        )
    inputs.set_baseline(baseline)
    plan = _LimePlan(inputs, players, samples, float(kernel_width), float(alpha), np.random.default_rng(seed))
    return _sweep(forward, inputs, plan, batch_size, progress, "lime")


def rise(forward, xs, masks=4000, grid=7, p=0.5, baseline=0.0, seed=None, batch_size=None, progress=True):
    """RISE: the outputs on randomly masked copies of each sample, averaged with the masks as weights (Petsiuk et
    al. 2018, Eq. 6): ``S = sum_i f(x * M_i + b * (1 - M_i)) M_i / (masks * p)``.

    The masks (:func:`rise_masks`) are the same for every sample: a ``grid`` × ``grid`` grid of cells kept with
    probability ``p``, stretched bilinearly onto the image (a cell per ``ceil(H / grid)`` pixels, one cell more)
    and shifted by a random offset within a cell. One mask covers all channels of a pixel. Costs ``masks`` rows per
    sample.

    Parameters
    ----------
    forward, baseline, batch_size, progress
        As :func:`shapley_exact`; the baseline (default 0, the paper's) is what a masked-out pixel shows.
    xs : list of numpy.ndarray
        One input: images ``(N, H, W, C)`` or sequences ``(N, T, C)``.
    masks : int
        How many masks (default 4000, the paper's and xplique's).
    grid : int
        Cells per side of a mask (default 7).
    p : float
        Probability that a cell is kept, in (0, 1] (default 0.5).
    seed : int or numpy.random.Generator, optional
        Seed of the masks.

    Returns
    -------
    list of numpy.ndarray
        One map per sample, ``(N, H, W)`` (``(N, T)`` for sequences).

    References
    ----------
    .. [1] V. Petsiuk, A. Das and K. Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
       Models", BMVC 2018.
    """
    inputs = _Inputs(forward, xs, batch_size)
    if len(inputs.xs) != 1 or len(inputs.shapes[0]) not in (2, 3):
        raise InvalidInputError(
            "rise masks the positions of one input of images (N, H, W, C) or sequences (N, T, C); got inputs of "
            f"shapes {[x.shape for x in inputs.xs]}"
        )
    masks = _check_samples(masks, 4000)
    spatial = inputs.shapes[0][:-1]
    all_masks = _RiseMasks(spatial, masks, grid, p, seed)  # made chunk by chunk: 4000 full masks would not fit
    inputs.set_baseline(baseline)
    x, base = inputs.xs[0], np.broadcast_to(inputs.base[0], inputs.flat[0].shape[1:]).reshape(inputs.shapes[0])
    total = inputs.n * masks
    batch_size = batch_size or inputs.default_batch_size()
    saliency = np.zeros((inputs.n, int(np.prod(spatial))))
    with tqdm(total=-(-total // batch_size), desc="rise", unit="call", delay=2, disable=not progress) as bar:
        for start in range(0, total, batch_size):
            owners, ids = np.divmod(np.arange(start, min(start + batch_size, total)), masks)
            chunk = all_masks[ids]
            m = chunk[..., None]
            rows = (x[owners] * m + base * (1 - m)).astype(inputs.flat[0].dtype, copy=False)
            scores = _call(forward, [rows], owners)
            np.add.at(saliency, owners, scores[:, None] * chunk.reshape(len(ids), -1))
            bar.update()
    return [(saliency / (masks * p)).reshape((inputs.n, *spatial)).astype(inputs.result_dtypes[0])]


def rise_masks(shape, masks=4000, grid=7, p=0.5, seed=None) -> np.ndarray:
    """The masks of :func:`rise`: ``(masks, *shape)`` float32 in [0, 1] for a 2-D (H, W) or 1-D (T,) ``shape``.

    Each is a ``grid`` cells per side binary grid (cells kept with probability ``p``), stretched bilinearly
    (half-pixel, edges clamped) to ``(grid + 1) * cell`` with ``cell = ceil(size / grid)``, then cropped at a random
    offset in ``[0, cell)`` per axis (Petsiuk et al. 2018, Sec. 3.2).
    """
    return _RiseMasks(shape, masks, grid, p, seed)[np.arange(masks)]


class _RiseMasks:
    """RISE's masks, drawn once as small grids and shifts (the seed fixes them all) and stretched on demand."""

    def __init__(self, shape, masks, grid, p, seed):
        if not _is_int(grid) or grid < 1:
            raise InvalidInputError(f"grid must be a positive int, got {grid!r}")
        if isinstance(p, bool) or not isinstance(p, (int, float, np.number)) or not 0 < p <= 1:
            raise InvalidInputError(f"p must be a probability in (0, 1], got {p!r}")
        rng = np.random.default_rng(seed)
        self.shape = tuple(int(n) for n in shape)
        self.cells = [math.ceil(n / grid) for n in self.shape]
        self.grids = rng.random((masks, *(grid,) * len(self.shape))) < p
        self.shifts = np.stack([rng.integers(0, c, size=masks) for c in self.cells], axis=1)
        self.size = [(grid + 1) * c for c in self.cells]

    def __getitem__(self, ids) -> np.ndarray:
        stretched = stretch(self.grids[ids].astype(np.float64), self.size, "bilinear")
        out = np.empty((len(ids), *self.shape), np.float32)
        for k, shift in enumerate(self.shifts[ids]):
            out[k] = stretched[(k, *(slice(o, o + n) for o, n in zip(shift, self.shape, strict=True)))]
        return out


def _check_samples(samples, default):
    if samples is None:
        return default
    if not _is_int(samples):
        raise InvalidTypeError(f"samples must be an int, got {type(samples).__name__}")
    if samples < 1:
        raise InvalidInputError(f"samples must be at least 1, got {samples}")
    return int(samples)


# -----------------------------------------------------------------------------
# The engine: rows chunk by chunk, forward calls, outputs back to the plan per sample
# -----------------------------------------------------------------------------


def _sweep(forward, inputs, plan, batch_size, progress, desc):
    """Evaluate every row of ``plan`` for every sample, ``batch_size`` rows per call, and return its result."""
    per_sample = plan.rows_per_sample
    total = inputs.n * per_sample
    if batch_size is None:
        batch_size = inputs.default_batch_size()
    collector = _Collector(per_sample, plan.combine)
    with tqdm(total=-(-total // batch_size), desc=desc, unit="call", delay=2, disable=not progress) as bar:
        for start in range(0, total, batch_size):
            owners, j = np.divmod(np.arange(start, min(start + batch_size, total)), per_sample)
            rows = inputs.rows(owners, j, plan.perturb)
            collector.add(_call(forward, rows, owners))
            bar.update()
    return plan.results


def _call(forward, rows, owners):
    out = np.asarray(forward(rows, owners), dtype=np.float64)
    k = len(owners)
    if out.ndim == 0 or out.shape[0] != k or out.size != k:
        raise InvalidInputError(f"forward must return one scalar output per row, shape ({k},), got shape {out.shape}")
    return out.reshape(k)


class _Collector:
    """Cuts the stream of outputs into complete samples and hands them to ``combine(n0, outputs[m, per_sample])``."""

    def __init__(self, per_sample, combine):
        self.per_sample = per_sample
        self.combine = combine
        self.partial = np.empty(per_sample)  # outputs of the sample that the last call left incomplete
        self.filled = 0
        self.next_sample = 0

    def add(self, out):
        r = self.per_sample
        if self.filled:
            take = min(r - self.filled, len(out))
            self.partial[self.filled : self.filled + take] = out[:take]
            self.filled += take
            out = out[take:]
            if self.filled < r:
                return
            self._emit(self.partial[None])
            self.filled = 0
        whole = len(out) // r
        if whole:
            self._emit(out[: whole * r].reshape(whole, r))
        rest = out[whole * r :]
        self.partial[: len(rest)] = rest
        self.filled = len(rest)

    def _emit(self, outputs):
        self.combine(self.next_sample, outputs)
        self.next_sample += len(outputs)


class _Inputs:
    """Validated ``xs`` flattened per sample, their baselines, and the rows built from them."""

    def __init__(self, forward, xs, batch_size):
        if not callable(forward):
            raise InvalidTypeError(f"forward must be callable as forward(rows, owners), got {type(forward).__name__}")
        if batch_size is not None:
            if not _is_int(batch_size):
                raise InvalidTypeError(f"batch_size must be None or an int, got {type(batch_size).__name__}")
            if batch_size < 1:
                raise InvalidInputError(
                    f"batch_size must be at least 1 (or None for about 16 MB per call), got {batch_size}"
                )
        if isinstance(xs, np.ndarray):
            xs = [xs]
        if not isinstance(xs, (list, tuple)) or not xs:
            raise InvalidTypeError(
                f"xs must be a non-empty list with one array per model input, got {type(xs).__name__}"
            )
        arrays = []
        for i, x in enumerate(xs):
            x = np.asarray(x)
            if x.dtype.kind not in "biuf":
                raise InvalidTypeError(f"xs[{i}] must hold numbers, got dtype {x.dtype}")
            if x.ndim < 2 or math.prod(x.shape[1:]) == 0:
                raise InvalidInputError(
                    f"xs[{i}] must be shaped (samples, *features) with at least one feature, got shape {x.shape}"
                )
            arrays.append(x)
        counts = [len(x) for x in arrays]
        if len(set(counts)) > 1:
            raise InvalidInputError(f"all inputs in xs must have the same number of samples, got {counts}")
        self.n = counts[0]
        self.xs = arrays
        self.shapes = [x.shape[1:] for x in arrays]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.result_dtypes = [np.result_type(x.dtype, np.float32) for x in arrays]
        self.flat = None
        self.base = None

    def set_baseline(self, baseline):
        """Check ``baseline`` and fix the dtype of the rows: the input's own when it is floating."""
        self.flat, self.base = [], []
        for i, (b, x) in enumerate(zip(_per_input(baseline, len(self.xs)), self.xs, strict=True)):
            b = np.asarray(0.0 if b is None else b)
            if b.dtype.kind not in "biuf":
                raise InvalidTypeError(f"baseline of input {i} must hold numbers, got dtype {b.dtype}")
            if b.ndim and b.shape != x.shape[1:]:
                raise InvalidInputError(
                    f"baseline of input {i} must be a scalar or an array shaped like one sample {x.shape[1:]}, "
                    f"got shape {b.shape}"
                )
            dtype = x.dtype if x.dtype.kind == "f" else np.result_type(x.dtype, b.dtype)
            self.flat.append(x.reshape(len(x), math.prod(x.shape[1:])).astype(dtype, copy=False))
            self.base.append(b.astype(dtype).reshape(-1) if b.ndim else b.astype(dtype))
        # A blend by arithmetic needs finite values: inf * 0 is nan.
        self.blend = [
            flat.dtype.kind != "f" or bool(np.isfinite(flat).all() and np.isfinite(base).all())
            for flat, base in zip(self.flat, self.base, strict=True)
        ]
        self.nonzero_base = [bool(np.any(base)) for base in self.base]
        self.row_bytes = sum(flat.dtype.itemsize * flat.shape[1] for flat in self.flat)
        self.block = max(1, _BLOCK_BYTES // self.row_bytes)

    def default_batch_size(self):
        return max(1, _BATCH_BYTES // self.row_bytes)

    def rows(self, owners, j, perturb):
        """Rows ``j`` of samples ``owners``: copies whose features that ``perturb`` marks absent take the baseline."""
        k = len(owners)
        rows = [np.empty((k, flat.shape[1]), dtype=flat.dtype) for flat in self.flat]
        # Built a cache-sized block at a time, so the gather and the masking find the block in cache.
        for lo in range(0, k, self.block):
            part = slice(lo, lo + self.block)
            absent = perturb(owners[part], j[part])
            who = owners[part]
            for row, flat, base, nonzero, blend, off in zip(
                rows, self.flat, self.base, self.nonzero_base, self.blend, absent, strict=True
            ):
                row = row[part]
                if off is not None and blend:
                    # x * keep + baseline * absent is exact for finite values and, unlike a masked copy, has no
                    # branch to mispredict on the random masks of Shapley sampling: several times faster. A
                    # block of one sample (the usual case) is then built in a single pass.
                    x = flat[who[0]] if who[0] == who[-1] else flat[who]
                    np.multiply(x, ~off, out=row)
                    if nonzero:
                        row += off * base
                    continue
                np.take(flat, who, axis=0, out=row, mode="clip")  # mode="raise" would buffer `out`
                if off is not None:
                    np.copyto(row, base, where=off)
        return [row.reshape((k, *shape)) for row, shape in zip(rows, self.shapes, strict=True)]

    def new_results(self, shapes):
        return [np.empty((self.n, *s), dtype=d) for s, d in zip(shapes, self.result_dtypes, strict=True)]


# -----------------------------------------------------------------------------
# Occlusion
# -----------------------------------------------------------------------------


class _OcclusionPlan:
    """Row 0 of a sample is ``x``; row ``1 + w`` occludes window ``w`` (windows of input 0 first, then input 1...)."""

    def __init__(self, inputs, windows, steps):
        self.starts, self.offsets, self.coverage, self.bounds = [], [], [], []
        first = 0
        for i, (shape, window, step) in enumerate(zip(inputs.shapes, windows, steps, strict=True)):
            # A window is the flat index of its corner plus the flat offsets of its elements: ravel is linear.
            corners = np.meshgrid(
                *[np.arange(0, n - w + 1, s) for n, w, s in zip(shape, window, step, strict=True)], indexing="ij"
            )
            starts = np.ravel_multi_index([c.ravel() for c in corners], shape)
            offsets = np.ravel_multi_index(np.indices(window).reshape(len(window), -1), shape)
            coverage = np.zeros((1, inputs.sizes[i]))
            _add_windows(coverage, starts, offsets, np.full((1, len(starts)), float(len(offsets))))
            uncovered = int(np.count_nonzero(coverage == 0))
            if uncovered:
                warnings.warn(
                    f"occlusion attributions contain nans: window_shape {window} and step {step} leave {uncovered} "
                    f"of the {inputs.sizes[i]} features of input {i} uncovered",
                    UserWarning,
                    stacklevel=3,
                )
            self.starts.append(starts)
            self.offsets.append(offsets)
            self.coverage.append(coverage[0])
            self.bounds.append((first, first + len(starts)))
            first += len(starts)
        self.rows_per_sample = 1 + first
        self.shapes = inputs.shapes
        self.results = inputs.new_results(inputs.shapes)

    def perturb(self, owners, j):
        window = j - 1  # -1 for the unperturbed row
        absent = []
        for (lo, hi), starts, offsets, coverage in zip(
            self.bounds, self.starts, self.offsets, self.coverage, strict=True
        ):
            rows = np.flatnonzero((window >= lo) & (window < hi))
            if not rows.size:
                absent.append(None)
                continue
            off = np.zeros((len(j), len(coverage)), dtype=bool)
            off[rows[:, None], starts[window[rows] - lo][:, None] + offsets] = True
            absent.append(off)
        return absent

    def combine(self, n0, outputs):
        drop = outputs[:, :1] - outputs[:, 1:]
        for (lo, hi), starts, offsets, coverage, shape, result in zip(
            self.bounds, self.starts, self.offsets, self.coverage, self.shapes, self.results, strict=True
        ):
            total = np.zeros((len(outputs), len(coverage)))
            _add_windows(total, starts, offsets, drop[:, lo:hi])
            heat = np.divide(total, coverage, out=np.full_like(total, np.nan), where=coverage > 0)
            result[n0 : n0 + len(outputs)] = heat.reshape((len(outputs), *shape))


def _add_windows(target, starts, offsets, values):
    """``target[:, f] += values[:, w]`` for every feature ``f`` of every window ``w``, without a buffer W x size."""
    # Within one pass no index repeats (distinct corners, or distinct offsets), so fancy-index += is exact.
    if len(offsets) <= len(starts):
        for offset in offsets:
            target[:, starts + offset] += values
    else:
        for w, start in enumerate(starts):
            target[:, start + offsets] += values[:, w : w + 1]


def _window_spec(spec, shape, name, i):
    if spec is None:
        spec = 1
    if _is_int(spec):
        spec = (int(spec),) * len(shape)
    elif isinstance(spec, (tuple, list, np.ndarray)) and all(_is_int(v) for v in spec):
        spec = tuple(int(v) for v in spec)
    else:
        raise InvalidTypeError(f"{name} of input {i} must be an int or a tuple of ints, got {spec!r}")
    if len(spec) != len(shape):
        raise InvalidInputError(
            f"{name} of input {i} must be an int or have one entry per non-batch dimension ({len(shape)} for a "
            f"sample of shape {shape}), got {spec}"
        )
    if min(spec) < 1:
        raise InvalidInputError(f"{name} of input {i} must be positive, got {spec}")
    return spec


# -----------------------------------------------------------------------------
# Players: Shapley values and feature ablation
# -----------------------------------------------------------------------------


class _Players:
    """``maps[i]``: player id of every flat feature of input i; ``out_index[i]``: player id of every result entry."""

    def __init__(self, count, maps, out_index):
        self.count = count
        # a run of consecutive ids is a slice: absent[:, slice] is a view, no gather
        self.maps = [
            slice(m[0], m[0] + len(m)) if np.array_equal(m, np.arange(m[0], m[0] + len(m))) else m for m in maps
        ]
        self.out_index = out_index


def _players(inputs, sampling_dims, feature_mask):
    if sampling_dims is not None and feature_mask is not None:
        raise InvalidInputError("give sampling_dims or feature_mask, not both: each defines the players on its own")
    n_inputs = len(inputs.shapes)
    if sampling_dims is not None:
        dims = _sampling_dims(sampling_dims, inputs)
        maps, out_index, count = [], [], 0
        for d, shape in zip(dims, inputs.shapes, strict=True):
            if d is None:
                grid, coords = shape, np.indices(shape).reshape(len(shape), -1)
            else:
                grid = tuple(shape[k - 1] for k in d)
                coords = np.indices(shape).reshape(len(shape), -1)[[k - 1 for k in d]]
            # ravel over the sampling dims in their given order: the result axes follow sampling_dims
            maps.append(count + np.ravel_multi_index(coords, grid))
            out_index.append(count + np.arange(math.prod(grid)).reshape(grid))
            count += math.prod(grid)
        return _Players(count, maps, out_index)

    masks = [None] * n_inputs
    if feature_mask is not None:
        if (isinstance(feature_mask, list) and len(feature_mask) == n_inputs) or n_inputs == 1:
            masks = _per_input(feature_mask, n_inputs)
        else:
            raise InvalidTypeError(f"feature_mask must be a list with one mask (or None) per input ({n_inputs} inputs)")
    ids = []
    for i, (mask, shape) in enumerate(zip(masks, inputs.shapes, strict=True)):
        if mask is None:
            ids.append(None)
            continue
        mask = np.asarray(mask)
        if mask.dtype.kind not in "iu":
            raise InvalidTypeError(f"feature_mask of input {i} must hold integer player ids, got dtype {mask.dtype}")
        try:
            ids.append(np.broadcast_to(mask, shape).reshape(-1))
        except ValueError:
            raise InvalidInputError(
                f"feature_mask of input {i} must be broadcastable to one sample of shape {shape}, got shape "
                f"{mask.shape}"
            ) from None
    given = [m for m in ids if m is not None]
    count, maps = 0, [None] * n_inputs
    if given:
        # equal ids are one player across all inputs (Captum's convention); renumber them 0..P-1
        unique, inverse = np.unique(np.concatenate(given), return_inverse=True)
        count = len(unique)
        parts = np.split(inverse.reshape(-1), np.cumsum([len(m) for m in given])[:-1])
        for i in [i for i, m in enumerate(ids) if m is not None]:
            maps[i] = parts.pop(0)
    for i, size in enumerate(inputs.sizes):
        if maps[i] is None:
            maps[i] = count + np.arange(size)
            count += size
    return _Players(count, maps, [m.reshape(s) for m, s in zip(maps, inputs.shapes, strict=True)])


def _sampling_dims(spec, inputs):
    n_inputs = len(inputs.shapes)
    if isinstance(spec, (list, tuple)) and spec and all(s is None or isinstance(s, (list, tuple)) for s in spec):
        if len(spec) != n_inputs:
            raise InvalidInputError(
                f"sampling_dims per input must have {n_inputs} entries (one per input), got {len(spec)}"
            )
        specs = list(spec)
    else:
        specs = [spec] * n_inputs
    dims = []
    for i, (d, shape) in enumerate(zip(specs, inputs.shapes, strict=True)):
        if d is None:
            dims.append(None)
            continue
        if not isinstance(d, (list, tuple, np.ndarray)) or not all(_is_int(k) for k in d):
            raise InvalidTypeError(f"sampling_dims must be a list of ints (non-batch dimensions), got {d!r}")
        d = [int(k) for k in d]
        if not d:
            raise InvalidInputError("sampling_dims must name at least one dimension, got []")
        if 0 in d:
            raise InvalidInputError(f"sampling_dims cannot contain the batch dimension 0, got {d}")
        if any(k < 1 or k > len(shape) for k in d):
            raise InvalidInputError(
                f"sampling_dims of input {i} must lie in 1..{len(shape)} (input shape (N, *{shape})), got {d}"
            )
        if len(set(d)) != len(d):
            raise InvalidInputError(f"sampling_dims must not repeat a dimension, got {d}")
        dims.append(d)
    return dims


class _PlayerPlan:
    """Rows are coalitions of players; subclasses say which players each row removes and how values follow."""

    def __init__(self, inputs, players):
        self.players = players
        self.results = inputs.new_results([idx.shape for idx in players.out_index])

    def perturb(self, owners, j):
        absent = self.absent_players(owners, j)
        return [absent[:, m] for m in self.players.maps]

    def combine(self, n0, outputs):
        values = self.values(n0, outputs)
        for result, idx in zip(self.results, self.players.out_index, strict=True):
            result[n0 : n0 + len(outputs)] = values[:, idx]


class _AblationPlan(_PlayerPlan):
    """Row 0 is ``x``; row ``1 + p`` removes player ``p`` alone."""

    def __init__(self, inputs, players):
        super().__init__(inputs, players)
        self.rows_per_sample = 1 + players.count

    def absent_players(self, owners, j):
        return np.arange(self.players.count) == (j - 1)[:, None]

    def values(self, n0, outputs):
        return outputs[:, :1] - outputs[:, 1:]


class _SamplingPlan(_PlayerPlan):
    """Row ``q (P + 1) + t`` of a sample: permutation ``q`` with its first ``t`` players removed."""

    def __init__(self, inputs, players, samples, rng, antithetic):
        super().__init__(inputs, players)
        self.samples = samples
        self.rng = rng
        self.antithetic = antithetic
        self.rows_per_sample = samples * (players.count + 1)
        self.ranks = {}  # sample -> (samples, P) position of every player in each permutation, while needed
        self.drawn = 0

    def ranks_of(self, n):
        # Drawn sample after sample, so the permutations depend on the seed only, not on the batching.
        while self.drawn <= n:
            p = self.players.count
            order = np.arange(p, dtype=np.int16 if p <= 2**15 else np.int64)
            ranks = self.rng.permuted(np.tile(order, (self.samples // (1 + self.antithetic), 1)), axis=1)
            if self.antithetic:
                ranks = np.stack([ranks, p - 1 - ranks], axis=1).reshape(self.samples, p)  # reversed order
            self.ranks[self.drawn] = ranks
            self.drawn += 1
        return self.ranks[n]

    def absent_players(self, owners, j):
        q, removed = np.divmod(j, self.players.count + 1)
        walk = owners * self.samples + q
        cuts = np.flatnonzero(np.diff(walk)) + 1
        if len(cuts) < 8:
            # A block usually covers one or two walks: compare against each walk's ranks without gathering them.
            absent = np.empty((len(j), self.players.count), dtype=bool)
            for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(j)], strict=True):
                np.less(self.ranks_of(owners[lo])[q[lo]], removed[lo:hi, None], out=absent[lo:hi])
            return absent
        first = owners[0]
        ranks = np.stack([self.ranks_of(n) for n in range(first, owners[-1] + 1)])
        return ranks[owners - first, q] < removed[:, None]

    def values(self, n0, outputs):
        p = self.players.count
        steps = outputs.reshape(len(outputs), self.samples, p + 1)
        drops = steps[:, :, :-1] - steps[:, :, 1:]  # drops[..., t]: the t-th player removed in that permutation
        ranks = np.stack([self.ranks.pop(n) for n in range(n0, n0 + len(outputs))])
        return np.take_along_axis(drops, ranks, axis=2).mean(axis=1)


class _ExactPlan(_PlayerPlan):
    """Row ``c`` of a sample: the coalition whose present players are the set bits of ``c``."""

    def __init__(self, inputs, players):
        super().__init__(inputs, players)
        p = players.count
        self.rows_per_sample = 2**p
        coalitions = np.arange(2**p)
        weights = np.array([math.factorial(s) * math.factorial(p - s - 1) / math.factorial(p) for s in range(p)])
        # for each player i: the coalitions without i and their Shapley weights |S|! (P - |S| - 1)! / P!
        self.without = [coalitions[(coalitions >> i) & 1 == 0] for i in range(p)]
        self.weights = [weights[_popcount(c, p)] for c in self.without]

    def absent_players(self, owners, j):
        return (j[:, None] >> np.arange(self.players.count)) & 1 == 0

    def values(self, n0, outputs):
        phi = np.empty((len(outputs), self.players.count))
        for i, (without, weights) in enumerate(zip(self.without, self.weights, strict=True)):
            phi[:, i] = (outputs[:, without | (1 << i)] - outputs[:, without]) @ weights
        return phi


class _CoalitionPlan(_PlayerPlan):
    """Rows are coalitions drawn per sample (``present``: bool ``(rows, P)``), in sample order so that a seed gives
    the same coalitions whatever the batching; ``fit(present, outputs)`` turns one sample's outputs into values."""

    def __init__(self, inputs, players, rng):
        super().__init__(inputs, players)
        self.rng = rng
        self.drawn = {}
        self.next = 0

    def present_of(self, n):
        while self.next <= n:
            self.drawn[self.next] = self.draw()
            self.next += 1
        return self.drawn[n]

    def absent_players(self, owners, j):
        absent = np.empty((len(j), self.players.count), dtype=bool)
        cuts = np.flatnonzero(np.diff(owners)) + 1
        for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, len(j)], strict=True):
            np.logical_not(self.present_of(owners[lo])[j[lo:hi]], out=absent[lo:hi])
        return absent

    def values(self, n0, outputs):
        return np.stack([self.fit(self.drawn.pop(n0 + m), outputs[m]) for m in range(len(outputs))])


class _KernelShapPlan(_CoalitionPlan):
    """Row 0: all players present; row 1: none; then the coalitions (all proper ones, or ``samples`` drawn)."""

    def __init__(self, inputs, players, samples, rng):
        super().__init__(inputs, players, rng)
        p = players.count
        self.exact = p <= 1 or (p < 63 and samples >= 2**p - 2)
        self.coalitions = min(samples, 2**p - 2) if self.exact else samples
        self.rows_per_sample = 2 + self.coalitions
        sizes = np.arange(1, p)
        kernel = (p - 1) / (sizes * (p - sizes))  # the Shapley kernel's mass of each coalition size
        self.size_probability = kernel / kernel.sum() if p > 1 else kernel
        if self.exact:  # every sample uses every proper coalition with its Shapley kernel weight
            codes = np.arange(1, 2**p - 1)
            self.all = ((codes[:, None] >> np.arange(p)) & 1).astype(bool)
            size = self.all.sum(axis=1)
            self.weights = (p - 1) / (np.array([math.comb(p, k) for k in size]) * size * (p - size))

    def draw(self):
        p = self.players.count
        ends = np.ones((2, p), dtype=bool)
        ends[1] = False
        if self.exact:
            return np.concatenate([ends, self.all])
        # paired sampling: each drawn coalition with its complement (of the same kernel weight)
        half = -(-self.coalitions // 2)
        sizes = self.rng.choice(np.arange(1, p), size=half, p=self.size_probability)
        ranks = self.rng.random((half, p)).argsort(axis=1).argsort(axis=1)  # a uniform order of the players
        present = ranks < sizes[:, None]
        pairs = np.stack([present, ~present], axis=1).reshape(2 * half, p)[: self.coalitions]
        return np.concatenate([ends, pairs])

    def fit(self, present, outputs):
        p = self.players.count
        full, empty = outputs[0], outputs[1]
        total = full - empty
        if p == 1:
            return np.array([total])
        z = present[2:].astype(np.float64)
        weights = self.weights if self.exact else np.ones(len(z))
        # the efficiency constraint eliminates the last player: phi_P = total - sum(phi_<P)
        design = z[:, :-1] - z[:, -1:]
        target = outputs[2:] - empty - z[:, -1] * total
        weighted = design * weights[:, None]
        phi = _least_squares(weighted.T @ design, weighted.T @ target)
        return np.append(phi, total - phi.sum())


class _LimePlan(_CoalitionPlan):
    """Row 0: all players present; the others keep each player with probability 1/2."""

    def __init__(self, inputs, players, samples, kernel_width, alpha, rng):
        super().__init__(inputs, players, rng)
        self.rows_per_sample = samples
        self.kernel_width = kernel_width
        self.alpha = alpha

    def draw(self):
        present = self.rng.integers(0, 2, size=(self.rows_per_sample, self.players.count)).astype(bool)
        present[0] = True
        return present

    def fit(self, present, outputs):
        z = present.astype(np.float64)
        kept = z.sum(axis=1)
        distance = np.where(kept > 0, 1 - np.sqrt(kept / z.shape[1]), 1.0)  # cosine distance to all-present
        weights = np.sqrt(np.exp(-(distance**2) / self.kernel_width**2))
        mean_z = weights @ z / weights.sum()
        mean_y = weights @ outputs / weights.sum()
        centred = (z - mean_z) * np.sqrt(weights)[:, None]
        gram = centred.T @ centred + self.alpha * np.eye(z.shape[1])
        return _least_squares(gram, centred.T @ ((outputs - mean_y) * np.sqrt(weights)))


def _least_squares(gram, moment):
    """The minimum-norm solution of the normal equations ``gram @ beta = moment`` (P × P: much cheaper than a
    least-squares solve of the rows themselves; float64 keeps it accurate at these sizes)."""
    return np.linalg.lstsq(gram, moment, rcond=None)[0]


def _popcount(c, bits):
    return ((c[:, None] >> np.arange(bits)) & 1).sum(axis=1)


# -----------------------------------------------------------------------------
# Small helpers
# -----------------------------------------------------------------------------


def _per_input(spec, n_inputs):
    """A list with exactly one entry per input is per input; anything else is shared by every input."""
    return list(spec) if isinstance(spec, list) and len(spec) == n_inputs else [spec] * n_inputs


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
