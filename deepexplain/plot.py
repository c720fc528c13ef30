"""Pictures of attributions: heatmaps over images, methods × samples grids, coloured text and feature bars.

Nothing here imports TensorFlow: attributions are plain numpy arrays shaped like the input, so they can be drawn
anywhere matplotlib and scikit-image are installed. Colour limits are always symmetric, ±(a percentile of
|attribution|), so that a zero attribution gets the neutral middle of a diverging colormap: with the default
``'RdBu_r'`` positive evidence is red, negative evidence blue and zero white, the convention of the original
DeepExplain figures (Ancona et al., 2018).

Figures are built as :class:`matplotlib.figure.Figure` on an Agg canvas, never through pyplot, unless the caller
passes an ``ax``: drawing does not switch a notebook's backend nor leave figures open in pyplot's registry. In a
notebook, display a returned Axes through ``ax.figure`` (IPython renders a Figure inline).

References
----------
Ancona, M., Ceolini, E., Öztireli, C. and Gross, M. (2018). Towards better understanding of gradient-based attribution
methods for deep neural networks. ICLR.
"""

import html as _html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Colormap, Normalize, to_hex
from matplotlib.figure import Figure
from skimage.color import rgb2gray
from skimage.feature import canny
from skimage.transform import resize

from deepexplain._maps import (
    CHANNEL_AGGREGATIONS,
    NEGATIVE,
    POSITIVE,
    ZERO,
    aggregate_channels,
    as_display_image,
    check_finite,
    check_percentile,
    symmetric_limit,
)
from deepexplain.errors import InvalidInputError

__all__ = [
    "CHANNEL_AGGREGATIONS",
    "TextHeatmap",
    "aggregate_channels",
    "bars",
    "concepts",
    "curves",
    "force",
    "global_summary",
    "grid",
    "heatmap",
    "text",
    "waterfall",
]


_DPI = 150
_HEATMAP_INCHES = 4.0  # longer side of a stand-alone heatmap
_CELL_INCHES = 2.0  # side of one cell of `grid`
_GAP = 0.06  # gap between the panels of `grid`, a share of a panel's side
_EDGES_MIN_PIXELS = 64  # smaller images get no edge overlay by default
_EDGE_RGBA = (0.1, 0.1, 0.1, 0.6)  # edges darken what is under them without hiding its colour
_OVERLAY_ALPHA = 0.5  # a map drawn over its image with overlay=True, as Grad-CAM figures are

PathType = str | PathLike


# ---------------------------------------------------------------------------------------------------------------------
# Validation and conversion


def _colormap(cmap: str | Colormap) -> Colormap:
    if isinstance(cmap, Colormap):
        return cmap
    try:
        return colormaps[cmap]
    except KeyError:
        raise ValueError(f"cmap: expected a matplotlib colormap or its name, got {cmap!r}") from None


def _grey(image01: np.ndarray) -> np.ndarray:
    return image01 if image01.ndim == 2 else rgb2gray(image01[..., :3])


def _fit_to(values: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Stretch a coarse map (e.g. 7×7) bilinearly onto the image's pixel grid."""
    if values.shape == shape:
        return values
    if values.shape[0] <= shape[0] and values.shape[1] <= shape[1]:
        return resize(values, shape, order=1, mode="edge", anti_aliasing=False, preserve_range=True)
    raise ValueError(
        f"attribution: expected a map no larger than the image, (H, W) <= {shape}, got a map of shape {values.shape}"
    )


def _edge_overlay(grey: np.ndarray) -> np.ndarray:
    """RGBA layer, transparent except on the image's Canny edges."""
    overlay = np.zeros((*grey.shape, 4))
    overlay[canny(grey)] = _EDGE_RGBA
    return overlay


def _hide_frame(ax: Axes) -> None:
    # Ticks and spines go, but the axis stays on so that `grid` can still label rows with set_ylabel.
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def _new_figure(width: float, height: float, layout: str | None = None) -> Figure:
    figure = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: PathType) -> None:
    figure.savefig(path, dpi=_DPI)


# ---------------------------------------------------------------------------------------------------------------------
# Images


def heatmap(
    attribution,
    image=None,
    ax: Axes | None = None,
    percentile: float = 99.5,
    cmap: str | Colormap | None = None,
    channels: str = "sum",
    edges: bool | None = None,
    alpha: float | None = None,
    save: PathType | None = None,
    scale: str = "symmetric",
    grey: bool | None = None,
    title: str | None = None,
    colorbar: bool = False,
    overlay: bool = False,
) -> Axes:
    """Draw one attribution map, optionally over the edges or the picture of its input image.

    The colour scale is symmetric, ±(``percentile`` of |map|), so zero is the colormap's neutral middle and the few
    most extreme pixels saturate instead of washing out the rest. A class activation map (non-negative, coarse) is
    drawn with ``scale='positive'``: from 0 to the percentile, in 'jet', over the colour image, as Grad-CAM figures
    are (``plot.heatmap(cam, image, scale='positive')``); ``overlay=True`` keeps the map translucent over the image
    whatever its size (``plot.heatmap(cam, image, scale='positive', overlay=True)``, the Grad-CAM figure).

    Parameters
    ----------
    attribution : array_like, shape (H, W) or (H, W, C)
        Attribution of one image; channels are reduced with ``channels``.
    image : array_like, shape (H', W') or (H', W', C), optional
        The explained input, in [0, 1] or [0, 255] (other ranges are min-max scaled), C in (1, 3, 4). A map smaller
        than the image, e.g. a 7×7 map of a 224×224 input, is bilinearly resized to the image's size.
    ax : matplotlib.axes.Axes, optional
        Where to draw. If omitted, a new Figure (not registered with pyplot) is made, shaped like the map.
    percentile : float, default 99.5
        Percentile of |map| that maps to the ends of the colormap, in (0, 100].
    cmap : str or matplotlib.colors.Colormap, optional
        Default 'RdBu_r', a diverging colormap whose middle is drawn for zero ('jet' with ``scale='positive'``).
    channels : {'sum', 'abs', 'norm'}, default 'sum'
        How an (H, W, C) map is reduced over channels, see :func:`aggregate_channels`.
    edges : bool, optional
        With an ``image``, draw its Canny edges (of the grey image) over the map. Default: True for images of at
        least 64 pixels on the shorter side (on smaller ones the edges are blocks that look like data), False with
        ``scale='positive'``.
    alpha : float, optional
        Opacity of the map over the grey ``image``. Default: 1 when there is no image, ``edges`` is True (the edges
        give the context) or the image is smaller than 64 pixels (a grid's input row gives the context), 0.6
        otherwise (the image shows through the map).
    save : str or path-like, optional
        Write the Axes' whole Figure there as a PNG (150 dpi).
    scale : {'symmetric', 'positive'}, default 'symmetric'
        Colour limits ±(percentile of |map|), or [0, percentile of the map] for a non-negative map (a CAM).
    grey : bool, optional
        Draw the ``image`` in grey under the map (default), or in colour (default with ``scale='positive'``).
    title : str, optional
        A title above the map (on a new figure, which grows to hold it).
    colorbar : bool
        A colour bar under the map, its ends the colour limits (on a new figure, which grows to hold it).
    overlay : bool, default False
        Draw the map translucent over the colour ``image``, as Grad-CAM figures do (Selvaraju et al., 2017): ``alpha``
        0.5 and no edges by default, whatever the image's size; 'jet' with ``scale='positive'``, the diverging
        colormap otherwise. A coarser map (a CAM) is stretched bilinearly onto the image. Needs an ``image``.

    Returns
    -------
    matplotlib.axes.Axes
        The Axes drawn on; its Figure is ``ax.figure``. ``ax.images`` holds the image (if any), then the map,
        then the edge layer (if any).

    Raises
    ------
    ValueError
        If ``attribution`` is not (H, W) or (H, W, C), is larger than ``image`` or not finite; if ``image`` is not
        (H, W) or (H, W, C) with C in (1, 3, 4); if ``channels``, ``percentile``, ``cmap``, ``alpha`` or ``scale`` is
        not valid; if ``overlay`` is asked for without an ``image``.

    References
    ----------
    Canny, J. (1986). A computational approach to edge detection. IEEE TPAMI 8(6).

    Selvaraju, R. R., Cogswell, M., Das, A., Vedantam, R., Parikh, D. and Batra, D. (2017). Grad-CAM: visual
    explanations from deep networks via gradient-based localization. ICCV.
    """
    if scale not in ("symmetric", "positive"):
        raise ValueError(f"scale: expected 'symmetric' or 'positive', got {scale!r}")
    positive = scale == "positive"
    if overlay and image is None:
        raise InvalidInputError("overlay: expected an image to draw the map over, got image=None")
    values = aggregate_channels(attribution, channels)
    check_finite(values, "attribution")
    percentile = check_percentile(percentile)
    colormap = _colormap(cmap if cmap is not None else "jet" if positive else "RdBu_r")
    grey = not (positive or overlay) if grey is None else grey
    picture = None
    if image is not None:
        picture = as_display_image(image)
        values = _fit_to(values, picture.shape[:2])
    if edges is None:
        edges = not (positive or overlay) and picture is not None and min(picture.shape[:2]) >= _EDGES_MIN_PIXELS
    if alpha is None and overlay:
        alpha = _OVERLAY_ALPHA
    elif alpha is None:
        small = picture is not None and min(picture.shape[:2]) < _EDGES_MIN_PIXELS
        alpha = 1.0 if picture is None or edges or small else 0.6
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha: expected an opacity in [0, 1], got {alpha!r}")

    if ax is None:
        height, width = values.shape
        scale = _HEATMAP_INCHES / max(height, width)
        width, height = max(width * scale, 0.5), max(height * scale, 0.5)
        top, bottom = (0.4 if title else 0.0), (0.7 if colorbar else 0.0)
        figure = _new_figure(width, height + top + bottom)
        ax = figure.add_axes((0, bottom / (height + top + bottom), 1, height / (height + top + bottom)))
    limit = symmetric_limit(values, percentile)
    if picture is not None:
        shown = _grey(picture) if grey or picture.ndim == 2 else picture[..., :3]
        ax.imshow(shown, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    drawn = ax.imshow(values, cmap=colormap, vmin=0 if positive else -limit, vmax=limit, alpha=alpha,
                      interpolation="nearest")  # fmt: skip
    if picture is not None and edges:
        ax.imshow(_edge_overlay(_grey(picture)), interpolation="nearest")
    _hide_frame(ax)
    if title:
        ax.set_title(title)
    if colorbar:
        bar = ax.figure.colorbar(ScalarMappable(drawn.norm, colormap), ax=ax, orientation="horizontal", fraction=0.08,
                                 pad=0.04)  # fmt: skip
        bar.set_label("attribution (red: for the output, blue: against)" if not positive else "class activation")
    if save is not None:
        _save(ax.figure, save)
    return ax


def concepts(explained, save: PathType | None = None, percentile: float = 99.5) -> Figure:
    """The concepts behind one prediction (CRP, Achtibat et al. 2023, Fig. 1): a first row with the input and its
    heatmap, then one row per concept with its conditional heatmap (titled with the concept and its share of the
    layer's relevance) and its reference crops.

    Parameters
    ----------
    explained : deepexplain.crp.Concepts
        What :func:`deepexplain.crp.top_concepts` returns (plain arrays: ``image``, ``heatmap``, ``ids``,
        ``shares``, ``heatmaps``, ``references``, ``layer``, ``target``).
    save : str or path-like, optional
        Write the Figure there as a PNG (150 dpi, 2 inches per cell).
    percentile : float
        As for :func:`heatmap` (each heatmap its own symmetric scale).

    Returns
    -------
    matplotlib.figure.Figure
        Row ``0``: input, heatmap; row ``1 + i``: concept ``ids[i]``, then its references. Axes titles name them.
    """
    ids = list(explained.ids)
    columns = max([2] + [1 + len(explained.references.get(c, [])) for c in ids])
    figure = _new_figure(_CELL_INCHES * columns, _CELL_INCHES * (1 + len(ids)) + 0.3, layout="constrained")
    axes = figure.subplots(1 + len(ids), columns, squeeze=False)
    for ax in axes.ravel():
        _hide_frame(ax)
    image = as_display_image(explained.image)
    edges = min(image.shape[:2]) >= 64  # the edges of a small image are blocks that look like data
    axes[0, 0].imshow(image if image.ndim == 2 else image[..., :3], cmap="gray", vmin=0, vmax=1,
                      interpolation="nearest")  # fmt: skip
    axes[0, 0].set_title("input")
    heatmap(explained.heatmap, explained.image, ax=axes[0, 1], percentile=percentile, edges=edges)
    axes[0, 1].set_title(f"class {explained.target}")
    for row, (concept, share, heat) in enumerate(zip(ids, explained.shares, explained.heatmaps, strict=True), 1):
        heatmap(heat, explained.image, ax=axes[row, 0], percentile=percentile, edges=edges)
        axes[row, 0].set_title(f"{explained.layer} #{concept}: {100 * share:+.0f}%")
        for column, crop in enumerate(explained.references.get(concept, []), 1):
            crop = as_display_image(crop)
            axes[row, column].imshow(crop if crop.ndim == 2 else crop[..., :3], cmap="gray", vmin=0, vmax=1,
                                     interpolation="nearest")  # fmt: skip
            axes[row, column].set_title(f"reference {column}", fontsize="small")
    figure.suptitle("red: for the class, blue: against; % = share of the layer's relevance", fontsize="small")
    if save is not None:
        _save(figure, save)
    return figure


def _methods(attributions) -> tuple[list[str] | None, list[np.ndarray]]:
    if isinstance(attributions, Mapping):
        return [str(name) for name in attributions], [np.asarray(a) for a in attributions.values()]
    if isinstance(attributions, np.ndarray):  # one method; iterating it would split its samples into "methods"
        return None, [attributions]
    if isinstance(attributions, Sequence):
        return None, [np.asarray(a) for a in attributions]
    raise ValueError(
        f"attributions: expected a mapping method name -> array (N, H, W[, C]) or a list of such arrays, "
        f"got {type(attributions).__name__}"
    )


def grid(attributions, images, titles=None, row_titles=None, save: PathType | None = None, colorbar: bool = False,
         cell: float = _CELL_INCHES, **heatmap_kwargs) -> Figure:  # fmt: skip
    """Methods × samples figure: the input images in the first row, then one row of heatmaps per method.

    Each heatmap gets its own symmetric colour scale (as :func:`heatmap`), so rows show where each method puts
    evidence, not how large its scores are compared with another method's.

    Parameters
    ----------
    attributions : mapping of str to array_like, or list of array_like
        Method name -> attributions of shape (N, H, W) or (N, H, W, C), one row each, in order. A list gives
        unnamed rows; a single array counts as one method.
    images : array_like, shape (N, H', W') or (N, H', W', C), or None
        The N explained inputs (see :func:`heatmap` for ranges and sizes). With None, there is no image row and the
        heatmaps are drawn without edges.
    titles : sequence of str, optional
        One title per sample (column), above the first row.
    row_titles : sequence of str, optional
        One label per method row, overriding the mapping's keys. The image row is labelled 'input'.
    save : str or path-like, optional
        Write the Figure there as a PNG (150 dpi, ``cell`` inches per cell, plus margins for the labels, the titles
        and the colour bar).
    colorbar : bool
        Add a colour bar under the grid that says how to read the colours: each panel from minus to plus the
        ``percentile`` of its own |attribution|, red for the explained output, blue against it (with
        ``scale='positive'``: from 0 to the ``percentile`` of its own map).
    cell : float
        Inches per cell (default 2).
    **heatmap_kwargs
        Passed to every :func:`heatmap` call: ``percentile``, ``cmap``, ``channels``, ``edges``, ``alpha``,
        ``scale``, ``grey``, ``overlay`` (``grid(cams, images, scale='positive', overlay=True)``: CAMs over the
        images).

    Returns
    -------
    matplotlib.figure.Figure
        With ``(len(attributions) + 1) × N`` Axes (no image row: ``len(attributions) × N``), row by row, then the
        colour bar's Axes with ``colorbar``.

    Raises
    ------
    ValueError
        If ``attributions`` is empty or not a mapping/list, an entry is not of rank 3 or 4, the numbers of samples
        disagree, ``images`` is not of rank 3 or 4, or ``titles``/``row_titles`` have the wrong length; and as
        :func:`heatmap`.
    """
    names, maps = _methods(attributions)
    if not maps:
        raise ValueError("attributions: expected at least one method, got none")
    labels = [repr(name) for name in names] if names is not None else [f"[{i}]" for i in range(len(maps))]
    for label, values in zip(labels, maps, strict=True):
        if values.ndim not in (3, 4):
            raise ValueError(f"attributions {label}: expected shape (N, H, W) or (N, H, W, C), got {values.shape}")
    samples = None
    if images is not None:
        samples = np.asarray(images)
        if samples.ndim not in (3, 4):
            raise ValueError(f"images: expected shape (N, H, W) or (N, H, W, C), got {samples.shape}")
    n = len(samples) if samples is not None else len(maps[0])
    for label, values in zip(labels, maps, strict=True):
        if len(values) != n:
            raise ValueError(
                f"attributions {label}: expected {n} samples (as many as images), got shape {values.shape}"
            )
    if n == 0:
        raise ValueError("images: expected at least one sample, got 0")
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles: expected one per sample ({n}), got {len(titles)}")
    if row_titles is not None:
        if len(row_titles) != len(maps):
            raise ValueError(f"row_titles: expected one per method ({len(maps)}), got {len(row_titles)}")
        names = [str(title) for title in row_titles]

    rows = len(maps) + (samples is not None)
    # fixed margins (inches) instead of a layout engine: constrained layout takes seconds on a grid of hundreds of axes
    labels_shown = ([] if names is None else names) + (["input"] if samples is not None else [])
    label_size = 10.0 if cell >= 1.5 else 8.0
    left = 0.15 + 0.6 * label_size / 72 * max([len(str(t)) for t in labels_shown] or [0])
    top = 0.35 if titles is not None else 0.1
    bottom = 0.8 if colorbar else 0.1
    # Every cell (panel and the gap after it) is `cell` inches whatever the number of samples, so panel j sits at
    # the same pixels in a figure of 2 samples as in one of 6 (tests/test_cli.py compares the demo with the README).
    gap = _GAP * cell / (1 + _GAP)
    width, height = left + cell * n - gap + 0.1, top + cell * rows - gap + bottom
    figure = _new_figure(width, height)
    axes = figure.subplots(rows, n, squeeze=False, gridspec_kw={
        "left": left / width, "right": 1 - 0.1 / width, "top": 1 - top / height, "bottom": bottom / height,
        "wspace": _GAP, "hspace": _GAP})  # fmt: skip
    first = 0
    if samples is not None:
        for j in range(n):
            picture = as_display_image(samples[j])
            axes[0, j].imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1)
            _hide_frame(axes[0, j])
        axes[0, 0].set_ylabel("input", rotation=0, ha="right", va="center", fontsize=label_size)
        first = 1
    for i, values in enumerate(maps):
        for j in range(n):
            image = None if samples is None else samples[j]
            heatmap(values[j], image=image, ax=axes[first + i, j], **heatmap_kwargs)
        if names is not None:
            axes[first + i, 0].set_ylabel(names[i], rotation=0, ha="right", va="center", fontsize=label_size)
    if titles is not None:
        for j, title in enumerate(titles):
            axes[0, j].set_title(str(title))
    if colorbar:
        percentile = heatmap_kwargs.get("percentile", 99.5)
        positive = heatmap_kwargs.get("scale") == "positive"
        cmap = heatmap_kwargs.get("cmap") or ("jet" if positive else "RdBu_r")
        mappable = ScalarMappable(Normalize(-1 + positive, 1), _colormap(cmap))
        box = (left / width, 0.45 / height, (cell * n - gap) / width, 0.12 / height)
        if positive:
            ticks, labels = [0, 1], ["0", "most active"]
            label = f"each panel from 0 to the {percentile:g}th percentile of its own map"
        else:
            ticks, labels = [-1, 0, 1], ["against", "0", "for the output"]
            label = f"each panel from -{percentile:g}th to +{percentile:g}th percentile of its own |attribution|"
        bar = figure.colorbar(mappable, cax=figure.add_axes(box), orientation="horizontal", ticks=ticks)
        texts = bar.ax.set_xticklabels(labels)
        texts[0].set_horizontalalignment("left")  # inside the figure at both ends
        texts[-1].set_horizontalalignment("right")
        bar.set_label(label)
    if save is not None:
        _save(figure, save)
    return figure


# ---------------------------------------------------------------------------------------------------------------------
# Text


@dataclass(frozen=True)
class TextHeatmap:
    """Tokens coloured by their attribution, for notebooks (``html``) and terminals (``ansi``).

    Jupyter renders it through ``_repr_html_``; ``str()`` and ``print()`` give the ANSI string.
    """

    html: str
    ansi: str

    def _repr_html_(self) -> str:
        return self.html

    def __str__(self) -> str:
        return self.ansi

    def save(self, path: PathType) -> None:
        """Write the HTML as a stand-alone UTF-8 page."""
        page = f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"></head><body>\n{self.html}\n</body></html>\n'
        Path(path).write_text(page, encoding="utf-8")


def _foreground(rgb: np.ndarray) -> tuple[float, float, float]:
    # Rec. 709 luma: dark backgrounds (the saturated ends of the colormap) get white text.
    luma = 0.2126 * rgb[0] + 0.7152 * rgb[1] + 0.0722 * rgb[2]
    return (1.0, 1.0, 1.0) if luma < 0.5 else (0.0, 0.0, 0.0)


def _ansi_colour(code: int, rgb) -> str:
    r, g, b = (round(255 * c) for c in rgb)
    return f"\x1b[{code};2;{r};{g};{b}m"


def text(
    tokens: Sequence[str],
    scores,
    cmap: str | Colormap = "RdBu_r",
    percentile: float = 100,
    save: PathType | None = None,
) -> TextHeatmap:
    """Colour each token's background by its score, on a symmetric scale.

    Parameters
    ----------
    tokens : sequence of str
        The tokens, in order; joined with single spaces.
    scores : array_like, shape (len(tokens),)
        One attribution per token (reduce embedding-level attributions over the embedding axis first).
    cmap : str or matplotlib.colors.Colormap, default 'RdBu_r'
        A diverging colormap; its middle is used for zero.
    percentile : float, default 100
        Percentile of |scores| that maps to the ends of the colormap, in (0, 100].
    save : str or path-like, optional
        Write the HTML there as a stand-alone page.

    Returns
    -------
    TextHeatmap
        ``.html`` (one ``<span>`` per token, its score in the ``title``), ``.ansi`` (24-bit background colours).

    Raises
    ------
    ValueError
        If ``tokens`` is a single string, ``scores`` is not one-dimensional or not finite, their lengths differ, or
        ``cmap`` or ``percentile`` is not valid.
    """
    if isinstance(tokens, str):
        raise ValueError("tokens: expected a sequence of tokens, got a single str (split it into tokens first)")
    tokens = [str(token) for token in tokens]
    values = np.asarray(scores, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"scores: expected one score per token, shape ({len(tokens)},), got {values.shape}")
    if len(values) != len(tokens):
        raise ValueError(
            f"tokens and scores: expected the same length, got {len(tokens)} tokens and {len(values)} scores"
        )
    check_finite(values, "scores")
    limit = symmetric_limit(values, check_percentile(percentile))
    backgrounds = _colormap(cmap)(Normalize(-limit, limit)(values))[:, :3]

    spans, coloured = [], []
    for token, score, background in zip(tokens, values, backgrounds, strict=True):
        foreground = _foreground(background)
        spans.append(
            f'<span title="{score:+.4g}" style="background-color: {to_hex(background)}; '
            f'color: {to_hex(foreground)}; padding: 0 0.15em; border-radius: 0.2em">{_html.escape(token)}</span>'
        )
        coloured.append(f"{_ansi_colour(48, background)}{_ansi_colour(38, foreground)}{token}\x1b[0m")
    result = TextHeatmap(
        html=f'<div style="line-height: 1.9; font-family: monospace">{" ".join(spans)}</div>',
        ansi=" ".join(coloured),
    )
    if save is not None:
        result.save(save)
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Tabular


def _feature_names(feature_names, shape: tuple[int, ...], of: str) -> list[str]:
    """One name per feature (the last axis of an array of ``shape`` called ``of``), by default 'feature i'."""
    if feature_names is None:
        return [f"feature {i}" for i in range(shape[-1])]
    names = [str(name) for name in feature_names]
    if len(names) != shape[-1]:
        raise InvalidInputError(f"feature_names: expected {shape[-1]} names ({of} has shape {shape}), got {len(names)}")
    return names


def _check_top(top) -> int:
    if isinstance(top, bool) or not isinstance(top, int | np.integer) or top < 1:
        raise InvalidInputError(f"top: expected a positive int, got {top!r}")
    return int(top)


def _strip(ax: Axes, values: np.ndarray, positions: np.ndarray) -> None:
    """Per-feature distribution: jittered per-sample points coloured by sign, the interquartile range and median."""
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, size=values.shape)  # local generator: no global state
    colours = np.where(values > 0, POSITIVE, np.where(values < 0, NEGATIVE, ZERO))
    ys = np.broadcast_to(positions, values.shape) + jitter
    ax.scatter(values.ravel(), ys.ravel(), c=colours.ravel(), s=8, alpha=0.6, linewidths=0)
    q1, median, q3 = np.percentile(values, [25, 50, 75], axis=0)
    ax.hlines(positions, q1, q3, colors="0.25", linewidth=3, zorder=3)
    ax.scatter(median, positions, marker="|", s=150, c="black", zorder=4)


def bars(
    scores,
    feature_names: Sequence[str] | None = None,
    top: int | None = None,
    ax: Axes | None = None,
    save: PathType | None = None,
    title: str | None = None,
) -> Axes:
    """Feature attributions of tabular data, most important feature on top.

    One sample: horizontal bars sorted by |score|, positive red and negative blue. Many samples: per feature, a
    strip of the per-sample scores (jittered points coloured by sign) with their interquartile range and median,
    features sorted by mean |score|.

    Parameters
    ----------
    scores : array_like, shape (n_features,) or (N, n_features)
        Attributions of one sample or of N samples.
    feature_names : sequence of str, optional
        One name per feature; default ``'feature 0'``, ``'feature 1'``, ...
    top : int, optional
        Show only the ``top`` most important features (all if None or larger than n_features).
    ax : matplotlib.axes.Axes, optional
        Where to draw. If omitted, a new Figure (not registered with pyplot) is made.
    save : str or path-like, optional
        Write the Axes' whole Figure there as a PNG (150 dpi).
    title : str, optional
        A title above the bars.

    Returns
    -------
    matplotlib.axes.Axes
        The y tick labels are the feature names, most important first (top of the plot).

    Raises
    ------
    ValueError
        If ``scores`` is not of rank 1 or 2 or not finite, ``feature_names`` has the wrong length, or ``top`` is not a
        positive integer.
    """
    values = np.asarray(scores, dtype=float)
    if values.ndim not in (1, 2):
        raise ValueError(f"scores: expected shape (n_features,) or (N, n_features), got {values.shape}")
    check_finite(values, "scores")
    names = _feature_names(feature_names, values.shape, "scores")
    if top is not None:
        _check_top(top)

    importance = np.abs(values) if values.ndim == 1 else np.abs(values).mean(axis=0)
    order = np.argsort(-importance, kind="stable")[:top]
    positions = np.arange(len(order))
    if ax is None:
        ax = _new_figure(6.0, 1.0 + 0.3 * len(order), layout="constrained").add_subplot()
    if values.ndim == 1:
        shown = values[order]
        colours = np.where(shown > 0, POSITIVE, np.where(shown < 0, NEGATIVE, ZERO))
        ax.barh(positions, shown, color=colours)
        ax.set_xlabel("attribution")
    else:
        _strip(ax, values[:, order], positions)
        ax.set_xlabel(f"attribution ({len(values)} samples)")
    ax.axvline(0, color="0.4", linewidth=0.8, zorder=0)
    ax.set_yticks(positions, labels=[names[i] for i in order])
    ax.set_ylim(len(order) - 0.5, -0.5)  # first (most important) feature on top
    if title:
        ax.set_title(title)
    if save is not None:
        _save(ax.figure, save)
    return ax


def global_summary(attributions, labels=None, feature_names=None, top: int | None = 20, images=None,
                   save: PathType | None = None) -> Figure:  # fmt: skip
    """What a method says over a whole dataset (innsight's ``plot_global``), per class when ``labels`` are given.

    Tabular attributions ``(N, F)``: per class, a box plot per feature of the samples' attributions (the box the
    interquartile range, whiskers to 1.5 IQR, the features ordered by their mean |attribution| in that class, the
    ``top`` most important shown). Images ``(N, H, W[, C])``: per class, the mean |attribution| map (channels summed),
    over the mean image of the class when ``images`` are given.

    Parameters
    ----------
    attributions : array_like
        ``(N, F)`` or ``(N, H, W[, C])``.
    labels : array_like of int, optional
        ``(N,)`` class of each sample (true or predicted); None: one panel for all samples.
    feature_names : sequence of str, optional
        Names of the F features (tabular).
    top : int, optional
        Features per panel (tabular; None: all).
    images : array_like, optional
        ``(N, H, W[, C])`` the inputs, whose class means are drawn under the maps.
    save : str or path-like, optional
        Write the Figure there as a PNG (150 dpi).

    Returns
    -------
    matplotlib.figure.Figure
        One Axes per class (sorted), titled ``'class K (n samples)'`` (``'all N samples'`` without labels).
    """
    values = np.asarray(attributions, dtype=float)
    if values.ndim not in (2, 3, 4):
        raise ValueError(f"attributions: expected shape (N, F) or (N, H, W[, C]), got {values.shape}")
    check_finite(values, "attributions")
    n = len(values)
    groups = {None: np.arange(n)}
    if labels is not None:
        labels = np.asarray(labels).reshape(-1)
        if len(labels) != n:
            raise ValueError(f"labels: expected one per sample ({n}), got {len(labels)}")
        groups = {int(k): np.flatnonzero(labels == k) for k in np.unique(labels)}
    titles = [f"all {n} samples" if k is None else f"class {k} ({len(rows)} samples)" for k, rows in groups.items()]
    if values.ndim == 2:
        names = _feature_names(feature_names, values.shape, "attributions")
        shown = min(top or values.shape[1], values.shape[1])
        figure = _new_figure(4.5 * len(groups), 1.0 + 0.3 * shown, layout="constrained")
        axes = figure.subplots(1, len(groups), squeeze=False)[0]
        for ax, rows, title in zip(axes, groups.values(), titles, strict=True):
            order = np.argsort(-np.abs(values[rows]).mean(axis=0), kind="stable")[:shown]
            ax.boxplot(values[rows][:, order], vert=False, positions=np.arange(len(order)), widths=0.6,
                       flierprops={"markersize": 2})  # fmt: skip
            ax.set_yticks(np.arange(len(order)), labels=[names[i] for i in order])
            ax.set_ylim(len(order) - 0.5, -0.5)
            ax.axvline(0, color="0.4", linewidth=0.8, zorder=0)
            ax.set_xlabel("attribution")
            ax.set_title(title)
    else:
        maps = np.abs(values).sum(axis=-1) if values.ndim == 4 else np.abs(values)
        pictures = None if images is None else np.asarray(images, dtype=float)
        figure = _new_figure(_CELL_INCHES * len(groups), _CELL_INCHES + 0.4, layout="constrained")
        axes = figure.subplots(1, len(groups), squeeze=False)[0]
        for ax, rows, title in zip(axes, groups.values(), titles, strict=True):
            mean_image = None if pictures is None else pictures[rows].mean(axis=0)
            heatmap(maps[rows].mean(axis=0), mean_image, ax=ax, scale="positive", cmap="magma", edges=False,
                    grey=True, alpha=0.8 if mean_image is not None else 1.0)  # fmt: skip
            ax.set_title(title, fontsize="small")
        figure.suptitle("mean |attribution|", fontsize="small")
    if save is not None:
        _save(figure, save)
    return figure


# ---------------------------------------------------------------------------------------------------------------------
# One prediction as a sum: shap's waterfall and force plots

_COMPLETENESS_RTOL = 1e-3  # base + Σ attribution this far from f(x) (a share of the largest term) is a gap
_FORCE_LABEL_SHARE = 0.05  # force segments narrower than this share of Σ |attribution| go unlabelled (shap's default)


@dataclass(frozen=True)
class _Sum:
    """One sample's attributions read as ``base + Σ values = end``, beside the model's ``output``."""

    values: np.ndarray  # (F,)
    labels: list[str]  # 'age = 42', or the name alone
    named: np.ndarray  # the features shown one by one, largest |value| first
    rest: np.ndarray  # the others, collapsed
    base: float
    end: float
    output: float  # f(x) when given, else `end`
    base_text: str
    output_text: str
    gap: float | None  # output - end, when both ends were given and they differ

    def note(self, title: str | None) -> str | None:
        """The title, then (when base + Σ attribution misses f(x)) the completeness gap on a line of its own."""
        gap = None if self.gap is None else f"completeness gap: f(x) − f(baseline) − Σ attribution = {self.gap:+.4g}"
        return "\n".join(line for line in (title, gap) if line) or None


def _number(value, name: str, meaning: str) -> float:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: expected a number ({meaning}), got {value!r}") from None
    if array.size != 1:
        raise InvalidInputError(f"{name}: expected one number ({meaning}), got an array of shape {array.shape}")
    if not np.isfinite(array).all():
        raise InvalidInputError(f"{name}: expected a finite number ({meaning}), got {array.item()!r}")
    return float(array.item())


def _shown(value) -> str:
    """A feature's value as a label shows it: whole numbers in full, other numbers to 4 significant digits, anything
    else as str."""
    if isinstance(value, float | np.floating):
        return str(int(value)) if float(value).is_integer() and abs(value) < 1e15 else f"{value:.4g}"
    return str(value.item() if isinstance(value, np.generic) else value)


def _one_sum(attribution, features, feature_names, base_value, output, top) -> _Sum:
    values = np.asarray(attribution, dtype=float)
    if values.ndim != 1 or values.size == 0:
        hint = " (pass one row, attribution[i], for sample i)" if values.ndim == 2 else ""
        raise InvalidInputError(
            f"attribution: expected one sample's attributions, shape (n_features,), got {values.shape}{hint}"
        )
    check_finite(values, "attribution")
    names = _feature_names(feature_names, values.shape, "attribution")
    if features is not None:
        shown = np.asarray(features, dtype=object)
        if shown.shape != values.shape:
            raise InvalidInputError(
                f"features: expected the sample's value of each feature, shape {values.shape}, got {shown.shape}"
            )
        names = [f"{name} = {_shown(value)}" for name, value in zip(names, shown, strict=True)]
    top = _check_top(top)
    total = float(values.sum())
    base = None if base_value is None else _number(base_value, "base_value", "f(baseline)")
    given = None if output is None else _number(output, "output", "f(x), the explained output")
    if base is not None:
        base_text = f"f(baseline) = {base:.4g}"
    elif given is not None:
        base, base_text = given - total, f"f(x) − Σ attribution = {given - total:.4g}"
    else:
        base, base_text = 0.0, "0"
    end, gap = base + total, None
    if given is None:
        output_text = ("Σ attribution" if base_value is None else "f(baseline) + Σ attribution") + f" = {end:.4g}"
    else:
        output_text = f"f(x) = {given:.4g}"
        scale = max(abs(base), abs(given), float(np.abs(values).sum()))
        if base_value is not None and abs(given - end) > _COMPLETENESS_RTOL * scale:
            gap = given - end
    # shap's max_display: `top` rows in all, the last of them the features beyond the first top - 1
    order = np.argsort(-np.abs(values), kind="stable")
    named, rest = (order, order[:0]) if len(order) <= top else (order[: top - 1], order[top - 1 :])
    return _Sum(values, names, named, rest, base, end, end if given is None else given, base_text, output_text, gap)


def _sign_colours(values: np.ndarray) -> np.ndarray:
    return np.where(values > 0, POSITIVE, np.where(values < 0, NEGATIVE, ZERO))


def _sum_axes(title: str | None, width: float, height: float) -> Axes:
    """A new Axes of ``width`` × ``height`` inches, plus a quarter inch per line of its title."""
    lines = title.count("\n") + 1 if title else 0
    return _new_figure(width, height + 0.25 * lines, layout="constrained").add_subplot()


def _finish(ax: Axes, title: str | None, save: PathType | None) -> Axes:
    if title:
        ax.set_title(title)
    if save is not None:
        _save(ax.figure, save)
    return ax


_SUM_PARAMETERS = """Parameters
    ----------
    attribution : array_like, shape (n_features,)
        Attributions of one sample, e.g. its SHAP values (DeepSHAP, KernelSHAP, exact Shapley values).
    features : array_like, shape (n_features,), optional
        The sample's feature values, shown in the labels as ``'age = 42'``.
    feature_names : sequence of str, optional
        One name per feature; default ``'feature 0'``, ``'feature 1'``, ...
    base_value : float, optional
        The output at the baseline, f(baseline), where the sum starts: ``E[f(X)]`` over the background for DeepSHAP
        and KernelSHAP, f(x') for DeepLIFT and Integrated Gradients. Default: ``output - Σ attribution`` when
        ``output`` is given, else 0.
    output : float, optional
        The explained output f(x), where the sum should end. With ``base_value`` too, a completeness gap
        ``f(x) - f(baseline) - Σ attribution`` larger than 1e-3 of the largest term is stated under the title.
    top : int, default 10
        Entries shown (shap's ``max_display``): the ``top`` - 1 features of largest |attribution| one by one and the
        others collapsed as ``'N other features'`` (in a force plot, one such segment per sign); all features one by
        one if there are at most ``top``.
    title : str, optional
    ax : matplotlib.axes.Axes, optional
        Where to draw. If omitted, a new Figure (not registered with pyplot) is made.
    save : str or path-like, optional
        Write the Axes' whole Figure there as a PNG (150 dpi).

    Returns
    -------
    matplotlib.axes.Axes"""

_SUM_RAISES_AND_REFERENCES = """Raises
    ------
    InvalidInputError
        If ``attribution`` is not one-dimensional or not finite; if ``features`` or ``feature_names`` do not have one
        entry per feature; if ``base_value`` or ``output`` is not one finite number; if ``top`` is not a positive
        int.

    References
    ----------
    Lundberg, S. M. and Lee, S.-I. (2017). A unified approach to interpreting model predictions.
    NeurIPS.

    Lundberg, S. M., Nair, B., Vavilala, M. S., et al. (2018). Explainable machine-learning predictions for the
    prevention of hypoxaemia during surgery. Nature Biomedical Engineering 2(10)."""


def waterfall(attribution, features=None, feature_names=None, base_value=None, output=None, top: int = 10,
              title: str | None = None, ax: Axes | None = None, save: PathType | None = None) -> Axes:  # fmt: skip
    """One prediction as a waterfall (shap's ``plots.waterfall``): from the base value at the bottom, each feature's
    attribution moves the output right (red, for the output) or left (blue, against), up to f(x) at the top.

    The largest |attribution| is the top row; the rows below it, and the collapsed others at the bottom, are where
    the sum starts, so the bars cumulate from ``base_value`` upwards to ``base_value + Σ attribution``, which for an
    explanation that is complete (Lundberg & Lee 2017's local accuracy) is the output f(x). Each bar is labelled
    with its attribution; the bottom axis marks the base value and the top axis the output.

    {parameters}
        ``ax.patches``: one bar per row, top row first; the y tick labels name the rows (feature, '= value' with
        ``features``, 'N other features'); ``ax.texts``: the bars' values.

    {raises_and_references}
    """
    summed = _one_sum(attribution, features, feature_names, base_value, output, top)
    values = [summed.values[i] for i in summed.named]
    labels = [summed.labels[i] for i in summed.named]
    if summed.rest.size:
        values.append(summed.values[summed.rest].sum())
        labels.append(f"{summed.rest.size} other features")
    values = np.asarray(values)
    # the bottom row starts at the base value, each row above where the one below it ends
    starts = summed.base + np.concatenate([np.cumsum(values[::-1])[::-1][1:], [0.0]])
    rows = np.arange(len(values))
    if ax is None:
        ax = _sum_axes(summed.note(title), 7.0, 1.6 + 0.35 * len(values))
    drawn = ax.barh(rows, values, left=starts, height=0.7, color=_sign_colours(values))
    ax.bar_label(drawn, labels=[f"{v:+.3g}" for v in values], padding=3, fontsize="small")
    ax.vlines(starts[:-1], rows[:-1] + 0.35, rows[:-1] + 0.65, colors="0.5", linewidth=0.8)  # row i ends row i+1
    ax.axvline(summed.base, color="0.5", linestyle="--", linewidth=0.8, zorder=0)
    ax.axvline(summed.output, color="0.2", linewidth=0.8, zorder=0)
    if summed.gap is not None:
        ax.axvline(summed.end, color="0.5", linestyle=":", linewidth=0.8, zorder=0)
    ax.set_yticks(rows, labels=labels)
    ax.set_ylim(len(values) - 0.5, -0.5)
    ax.use_sticky_edges = False  # a bar's base is sticky: without this, no margin for the labels of the outer bars
    ax.margins(x=0.12)
    ax.secondary_xaxis("top").set_xticks([summed.output], labels=[summed.output_text])
    below = ax.secondary_xaxis("bottom")
    below.set_xticks([summed.base], labels=[summed.base_text])
    below.tick_params(pad=20, length=0)  # under the output axis' own tick labels
    below.set_xlabel("model output")
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return _finish(ax, summed.note(title), save)


def force(attribution, features=None, feature_names=None, base_value=None, output=None, top: int = 10,
          title: str | None = None, ax: Axes | None = None, save: PathType | None = None) -> Axes:  # fmt: skip
    """One prediction as a force plot (shap's ``plots.force``, drawn with matplotlib): one horizontal bar of
    stacked contributions, those for the output (red) pushing it right up to f(x), those against it (blue) pushing
    it left, each the wider the larger its attribution.

    The red segments end at ``base_value + Σ attribution`` from the left and the blue ones start there to the
    right, the largest of each next to it, so the red part is longer than the blue one by exactly the distance from
    the base value (a dashed line, labelled on the top axis) to the output (labelled in bold above the bar).
    Segments of at least 5% of Σ |attribution| are labelled under the bar.

    {parameters}
        ``ax.patches``: the red segments from the output leftwards, then the blue ones from the output rightwards
        (the collapsed others last on each side as ``'N other features'``); ``ax.texts``: the output, the
        'higher'/'lower' legend and the labels of the wide segments.

    {raises_and_references}
    """
    summed = _one_sum(attribution, features, feature_names, base_value, output, top)
    if ax is None:
        ax = _sum_axes(summed.note(title), 9.0, 2.6)
    threshold = _FORCE_LABEL_SHARE * float(np.abs(summed.values).sum())
    for sign, colour, side in ((1, POSITIVE, -1), (-1, NEGATIVE, 1)):
        named = [i for i in summed.named if sign * summed.values[i] > 0]
        widths = [abs(summed.values[i]) for i in named]
        labels = [summed.labels[i] for i in named]
        others = [i for i in summed.rest if sign * summed.values[i] > 0]
        if others:
            widths.append(float(np.abs(summed.values[others]).sum()))
            labels.append(f"{len(others)} other features")
        edges = summed.end + side * np.concatenate([[0.0], np.cumsum(widths)])  # outwards from the end
        lefts = np.minimum(edges[:-1], edges[1:])
        ax.barh(np.zeros(len(widths)), widths, left=lefts, height=0.5, color=colour, edgecolor="white", linewidth=1)
        for left, width, label in zip(lefts, widths, labels, strict=True):
            if width >= threshold:
                ax.text(left + width / 2, -0.32, label, ha="right", va="top", rotation=30, rotation_mode="anchor",
                        fontsize="small")  # fmt: skip
    ax.text(summed.end, 0.33, "higher ", color=POSITIVE, ha="right", va="bottom", fontsize="small")
    ax.text(summed.end, 0.33, " lower", color=NEGATIVE, ha="left", va="bottom", fontsize="small")
    ax.text(summed.output, 0.75 if summed.gap is not None else 0.55, summed.output_text, ha="center", va="bottom",
            fontweight="bold")  # fmt: skip
    ax.axvline(summed.base, color="0.4", linestyle="--", linewidth=0.8, zorder=0)
    if summed.gap is not None:  # the bar ends short of (or beyond) the output: both marked
        ax.axvline(summed.output, color="0.2", linewidth=0.8, zorder=0)
        ax.text(summed.end, 0.55, f"f(baseline) + Σ attribution = {summed.end:.4g}", ha="center", va="bottom")
    ax.secondary_xaxis("top").set_xticks([summed.base], labels=[summed.base_text])
    ax.set_ylim(-1.6, 1.0)
    ax.margins(x=0.05)
    ax.set_yticks([])
    ax.set_xlabel("model output")
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    return _finish(ax, summed.note(title), save)


for _drawing in (waterfall, force):
    _drawing.__doc__ = _drawing.__doc__.format(
        parameters=_SUM_PARAMETERS, raises_and_references=_SUM_RAISES_AND_REFERENCES
    )


# ---------------------------------------------------------------------------------------------------------------------
# Perturbation curves


def curves(curves_by_method, ax: Axes | None = None, title: str | None = None, save: PathType | None = None) -> Axes:
    """Perturbation curves of several methods (:mod:`deepexplain.metrics`): the mean score over the samples against
    the share of features perturbed, with a band of ± one standard deviation; the legend gives each method's mean
    area under the curve.

    Parameters
    ----------
    curves_by_method : mapping of str to deepexplain.metrics.Curve
        E.g. ``{'saliency': metrics.deletion(...), 'intgrad': metrics.deletion(...)}``.
    ax : matplotlib.axes.Axes, optional
        Where to draw (default: a new Figure, not registered with pyplot).
    title : str, optional
    save : str or path-like, optional
        Write the Figure there as a PNG (150 dpi).

    Returns
    -------
    matplotlib.axes.Axes
        One line per method, in order.

    Raises
    ------
    ValueError
        For an empty mapping or something that is not a curve.
    """
    if not isinstance(curves_by_method, Mapping) or not curves_by_method:
        raise ValueError("curves_by_method: expected a non-empty mapping of method name -> Curve")
    if ax is None:
        ax = _new_figure(6, 4, layout="constrained").add_subplot()
    for name, curve in curves_by_method.items():
        if not hasattr(curve, "fractions") or not hasattr(curve, "scores"):
            raise ValueError(f"curves_by_method[{name!r}]: expected a Curve, got {type(curve).__name__}")
        mean, spread = curve.scores.mean(axis=0), curve.scores.std(axis=0)
        (line,) = ax.plot(curve.fractions, mean, label=f"{name} (AUC {np.mean(curve.auc):.3g})")
        ax.fill_between(curve.fractions, mean - spread, mean + spread, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("share of the features perturbed")
    ax.set_ylabel("explained score")
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    if save is not None:
        _save(ax.figure, save)
    return ax
