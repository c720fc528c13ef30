"""Feature masks from image segmentations: the players of KernelSHAP, LIME and Shapley sampling, one mask per image.

:func:`segments` runs one of scikit-image's segmentations (or a regular grid) on every image of a batch and returns
integer labels shaped ``(N, H, W, 1)``: a mask with a leading sample dimension gives each sample its own players
(:mod:`deepexplain.perturbation`), and its last axis of 1 puts all channels of a pixel in the same player.
"""

from __future__ import annotations

import numpy as np

from deepexplain.errors import InvalidInputError, closest

KINDS = ("slic", "quickshift", "felzenszwalb", "grid")


def segments(xs, kind: str = "slic", **kwargs) -> np.ndarray:
    """Segment each image of ``xs`` into regions (superpixels), numbered from 0 per image.

    Parameters
    ----------
    xs : array_like, shape (N, H, W, C) or (N, H, W)
        Images, channels last (C = 1 or 3 for 'quickshift'; any C for the others).
    kind : {'slic', 'quickshift', 'felzenszwalb', 'grid'}
        ``skimage.segmentation.slic`` (Achanta et al. 2012; the default of lime and shap's image examples),
        ``quickshift`` (Vedaldi & Soatto 2008; lime's default), ``felzenszwalb`` (Felzenszwalb & Huttenlocher 2004),
        or 'grid': a regular grid of ``cells=(rows, columns)`` cells (default (4, 4)) of as equal a size as the image
        allows.
    **kwargs
        Passed to the scikit-image function (e.g. ``n_segments=50, compactness=10`` for slic, ``kernel_size``,
        ``max_dist`` for quickshift, ``scale`` for felzenszwalb); ``cells`` for 'grid'.

    Returns
    -------
    ndarray of int64, shape (N, H, W, 1)
        The region of every pixel, 0..R_i - 1 for image ``i``; pass it as ``feature_mask``.

    Raises
    ------
    InvalidInputError
        For an unknown ``kind`` (the closest suggested), images that are not (N, H, W[, C]), non-finite values, or
        bad ``cells``, before any segmentation runs.
    """
    if kind not in KINDS:
        raise InvalidInputError(f"kind must be one of {list(KINDS)}; got {kind!r}{closest(kind, KINDS)}")
    images = np.asarray(xs)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.dtype.kind not in "biuf" or 0 in images.shape:
        raise InvalidInputError(f"xs must be images (N, H, W, C) or (N, H, W); got shape {np.shape(xs)}")
    if not np.isfinite(images).all():
        raise InvalidInputError("xs must be finite to be segmented; it holds NaN or Inf")
    if kind == "grid":
        labels = _grid(images.shape[1:3], **kwargs)
        return np.broadcast_to(labels, (len(images), *labels.shape)).copy()[..., None]
    from skimage import segmentation

    function = getattr(segmentation, kind)
    if kind == "quickshift" and images.shape[-1] not in (1, 3):
        raise InvalidInputError(f"quickshift segments grey or RGB images; got {images.shape[-1]} channels")
    out = np.empty(images.shape[:3], np.int64)
    for i, image in enumerate(images.astype(np.float64)):
        if kind == "quickshift":
            rgb = np.repeat(image, 3, axis=-1) if image.shape[-1] == 1 else image
            labels = function(rgb, **kwargs)
        else:
            labels = function(image, channel_axis=-1, **kwargs)
        out[i] = np.unique(labels, return_inverse=True)[1].reshape(labels.shape)  # 0..R-1, no gaps
    return out[..., None]


def _grid(shape, cells=(4, 4)) -> np.ndarray:
    cells = (cells, cells) if isinstance(cells, int | np.integer) else tuple(cells)
    if len(cells) != 2 or not all(isinstance(c, int | np.integer) and 1 <= c for c in cells):
        raise InvalidInputError(f"cells of the grid must be one or two positive ints; got {cells!r}")
    if cells[0] > shape[0] or cells[1] > shape[1]:
        raise InvalidInputError(f"cells {cells} do not fit images of {shape[0]}×{shape[1]} pixels")
    rows = np.arange(shape[0]) * cells[0] // shape[0]
    columns = np.arange(shape[1]) * cells[1] // shape[1]
    return (rows[:, None] * cells[1] + columns[None, :]).astype(np.int64)


__all__ = ["KINDS", "segments"]
