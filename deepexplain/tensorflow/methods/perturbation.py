"""The perturbation family: occlusion, Shapley values, feature ablation, on top of :mod:`deepexplain.perturbation`."""

from __future__ import annotations

import importlib
import warnings

import numpy as np

from deepexplain.errors import InvalidInputError, InvalidTypeError


class _Checked(Exception):
    """Raised by the stand-in model of a dry run: every argument passed the engine's checks."""


def _stand_in(rows, owners):
    raise _Checked


class PerturbationMethod:
    """A method that needs forward passes only; ``attribute`` calls one function of the perturbation engine.

    ``engine_function`` names that function in :mod:`deepexplain.perturbation` (imported on first use). The
    arguments are checked at construction, when the inputs' shapes are known: the engine runs on one all-zeros
    sample with a stand-in model that stops it at its first call, after all its checks (window larger than the
    input, ``step=0``, ``samples=0``, a ``feature_mask`` of the wrong shape, ...). The engine's errors
    (:mod:`deepexplain.errors` types) name the method.
    """

    needs_gradient = False
    promises_completeness = False
    engine_function = ""

    def __init__(self, sample_shapes, **kwargs):
        self.sample_shapes = [None if s is None else tuple(s) for s in sample_shapes]
        self.kwargs = kwargs
        if self.sample_shapes and all(s is not None and None not in s for s in self.sample_shapes):
            xs = [np.zeros((1, *s), np.float32) for s in self.sample_shapes]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the run itself warns
                try:
                    self._engine(_stand_in, xs, None, False)
                except _Checked:
                    pass

    def attribute(self, forward, xs, batch_size, progress):
        return self._engine(forward, xs, batch_size, progress)

    def _engine(self, forward, xs, batch_size, progress):
        function = getattr(importlib.import_module("deepexplain.perturbation"), self.engine_function)
        try:
            return function(forward, xs, batch_size=batch_size, progress=progress, **self.kwargs)
        except (InvalidInputError, InvalidTypeError) as error:  # the engine's checks: say which method
            raise type(error)(f"{self.engine_function}: {error}") from None


class Occlusion(PerturbationMethod):
    """Occlusion (Zeiler & Fergus 2014), see :func:`deepexplain.perturbation.occlusion`."""

    engine_function = "occlusion"

    def __init__(self, sample_shapes, window_shape=None, step=None, baseline=0.0):
        super().__init__(sample_shapes, window_shape=window_shape, step=step, baseline=baseline)


class ShapleySampling(PerturbationMethod):
    """Shapley value sampling (Castro et al. 2009), see :func:`deepexplain.perturbation.shapley_sampling`."""

    engine_function = "shapley_sampling"

    def __init__(
        self,
        sample_shapes,
        samples=5,
        sampling_dims=None,
        feature_mask=None,
        baseline=0.0,
        seed=None,
        antithetic=False,
    ):
        super().__init__(
            sample_shapes,
            samples=samples,
            sampling_dims=sampling_dims,
            feature_mask=feature_mask,
            baseline=baseline,
            seed=seed,
            antithetic=antithetic,
        )


class ShapleyExact(PerturbationMethod):
    """Exact Shapley values by enumeration, see :func:`deepexplain.perturbation.shapley_exact`."""

    engine_function = "shapley_exact"

    def __init__(self, sample_shapes, feature_mask=None, baseline=0.0):
        super().__init__(sample_shapes, feature_mask=feature_mask, baseline=baseline)


class FeatureAblation(PerturbationMethod):
    """Feature ablation, see :func:`deepexplain.perturbation.feature_ablation`."""

    engine_function = "feature_ablation"

    def __init__(self, sample_shapes, feature_mask=None, baseline=0.0):
        super().__init__(sample_shapes, feature_mask=feature_mask, baseline=baseline)


class KernelShap(PerturbationMethod):
    """KernelSHAP (Lundberg & Lee 2017), see :func:`deepexplain.perturbation.kernel_shap`."""

    engine_function = "kernel_shap"

    def __init__(self, sample_shapes, feature_mask=None, samples=None, baseline=0.0, seed=None):
        super().__init__(sample_shapes, feature_mask=feature_mask, samples=samples, baseline=baseline, seed=seed)


class Lime(PerturbationMethod):
    """LIME (Ribeiro et al. 2016), see :func:`deepexplain.perturbation.lime`."""

    engine_function = "lime"

    def __init__(self, sample_shapes, feature_mask=None, samples=1000, kernel_width=0.25, alpha=1.0, baseline=0.0,
                 seed=None):  # fmt: skip
        super().__init__(sample_shapes, feature_mask=feature_mask, samples=samples, kernel_width=kernel_width,
                         alpha=alpha, baseline=baseline, seed=seed)  # fmt: skip


class Rise(PerturbationMethod):
    """RISE (Petsiuk et al. 2018), see :func:`deepexplain.perturbation.rise`: one map ``(N, H, W)`` per image."""

    engine_function = "rise"

    def __init__(self, sample_shapes, masks=4000, grid=7, p=0.5, baseline=0.0, seed=None):
        super().__init__(sample_shapes, masks=masks, grid=grid, p=p, baseline=baseline, seed=seed)
