"""Attribution maps as numbers to draw, shared by :mod:`deepexplain.plot` (matplotlib) and :mod:`deepexplain.report`
(plotly): channel reductions, symmetric colour limits, display ranges of images and argument checks. numpy only."""

from types import MappingProxyType

import numpy as np

from deepexplain.errors import InvalidInputError

# Reductions of an (H, W, C) map over its channel axis to one value per pixel.
_CHANNEL_REDUCTIONS = MappingProxyType(
    {
        "sum": lambda values: values.sum(axis=-1),
        "abs": lambda values: np.abs(values).sum(axis=-1),
        "norm": lambda values: np.linalg.norm(values, axis=-1),
    }
)
CHANNEL_AGGREGATIONS = tuple(_CHANNEL_REDUCTIONS)

POSITIVE = "#d6604d"  # the red and blue of RdBu_r at about ±0.6 of its range
NEGATIVE = "#4393c3"
ZERO = "#bababa"


def check_percentile(percentile: float) -> float:
    if isinstance(percentile, bool) or not isinstance(percentile, int | float | np.number) or not 0 < percentile <= 100:
        raise ValueError(f"percentile: expected a number in (0, 100], got {percentile!r}")
    return float(percentile)


def check_finite(values: np.ndarray, name: str, samples: bool = False) -> None:
    """Refuse NaN and inf, counting them, or with ``samples`` naming the samples (first axis) that have them."""
    if np.all(np.isfinite(values)):
        return
    if not samples:
        count = np.count_nonzero(~np.isfinite(values))
        raise InvalidInputError(f"{name}: expected finite values, got {count} NaN or inf")
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1) if values.ndim > 1 else ~np.isfinite(values)
    rows = np.flatnonzero(bad)
    listed = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
    raise InvalidInputError(f"{name}: expected finite values, got NaN or inf in {len(rows)} samples ({listed})")


def symmetric_limit(values: np.ndarray, percentile: float) -> float:
    """±limit of the colour scale: the percentile of |values|, falling back to max |values|, then to 1."""
    magnitude = np.abs(values)
    if magnitude.size == 0:
        return 1.0
    limit = float(np.percentile(magnitude, percentile))
    if limit <= 0:  # a sparse map whose non-zeros all lie above the percentile
        limit = float(magnitude.max())
    return limit if limit > 0 else 1.0


def aggregate_channels(attribution, channels: str = "sum") -> np.ndarray:
    """Reduce an (H, W, C) attribution to one value per pixel.

    Parameters
    ----------
    attribution : array_like, shape (H, W) or (H, W, C)
        Attribution of one image; an (H, W) map is returned as is (as floats).
    channels : {'sum', 'abs', 'norm'}
        ``'sum'``: signed sum over channels; ``'abs'``: sum of absolute values; ``'norm'``: L2 norm over channels.
        ``'abs'`` and ``'norm'`` are non-negative, so only the positive half of a diverging colormap is used.

    Returns
    -------
    numpy.ndarray, shape (H, W)

    Raises
    ------
    ValueError
        If ``channels`` is not one of :data:`CHANNEL_AGGREGATIONS` or ``attribution`` is not of rank 2 or 3.
    """
    if channels not in _CHANNEL_REDUCTIONS:
        raise ValueError(f"channels: expected one of {CHANNEL_AGGREGATIONS}, got {channels!r}")
    values = np.asarray(attribution, dtype=float)
    if values.ndim == 2:
        return values
    if values.ndim == 3:
        return _CHANNEL_REDUCTIONS[channels](values)
    raise ValueError(
        f"attribution: expected shape (H, W) or (H, W, C) for one image, got {values.shape}"
        + (" (for a batch, pass one sample or use grid())" if values.ndim == 4 else "")
    )


def as_display_image(image) -> np.ndarray:
    """The image as floats in [0, 1], shape (H, W) or (H, W, 3|4).

    Integer images and float images within [0, 255] (but not [0, 1]) are divided by 255; anything else, such as a
    standardised network input, is min-max scaled for display.
    """
    values = np.asarray(image)
    shape = values.shape
    if values.ndim == 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim not in (2, 3) or (values.ndim == 3 and values.shape[-1] not in (3, 4)):
        raise ValueError(f"image: expected shape (H, W) or (H, W, C) with C in (1, 3, 4), got {shape}")
    integer = np.issubdtype(values.dtype, np.integer)
    values = values.astype(float)
    check_finite(values, "image")
    low, high = values.min(), values.max()
    if low >= 0 and high <= 1 and not integer:
        return values
    if low >= 0 and high <= 255:
        return values / 255.0
    return (values - low) / (high - low) if high > low else np.zeros_like(values)
