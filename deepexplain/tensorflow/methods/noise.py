"""Noise over any method: SmoothGrad, SmoothGrad², VarGrad of any attribution method (Captum's ``NoiseTunnel``).

Each sample is explained ``samples`` times, with Gaussian noise of standard deviation ``noise_level * (max - min)``
of the sample added to it (Smilkov et al. 2017, Sec. 3; PAIR's ``stdev_spread``), and the attributions are combined
per sample: their mean ('smoothgrad'), the mean of their squares ('smoothgrad_sq'; Hooker et al. 2019's
SquareGrad) or their variance ('vargrad'; Adebayo et al. 2018). The noisy copies go through the base method in the
batch dimension, at most ``batch_size`` rows per model call, and every copy explains the same output as its clean
sample (the clean sample's largest output for target 'max', not the noisy copy's).
"""

from __future__ import annotations

import numpy as np

from deepexplain.errors import InvalidInputError
from deepexplain.inputs import check_number, check_positive_int

KINDS = ("smoothgrad", "smoothgrad_sq", "vargrad")


class NoiseTunnel:
    """``method`` explained on noisy copies of each sample, combined by ``kind``; see
    :mod:`deepexplain.tensorflow.methods.noise`.

    Parameters
    ----------
    method : str
        Any method of :data:`deepexplain.METHODS` (not a noise tunnel itself).
    kind : {'smoothgrad', 'smoothgrad_sq', 'vargrad'}
        Mean, mean of squares, or variance (``E[a**2] - E[a]**2``, as Captum) of the attributions of the copies.
    samples : int
        Noisy copies per sample.
    noise_level : float
        Standard deviation of the noise relative to each sample's range (>= 0; 0 gives the base method back).
    seed : int, optional
        Seed of the noise (drawn sample by sample: results do not depend on ``batch_size``).
    method_kwargs : dict, optional
        The base method's arguments.
    """

    wraps_method = True
    is_random = True
    name = "noise_tunnel"

    def __init__(self, sample_shapes, method="saliency", kind="smoothgrad", samples=50, noise_level=0.15, seed=None,
                 method_kwargs=None):  # fmt: skip
        from deepexplain.tensorflow.methods import check_method, declaration_of

        self.sample_shapes = sample_shapes
        if getattr(declaration_of(method), "wraps_method", False):
            raise InvalidInputError(f"method of {self.name} must be a method without noise of its own; got {method!r}")
        if method_kwargs is not None and not isinstance(method_kwargs, dict):
            raise InvalidInputError(f"method_kwargs of {self.name} must be a dict; got {type(method_kwargs).__name__}")
        self.method_kwargs = dict(method_kwargs or {})
        check_method(method, self.method_kwargs)
        if kind not in KINDS:
            raise InvalidInputError(f"kind of {self.name} must be one of {list(KINDS)}; got {kind!r}")
        self.method, self.kind = method, kind
        self.samples = check_positive_int(samples, "samples", self.name)
        self.noise_level = check_number(noise_level, "noise_level", self.name, 0)
        self.seed = seed

    def combine(self, attributions: np.ndarray) -> np.ndarray:
        """``(samples, n, ...)`` attributions of the copies -> ``(n, ...)``, accumulated in float64."""
        values = attributions.astype(np.float64)
        if self.kind == "smoothgrad":
            result = values.mean(axis=0)
        elif self.kind == "smoothgrad_sq":
            result = (values**2).mean(axis=0)
        else:
            result = (values**2).mean(axis=0) - values.mean(axis=0) ** 2
        return result.astype(np.result_type(attributions.dtype, np.float32))


class VarGrad(NoiseTunnel):
    """VarGrad (Adebayo et al. 2018, "Local Explanation Methods for Deep Neural Networks Lack Sensitivity to
    Parameter Values", ICLR workshop): the variance of the gradient over noisy copies (xplique's ``VarGrad``)."""

    name = "vargrad"

    def __init__(self, sample_shapes, samples=50, noise_level=0.15, seed=None):
        super().__init__(sample_shapes, "gradient", "vargrad", samples, noise_level, seed)


class SquareGrad(NoiseTunnel):
    """SquareGrad (Hooker et al. 2019, "A Benchmark for Interpretability Methods in Deep Neural Networks", NeurIPS):
    the mean of the squared gradient over noisy copies (xplique's ``SquareGrad``, Captum's 'smoothgrad_sq')."""

    name = "squaregrad"

    def __init__(self, sample_shapes, samples=50, noise_level=0.15, seed=None):
        super().__init__(sample_shapes, "gradient", "smoothgrad_sq", samples, noise_level, seed)


__all__ = ["KINDS", "NoiseTunnel", "SquareGrad", "VarGrad"]
