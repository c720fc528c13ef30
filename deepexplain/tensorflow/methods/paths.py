"""Integrated gradients along other paths, as PAIR's ``saliency`` computes them: Blur IG and Guided IG.

- Blur IG (Xu et al. 2020, "Attribution in Scale and Space", CVPR, Eq. 4): the path from the fully blurred input
  to the input through Gaussian blurs of decreasing ``sigma``; the attribution is
  ``-sum_i (sigma_{i+1} - sigma_i) * (d x / d sigma)(sigma_i) * grad f(x(sigma_i))`` with ``d x / d sigma`` a finite
  difference of step ``grad_step``. Every step of every sample goes into the batch dimension.
- Guided IG (Kapishnikov et al. 2021, "Guided Integrated Gradients: An Adaptive Path Method for Removing Noise",
  CVPR, Alg. 1): from the baseline, each step moves the ``fraction`` of features with the smallest absolute gradient
  towards the input, within ``max_dist`` of the straight line, so the path avoids high-gradient regions; ``steps``
  gradient evaluations, one after another, each batched over the samples.

Parameters are named as PAIR's ``GetMask`` arguments (``max_sigma``, ``steps``, ``grad_step``, ``sqrt``; ``steps``
for ``x_steps``, ``fraction``, ``max_dist``, ``baseline`` for ``x_baseline``).
"""

from __future__ import annotations

import math

import numpy as np

from deepexplain.errors import InvalidInputError
from deepexplain.inputs import baseline_or_zeros, check_baseline, check_number, check_positive_int
from deepexplain.tensorflow.methods.base import Expansion, GradientMethod


def gaussian_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Each sample of ``x`` (N, ..., C) blurred over its positions (not its channels), zeros beyond the edges."""
    if sigma == 0:
        return x
    from scipy import ndimage

    return ndimage.gaussian_filter(x, sigma=[0] + [sigma] * (x.ndim - 2) + [0], mode="constant")


class BlurIG(GradientMethod):
    """Blur IG (Xu et al. 2020); see :mod:`deepexplain.tensorflow.methods.paths`.

    Parameters
    ----------
    max_sigma : float
        The blur of the path's start (default 50, PAIR's).
    steps : int
        Steps along the path (default 100).
    grad_step : float
        Step of the finite difference ``d x / d sigma`` (default 0.01).
    sqrt : bool
        Space the sigmas as ``sqrt(i * max_sigma / steps)`` instead of linearly.
    """

    evaluates_at_samples = False
    name = "blur_ig"

    def __init__(self, sample_shapes, max_sigma=50.0, steps=100, grad_step=0.01, sqrt=False):
        super().__init__(sample_shapes)
        self.max_sigma = check_number(max_sigma, "max_sigma", self.name, 0.0)
        self.steps = check_positive_int(steps, "steps", self.name)
        self.grad_step = check_number(grad_step, "grad_step", self.name, 1e-12)
        self.sqrt = bool(sqrt)
        fractions = np.arange(self.steps + 1) * self.max_sigma / self.steps
        self.sigmas = np.sqrt(fractions) if self.sqrt else fractions

    @property
    def rows_per_sample(self):
        return self.steps

    def expand(self, xs, rng):
        points, factors = [], []
        for x in xs:
            if x.ndim < 3:
                raise InvalidInputError(f"{self.name} blurs positions: inputs must be (N, ..., C); got {x.shape}")
            x = x.astype(np.float64)
            blurred = [gaussian_blur(x, s) for s in self.sigmas[:-1]]
            slopes = [(gaussian_blur(x, s + self.grad_step) - b) / self.grad_step
                      for s, b in zip(self.sigmas[:-1], blurred, strict=True)]  # fmt: skip
            points.append(np.concatenate(blurred).astype(np.float32))
            factors.append(np.stack(slopes).astype(np.float32))
        return Expansion(points=points, weights=-np.diff(self.sigmas), factors=factors)


class GuidedIG(GradientMethod):
    """Guided IG (Kapishnikov et al. 2021); see :mod:`deepexplain.tensorflow.methods.paths`.

    Parameters
    ----------
    baseline : float or ndarray, optional
        The path's start, shaped like one sample (default zeros).
    steps : int
        Gradient evaluations along the path (default 200, PAIR's ``x_steps``).
    fraction : float
        Share of the features moved at each step, those of smallest absolute gradient (default 0.25).
    max_dist : float
        How far (as a fraction of the L1 distance from baseline to input) the path may stray from the straight
        line (default 0.02; 0 gives integrated gradients on a right Riemann sum).
    """

    evaluates_at_samples = False
    iterative = True
    name = "guided_ig"

    def __init__(self, sample_shapes, baseline=None, steps=200, fraction=0.25, max_dist=0.02):
        super().__init__(sample_shapes)
        self.baselines = check_baseline(baseline, self.sample_shapes)
        self.steps = check_positive_int(steps, "steps", self.name)
        self.fraction = check_number(fraction, "fraction", self.name, 0.0, 1.0)
        self.max_dist = check_number(max_dist, "max_dist", self.name, 0.0, 1.0)

    def iterate(self, gradients, xs: list, rng) -> list:
        """Attributions of the samples ``xs`` given ``gradients(points) -> gradients`` (lists per input)."""
        inputs = [x.astype(np.float64) for x in xs]
        bases = [np.broadcast_to(baseline_or_zeros(b, x), x.shape).astype(np.float64)
                 for b, x in zip(self.baselines, xs, strict=True)]  # fmt: skip
        flat = lambda arrays: np.concatenate([a.reshape(len(a), -1) for a in arrays], axis=1)  # noqa: E731
        x_in, x_base = flat(inputs), flat(bases)
        point, attribution = x_base.copy(), np.zeros_like(x_in)
        sizes = [int(np.prod(x.shape[1:])) for x in xs]
        for step in range(self.steps):
            parts = np.split(point, np.cumsum(sizes)[:-1], axis=1)
            shaped = [p.reshape(x.shape).astype(np.float32) for p, x in zip(parts, xs, strict=True)]
            grad = flat(gradients(shaped)).astype(np.float64)
            for k in range(len(point)):
                attribution[k] += self._step(point[k], x_in[k], x_base[k], grad[k], step)
        out = np.split(attribution, np.cumsum(sizes)[:-1], axis=1)
        return [a.reshape(x.shape).astype(np.float32) for a, x in zip(out, xs, strict=True)]

    def _step(self, x, x_input, x_baseline, grad_actual, step) -> np.ndarray:
        """One step of Alg. 1 for one sample, in place on ``x``; returns its contribution to the attribution."""
        total = x_input - x_baseline
        if not np.abs(total).sum():
            return np.zeros_like(x)
        start = x.copy()
        grad = grad_actual.copy()
        alpha = (step + 1.0) / self.steps
        alpha_min, alpha_max = max(alpha - self.max_dist, 0.0), min(alpha + self.max_dist, 1.0)
        x_min, x_max = x_baseline + total * alpha_min, x_baseline + total * alpha_max
        l1_target = np.abs(total).sum() * (1 - (step + 1) / self.steps)
        gamma = np.inf
        while gamma > 1.0:
            with np.errstate(divide="ignore", invalid="ignore"):
                x_alpha = np.where(total != 0, (x - x_baseline) / total, np.nan)
            x_alpha[np.isnan(x_alpha)] = alpha_max
            behind = x_alpha < alpha_min
            x[behind] = x_min[behind]  # features left too far behind catch up with the lower bound
            l1_current = np.abs(x - x_input).sum()
            if math.isclose(l1_target, l1_current, rel_tol=1e-9, abs_tol=1e-9):
                break
            grad[x == x_max] = np.inf
            threshold = np.quantile(np.abs(grad), self.fraction, method="lower")
            chosen = (np.abs(grad) <= threshold) & (grad != np.inf)
            l1_chosen = (np.abs(x - x_max) * chosen).sum()
            gamma = (l1_current - l1_target) / l1_chosen if l1_chosen > 0 else np.inf
            if gamma > 1.0:
                x[chosen] = x_max[chosen]
            else:
                x[chosen] = (x + (x_max - x) * gamma)[chosen]
        return (x - start) * grad_actual


__all__ = ["BlurIG", "GuidedIG", "gaussian_blur"]
