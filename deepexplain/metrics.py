"""Measures of explanations: faithfulness, robustness, complexity and localisation, for attributions of any library.

Every metric takes attributions as numpy arrays and evaluates the model on batches of perturbed inputs through
one compiled forward pass (:class:`Scorer`; pass one to reuse it across calls, or pass the model). The explained
score of a row is the model's output for the sample's target, as :meth:`deepexplain.Explainer.run` selects it
('max' is each clean sample's largest output, an int, one int per sample, weights ``ys``, or a callable).

Faithfulness
    :func:`deletion`, :func:`insertion` (Petsiuk et al. 2018, as xplique computes them), :func:`pixel_flipping`
    (Samek et al. 2017, AOPC), :func:`road` (Rong et al. 2022), :func:`mufidelity` (Bhatt et al. 2020, as
    xplique), :func:`infidelity` (Yeh et al. 2019, as Captum).
Robustness
    :func:`sensitivity_max` (Yeh et al. 2019, as Captum), :func:`local_lipschitz` (Alvarez-Melis & Jaakkola 2018).
Complexity
    :func:`sparseness` (Gini index, Chalasani et al. 2020), :func:`complexity` (entropy, Bhatt et al. 2020).
Sanity
    :func:`randomization_check` (Adebayo et al. 2018; the random-logit test of Sixt et al. 2020).
Localisation (ground-truth masks)
    :func:`pointing_game` (Zhang et al. 2018), :func:`relevance_mass_accuracy`, :func:`relevance_rank_accuracy`
    (Arras et al. 2022).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from deepexplain import batching
from deepexplain.errors import InvalidInputError


class Scorer:
    """The explained score of rows of model inputs, compiled once for a model.

    Parameters
    ----------
    model : keras.Model, callable or path
        As :class:`deepexplain.Explainer` takes it.
    output : int or str, optional
        Which output of a model with several.
    """

    def __init__(self, model, output=None):
        from deepexplain.explainer import Explainer

        self.explainer = model if isinstance(model, Explainer) else Explainer("zero", model, output=output,
                                                                                progress=False)  # fmt: skip

    def forward(self, xs, target=None, ys=None, batch_size=None) -> tuple[np.ndarray, Callable]:
        """``(xs as arrays, forward)`` with ``forward(rows, owners) -> scores``: each row scored for the target of
        its sample ``owners[i]`` of ``xs``."""
        inputs, forward = self.explainer.scores_of(xs, target, ys=ys, batch_size=batch_size)
        return inputs[0], forward


def _scorer(model) -> Scorer:
    return model if isinstance(model, Scorer) else Scorer(model)


@dataclass(frozen=True)
class Curve:
    """A perturbation curve per sample.

    Attributes
    ----------
    fractions : ndarray, (steps + 1,)
        Share of the features (pixels, regions) perturbed at each step.
    scores : ndarray, (N, steps + 1)
        The explained score at each step.
    auc : ndarray, (N,)
        Area under the curve by the trapezoid rule over the steps, with the steps evenly spaced on [0, 1]
        (xplique's ``mean((s[:-1] + s[1:]) / 2)``).
    aopc : ndarray, (N,)
        Area over the perturbation curve, ``mean_k (scores[:, 0] - scores[:, k])`` over the steps k = 0..steps
        (Samek et al. 2017, Eq. 12).
    """

    fractions: np.ndarray
    scores: np.ndarray

    @property
    def auc(self) -> np.ndarray:
        return ((self.scores[:, :-1] + self.scores[:, 1:]) / 2).mean(axis=1)

    @property
    def aopc(self) -> np.ndarray:
        return (self.scores[:, :1] - self.scores).mean(axis=1)


# ---------------------------------------------------------------------------------------------------------------------
# Faithfulness


def deletion(model, xs, attributions, target=None, *, ys=None, steps=10, baseline=0.0, max_percentage_perturbed=1.0,
             batch_size=None, progress=True) -> Curve:  # fmt: skip
    """The deletion curve (Petsiuk et al. 2018, Sec. 4.1): the score as the most important pixels (all their
    channels) are set to the baseline, ``steps`` times ``max_percentage_perturbed / steps`` of them at a time.

    Pixels are ranked by the attribution averaged over channels (xplique's ``Deletion``; ties by position). A good
    explanation makes the score drop fast: a small :attr:`Curve.auc`.

    Parameters
    ----------
    model : keras.Model, callable or Scorer
        The model (a :class:`Scorer` to reuse its compiled forward pass).
    xs : ndarray
        Inputs ``(N, H, W, C)``, ``(N, T, C)`` or ``(N, features)``.
    attributions : ndarray
        ``(N, *xs.shape[1:])``, or without the channel axis ``(N, H, W)``.
    target, ys
        The explained output, as :meth:`deepexplain.Explainer.run` takes it (default 'max').
    steps : int
        Steps of the curve (it has ``steps + 1`` points).
    baseline : float or ndarray
        What a removed pixel shows: a number or an array shaped like one sample.
    max_percentage_perturbed : float
        Share of the pixels removed at the last step, in (0, 1].
    batch_size : int, optional
        Rows per model call (default: the library's row budget); results do not depend on it.
    progress : bool
        Show a progress bar on long runs.

    Returns
    -------
    Curve
    """
    return _causal(model, xs, attributions, target, ys, steps, baseline, max_percentage_perturbed, batch_size,
                   progress, insert=False)  # fmt: skip


def insertion(model, xs, attributions, target=None, *, ys=None, steps=10, baseline=0.0, max_percentage_perturbed=1.0,
              batch_size=None, progress=True) -> Curve:  # fmt: skip
    """The insertion curve (Petsiuk et al. 2018, Sec. 4.1): from the baseline, the most important pixels are
    revealed first; a good explanation makes the score rise fast (a large :attr:`Curve.auc`). Arguments as
    :func:`deletion`."""
    return _causal(model, xs, attributions, target, ys, steps, baseline, max_percentage_perturbed, batch_size,
                   progress, insert=True)  # fmt: skip


def pixel_flipping(model, xs, attributions, target=None, *, ys=None, steps=20, baseline=0.0, order="morf", region=1,
                   seed=None, batch_size=None, progress=True) -> Curve:  # fmt: skip
    """Pixel flipping / region perturbation (Samek et al. 2017, "Evaluating the visualization of what a deep neural
    network has learned", IEEE TNNLS, Alg. 1): square regions of ``region`` × ``region`` pixels, ranked by their
    summed attribution, are set to the baseline cumulatively, ``1/steps`` of them per step; :attr:`Curve.aopc` is
    the paper's AOPC (higher is better for 'morf').

    Parameters
    ----------
    model, xs, attributions, target, ys, baseline, batch_size, progress
        As :func:`deletion`.
    steps : int
        Steps of the curve.
    order : {'morf', 'lerf', 'random'}
        Most relevant first, least relevant first, or a random order (``seed``): the control.
    region : int
        Side of the square regions (partial regions at the border), for images and sequences.

    Returns
    -------
    Curve
    """
    if order not in ("morf", "lerf", "random"):
        raise InvalidInputError(f"order must be 'morf', 'lerf' or 'random'; got {order!r}")
    if isinstance(region, bool) or not isinstance(region, int | np.integer) or region < 1:
        raise InvalidInputError(f"region must be a positive int; got {region!r}")
    x, a, positions = _maps(xs, attributions)
    spatial = x.shape[1 : 1 + len(positions)]
    ids = _region_ids(spatial, int(region))  # region of every position
    count = ids.max() + 1
    relevance = np.stack([np.bincount(ids, weights=m.reshape(-1), minlength=count) for m in a.sum(axis=-1)])
    if order == "random":
        rng = np.random.default_rng(seed)
        ranking = np.stack([rng.permutation(count) for _ in range(len(x))])
    else:
        ranking = np.argsort(-relevance if order == "morf" else relevance, axis=1, kind="stable")
    counts = np.round(np.linspace(0, count, _check_steps(steps) + 1)).astype(int)
    return _curve(model, x, target, ys, ranking, ids, counts, count, baseline, batch_size, progress, False)


def road(model, xs, attributions, target=None, *, ys=None, steps=9, max_percentage_perturbed=0.9, order="morf",
         noise=0.01, seed=None, batch_size=None, progress=True) -> Curve:  # fmt: skip
    """ROAD, Remove And Debias (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for Attribution
    Methods", ICML, Sec. 4): as :func:`deletion`, but the removed pixels are not set to a baseline: they are filled
    by noisy linear imputation, each the weighted mean of its 8 neighbours (1/6 for the 4 next, 1/12 for the
    diagonal ones; one sparse linear system per image and step, the pixels kept as they are) plus Gaussian noise of
    standard deviation ``noise``, so that the shape of the removed region tells the model nothing.

    Parameters
    ----------
    model, xs, attributions, target, ys, batch_size, progress
        As :func:`deletion`; images ``(N, H, W, C)``.
    steps, max_percentage_perturbed
        The curve goes from 0 to ``max_percentage_perturbed`` of the pixels removed (default 0.9, the paper's 10%
        to 90%) in ``steps`` steps.
    order : {'morf', 'lerf'}
        Most relevant pixels first, or least relevant first.
    noise : float
        Standard deviation of the noise added to the imputed values (the paper's 0.01).
    seed : int, optional
        Seed of the noise.

    Returns
    -------
    Curve
    """
    if order not in ("morf", "lerf"):
        raise InvalidInputError(f"order must be 'morf' or 'lerf'; got {order!r}")
    if (
        isinstance(max_percentage_perturbed, bool)
        or not np.isscalar(max_percentage_perturbed)
        or not (0 < max_percentage_perturbed <= 1)
    ):
        raise InvalidInputError(f"max_percentage_perturbed must be in (0, 1]; got {max_percentage_perturbed!r}")
    x, a, positions = _maps(xs, attributions)
    if x.ndim != 4:
        raise InvalidInputError(f"road imputes pixels of images (N, H, W, C); got shape {x.shape}")
    scorer = _scorer(model)
    x, forward = scorer.forward(x, target, ys, batch_size)
    relevance = a.mean(axis=-1).reshape(len(x), -1)
    ranking = np.argsort(-relevance if order == "morf" else relevance, axis=1, kind="stable")
    count = relevance.shape[1]
    counts = np.linspace(0, int(np.floor(count * max_percentage_perturbed)), _check_steps(steps) + 1).astype(int)
    rng = np.random.default_rng(seed)
    owners, cuts = np.repeat(np.arange(len(x)), len(counts)), np.tile(counts, len(x))
    size = batching.rows_per_run(batch_size, x[0].nbytes)
    scores = np.empty(len(owners))
    for lo in tqdm(range(0, len(owners), size), delay=2, disable=not progress, desc="road"):
        rows = []  # imputed a call's worth at a time: all steps of all samples would not fit
        for n, k in zip(owners[lo : lo + size], cuts[lo : lo + size], strict=True):
            removed = np.zeros(count, bool)
            removed[ranking[n, :k]] = True
            rows.append(impute(x[n], removed.reshape(positions), noise, rng).astype(x.dtype))
        scores[lo : lo + size] = forward([np.stack(rows)], owners[lo : lo + size])
    return Curve(fractions=counts / count, scores=scores.reshape(len(x), len(counts)))


_NEIGHBOURS = [((-1, 0), 1 / 6), ((1, 0), 1 / 6), ((0, -1), 1 / 6), ((0, 1), 1 / 6),
               ((-1, -1), 1 / 12), ((-1, 1), 1 / 12), ((1, -1), 1 / 12), ((1, 1), 1 / 12)]  # fmt: skip


def impute(image, removed, noise=0.01, rng=None) -> np.ndarray:
    """ROAD's noisy linear imputation of the ``removed`` pixels (H, W bool) of ``image`` (H, W, C): each removed
    pixel the weighted mean of its neighbours inside the image (:data:`_NEIGHBOURS`), solved for all removed pixels
    at once, plus N(0, ``noise``) noise."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.linalg import spsolve

    height, width = removed.shape
    unknown = np.flatnonzero(removed)
    out = np.array(image, np.float64)
    if not len(unknown):
        return out
    index = np.full(height * width, -1)
    index[unknown] = np.arange(len(unknown))
    rows, cols = np.divmod(unknown, width)
    flat = out.reshape(height * width, -1)
    entries_i, entries_j, values = [np.arange(len(unknown))], [np.arange(len(unknown))], [np.zeros(len(unknown))]
    right = np.zeros((len(unknown), flat.shape[1]))
    for (dy, dx), weight in _NEIGHBOURS:
        y, x = rows + dy, cols + dx
        inside = (y >= 0) & (y < height) & (x >= 0) & (x < width)
        values[0][inside] += weight  # the diagonal: the weights of the neighbours that exist
        neighbour = np.where(inside, y * width + x, 0)
        is_unknown = inside & (index[neighbour] >= 0)
        entries_i.append(np.flatnonzero(is_unknown))
        entries_j.append(index[neighbour[is_unknown]])
        values.append(np.full(is_unknown.sum(), -weight))
        known = inside & ~is_unknown
        right[known] += weight * flat[neighbour[known]]
    system = coo_matrix((np.concatenate(values), (np.concatenate(entries_i), np.concatenate(entries_j))),
                        shape=(len(unknown), len(unknown))).tocsc()  # fmt: skip
    solved = spsolve(system, right)
    solved = solved.reshape(len(unknown), -1)
    if noise:
        solved = solved + (rng or np.random.default_rng()).normal(0.0, noise, solved.shape)
    flat[unknown] = solved
    return out


def infidelity(model, xs, attributions, target=None, *, ys=None, samples=10, noise_scale=1.0, seed=None,
               normalize=False, perturbations=None, batch_size=None) -> np.ndarray:  # fmt: skip
    """Infidelity (Yeh et al. 2019, "On the (In)fidelity and Sensitivity of Explanations", NeurIPS, Eq. 3), as
    Captum computes it: ``E_I [(I . attribution - (f(x) - f(x - I)))**2]`` over ``samples`` perturbations
    ``I ~ N(0, noise_scale**2)`` per feature.

    Parameters
    ----------
    model, xs, attributions, target, ys, batch_size
        As :func:`deletion`; ``attributions`` shaped like ``xs``.
    samples : int
        Perturbations per sample.
    noise_scale : float
        Standard deviation of the perturbations.
    seed : int, optional
        Seed of the perturbations.
    normalize : bool
        Scale the attributions by the least-squares factor ``beta`` first (Captum's ``normalize=True``).
    perturbations : ndarray, optional
        Your own ``I``, ``(S, N, *xs.shape[1:])``, instead of Gaussian noise (then ``samples`` is S).

    Returns
    -------
    ndarray, (N,)
    """
    scorer = _scorer(model)
    x, forward = scorer.forward(xs, target, ys, batch_size)
    a = _attributions_like(attributions, x)
    draw = lambda rng, size: rng.normal(0.0, noise_scale, size)  # noqa: E731
    noise = _perturbations(perturbations, samples, x.shape, draw, seed).astype(np.float64)
    samples = len(noise)
    n = len(x)
    owners = np.tile(np.arange(n), samples)
    perturbed = (x[None] - noise).astype(x.dtype).reshape((-1, *x.shape[1:]))
    clean = forward([x], np.arange(n))
    drops = clean[owners] - _in_chunks(forward, perturbed, owners, batch_size)
    dots = np.einsum("snf,nf->sn", noise.reshape(samples, n, -1), a.reshape(n, -1).astype(np.float64))
    drops = drops.reshape(samples, n)
    if normalize:
        beta = (dots * drops).mean(0) / np.where((dots**2).mean(0) > 0, (dots**2).mean(0), 1.0)
        dots = dots * beta
    return ((dots - drops) ** 2).mean(axis=0)


def mufidelity(model, xs, attributions, target=None, *, ys=None, grid=9, subset_percent=0.2, baseline=0.0,
               samples=128, seed=None, masks=None, batch_size=None) -> np.ndarray:  # fmt: skip
    """MuFidelity (Bhatt et al. 2020, "Evaluating and Aggregating Feature-based Model Explanations", IJCAI, Eq. 2),
    as xplique computes it: the Spearman correlation, over ``samples`` random subsets, between the score drop when
    the subset is set to the baseline and the attribution summed over it.

    A subset removes each cell of a ``grid`` × ``grid`` grid with probability ``subset_percent`` (nearest-neighbour
    upsampling with half-pixel centres, as ``tf.image.resize``), all channels of a pixel together; features of a
    vector input are removed one by one (no grid). For sequences (N, T, C) the cells lie along time, all channels
    of a step together (xplique's cells also split the channels).

    Parameters
    ----------
    model, xs, target, ys, baseline, batch_size
        As :func:`deletion`.
    attributions : ndarray
        Shaped like ``xs`` (or without its channel axis).
    grid : int
        Cells per side (images; cells along time for sequences).
    subset_percent : float
        Probability that a cell is removed, in (0, 1).
    samples : int
        Random subsets per sample (xplique's ``nb_samples`` defaults to 200).
    seed : int, optional
        Seed of the subsets (drawn sample by sample).
    masks : ndarray, optional
        Your own keep-masks ``(N, samples, *positions)`` of 0 and 1 (1: kept), instead of random ones.

    Returns
    -------
    ndarray, (N,)
        Correlations (0 where one side is constant).
    """
    from scipy.stats import spearmanr

    if isinstance(subset_percent, bool) or not np.isscalar(subset_percent) or not 0 < subset_percent < 1:
        raise InvalidInputError(f"subset_percent must be in (0, 1); got {subset_percent!r}")
    x, a, positions = _maps(xs, attributions)
    grid = _check_steps(grid, "grid")
    scorer = _scorer(model)
    x, forward = scorer.forward(x, target, ys, batch_size)
    n = len(x)
    if masks is None:
        rng = np.random.default_rng(seed)
        samples = _check_steps(samples, "samples")
        cells = grid if x.ndim > 2 else None  # a vector's features are removed one by one
        masks = np.stack([_subset_masks(rng, samples, positions, cells, subset_percent) for _ in range(n)])
    masks = np.asarray(masks, np.float64)
    if masks.shape[0] != n or masks.shape[2:] != tuple(positions):
        raise InvalidInputError(f"masks must be shaped (N, samples, *{tuple(positions)}); got {masks.shape}")
    samples = masks.shape[1]
    keep = masks.reshape(n * samples, *positions, *([1] if x.ndim > 2 else []))
    owners = np.repeat(np.arange(n), samples)
    base = np.asarray(baseline, x.dtype)
    rows = (x[owners] * keep + base * (1 - keep)).astype(x.dtype)
    drops = forward([x], np.arange(n))[owners] - _in_chunks(forward, rows, owners, batch_size)
    removed = np.einsum("nsp,np->ns", 1 - masks.reshape(n, samples, -1), a.sum(axis=-1).reshape(n, -1))
    drops = drops.reshape(n, samples)
    scores = []
    for d, r in zip(drops, removed, strict=True):
        rho = spearmanr(d, r)[0] if np.ptp(d) > 0 and np.ptp(r) > 0 else 0.0
        scores.append(0.0 if np.isnan(rho) else rho)
    return np.asarray(scores)


def _subset_masks(rng, samples, positions, grid, subset_percent) -> np.ndarray:
    """``(samples, *positions)`` keep-masks: cells kept with probability ``1 - subset_percent``, stretched by
    nearest neighbour with half-pixel centres (``tf.image.resize``'s 'nearest')."""
    if grid is None:
        return (rng.random((samples, *positions)) > subset_percent).astype(np.float64)
    cells = rng.random((samples, *(grid,) * len(positions))) > subset_percent
    for axis, size in enumerate(positions):
        index = np.minimum(np.floor((np.arange(size) + 0.5) * grid / size).astype(int), grid - 1)
        cells = np.take(cells, index, axis=axis + 1)
    return cells.astype(np.float64)


def sensitivity_max(explainer, xs, target=None, *, ys=None, radius=0.02, samples=10, seed=None,
                    perturbations=None) -> np.ndarray:  # fmt: skip
    """Max-sensitivity (Yeh et al. 2019, Eq. 5), as Captum's ``sensitivity_max``: the largest
    ``||explain(x + d) - explain(x)|| / ||explain(x)||`` (Frobenius norms) over ``samples`` perturbations ``d``
    uniform in ``[-radius, radius]`` per feature.

    Parameters
    ----------
    explainer : deepexplain.Explainer
        The explanation measured (its method and arguments), run on the perturbed inputs.
    xs, target, ys
        As :meth:`deepexplain.Explainer.run`; the perturbed copies explain their clean sample's target.
    radius : float
        Half-width of the uniform perturbations.
    samples : int
        Perturbations per sample.
    seed : int, optional
        Seed of the perturbations.
    perturbations : ndarray, optional
        Your own ``d``, ``(S, N, *xs.shape[1:])`` (then ``samples`` is S).

    Returns
    -------
    ndarray, (N,)
    """
    x = np.asarray(xs)
    noise = _perturbations(
        perturbations, samples, x.shape, lambda rng, shape: rng.uniform(-radius, radius, shape), seed
    )
    return _worst_change(explainer, x, target, ys, noise, lambda clean, d: np.linalg.norm(clean, axis=1))


def local_lipschitz(explainer, xs, target=None, *, ys=None, noise_scale=0.1, samples=10, seed=None,
                    perturbations=None) -> np.ndarray:  # fmt: skip
    """The local Lipschitz estimate (Alvarez-Melis & Jaakkola 2018, "On the Robustness of Interpretability
    Methods", ICML workshop, Eq. 3; Quantus' ``LocalLipschitzEstimate``): the largest
    ``||explain(x + d) - explain(x)|| / ||d||`` over ``samples`` Gaussian perturbations ``d`` of standard deviation
    ``noise_scale`` per feature. Arguments as :func:`sensitivity_max`.

    Returns
    -------
    ndarray, (N,)
    """
    x = np.asarray(xs)
    noise = _perturbations(perturbations, samples, x.shape, lambda rng, shape: rng.normal(0, noise_scale, shape), seed)
    return _worst_change(explainer, x, target, ys, noise, lambda clean, d: np.linalg.norm(d, axis=1))


def _perturbations(given, samples, shape, draw, seed) -> np.ndarray:
    """``(S, *shape)`` perturbations: the ``given`` ones, or ``samples`` drawn by ``draw(rng, shape)``."""
    samples = _check_steps(samples if given is None else len(given), "samples")
    noise = draw(np.random.default_rng(seed), (samples, *shape)) if given is None else np.asarray(given)
    if noise.shape != (samples, *shape):
        raise InvalidInputError(f"perturbations must be shaped {(samples, *shape)}; got {noise.shape}")
    return noise


def _worst_change(explainer, x, target, ys, noise, scale) -> np.ndarray:
    """Per sample, the largest ``||explain(x + d) - explain(x)|| / scale(explain(x), d)`` over the perturbations;
    the perturbed copies explain their clean sample's target."""
    weights = explainer.target_weights(x, target, ys=ys)
    fixed = {"ys": weights} if weights is not None else {"target": target}
    clean = explainer.run(x, **fixed)
    flat = clean.reshape(len(x), -1)
    worst = np.zeros(len(x))
    for d in noise:
        moved = explainer.run((x + d).astype(x.dtype), **fixed)
        change = np.linalg.norm(moved.reshape(len(x), -1) - flat, axis=1)
        denominator = scale(flat, d.reshape(len(x), -1))
        worst = np.maximum(worst, np.divide(change, denominator, out=np.full(len(x), np.inf), where=denominator > 0))
    return worst


# ---------------------------------------------------------------------------------------------------------------------
# Complexity


def sparseness(attributions) -> np.ndarray:
    """The Gini index of ``|attributions|`` per sample (Chalasani et al. 2020, "Concise Explanations of Neural
    Networks using Adversarial Training", ICML; xplique's ``Sparseness``): 0 for a uniform map, near 1 for a map of
    one feature. Channels of (N, H, W, C) maps are averaged first.

    Returns
    -------
    ndarray, (N,)
    """
    values = np.sort(_flat_magnitudes(attributions), axis=1)
    n = values.shape[1]
    total = values.sum(axis=1)
    ranks = np.arange(1, n + 1)
    gini = 2 * (values * ranks).sum(axis=1) / (n * np.where(total > 0, total, 1.0)) - (n + 1) / n
    return np.where(total > 0, gini, 0.0)


def complexity(attributions) -> np.ndarray:
    """The entropy of ``|attributions|`` normalised to sum to 1, per sample (Bhatt et al. 2020, "Evaluating and
    Aggregating Feature-based Model Explanations", IJCAI, Eq. 6; xplique's ``Complexity``, without its 1e-8):
    lower is simpler. Channels of (N, H, W, C) maps are averaged first.

    Returns
    -------
    ndarray, (N,)
    """
    values = _flat_magnitudes(attributions)
    total = values.sum(axis=1, keepdims=True)
    p = np.divide(values, total, out=np.zeros_like(values), where=total > 0)
    return -(p * np.log(np.where(p > 0, p, 1.0))).sum(axis=1)


# ---------------------------------------------------------------------------------------------------------------------
# Localisation


def pointing_game(attributions, masks) -> np.ndarray:
    """Whether each map's largest value (summed over channels) lies in its ground-truth mask (Zhang et al. 2018,
    "Top-down Neural Attention by Excitation Backprop", IJCV). Ties: the first maximum.

    Parameters
    ----------
    attributions : ndarray
        ``(N, H, W)`` or ``(N, H, W, C)`` (any spatial rank).
    masks : ndarray of bool
        Ground truth, ``(N, H, W)`` (or with a channel axis of 1).

    Returns
    -------
    ndarray of bool, (N,)
    """
    maps, truth = _with_masks(attributions, masks)
    return truth[np.arange(len(maps)), maps.argmax(axis=1)]


def relevance_mass_accuracy(attributions, masks) -> np.ndarray:
    """The share of the positive relevance inside the ground truth, ``sum_{p in GT} R+_p / sum_p R+_p`` (Arras et al.
    2022, "CLEVR-XAI", Information Fusion 81, Eq. 1), per sample; 0 for a map without positive relevance."""
    maps, truth = _with_masks(attributions, masks)
    positive = np.maximum(maps, 0)
    total = positive.sum(axis=1)
    inside = (positive * truth).sum(axis=1)
    return np.divide(inside, total, out=np.zeros(len(maps)), where=total > 0)


def relevance_rank_accuracy(attributions, masks) -> np.ndarray:
    """The share of the ``K = |GT|`` highest-relevance positions that lie in the ground truth (Arras et al. 2022,
    Eq. 2), per sample; ties by position."""
    maps, truth = _with_masks(attributions, masks)
    sizes = truth.sum(axis=1)
    order = np.argsort(-maps, axis=1, kind="stable")
    hits = np.take_along_axis(truth, order, axis=1)
    top = np.arange(maps.shape[1])[None] < sizes[:, None]
    return np.divide((hits & top).sum(axis=1), sizes, out=np.zeros(len(maps)), where=sizes > 0)


# ---------------------------------------------------------------------------------------------------------------------
# Sanity checks


@dataclass(frozen=True)
class Randomization:
    """How much an explanation changes when the model's weights are randomised (Adebayo et al. 2018).

    Attributes
    ----------
    layers : tuple of str
        The layers randomised, from the output down (in 'cascading' order each step adds one more).
    spearman : ndarray, (layers, N)
        Spearman rank correlation of each sample's attributions before and after.
    ssim : ndarray or None, (layers, N)
        Structural similarity of the maps (summed over channels, min-max scaled) for image inputs, else None.
    random_logit : ndarray, (N,)
        Spearman correlation of the attributions of the target with those of a random other class of the same
        model (Sixt et al. 2020's random-logit test; NaN for a model with one output).
    """

    layers: tuple
    spearman: np.ndarray
    ssim: np.ndarray | None
    random_logit: np.ndarray


def randomization_check(method, model, xs, target=None, *, order="cascading", seed=0, **method_kwargs):
    """The model-parameter randomisation test (Adebayo et al. 2018, "Sanity Checks for Saliency Maps", NeurIPS,
    Sec. 3): the explanation of copies of ``model`` whose layers' weights are replaced by random ones, compared
    with the explanation of the model itself. An explanation that does not change does not depend on what the
    model learned.

    Parameters
    ----------
    method : str
        A method of :data:`deepexplain.METHODS`, with ``method_kwargs``.
    model : keras.Model
        A Sequential or functional Keras model; it is cloned (its own weights are never changed).
    xs, target
        As :meth:`deepexplain.Explainer.run`; the copies explain the classes the model itself picks for 'max'.
    order : {'cascading', 'independent'}
        Randomise the layers from the output down, keeping the ones above random ('cascading'), or one at a time.
    seed : int
        Seed of the random weights: normal with each weight tensor's own mean and standard deviation (a constant
        tensor, such as a zero bias, is left as it is).

    Returns
    -------
    Randomization
    """
    from scipy.stats import spearmanr

    from deepexplain.adapters.keras import keras_module
    from deepexplain.explainer import Explainer

    if order not in ("cascading", "independent"):
        raise InvalidInputError(f"order must be 'cascading' or 'independent'; got {order!r}")
    library = keras_module(model)
    if library is None or not hasattr(model, "layers"):
        raise InvalidInputError(f"randomization_check clones a Keras model; got {type(model).__name__}")
    x = np.asarray(xs)
    explainer = Explainer(method, model, progress=False, **method_kwargs)
    weights = explainer.target_weights(x, target)
    fixed = {"ys": weights} if weights is not None else {"target": target}
    original = explainer.run(x, **fixed)
    layered = [layer for layer in model.layers if layer.get_weights()][::-1]
    rng = np.random.default_rng(seed)
    copy = _clone(library, model)
    rows_spearman, rows_ssim = [], []
    for k, layer in enumerate(layered):
        if order == "independent" and k:
            copy.set_weights(model.get_weights())
        target_layer = copy.get_layer(layer.name)
        target_layer.set_weights([_randomised(w, rng) for w in target_layer.get_weights()])
        changed = Explainer(method, copy, progress=False, **method_kwargs).run(x, **fixed)
        rows_spearman.append(_rank_correlations(original, changed, spearmanr))
        rows_ssim.append(_ssims(original, changed) if x.ndim == 4 else None)
    other = _random_logit(explainer, x, weights, rng, original, spearmanr)
    ssim = None if x.ndim != 4 else np.asarray(rows_ssim)
    return Randomization(tuple(layer.name for layer in layered), np.asarray(rows_spearman), ssim, other)


def _clone(library, model):
    copy = library.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def _randomised(weights: np.ndarray, rng) -> np.ndarray:
    spread = weights.std()
    if spread == 0:
        return weights
    return rng.normal(weights.mean(), spread, weights.shape).astype(weights.dtype)


def _rank_correlations(a, b, spearmanr) -> np.ndarray:
    out = []
    for u, v in zip(np.asarray(a).reshape(len(a), -1), np.asarray(b).reshape(len(b), -1), strict=True):
        rho = spearmanr(u, v)[0] if np.ptp(u) > 0 and np.ptp(v) > 0 else float(np.array_equal(u, v))
        out.append(0.0 if np.isnan(rho) else rho)
    return np.asarray(out)


def _ssims(a, b) -> np.ndarray:
    from skimage.metrics import structural_similarity

    def scaled(m):
        m = m.sum(axis=-1) if m.ndim == 3 else m
        span = np.ptp(m)
        return (m - m.min()) / span if span > 0 else np.zeros_like(m)

    return np.asarray([structural_similarity(scaled(u), scaled(v), data_range=1.0) for u, v in zip(a, b, strict=True)])


def _random_logit(explainer, x, weights, rng, original, spearmanr) -> np.ndarray:
    if weights is None or weights[0].size < 2:
        return np.full(len(x), np.nan)
    chosen = weights.reshape(len(x), -1).argmax(axis=1)
    others = (chosen + rng.integers(1, weights[0].size, size=len(x))) % weights[0].size
    other_weights = np.eye(weights[0].size, dtype=weights.dtype)[others].reshape(weights.shape)
    return _rank_correlations(original, explainer.run(x, ys=other_weights), spearmanr)


# ---------------------------------------------------------------------------------------------------------------------
# Several methods at once

#: metric name -> (function of (scorer, xs, attributions, target, ys, masks, seed) -> per-sample values, better)
_METRICS = {
    "deletion": (lambda s, x, a, t, y, m, r: deletion(s, x, a, t, ys=y, progress=False).auc, "lower"),
    "insertion": (lambda s, x, a, t, y, m, r: insertion(s, x, a, t, ys=y, progress=False).auc, "higher"),
    "pixel_flipping": (lambda s, x, a, t, y, m, r: pixel_flipping(s, x, a, t, ys=y, progress=False).aopc, "higher"),
    "road": (lambda s, x, a, t, y, m, r: road(s, x, a, t, ys=y, seed=r, progress=False).auc, "lower"),
    "mufidelity": (lambda s, x, a, t, y, m, r: mufidelity(s, x, a, t, ys=y, seed=r), "higher"),
    "sparseness": (lambda s, x, a, t, y, m, r: sparseness(a), "higher"),
    "complexity": (lambda s, x, a, t, y, m, r: complexity(a), "lower"),
    "pointing_game": (lambda s, x, a, t, y, m, r: pointing_game(a, m).astype(float), "higher"),
    "relevance_mass_accuracy": (lambda s, x, a, t, y, m, r: relevance_mass_accuracy(a, m), "higher"),
    "relevance_rank_accuracy": (lambda s, x, a, t, y, m, r: relevance_rank_accuracy(a, m), "higher"),
}
_LOCALISATION = ("pointing_game", "relevance_mass_accuracy", "relevance_rank_accuracy")


def higher_is_better(metric: str) -> bool | None:
    """Whether a larger value of ``metric`` (a name that :func:`evaluate` takes) means a better explanation; None for
    a name it does not take."""
    return _METRICS[metric][1] == "higher" if metric in _METRICS else None


@dataclass(frozen=True)
class Evaluation:
    """Per-sample metric values of several methods.

    Attributes
    ----------
    values : dict
        ``(method, metric) -> (N,)`` values.
    methods, metrics : tuple of str
        In the order evaluated.
    """

    values: dict
    methods: tuple
    metrics: tuple

    def mean(self, method: str, metric: str) -> float:
        return float(np.mean(self.values[method, metric]))

    def __str__(self) -> str:
        width = max(len("method"), *(len(m) for m in self.methods))
        headers = [f"{m} {'↑' if higher_is_better(m) else '↓'}" for m in self.metrics]
        sizes = [max(17, len(h)) for h in headers]
        lines = ["  ".join([f"{'method':<{width}}", *(f"{h:>{n}}" for h, n in zip(headers, sizes, strict=True))])]
        for method in self.methods:
            cells = [f"{np.mean(v):.3f} ± {np.std(v):.3f}" for v in (self.values[method, m] for m in self.metrics)]
            lines.append("  ".join([f"{method:<{width}}", *(f"{c:>{n}}" for c, n in zip(cells, sizes, strict=True))]))
        legend = "(↑: higher is better, ↓: lower is better; mean ± standard deviation over the samples)"
        return "\n".join([*lines, legend])


def evaluate(methods, model, xs, target=None, *, ys=None, metrics=("deletion", "insertion", "mufidelity",
             "sparseness"), masks=None, seed=0, progress=True) -> Evaluation:  # fmt: skip
    """Every metric of ``metrics`` for every method of ``methods`` on the samples ``xs``, one forward pass compiled
    for all.

    Parameters
    ----------
    methods : mapping or sequence
        Method name -> attributions (an array, e.g. from another library) or keyword arguments of
        :class:`deepexplain.Explainer`; or a list of method names (their defaults).
    model, xs, target, ys
        As :func:`deletion` (a :class:`Scorer`, e.g. of a TF1 graph's explainer, when every method comes as
        attributions).
    metrics : sequence of str
        Names among 'deletion', 'insertion', 'pixel_flipping', 'road', 'mufidelity', 'sparseness', 'complexity'
        and, with ``masks``, 'pointing_game', 'relevance_mass_accuracy', 'relevance_rank_accuracy'.
    masks : ndarray of bool, optional
        Ground-truth regions ``(N, H, W)`` for the localisation metrics.
    seed : int
        Seed of the random metrics.
    progress : bool
        A progress bar over the methods.

    Returns
    -------
    Evaluation
        ``print(evaluation)`` gives the table (mean ± standard deviation over the samples).
    """
    from deepexplain.explainer import Explainer

    unknown = [m for m in metrics if m not in _METRICS]
    if unknown:
        raise InvalidInputError(f"unknown metrics {unknown}; choose among {list(_METRICS)}")
    if masks is None and any(m in _LOCALISATION for m in metrics):
        raise InvalidInputError(f"the localisation metrics {list(_LOCALISATION)} need masks=")
    chosen = dict(methods) if isinstance(methods, dict) else {name: {} for name in methods}
    scorer = _scorer(model)
    values = {}
    for name, given in tqdm(chosen.items(), desc="evaluate", delay=2, disable=not progress):
        if isinstance(given, dict):
            if isinstance(model, Scorer | Explainer):
                raise InvalidInputError(f"{name}: give the model, or attributions instead of the method's arguments")
            attributions = Explainer(name, model, progress=False, **given).run(xs, target=target, ys=ys)
        else:
            attributions = np.asarray(given)
        for metric in metrics:
            values[name, metric] = np.asarray(_METRICS[metric][0](scorer, xs, attributions, target, ys, masks, seed))
    return Evaluation(values, tuple(chosen), tuple(metrics))


# ---------------------------------------------------------------------------------------------------------------------
# Helpers


def _check_steps(steps, name="steps") -> int:
    if isinstance(steps, bool) or not isinstance(steps, int | np.integer) or steps < 1:
        raise InvalidInputError(f"{name} must be a positive int; got {steps!r}")
    return int(steps)


def _maps(xs, attributions):
    """``(x, a, positions)``: inputs, attributions with a channel axis (N, *positions, C'), the positions' axes."""
    x = np.asarray(xs)
    a = np.asarray(attributions, np.float64)
    if x.ndim < 2:
        raise InvalidInputError(f"xs must be a batch (N, ...); got shape {x.shape}")
    if a.shape == x.shape:
        positions = x.shape[1:-1] if x.ndim > 2 else x.shape[1:]
        a = a if x.ndim > 2 else a[..., None]
    elif x.ndim > 2 and a.shape == x.shape[:-1]:
        positions, a = x.shape[1:-1], a[..., None]
    else:
        raise InvalidInputError(
            f"attributions must be shaped like xs {x.shape} (or without its channel axis, {x.shape[:-1]}); got "
            f"{a.shape}"
        )
    if not np.isfinite(a).all():
        raise InvalidInputError("attributions hold NaN or Inf")
    return x, a, positions


def _attributions_like(attributions, x):
    a = np.asarray(attributions)
    if a.shape != x.shape:
        raise InvalidInputError(f"attributions must be shaped like xs {x.shape}; got {a.shape}")
    return a


def _causal(model, xs, attributions, target, ys, steps, baseline, max_percentage, batch_size, progress, insert):
    if isinstance(max_percentage, bool) or not np.isscalar(max_percentage) or not 0 < max_percentage <= 1:
        raise InvalidInputError(f"max_percentage_perturbed must be in (0, 1]; got {max_percentage!r}")
    x, a, positions = _maps(xs, attributions)
    count = int(np.prod(positions))
    ranking = np.argsort(-a.mean(axis=-1).reshape(len(x), -1), axis=1, kind="stable")
    limit = int(np.floor(count * max_percentage))
    counts = np.linspace(0, limit, _check_steps(steps) + 1).astype(np.int32)
    return _curve(model, x, target, ys, ranking, None, counts, count, baseline, batch_size, progress, insert)


def _curve(model, x, target, ys, ranking, ids, counts, count, baseline, batch_size, progress, insert) -> Curve:
    """Scores of every sample with its first ``counts[k]`` units (of ``ranking``) switched, for every step ``k``:
    to the baseline (deletion), or from the baseline to ``x`` (insertion). ``ids``: unit of every position (None:
    the positions are the units)."""
    scorer = _scorer(model)
    x, forward = scorer.forward(x, target, ys, batch_size)
    n, positions = len(x), count if ids is None else len(ids)
    base = np.broadcast_to(np.asarray(baseline, x.dtype), x.shape[1:]) if np.ndim(baseline) else baseline
    if np.ndim(baseline) and np.shape(baseline) != x.shape[1:]:
        raise InvalidInputError(f"baseline must be a number or shaped like one sample {x.shape[1:]}")
    rank_of = np.empty_like(ranking)
    np.put_along_axis(rank_of, ranking, np.arange(count)[None], axis=1)  # each unit's place in the order
    steps = len(counts)
    owners = np.repeat(np.arange(n), steps)
    cut = np.tile(counts, n)
    per_row = x[0].size // positions  # channels of a position
    rows_per_call = batching.rows_per_run(batch_size, x[0].nbytes)
    scores = np.empty(n * steps)
    for lo in tqdm(range(0, n * steps, rows_per_call), delay=2, disable=not progress, desc="curve"):
        hi = min(n * steps, lo + rows_per_call)
        ranks = rank_of[owners[lo:hi]]
        switched = (ranks if ids is None else ranks[:, ids]) < cut[lo:hi, None]  # (rows, positions)
        switched = (np.repeat(switched, per_row, axis=1) if per_row > 1 else switched).reshape((hi - lo, *x.shape[1:]))
        if insert:
            switched = ~switched
        rows = np.where(switched, base, x[owners[lo:hi]]).astype(x.dtype, copy=False)
        scores[lo:hi] = forward([rows], owners[lo:hi])
    return Curve(fractions=counts / count, scores=scores.reshape(n, steps))


def _region_ids(spatial, region: int) -> np.ndarray:
    """The square region of every position of a grid (row-major region numbers)."""
    grids = np.meshgrid(*[np.arange(n) // region for n in spatial], indexing="ij")
    per_axis = [-(-n // region) for n in spatial]
    return np.ravel_multi_index([g.reshape(-1) for g in grids], per_axis)


def _in_chunks(forward, rows, owners, batch_size):
    size = batching.rows_per_run(batch_size, rows[0].nbytes)
    return np.concatenate([forward([rows[lo : lo + size]], owners[lo : lo + size]) for lo in range(0, len(rows), size)])


def _flat_magnitudes(attributions) -> np.ndarray:
    a = np.abs(np.asarray(attributions, np.float64))
    if a.ndim == 4:
        a = a.mean(axis=-1)
    if a.ndim < 2:
        raise InvalidInputError(f"attributions must be a batch (N, ...); got shape {a.shape}")
    return a.reshape(len(a), -1)


def _with_masks(attributions, masks):
    maps = np.asarray(attributions, np.float64)
    truth = np.asarray(masks)
    if truth.ndim == maps.ndim and truth.shape[-1] == 1 and maps.shape[-1] != 1:
        truth = truth[..., 0]
    if maps.ndim == truth.ndim + 1:
        maps = maps.sum(axis=-1)  # channels
    if maps.shape != truth.shape:
        raise InvalidInputError(f"masks {truth.shape} do not match the attribution maps {maps.shape}")
    if truth.dtype != bool and not np.isin(truth, (0, 1)).all():
        raise InvalidInputError("masks must hold booleans (or 0 and 1)")
    return maps.reshape(len(maps), -1), truth.astype(bool).reshape(len(truth), -1)


__all__ = [
    "Curve",
    "Randomization",
    "randomization_check",
    "Evaluation",
    "evaluate",
    "Scorer",
    "higher_is_better",
    "complexity",
    "deletion",
    "infidelity",
    "insertion",
    "local_lipschitz",
    "impute",
    "mufidelity",
    "pixel_flipping",
    "pointing_game",
    "relevance_mass_accuracy",
    "relevance_rank_accuracy",
    "road",
    "sensitivity_max",
    "sparseness",
]
