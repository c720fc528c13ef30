"""XRAI (Kapishnikov et al. 2019, "XRAI: Better Attributions Through Regions", ICCV, Sec. 3): regions ranked by
the density of their integrated-gradients attribution.

1. Integrated gradients from a black and a white baseline (each sample's min and max), averaged; for images the
   channels are reduced by their maximum. The IG is PAIR's: ``steps`` points ``linspace(0, 1, steps)`` weighted
   ``1 / steps`` each (endpoints included, so its sum is not exactly the output difference).
2. Regions: Felzenszwalb segmentations of the image at six scales (50 ... 1200, sigma 0.8, min size 150) on the image
   rescaled to [-1, 1] and resized to 224×224, every segment dilated by a disk of radius 5 (PAIR's), or the
   integer ``segments`` given (one label map per sample, e.g. :func:`deepexplain.segments`).
3. Greedy selection: the region that adds the highest mean attribution over its new pixels is added, until
   ``area_threshold`` of the image is covered (regions adding fewer than ``min_pixel_diff`` pixels are dropped);
   each pixel gets the density of the region that added it, the rest the density of the rest.
   ``algorithm='fast'`` ranks the regions once by their own density instead.

Parameters and defaults are PAIR ``saliency``'s (``XRAIParameters``); the result is one map ``(N, H, W)`` per image.
"""

from __future__ import annotations

import numpy as np

from deepexplain.errors import InvalidInputError
from deepexplain.inputs import check_positive_int
from deepexplain.tensorflow.methods.base import Expansion, GradientMethod

_SCALES = (50, 100, 150, 250, 500, 1200)
_SIGMA = 0.8
_MIN_SIZE = 150
_RESIZE = (224, 224)
_DILATION = 5


class XRAI(GradientMethod):
    """XRAI; see :mod:`deepexplain.tensorflow.methods.xrai`.

    Parameters
    ----------
    steps : int
        Integration steps per baseline (default 100).
    area_threshold : float
        Share of the image the greedy selection covers, in (0, 1] (default 1).
    algorithm : {'full', 'fast'}
        Greedy selection with the regions' overlap (default), or one ranking by density.
    min_pixel_diff : int
        Regions that add fewer new pixels are skipped (default 50).
    segments : ndarray of int, optional
        Region labels per sample, ``(N, H, W)`` or ``(N, H, W, 1)``; default PAIR's Felzenszwalb regions.
    """

    evaluates_at_samples = False
    name = "xrai"

    def __init__(self, sample_shapes, steps=100, area_threshold=1.0, algorithm="full", min_pixel_diff=50,
                 segments=None):  # fmt: skip
        super().__init__(sample_shapes)
        self.steps = check_positive_int(steps, "steps", self.name)
        if isinstance(area_threshold, bool) or not np.isscalar(area_threshold) or not 0 < area_threshold <= 1:
            raise InvalidInputError(f"area_threshold of xrai must be a number in (0, 1]; got {area_threshold!r}")
        self.area_threshold = float(area_threshold)
        if algorithm not in ("full", "fast"):
            raise InvalidInputError(f"algorithm of xrai must be 'full' or 'fast'; got {algorithm!r}")
        self.algorithm = algorithm
        self.min_pixel_diff = check_positive_int(min_pixel_diff, "min_pixel_diff", self.name)
        if len(self.sample_shapes) != 1 or (self.sample_shapes[0] is not None and len(self.sample_shapes[0]) != 3):
            raise InvalidInputError(f"xrai explains models of one image input (N, H, W, C); got {self.sample_shapes}")
        self.segments = None if segments is None else self._check_segments(segments)

    def _check_segments(self, segments):
        labels = np.asarray(segments)
        labels = labels[..., 0] if labels.ndim == 4 and labels.shape[-1] == 1 else labels
        shape = self.sample_shapes[0]
        if labels.ndim != 3 or labels.dtype.kind not in "iu" or (shape is not None and labels.shape[1:] != shape[:2]):
            raise InvalidInputError(
                f"segments of xrai must be integer labels (N, H, W) of the images {shape}; got {np.shape(segments)} "
                f"{labels.dtype}"
            )
        return labels

    @property
    def rows_per_sample(self):
        return 2 * self.steps

    def expand(self, xs, rng):
        (x,) = xs
        flat = x.reshape(len(x), -1)
        baselines = [
            np.broadcast_to(v.reshape((-1,) + (1,) * (x.ndim - 1)), x.shape) for v in (flat.min(1), flat.max(1))
        ]
        alphas = np.linspace(0.0, 1.0, self.steps).reshape((-1,) + (1,) * x.ndim)
        points = np.concatenate([b[None] + alphas * (x - b)[None] for b in baselines]).astype(np.float32)
        factors = np.concatenate([np.broadcast_to((x - b)[None], (self.steps, *x.shape)) for b in baselines])
        weights = np.full(2 * self.steps, 1.0 / (2 * self.steps))
        return Expansion(points=[points.reshape((-1,) + x.shape[1:])], weights=weights,
                         factors=[factors.astype(np.float32)])  # fmt: skip

    def summarize(self, attributions, xs, start=0):
        (attribution,), (x,) = attributions, xs
        maps = np.empty(x.shape[:3], np.float64)
        select = _greedy if self.algorithm == "full" else _fast
        for k, (a, image) in enumerate(zip(attribution.max(axis=-1), x, strict=True)):
            maps[k] = select(a, self._masks(image, start + k), self.area_threshold, self.min_pixel_diff)
        return [maps.astype(np.float32)]

    def _masks(self, image, index):
        if self.segments is None:
            return felzenszwalb_regions(image)
        if len(self.segments) != 1 and index >= len(self.segments):
            raise InvalidInputError(
                f"segments of xrai holds {len(self.segments)} label maps; sample {index} has none (give one per sample)"
            )
        labels = self.segments[0 if len(self.segments) == 1 else index]
        return [labels == value for value in np.unique(labels)]


def felzenszwalb_regions(image) -> list:
    """PAIR's XRAI regions of one image (H, W, C): Felzenszwalb segments at six scales of the image rescaled to
    [-1, 1] and resized to 224×224, back at the image's size, each dilated by a disk of radius 5."""
    from skimage import segmentation
    from skimage.morphology import dilation, disk
    from skimage.transform import resize

    low, high = image.min(), image.max()
    scaled = (image - low) / (high - low) * 2.0 - 1.0 if high > low else np.zeros_like(image, np.float64)
    scaled = resize(scaled, _RESIZE, order=3, mode="constant", preserve_range=True, anti_aliasing=True)
    masks = []
    for scale in _SCALES:
        labels = segmentation.felzenszwalb(scaled, scale=scale, sigma=_SIGMA, min_size=_MIN_SIZE)
        labels = resize(labels, image.shape[:2], order=0, preserve_range=True, mode="constant",
                        anti_aliasing=False).astype(int)  # fmt: skip
        masks.extend(labels == value for value in range(labels.min(), labels.max() + 1))
    footprint = disk(_DILATION)
    return [dilation(mask, footprint=footprint) for mask in masks]


def _density(mask, attribution) -> float:
    return attribution[mask].mean() if mask.any() else -np.inf


def _greedy(attribution, masks, area_threshold, min_pixel_diff) -> np.ndarray:
    """XRAI's selection: repeatedly add the region whose new pixels have the highest mean attribution."""
    out = np.full(attribution.shape, -np.inf)
    covered = np.zeros(attribution.shape, bool)
    remaining = dict(enumerate(masks))
    while covered.mean() <= area_threshold and remaining:
        best, best_gain = None, -np.inf
        for key in list(remaining):
            new = remaining[key] & ~covered
            if new.sum() < min_pixel_diff:
                del remaining[key]
                continue
            gain = _density(new, attribution)
            if gain > best_gain:
                best, best_gain = key, gain
        if best is None:
            break
        new = remaining.pop(best) & ~covered
        out[new] = best_gain
        covered |= new
    rest = out == -np.inf
    out[rest] = _density(rest, attribution)
    return out


def _fast(attribution, masks, area_threshold, min_pixel_diff) -> np.ndarray:
    """XRAI's fast selection: the regions in the order of their own density, each adding its new pixels."""
    out = np.full(attribution.shape, -np.inf)
    covered = np.zeros(attribution.shape, bool)
    for mask in sorted(masks, key=lambda m: -_density(m, attribution)):
        new = mask & ~covered
        if new.sum() < min_pixel_diff:
            continue
        out[new] = _density(new, attribution)
        covered |= mask
    rest = out == -np.inf
    out[rest] = _density(rest, attribution)
    return out


__all__ = ["XRAI", "felzenszwalb_regions"]
