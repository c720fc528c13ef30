"""Resampling of maps: the interpolation conventions of the peers as matrices (no TensorFlow needed).

Stretching an axis from ``n`` to ``m`` positions by linear or nearest interpolation is a linear map, an ``(m, n)``
matrix; a 2-D map is stretched by one matrix per axis. The class activation maps and RISE's masks use these.
"""

from __future__ import annotations

import numpy as np

UPSAMPLING = ("bilinear", "bilinear_align_corners", "nearest")


def interpolation(size_in: int, size_out: int, mode: str) -> np.ndarray:
    """The ``(size_out, size_in)`` matrix that stretches one axis by ``mode`` (one of :data:`UPSAMPLING`).

    'bilinear' samples at half-pixel centres, clamped at the edges (``tf.image.resize``, torch
    ``align_corners=False``); 'bilinear_align_corners' maps the end pixels onto each other (``scipy.ndimage.zoom``
    with ``order=1``); 'nearest' takes source pixel ``floor(i * size_in / size_out)`` (torch's and Captum's).
    """
    rows = np.arange(size_out)
    if mode == "nearest":
        source = np.minimum(np.floor(rows * size_in / size_out), size_in - 1)
    elif mode == "bilinear_align_corners":
        source = rows * ((size_in - 1) / (size_out - 1)) if size_out > 1 else np.zeros(1)
    else:
        source = np.clip((rows + 0.5) * size_in / size_out - 0.5, 0, size_in - 1)
    low = np.floor(source).astype(int)
    high = np.minimum(low + 1, size_in - 1)
    fraction = source - low
    matrix = np.zeros((size_out, size_in))
    np.add.at(matrix, (rows, low), 1 - fraction)
    np.add.at(matrix, (rows, high), fraction)
    return matrix


def stretch(maps: np.ndarray, size, mode: str = "bilinear") -> np.ndarray:
    """Maps ``(N, *spatial)`` (1-D or 2-D) stretched to ``size`` by :func:`interpolation` along each axis."""
    maps = np.asarray(maps)
    matrices = [interpolation(n, int(m), mode) for n, m in zip(maps.shape[1:], size, strict=True)]
    return np.einsum(EINSUM[maps.ndim], maps, *matrices)


EINSUM = {2: "nt,Tt->nT", 3: "nhw,Hh,Ww->nHW"}

__all__ = ["EINSUM", "UPSAMPLING", "interpolation", "stretch"]
