"""One self-contained, interactive HTML page of attributions: :func:`report` (``deepexplain.report``).

The page holds plotly.js itself (inline, about 5 MB), so it opens in any browser without a network. It shows, per
sample (rows), the input and one heatmap per method (columns), each pixel's attribution under the cursor; a colour
bar and a sentence on how to read the colours and how the panels are scaled; per-sample captions (label, prediction,
explained class and its output); the dataset summary (mean |attribution| per class for images, box plots per feature
for tabular data, as :func:`deepexplain.plot.global_summary`); CRP concepts (:func:`deepexplain.crp.top_concepts`)
and a table of metrics (:mod:`deepexplain.metrics`) when given.

With image inputs, a switch (``overlay=`` sets how the page opens) draws every heatmap over its input: the input in
grey underneath, the map at :data:`OVERLAY_OPACITY` on top; and hovering a pixel of one panel marks the same place in
the other panels of that sample (the input and every method), each on its own grid, so that the marker in a coarse
CAM covers the cell under the pixel and the marker in the input covers the pixels under a CAM's cell.

Panels are drawn when they scroll into view, so pages of hundreds of heatmaps open at once; printing draws them all.
Element ids are stable, for tests and for scripts that read the page: ``heatmap-<sample>-<method>`` (0-based
positions among the samples shown and the methods as given; ``bars-...`` for tabular data), ``input-<sample>``,
``caption-<sample>``, ``method-<method>``, ``colorbar``, ``overlay-toggle``, ``scale-note``, ``summary``
(``summary-<method>-<group>`` for images, ``summary-<method>`` for tabular data), ``concepts-<k>``, ``metrics``,
``curve-<k>``. Every panel has the class ``panel`` and ``data-rendered="true"`` once drawn;
``window.deepexplainReport.renderAll()`` draws all of them and then sets ``data-rendered="all"`` on ``<body>``, whose
``data-overlay`` says whether the maps are drawn over their inputs (``setOverlay(on)`` switches, returning a promise).
Linked panels carry ``data-link="<sample>"`` and ``data-grid="<rows>,<columns>"``; a marker is a ``.marker`` child of
its panel with ``data-rows`` and ``data-columns`` (first and last cell covered).

Nothing here imports TensorFlow or matplotlib; plotly is needed (``pip install "deepexplain[report]"``).
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import numpy as np

from deepexplain import _maps
from deepexplain._version import __version__
from deepexplain.errors import InvalidInputError

__all__ = ["OVERLAY_OPACITY", "SCALES", "report"]

SCALES = ("sample", "method", "shared")
"""The ``scale=`` options of :func:`report`: one colour scale per panel, per method, or for all panels."""

# ColorBrewer's RdBu, from blue to red (matplotlib's 'RdBu_r', which deepexplain.plot draws with): white is zero
_DIVERGING = ["#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d",
              "#b2182b", "#67001f"]  # fmt: skip
# matplotlib's 'magma' (deepexplain.plot.global_summary's mean |attribution| maps), from 0 to its maximum
_SEQUENTIAL = ["#000004", "#1c1044", "#4f127b", "#812581", "#b5367a", "#e55064", "#fb8761", "#fec287", "#fcfdbf"]
_GREY = [[0.0, "#000000"], [1.0, "#ffffff"]]
_BARS_WIDTH = 300  # pixels of a tabular sample's bar chart
# A map over its input: opaque enough that its colours still read against the colour bar (white zero stays light),
# translucent enough that the input's shapes show through, as in Grad-CAM's figures (deepexplain.plot uses 0.5).
OVERLAY_OPACITY = 0.6
# Rec. 601 luma: a colour input drawn in grey under its maps, so that the maps' own colours are the only ones.
_LUMA = np.array([0.299, 0.587, 0.114])

PathType = str | PathLike


def _colorscale(colours: Sequence[str]) -> list:
    return [[i / (len(colours) - 1), colour] for i, colour in enumerate(colours)]


# ---------------------------------------------------------------------------------------------------------------------
# Arguments


@dataclass(frozen=True)
class _Maps:
    """The attributions, checked: per method ``(N, h, w)`` maps (channels reduced) or ``(N, F)`` feature scores."""

    names: list
    values: list
    tabular: bool

    @property
    def n(self) -> int:
        return len(self.values[0])


def _float_array(value, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name}: expected a numeric array, got {type(value).__name__}") from None
    return array


def _attribution_maps(attributions, channels: str) -> _Maps:
    if not isinstance(attributions, Mapping):
        raise InvalidInputError(
            f"attributions: expected a mapping method name -> array (N, H, W[, C]) or (N, F), "
            f"got {type(attributions).__name__}"
        )
    if not attributions:
        raise InvalidInputError("attributions: expected at least one method, got an empty mapping")
    if channels not in _maps.CHANNEL_AGGREGATIONS:
        raise InvalidInputError(f"channels: expected one of {_maps.CHANNEL_AGGREGATIONS}, got {channels!r}")
    names, values, kinds = [], [], set()
    for key, given in attributions.items():
        label = f"attributions[{key!r}]"
        array = _float_array(given, label)
        if array.ndim not in (2, 3, 4):
            raise InvalidInputError(
                f"{label}: expected shape (N, H, W[, C]) for images or (N, F) for tabular data, got {array.shape}"
            )
        if values and len(array) != len(values[0]):
            raise InvalidInputError(
                f"{label}: expected {len(values[0])} samples (as the first method), got {array.shape}"
            )
        if len(array) == 0:
            raise InvalidInputError(f"{label}: expected at least one sample, got shape {array.shape}")
        _maps.check_finite(array, label, samples=True)
        kinds.add("tabular" if array.ndim == 2 else "images")
        if len(kinds) > 1:
            raise InvalidInputError(
                f"{label}: expected every method to be of one kind, got both images (N, H, W[, C]) "
                f"and tabular data (N, F)"
            )
        if array.ndim == 4:
            array = np.stack([_maps.aggregate_channels(a, channels) for a in array])
        array = array.astype(np.float32)  # what the page holds
        if not np.isfinite(array).all():
            raise InvalidInputError(f"{label}: expected values within float32's range (±3.4e38)")
        values.append(array)
        names.append(str(key))
    if len(set(names)) < len(names):
        raise InvalidInputError(f"attributions: expected distinct method names, got {names}")
    tabular = kinds == {"tabular"}
    if tabular and len({v.shape[1] for v in values}) > 1:
        raise InvalidInputError(
            f"attributions: expected the same features for every method, got shapes {[v.shape for v in values]}"
        )
    return _Maps(names, values, tabular)


def _check_inputs(inputs, maps: _Maps) -> np.ndarray | None:
    if inputs is None:
        return None
    array = np.asarray(inputs)
    if not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
        raise InvalidInputError(f"inputs: expected a numeric array, got dtype {array.dtype}")
    if array.ndim == 0 or len(array) != maps.n:
        raise InvalidInputError(f"inputs: expected {maps.n} samples (as the attributions), got shape {array.shape}")
    if maps.tabular:
        if array.shape != (maps.n, maps.values[0].shape[1]):
            raise InvalidInputError(
                f"inputs: expected shape {(maps.n, maps.values[0].shape[1])} (as the attributions), got {array.shape}"
            )
    elif array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (1, 3, 4)):
        raise InvalidInputError(
            f"inputs: expected images shaped (N, H, W) or (N, H, W, C) with C in (1, 3, 4), got {array.shape}"
        )
    _maps.check_finite(array.astype(float), "inputs", samples=True)
    return array


def _class_indices(value, name: str, n: int, scalar: bool = False) -> np.ndarray | None:
    """One non-negative class index per sample (an int broadcast to all with ``scalar``)."""
    if value is None:
        return None
    array = np.asarray(value)
    if scalar and array.ndim == 0:
        array = np.full(n, array)
    if array.shape != (n,) or not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        expected = "an int or " if scalar else ""
        raise InvalidInputError(
            f"{name}: expected {expected}one integer class index per sample, shape ({n},), got "
            f"{array.dtype} of shape {array.shape}"
        )
    if (array < 0).any():
        raise InvalidInputError(f"{name}: expected non-negative class indices, got {int(array.min())}")
    return array.astype(int)


@dataclass(frozen=True)
class _Captions:
    labels: np.ndarray | None
    predicted: np.ndarray | None
    targets: np.ndarray | None
    outputs: np.ndarray | None  # (N, K) scores when `predictions` are scores
    titles: list | None
    class_names: list | None

    def name(self, k: int) -> str:
        return f"{k} ({self.class_names[k]})" if self.class_names is not None else str(k)

    def lines(self, i: int) -> list[str]:
        lines = [] if self.titles is None else [self.titles[i]]
        parts = []
        if self.labels is not None:
            parts.append(f"label {self.name(self.labels[i])}")
        if self.predicted is not None:
            parts.append(f"predicted {self.name(self.predicted[i])}")
        if self.targets is not None:
            explained = f"explained {self.name(self.targets[i])}"
            if self.outputs is not None:
                explained += f", output {self.outputs[i, self.targets[i]]:.4g}"
            parts.append(explained)
        return lines + ([", ".join(parts)] if parts else [])

    def correct(self, i: int) -> bool | None:
        if self.labels is None or self.predicted is None:
            return None
        return bool(self.labels[i] == self.predicted[i])


def _captions(n, labels, predictions, targets, titles, class_names) -> _Captions:
    labels = _class_indices(labels, "labels", n)
    outputs = predicted = None
    if predictions is not None:
        array = np.asarray(predictions)
        if array.ndim == 2 and len(array) == n and np.issubdtype(array.dtype, np.number):
            outputs = array.astype(float)
            _maps.check_finite(outputs, "predictions", samples=True)
            predicted = outputs.argmax(axis=1)
        else:
            try:
                predicted = _class_indices(predictions, "predictions", n)
            except ValueError:
                raise InvalidInputError(
                    f"predictions: expected the model's outputs (N, K) or one predicted class per sample (N,), "
                    f"N = {n}, got {array.dtype} of shape {array.shape}"
                ) from None
    targets = _class_indices(targets, "targets", n, scalar=True)
    if targets is None:
        targets = predicted
    if outputs is not None and targets is not None and targets.max() >= outputs.shape[1]:
        raise InvalidInputError(
            f"targets: expected class indices below {outputs.shape[1]} (the outputs of predictions), "
            f"got {int(targets.max())}"
        )
    if titles is not None:
        if isinstance(titles, str) or not isinstance(titles, Sequence) or len(titles) != n:
            given = "a str" if isinstance(titles, str) else f"{type(titles).__name__} of length {_length(titles)}"
            raise InvalidInputError(f"titles: expected one title per sample ({n}), got {given}")
        titles = [str(t) for t in titles]
    if class_names is not None:
        if isinstance(class_names, str) or not isinstance(class_names, Sequence):
            raise InvalidInputError(f"class_names: expected a sequence of names, got {type(class_names).__name__}")
        class_names = [str(c) for c in class_names]
        used = [a for a in (labels, predicted, targets) if a is not None]
        largest = max([int(a.max()) for a in used] + [outputs.shape[1] - 1 if outputs is not None else -1])
        if largest >= len(class_names):
            raise InvalidInputError(
                f"class_names: expected a name for each class index up to {largest}, got {len(class_names)} names"
            )
    return _Captions(labels, predicted, targets, outputs, titles, class_names)


def _length(value) -> str:
    try:
        return str(len(value))
    except TypeError:
        return "?"


def _feature_names(feature_names, maps: _Maps) -> list | None:
    if not maps.tabular:
        if feature_names is not None:
            raise InvalidInputError("feature_names: expected None for image attributions (N, H, W[, C]), got names")
        return None
    count = maps.values[0].shape[1]
    if feature_names is None:
        return [f"feature {i}" for i in range(count)]
    if isinstance(feature_names, str) or not isinstance(feature_names, Sequence):
        raise InvalidInputError(
            f"feature_names: expected a sequence of {count} names, got {type(feature_names).__name__}"
        )
    names = [str(name) for name in feature_names]
    if len(names) != count:
        raise InvalidInputError(f"feature_names: expected {count} names (one per feature), got {len(names)}")
    if len(set(names)) < count:
        twice = sorted({name for name in names if names.count(name) > 1})
        raise InvalidInputError(f"feature_names: expected distinct names, got {twice} more than once")
    return names


def _positive_int(value, name: str, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInputError(f"{name}: expected a positive int{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


# ---------------------------------------------------------------------------------------------------------------------
# Figures: plain plotly.js specs, arrays as base64 typed arrays


def _typed(array: np.ndarray, dtype: str = "f4") -> dict:
    """An array as plotly.js decodes it (little-endian bytes in base64; no NaN can be written)."""
    values = np.ascontiguousarray(array, dtype={"f4": "<f4", "u1": "u1"}[dtype])
    return {
        "dtype": dtype,
        "bdata": base64.b64encode(values.tobytes()).decode("ascii"),
        "shape": ", ".join(map(str, values.shape)),
    }


def _panel_size(shape: tuple, size: int) -> tuple[int, int]:
    height, width = shape[:2]
    scale = size / max(height, width)
    return max(round(width * scale), 16), max(round(height * scale), 16)


def _panel_layout(width: int, height: int) -> dict:
    axis = {"visible": False, "constrain": "domain"}
    return {
        "width": width,
        "height": height,
        "margin": {"l": 0, "r": 0, "t": 0, "b": 0, "pad": 0},
        "xaxis": dict(axis),
        "yaxis": dict(axis, autorange="reversed"),
        "paper_bgcolor": "rgba(0,0,0,0)",
        "plot_bgcolor": "rgba(0,0,0,0)",
        "hoverlabel": {"font": {"size": 12}},
    }


def _hover_title(text: str) -> str:
    """Text inside a hover template: plotly renders a subset of HTML there, so escape what is not ours."""
    return html.escape(text)


def _heatmap_figure(values: np.ndarray, low: float, high: float, colours, hover: str, size: int) -> dict:
    trace = {
        "type": "heatmap",
        "z": _typed(values),
        "zmin": low,
        "zmax": high,
        "colorscale": _colorscale(colours),
        "showscale": False,
        "hovertemplate": hover,
    }
    return {"data": [trace], "layout": _panel_layout(*_panel_size(values.shape, size))}


def _image_figure(picture: np.ndarray, hover: str, size: int, values: np.ndarray | None = None) -> dict:
    """A display image in [0, 1]: grey as a heatmap (hover: ``values``, the input as given), colour as an image."""
    if picture.ndim == 2:
        trace = {
            "type": "heatmap",
            "z": _typed(picture),
            "zmin": 0,
            "zmax": 1,
            "colorscale": _GREY,
            "showscale": False,
            "hovertemplate": hover,
        }
        if values is not None:
            trace["customdata"] = _typed(values)
    else:
        trace = {"type": "image", "z": _typed(np.round(picture[..., :3] * 255), "u1"), "hovertemplate": hover}
    return {"data": [trace], "layout": _panel_layout(*_panel_size(picture.shape, size))}


def _bars_figure(scores: np.ndarray, labels: list, limit: float, top: int, hover: str) -> dict:
    order = np.argsort(-np.abs(scores), kind="stable")[:top]
    shown = scores[order]
    colours = np.where(shown > 0, _maps.POSITIVE, np.where(shown < 0, _maps.NEGATIVE, _maps.ZERO)).tolist()
    names = [labels[i] for i in order]
    trace = {
        "type": "bar",
        "orientation": "h",
        "x": _typed(shown),
        "y": names,
        "marker": {"color": colours},
        "hovertemplate": hover,
    }
    layout = {
        "width": _BARS_WIDTH,
        "height": 40 + 18 * len(order),
        "margin": {"l": 10, "r": 10, "t": 4, "b": 30},
        "xaxis": {
            "range": [-1.05 * limit, 1.05 * limit],
            "zeroline": True,
            "zerolinecolor": "#666",
            "tickfont": {"size": 10},
        },
        "yaxis": {"autorange": "reversed", "automargin": True, "tickfont": {"size": 10}, "type": "category"},
        "bargap": 0.15,
        "paper_bgcolor": "rgba(0,0,0,0)",
        "hoverlabel": {"font": {"size": 12}},
    }
    return {"data": [trace], "layout": layout}


def _box_figure(values: np.ndarray, names: list, groups: dict, top: int) -> dict:
    """Box plots per feature of tabular attributions, one box per group (precomputed: the page does not grow with N):
    boxes the interquartile range, whiskers to the last sample within 1.5 IQR, as matplotlib draws them."""
    order = np.argsort(-np.abs(values).mean(axis=0), kind="stable")[:top]
    traces = []
    for title, rows in groups.items():
        chosen = values[rows][:, order]
        q1, median, q3 = np.percentile(chosen, [25, 50, 75], axis=0)
        iqr = q3 - q1
        low = np.where(chosen >= q1 - 1.5 * iqr, chosen, np.inf).min(axis=0)
        high = np.where(chosen <= q3 + 1.5 * iqr, chosen, -np.inf).max(axis=0)
        traces.append(
            {
                "type": "box",
                "orientation": "h",
                "name": title,
                "y": [names[i] for i in order],
                "q1": _typed(q1),
                "median": _typed(median),
                "q3": _typed(q3),
                "lowerfence": _typed(low),
                "upperfence": _typed(high),
                "mean": _typed(chosen.mean(axis=0)),
            }
        )
    layout = {
        "width": 520,
        "height": 70 + 22 * len(order) * max(1, min(len(groups), 3)),
        "margin": {"l": 10, "r": 10, "t": 10, "b": 40},
        "boxmode": "group",
        "xaxis": {"title": {"text": "attribution"}, "zeroline": True, "zerolinecolor": "#666"},
        "yaxis": {"autorange": "reversed", "automargin": True, "type": "category"},
        "legend": {"orientation": "h", "y": -0.15},
        "showlegend": len(groups) > 1,
        "paper_bgcolor": "rgba(0,0,0,0)",
    }
    return {"data": traces, "layout": layout}


def _curve_figure(curves: Mapping, metric: str) -> dict:
    traces = []
    for method, curve in curves.items():
        traces.append(
            {
                "type": "scatter",
                "mode": "lines+markers",
                "name": f"{method} (AUC {np.mean(curve.auc):.3g})",
                "x": _typed(np.asarray(curve.fractions)),
                "y": _typed(np.asarray(curve.scores).mean(axis=0)),
                "hovertemplate": f"{_hover_title(method)}<br>%{{x:.0%}} perturbed: score %{{y:.4g}}<extra></extra>",
            }
        )
    layout = {
        "width": 560,
        "height": 360,
        "margin": {"l": 60, "r": 10, "t": 40, "b": 50},
        "title": {"text": f"{html.escape(metric)}: mean explained score over the samples"},
        "xaxis": {"title": {"text": "share of the features perturbed"}, "tickformat": ".0%"},
        "yaxis": {"title": {"text": "explained score"}},
        "paper_bgcolor": "rgba(0,0,0,0)",
    }
    return {"data": traces, "layout": layout}


# ---------------------------------------------------------------------------------------------------------------------
# Sections


class _Page:
    """The figures of the page (id -> spec, drawn by the page's script) and its HTML, section by section."""

    def __init__(self, size: int):
        self.figures: dict = {}
        self.underlays: dict = {}  # sample -> the grey input trace drawn under its maps (once, not per panel)
        self.size = size

    def panel(self, element_id: str, figure: dict, classes: str, label: str, data: str = "") -> str:
        self.figures[element_id] = figure
        width, height = figure["layout"]["width"], figure["layout"]["height"]
        return (
            f'<div id="{element_id}" class="panel {classes}" role="img" aria-label="{html.escape(label)}" '
            f'style="width:{width}px;height:{height}px"{data}></div>'
        )


def _scale_limits(maps: _Maps, shown: int, scale: str, percentile: float) -> list[list[float]]:
    """Per method, per sample shown: the colour limit (tabular: the bars' axis limit, the largest |score|)."""
    percentile = 100.0 if maps.tabular else percentile
    if scale == "sample":
        return [[_maps.symmetric_limit(v[i], percentile) for i in range(shown)] for v in maps.values]
    if scale == "method":
        return [[_maps.symmetric_limit(v[:shown], percentile)] * shown for v in maps.values]
    shared = _maps.symmetric_limit(np.concatenate([v[:shown].ravel() for v in maps.values]), percentile)
    return [[shared] * shown for _ in maps.values]


def _legend(maps: _Maps, scale: str, percentile: float, channels: str, limits, overlay: bool | None) -> str:
    """The colour bar, what the colours mean and how the panels are scaled; with image inputs (``overlay`` not
    None) the switch that draws the maps over them and a word on the linked cursor."""
    stops = ", ".join(_DIVERGING)
    if scale == "shared":
        ends = (f"−{limits[0][0]:.3g}", f"+{limits[0][0]:.3g}")
    else:
        ends = ("−L", "+L")
    meaning = (
        "<b>Red</b>: the feature speaks for the explained class (positive attribution); <b>blue</b>: against "
        "it (negative); white: no contribution."
    )
    if not maps.tabular:
        meaning += {
            "sum": " Pixels show the attribution summed over the input's channels.",
            "abs": " Pixels show the absolute attributions summed over the channels (never negative).",
            "norm": " Pixels show the L2 norm of the attributions over the channels (never negative).",
        }[channels]
    which = "the largest |attribution|" if maps.tabular else f"the {percentile:g}th percentile of |attribution|"
    how = {
        "sample": f"Each panel has its own scale, from −L to +L with L {which} in that panel (the cursor shows L): "
        "compare where a method puts evidence, not how much, across panels.",
        "method": f"The samples of one method share a scale, ±L with L {which} over that method's samples (L under "
        "its name): compare samples within a method, not methods.",
        "shared": f"All panels share one scale, ±{limits[0][0]:.3g}, {which} over every panel: magnitudes compare "
        "across methods only where the methods measure the same thing (e.g. they sum to the explained output).",
    }[scale]
    saturate = "" if maps.tabular else " Values beyond ±L take the end colours."
    switch = linked = ""
    if overlay is not None:
        switch = (
            f'<label class="toggle"><input type="checkbox" id="overlay-toggle"{" checked" if overlay else ""}> '
            f"heatmaps over the input (grey; maps at {OVERLAY_OPACITY:.0%} opacity)</label>"
        )
        linked = " A marker shows the hovered pixel in the sample's other panels."
    return (
        f'<div class="legend"><div class="colorbar-box"><div id="colorbar" class="colorbar" '
        f'style="background:linear-gradient(to right, {stops})"></div><div class="colorbar-ticks">'
        f"<span>{ends[0]} against</span><span>0</span><span>{ends[1]} for</span></div>{switch}</div>"
        f'<p id="scale-note" data-scale="{scale}">{meaning} {how}{saturate} Hover over a panel for exact '
        f"values.{linked}</p></div>"
    )


def _underlay(picture: np.ndarray) -> dict:
    """The input in grey, as a heatmap trace that the cursor passes through (the page adds its place per map)."""
    grey = picture if picture.ndim == 2 else picture[..., :3] @ _LUMA
    return {
        "type": "heatmap",
        "z": _typed(grey),
        "zmin": 0,
        "zmax": 1,
        "colorscale": _GREY,
        "showscale": False,
        "hoverinfo": "skip",
        "name": "input",
    }


def _underlay_place(input_shape: tuple, map_shape: tuple) -> dict:
    """Where the input's pixels lie in a map's coordinates (its cells at 0, 1, ...): stretched to cover the map, so
    that a coarse map (a CAM) lies over the whole input."""
    dy, dx = map_shape[0] / input_shape[0], map_shape[1] / input_shape[1]
    return {"x0": -0.5 + dx / 2, "dx": dx, "y0": -0.5 + dy / 2, "dy": dy}


def _linked(i: int, shape: tuple) -> str:
    """The attributes that tie a panel to the other panels of its sample (the page marks the hovered pixel there)."""
    return f' data-link="{i}" data-grid="{shape[0]},{shape[1]}"'


def _samples_section(page: _Page, maps, inputs, captions, features, scale, percentile, channels, shown, top,
                     overlay) -> str:  # fmt: skip
    limits = _scale_limits(maps, shown, scale, percentile)
    head = ['<div class="cell corner sticky"></div>']
    if inputs is not None and not maps.tabular:
        head.append('<div class="cell column-title" id="method-input">input</div>')
    for j, name in enumerate(maps.names):
        note = f'<span class="limit">±{limits[j][0]:.3g}</span>' if scale == "method" else ""
        head.append(
            f'<div class="cell column-title" id="method-{j}" data-method="{html.escape(name)}">'
            f"{html.escape(name)}{note}</div>"
        )
    rows = []
    for i in range(shown):
        lines = captions.lines(i)
        correct = captions.correct(i)
        flag = "" if correct is None else f' data-correct="{str(correct).lower()}"'
        text = "".join(f"<div>{html.escape(line)}</div>" for line in lines)
        cells = [f'<div class="cell caption sticky" id="caption-{i}"{flag}><b>#{i}</b>{text}</div>']
        picture = None
        if inputs is not None and not maps.tabular:
            picture = _maps.as_display_image(inputs[i])
            page.underlays[str(i)] = _underlay(picture)
            grey = picture.ndim == 2
            values = np.asarray(inputs[i], dtype=float).reshape(picture.shape) if grey else None
            hover = (
                "row %{y}, column %{x}<br>input %{customdata:.4g}" if grey else "row %{y}, column %{x}<br>RGB %{z}"
            ) + "<extra></extra>"
            cells.append(
                page.panel(
                    f"input-{i}",
                    _image_figure(picture, hover, page.size, values),
                    "input",
                    f"input of sample {i}",
                    f' data-sample="{i}"' + _linked(i, picture.shape),
                )
            )
        for j, name in enumerate(maps.names):
            limit = limits[j][i]
            title = f"<b>{_hover_title(name)}</b> · sample {i}<br>"
            data = f' data-sample="{i}" data-method="{html.escape(name)}" data-limit="{limit:.6g}"'
            label = f"{name} attribution of sample {i}"
            if maps.tabular:
                values = maps.values[j][i]
                names = (
                    features if inputs is None else [f"{f} = {x:.4g}" for f, x in zip(features, inputs[i], strict=True)]
                )
                hover = title + "%{y}<br>attribution %{x:+.4g}<extra></extra>"
                cells.append(
                    page.panel(f"bars-{i}-{j}", _bars_figure(values, names, limit, top, hover), "bars", label, data)
                )
            else:
                hover = title + "row %{y}, column %{x}<br>attribution %{z:+.4g}"
                hover += f"<br>colour scale ±{limit:.3g}<extra></extra>"
                values = maps.values[j][i]
                figure = _heatmap_figure(values, -limit, limit, _DIVERGING, hover, page.size)
                if picture is not None:
                    # drawn by the page under the map while the overlay is on (the map then at OVERLAY_OPACITY)
                    figure["underlay"] = {"input": str(i), **_underlay_place(picture.shape, values.shape)}
                    figure["data"][0]["opacity"] = OVERLAY_OPACITY if overlay else 1.0
                cells.append(page.panel(f"heatmap-{i}-{j}", figure, "heatmap", label, data + _linked(i, values.shape)))
        rows.append("".join(cells))
    width = _BARS_WIDTH if maps.tabular else page.size
    legend = _legend(maps, scale, percentile, channels, limits, overlay if page.underlays else None)
    return legend + _grid(head, rows, len(head) - 1, width)


def _grid(head: list, rows: list, columns: int, width: int) -> str:
    """A grid of panels, ``width`` pixels a column after a column of captions that stays put when scrolled."""
    return (
        f'<div class="scroll"><div class="grid" style="grid-template-columns: 13rem repeat({columns}, '
        f'{width}px)">{"".join(head)}{"".join(rows)}</div></div>'
    )


def _groups(n: int, captions: _Captions) -> tuple[dict, str]:
    """Title -> sample indices: all samples, then each class (of the labels, else the predictions)."""
    groups = {f"all {n} samples": np.arange(n)}
    by, source = (captions.labels, "label") if captions.labels is not None else (captions.predicted, "prediction")
    if by is None:
        return groups, ""
    for k in np.unique(by):
        rows = np.flatnonzero(by == k)
        groups[f"class {captions.name(int(k))} ({len(rows)})"] = rows
    return groups, source


def _summary_section(page: _Page, maps: _Maps, captions: _Captions, features, percentile: float, top: int) -> str:
    groups, source = _groups(maps.n, captions)
    per_class = f" and per class (by {source})" if source else ""
    if maps.tabular:
        note = (
            f"Per method, the attributions of each feature over all {maps.n} samples{per_class}: boxes the "
            f"interquartile range, the line the median, whiskers to the last sample within 1.5 IQR; the {top} "
            "features of largest mean |attribution| first."
        )
        blocks = []
        for j, name in enumerate(maps.names):
            figure = _box_figure(maps.values[j], features, groups, top)
            blocks.append(
                f'<div class="summary-block"><h3>{html.escape(name)}</h3>'
                f"{page.panel(f'summary-{j}', figure, 'summary-panel', f'{name} over the dataset')}</div>"
            )
        return f'<p class="note">{note}</p><div class="summary-list">{"".join(blocks)}</div>'
    note = (
        f"Per method (rows), the mean |attribution| of each pixel (of the maps above) over all {maps.n} "
        f"samples{per_class}; one "
        f"scale per method, from 0 to the {percentile:g}th percentile of its maps (dark: little, light: much)."
    )
    size = max(page.size * 3 // 4, 48)
    head = ['<div class="cell corner sticky"></div>'] + [
        f'<div class="cell column-title">{html.escape(title)}</div>' for title in groups
    ]
    rows = []
    for j, name in enumerate(maps.names):
        magnitudes = np.abs(maps.values[j])
        means = [magnitudes[rows_].mean(axis=0) for rows_ in groups.values()]
        limit = _maps.symmetric_limit(np.stack(means), percentile)
        cells = [f'<div class="cell row-title sticky">{html.escape(name)}</div>']
        for g, (title, mean) in enumerate(zip(groups, means, strict=True)):
            hover = (
                f"<b>{_hover_title(name)}</b> · {_hover_title(title)}<br>row %{{y}}, column %{{x}}<br>"
                "mean |attribution| %{z:.4g}<extra></extra>"
            )
            figure = _heatmap_figure(mean, 0.0, limit, _SEQUENTIAL, hover, size)
            cells.append(page.panel(f"summary-{j}-{g}", figure, "summary-panel", f"{name}, {title}"))
        rows.append("".join(cells))
    return f'<p class="note">{note}</p>' + _grid(head, rows, len(groups), size)


_CONCEPT_FIELDS = ("image", "layer", "target", "heatmap", "ids", "shares", "heatmaps", "references")


def _check_concepts(concepts) -> list:
    if concepts is None:
        return []
    given = [concepts] if all(hasattr(concepts, f) for f in _CONCEPT_FIELDS) else concepts
    if isinstance(given, str | bytes | Mapping) or not isinstance(given, Sequence):
        raise InvalidInputError(
            f"concepts: expected a deepexplain.crp.Concepts (from top_concepts) or a list of them, got "
            f"{type(concepts).__name__}"
        )
    for k, item in enumerate(given):
        missing = [f for f in _CONCEPT_FIELDS if not hasattr(item, f)]
        if not missing and not isinstance(item.references, Mapping):
            missing = ["a mapping of references"]
        if missing:
            raise InvalidInputError(
                f"concepts[{k}]: expected a deepexplain.crp.Concepts (from top_concepts), got "
                f"{type(item).__name__} without {', '.join(missing)}"
            )
        for field in ("heatmap", "heatmaps", "shares"):
            _maps.check_finite(
                _float_array(getattr(item, field), f"concepts[{k}].{field}").reshape(1, -1),
                f"concepts[{k}].{field}",
                samples=True,
            )
    return list(given)


def _concepts_section(page: _Page, concepts: list, percentile: float, channels: str) -> str:
    blocks = []
    size = page.size

    def heat(element_id, values, caption, title):
        values = np.asarray(_maps.aggregate_channels(values, channels), dtype=np.float32)
        limit = _maps.symmetric_limit(values, percentile)
        hover = f"<b>{_hover_title(title)}</b><br>row %{{y}}, column %{{x}}<br>relevance %{{z:+.4g}}<extra></extra>"
        figure = _heatmap_figure(values, -limit, limit, _DIVERGING, hover, size)
        return _figure_cell(page.panel(element_id, figure, "heatmap concept", title), caption)

    def picture(element_id, image, caption):
        shown = _maps.as_display_image(image)
        values = np.asarray(image, dtype=float).reshape(shown.shape) if shown.ndim == 2 else None
        hover = ("value %{customdata:.4g}" if shown.ndim == 2 else "RGB %{z}") + "<extra></extra>"
        return _figure_cell(
            page.panel(element_id, _image_figure(shown, hover, size, values), "input", caption), caption
        )

    for k, item in enumerate(concepts):
        layer, target = html.escape(str(item.layer)), int(item.target)
        rows = [
            picture(f"concept-input-{k}", item.image, "input")
            + heat(f"concept-heatmap-{k}", item.heatmap, f"class {target}", f"class {target}: all concepts")
        ]
        for c, (concept, share) in enumerate(zip(item.ids, np.asarray(item.shares, dtype=float), strict=True)):
            caption = f"{item.layer} #{concept}: {100 * share:+.0f}%"
            cells = [heat(f"concept-{k}-{c}", np.asarray(item.heatmaps)[c], caption, caption)]
            for r, crop in enumerate(item.references.get(concept, [])):
                cells.append(picture(f"reference-{k}-{c}-{r}", crop, f"reference {r + 1}"))
            rows.append("".join(cells))
        body = "".join(f'<div class="concept-row">{row}</div>' for row in rows)
        blocks.append(f'<div class="concepts" id="concepts-{k}"><h3>class {target}, layer {layer}</h3>{body}</div>')
    note = (
        "Concept Relevance Propagation (Achtibat et al., 2023): per prediction, the channels of a layer that "
        "carry most of its relevance (% = share of the layer's absolute relevance, signed), each with its "
        "conditional heatmap (red: for the class, blue: against; each its own scale) and the reference samples "
        "that activate it most."
    )
    return f'<p class="note">{note}</p>{"".join(blocks)}'


def _figure_cell(panel: str, caption: str) -> str:
    return f'<figure class="cell">{panel}<figcaption>{html.escape(caption)}</figcaption></figure>'


@dataclass(frozen=True)
class _Table:
    columns: list
    cells: dict  # (method, column) -> (mean, std or None)
    better: dict  # column -> True (higher), False (lower) or None
    curves: dict  # metric -> {method: Curve}


def _check_metrics(metrics) -> _Table | None:
    from deepexplain.metrics import higher_is_better

    if metrics is None:
        return None
    if all(hasattr(metrics, a) for a in ("values", "methods", "metrics")) and not isinstance(metrics, Mapping):
        given = {m: {k: metrics.values[m, k] for k in metrics.metrics} for m in metrics.methods}  # an Evaluation
    elif isinstance(metrics, Mapping) and all(isinstance(v, Mapping) for v in metrics.values()):
        given = metrics
    else:
        raise InvalidInputError(
            f"metrics: expected a deepexplain.metrics.Evaluation or a mapping method -> {{metric: "
            f"value}}, got {type(metrics).__name__}"
        )
    columns, cells, curves = [], {}, {}
    for method, row in given.items():
        for metric, value in row.items():
            name = f"metrics[{method!r}][{metric!r}]"
            column = str(metric)
            if hasattr(value, "fractions") and hasattr(value, "scores") and hasattr(value, "auc"):  # a Curve
                curves.setdefault(column, {})[str(method)] = value
                column, value = f"{metric} (AUC)", value.auc
            try:
                array = np.asarray(value, dtype=float).reshape(-1)
            except (TypeError, ValueError):
                raise InvalidInputError(
                    f"{name}: expected a number, per-sample values or a Curve, got {type(value).__name__}"
                ) from None
            if array.size == 0 or not np.isfinite(array).all():
                raise InvalidInputError(f"{name}: expected finite values, got {array[:5].tolist()}")
            if column not in columns:
                columns.append(column)
            cells[str(method), column] = (float(array.mean()), float(array.std()) if array.size > 1 else None)
    if not cells:
        raise InvalidInputError("metrics: expected at least one value, got none")
    better = {c: higher_is_better(c.removesuffix(" (AUC)")) for c in columns}
    for metric, by_method in curves.items():
        for method, curve in by_method.items():
            _maps.check_finite(
                _float_array(curve.scores, f"metrics[{method!r}][{metric!r}].scores"),
                f"metrics[{method!r}][{metric!r}].scores",
                samples=True,
            )
    return _Table(columns, cells, better, curves)


def _metrics_section(page: _Page, table: _Table) -> str:
    methods = list(dict.fromkeys(method for method, _ in table.cells))
    best = {}
    for column in table.columns:
        present = [(table.cells[m, column][0], m) for m in methods if (m, column) in table.cells]
        if table.better[column] is not None and len(present) > 1:
            best[column] = (max if table.better[column] else min)(present)[1]
    arrows = {True: " ↑", False: " ↓", None: ""}
    head = "".join(
        f'<th data-metric="{html.escape(c)}">{html.escape(c)}{arrows[table.better[c]]}</th>' for c in table.columns
    )
    body = []
    for method in methods:
        cells = []
        for column in table.columns:
            if (method, column) not in table.cells:
                cells.append('<td class="missing">–</td>')
                continue
            mean, std = table.cells[method, column]
            text = f"{mean:.4g}" + ("" if std is None else f" ± {std:.2g}")
            cells.append(f"<td{' class=best' if best.get(column) == method else ''}>{text}</td>")
        body.append(f'<tr data-method="{html.escape(method)}"><th>{html.escape(method)}</th>{"".join(cells)}</tr>')
    legend = (
        "↑: higher is better, ↓: lower is better (bold: the best method); mean ± standard deviation over the "
        "samples where per-sample values were given; –: not measured."
    )
    figures = "".join(
        page.panel(f"curve-{k}", _curve_figure(curves, metric), "curve", f"{metric} curves")
        for k, (metric, curves) in enumerate(table.curves.items())
    )
    return (
        f'<div class="scroll"><table id="metrics" class="metrics"><thead><tr><th>method</th>{head}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table></div><p class="note">{legend}</p>'
        f'<div class="curves">{figures}</div>'
    )


# ---------------------------------------------------------------------------------------------------------------------
# The page

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:1.5rem;color:#222;background:#fff}
h1{font-size:1.5rem;margin:0 0 .3rem}h2{font-size:1.2rem;margin:2rem 0 .5rem;border-bottom:1px solid #ddd}
h3{font-size:1rem;margin:1rem 0 .3rem}nav a{margin-right:1rem}.note,#scale-note{max-width:60rem;font-size:.9rem}
.scroll{overflow-x:auto;max-width:100%}.grid{display:grid;gap:6px 4px;align-items:start;width:max-content}
.cell{margin:0}.sticky{position:sticky;left:0;background:#fff;z-index:2}
.caption{font-size:.8rem;padding-right:.4rem}.caption[data-correct=false]{color:#b2182b}
.column-title{font-size:.8rem;font-weight:600;text-align:center;align-self:end;overflow-wrap:anywhere}
.row-title{font-size:.8rem;font-weight:600;align-self:center}.limit{display:block;font-weight:400;color:#555}
.panel{background:#f4f4f4;position:relative}.panel[data-rendered]{background:none}
.marker{position:absolute;transform:translate(-50%,-50%);box-sizing:border-box;pointer-events:none;z-index:5;
border:2px solid #000;box-shadow:0 0 0 1px #fff,inset 0 0 0 1px #fff}
.toggle{display:block;font-size:.85rem;margin-top:.4rem}
.legend{display:flex;gap:1.5rem;align-items:center;flex-wrap:wrap;margin:.5rem 0 1rem}
.colorbar{width:260px;height:14px;border:1px solid #999}.colorbar-ticks{display:flex;justify-content:space-between;
width:262px;font-size:.75rem}.concept-row{display:flex;gap:8px;align-items:flex-start;margin-bottom:6px}
figure{margin:0}figcaption{font-size:.75rem;text-align:center;max-width:12rem}
.summary-list,.curves{display:flex;flex-wrap:wrap;gap:1rem}
table.metrics{border-collapse:collapse;font-size:.85rem}.metrics th,.metrics td{padding:.25rem .6rem;
border-bottom:1px solid #ddd;text-align:right}.metrics th:first-child{text-align:left}.metrics .best{font-weight:700}
footer{margin-top:2rem;font-size:.75rem;color:#666}
"""

# Draws each panel when it comes near the viewport (all of them before printing); renderAll() draws the rest.
# Heatmaps of image inputs get the grey input as a trace under them while the overlay switch is on; hovering a
# pixel of a linked panel (data-link: its sample) marks the same place in the sample's other panels, each on its own
# grid (data-grid: rows, columns), so that a coarse map's cell under a fine input's pixel is the one marked.
_SCRIPT = """
(function () {
  var figures = JSON.parse(document.getElementById("deepexplain-figures").textContent);
  var underlays = JSON.parse(document.getElementById("deepexplain-underlays").textContent);
  var toggle = document.getElementById("overlay-toggle");
  var config = {displayModeBar: false, responsive: false, scrollZoom: false};
  var drawn = {};
  function overlaid() { return toggle !== null && toggle.checked; }
  function traces(figure) {
    if (!figure.underlay) return figure.data;
    var place = figure.underlay, on = overlaid();
    var under = Object.assign({}, underlays.inputs[place.input],
                              {x0: place.x0, dx: place.dx, y0: place.y0, dy: place.dy, visible: on});
    var over = figure.data.map(function (trace) {
      return Object.assign({}, trace, {opacity: on ? underlays.opacity : 1});
    });
    return [under].concat(over);
  }
  function grid(element) { return element.getAttribute("data-grid").split(",").map(Number); }
  function linkedTo(element) {
    return document.querySelectorAll('.panel[data-link="' + element.getAttribute("data-link") + '"]');
  }
  // The cells of a grid of n that the source's cell k of m covers (k/m .. (k+1)/m of the panel): the one under a
  // finer source's cell, or all those under a coarser one's; first and last, inclusive.
  function span(k, m, n) {
    var first = Math.floor(k * n / m + 1e-9), last = Math.ceil((k + 1) * n / m - 1e-9) - 1;
    return [Math.min(first, n - 1), Math.max(Math.min(last, n - 1), first)];
  }
  function mark(source, row, column) {
    var size = grid(source);
    linkedTo(source).forEach(function (panel) {
      if (panel === source) return;
      var cells = grid(panel), rows = span(row, size[0], cells[0]), columns = span(column, size[1], cells[1]);
      var marker = panel.querySelector(":scope > .marker");
      if (marker === null) {
        marker = document.createElement("div");
        marker.className = "marker";
        panel.appendChild(marker);
      }
      marker.style.left = (50 * (columns[0] + columns[1] + 1) / cells[1]) + "%";
      marker.style.top = (50 * (rows[0] + rows[1] + 1) / cells[0]) + "%";
      marker.style.width = "max(7px, " + (100 * (columns[1] - columns[0] + 1) / cells[1]) + "%)";
      marker.style.height = "max(7px, " + (100 * (rows[1] - rows[0] + 1) / cells[0]) + "%)";
      marker.setAttribute("data-rows", rows.join(","));
      marker.setAttribute("data-columns", columns.join(","));
      marker.hidden = false;
    });
  }
  function unmark(source) {
    linkedTo(source).forEach(function (panel) {
      var marker = panel.querySelector(":scope > .marker");
      if (marker !== null) marker.hidden = true;
    });
  }
  function render(id) {
    if (drawn[id]) return drawn[id];
    var figure = figures[id], element = document.getElementById(id);
    drawn[id] = Plotly.newPlot(element, traces(figure), figure.layout, config).then(function () {
      if (element.hasAttribute("data-link")) {
        element.on("plotly_hover", function (event) {
          var point = event.points[0];
          mark(element, Math.round(point.y), Math.round(point.x));
        });
        element.on("plotly_unhover", function () { unmark(element); });
      }
      element.setAttribute("data-rendered", "true");
    });
    return drawn[id];
  }
  function setOverlay(on) {
    if (toggle !== null) toggle.checked = on;
    var changes = Object.keys(drawn).filter(function (id) { return figures[id].underlay; }).map(function (id) {
      return drawn[id].then(function () {
        var element = document.getElementById(id);
        return Plotly.restyle(element, {visible: [on, true], opacity: [1, on ? underlays.opacity : 1]}, [0, 1]);
      });
    });
    return Promise.all(changes).then(function () { document.body.setAttribute("data-overlay", String(on)); });
  }
  if (toggle !== null) toggle.addEventListener("change", function () { setOverlay(toggle.checked); });
  function renderAll() {
    return Promise.all(Object.keys(figures).map(render)).then(function () {
      document.body.setAttribute("data-rendered", "all");
    });
  }
  if ("IntersectionObserver" in window) {
    var observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) {
        if (entry.isIntersecting) { observer.unobserve(entry.target); render(entry.target.id); }
      });
    }, {rootMargin: "600px"});
    Object.keys(figures).forEach(function (id) { observer.observe(document.getElementById(id)); });
  } else {
    renderAll();
  }
  window.addEventListener("beforeprint", renderAll);
  window.deepexplainReport = {render: render, renderAll: renderAll, setOverlay: setOverlay,
                              ids: Object.keys(figures)};
})();
"""


def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:
        raise ImportError('deepexplain.report needs plotly: pip install "deepexplain[report]" (or plotly)') from None
    return get_plotlyjs()


def report(
    attributions: Mapping,
    inputs,
    path: PathType,
    *,
    labels=None,
    predictions=None,
    targets=None,
    titles: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    feature_names: Sequence[str] | None = None,
    concepts=None,
    metrics=None,
    scale: str = "sample",
    channels: str = "sum",
    percentile: float = 99.5,
    max_samples: int | None = 16,
    top_features: int = 20,
    panel_size: int = 128,
    overlay: bool = False,
    title: str = "deepexplain report",
) -> Path:
    """Write one self-contained interactive HTML page of attributions (plotly.js inline: no network needed).

    Parameters
    ----------
    attributions : mapping of str to array_like
        Method name -> attributions of the same N samples: ``(N, H, W)`` or ``(N, H, W, C)`` for images (channels
        reduced with ``channels``; maps smaller than the input, such as CAMs, are shown at their own resolution), or
        ``(N, F)`` for tabular data. One column per method, in order. NaN or inf is refused.
    inputs : array_like or None
        The N explained inputs: images ``(N, H, W[, C])``, C in (1, 3, 4), in [0, 1] or [0, 255] (others are min-max
        scaled for display), drawn in the first column; or ``(N, F)`` feature values, shown beside the feature names.
        None: no input column.
    path : str or path-like
        The HTML file to write (its folder is made if missing).
    labels : array_like of int, optional
        ``(N,)`` true classes, in the captions; the summary is grouped by them.
    predictions : array_like, optional
        The model's outputs ``(N, K)`` (e.g. logits: the caption shows the explained class's output) or the
        predicted classes ``(N,)``. Without ``labels`` the summary is grouped by the predicted class.
    targets : int or array_like of int, optional
        The explained class of each sample (default: the predicted one, when ``predictions`` are given).
    titles : sequence of str, optional
        One title per sample, first line of its caption.
    class_names : sequence of str, optional
        Names of the class indices, shown next to them.
    feature_names : sequence of str, optional
        Distinct names of the F features (tabular data only; default ``'feature 0'``, ...).
    concepts : deepexplain.crp.Concepts or list of them, optional
        What :func:`deepexplain.crp.top_concepts` returns: a section per prediction with its concepts' conditional
        heatmaps and reference crops.
    metrics : deepexplain.metrics.Evaluation or mapping, optional
        :func:`deepexplain.metrics.evaluate`'s result, or method -> {metric: value}, each value a number, per-sample
        values (mean ± standard deviation shown) or a :class:`deepexplain.metrics.Curve` (its mean AUC in the column
        ``'<metric> (AUC)'``, and the curves drawn; per-sample AUCs given under that name join the column without a
        curve, so that a few methods' curves can be drawn over a table of many). A table, the best method of each
        known metric in bold.
    scale : {'sample', 'method', 'shared'}, default 'sample'
        Colour scales (tabular: the bars' axes): each panel its own, as :func:`deepexplain.plot.grid` draws
        (``'sample'``); one per method over its samples (``'method'``); one for all panels (``'shared'``). Each
        is symmetric, ±(``percentile`` of |attribution|), so that zero is white.
    channels : {'sum', 'abs', 'norm'}, default 'sum'
        How image attributions ``(N, H, W, C)`` become one value per pixel, as
        :func:`deepexplain.plot.aggregate_channels`: the values shown under the cursor are these.
    percentile : float, default 99.5
        Percentile of |attribution| that takes the end colours, in (0, 100].
    max_samples : int or None, default 16
        Draw the first ``max_samples`` samples (the page says how many were left out); the summary still covers
        all N. None: all (the page grows by about ``5.4 * H * W`` bytes per sample and method: float32 in base64).
    top_features : int, default 20
        Tabular data: features per bar chart and box plot, the largest |attribution| first.
    panel_size : int, default 128
        Pixels on the longer side of each heatmap.
    overlay : bool, default False
        Open the page with each heatmap drawn over its input: the input in grey underneath, the map at
        :data:`OVERLAY_OPACITY` on top (a coarse map, such as a CAM, stretched over the whole input). Whenever
        ``inputs`` are images the page has a switch for it; off (the default), the colours read exactly against the
        colour bar. Either way the values under the cursor are the map's, and hovering a pixel marks the same place
        in the sample's other panels.
    title : str, default 'deepexplain report'
        The page's title and heading.

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    deepexplain.errors.InvalidInputError
        (a ``ValueError``) Naming the argument, what was expected and what was given: attributions that are not a
        non-empty mapping of arrays of one kind and one number of samples, or not finite; inputs, labels,
        predictions, targets, titles, class_names, feature_names, concepts or metrics that do not fit them; an
        unknown ``scale`` or ``channels``; ``percentile``, ``max_samples``, ``top_features`` or ``panel_size`` out of
        range; ``overlay`` not a bool, or True without image inputs.
    ImportError
        Without plotly.

    References
    ----------
    Ancona, M., Ceolini, E., Öztireli, C. and Gross, M. (2018). Towards better understanding of gradient-based
    attribution methods for deep neural networks. ICLR. (The colours: red for, blue against, zero white.)

    Achtibat, R., Dreyer, M., Eisenbraun, I., Bosse, S., Wiegand, T., Samek, W. and Lapuschkin, S. (2023). From
    attribution maps to human-understandable explanations through Concept Relevance Propagation. Nature Machine
    Intelligence 5, 1006–1019. (The concepts section.)

    Examples
    --------
    >>> maps = {m: deepexplain.explain(m, model, xs) for m in ("saliency", "intgrad", "deeplift")}  # doctest: +SKIP
    >>> deepexplain.report(maps, xs, "report.html", labels=ys, predictions=model(xs))  # doctest: +SKIP
    """
    maps = _attribution_maps(attributions, channels)
    samples = _check_inputs(inputs, maps)
    if scale not in SCALES:
        raise InvalidInputError(f"scale: expected one of {SCALES}, got {scale!r}")
    try:
        percentile = _maps.check_percentile(percentile)
    except ValueError as error:
        raise InvalidInputError(str(error)) from None
    max_samples = _positive_int(max_samples, "max_samples", allow_none=True)
    top_features = _positive_int(top_features, "top_features")
    panel_size = _positive_int(panel_size, "panel_size")
    if panel_size < 16:
        raise InvalidInputError(f"panel_size: expected at least 16 pixels, got {panel_size}")
    if not isinstance(overlay, bool | np.bool_):
        raise InvalidInputError(f"overlay: expected True or False, got {overlay!r}")
    if overlay and (samples is None or maps.tabular):
        given = "no inputs" if samples is None else "tabular inputs (N, F)"
        raise InvalidInputError(f"overlay: expected image inputs (N, H, W[, C]) to draw the maps over, got {given}")
    captions = _captions(maps.n, labels, predictions, targets, titles, class_names)
    features = _feature_names(feature_names, maps)
    chosen_concepts = _check_concepts(concepts)
    table = _check_metrics(metrics)
    title = str(title)
    plotly_js = _plotly_js()

    shown = maps.n if max_samples is None else min(maps.n, max_samples)
    page = _Page(panel_size)
    kind = f"{maps.values[0].shape[1]} features" if maps.tabular else "images"
    left_out = (
        (
            f" The first {shown} of {maps.n} samples are drawn (<code>max_samples={max_samples}</code>); the "
            f"summary covers all {maps.n}."
        )
        if shown < maps.n
        else ""
    )
    intro = f'<p class="note" id="samples-note">{shown} samples ({kind}) × {len(maps.names)} methods.{left_out}</p>'
    grid = _samples_section(
        page, maps, samples, captions, features, scale, percentile, channels, shown, top_features, bool(overlay)
    )
    summary = _summary_section(page, maps, captions, features, percentile, top_features)
    sections = [("samples", "Samples", intro + grid), ("summary", "Summary", summary)]
    if chosen_concepts:
        sections.append(("concepts", "Concepts", _concepts_section(page, chosen_concepts, percentile, channels)))
    if table is not None:
        sections.append(("metrics-section", "Metrics", _metrics_section(page, table)))
    nav = "".join(f'<a href="#{key}">{name}</a>' for key, name, _ in sections)
    body = "".join(f'<section id="{key}"><h2>{name}</h2>{content}</section>' for key, name, content in sections)
    payload, underlays = (
        json.dumps(value, separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
        for value in (page.figures, {"opacity": OVERLAY_OPACITY, "inputs": page.underlays})
    )
    document = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<meta name="generator" content="deepexplain {__version__}">\n<title>{html.escape(title)}</title>\n'
        f"<style>{_STYLE}</style>\n<script>{plotly_js}</script>\n</head>\n"
        f'<body data-overlay="{str(bool(overlay)).lower()}">\n'
        f'<header><h1 id="title">{html.escape(title)}</h1><nav>{nav}</nav></header>\n{body}\n'
        f"<footer>Written by deepexplain {__version__}; self-contained (plotly.js inline), no network needed."
        f"</footer>\n"
        f'<script type="application/json" id="deepexplain-figures">{payload}</script>\n'
        f'<script type="application/json" id="deepexplain-underlays">{underlays}</script>\n'
        f"<script>{_SCRIPT}</script>\n</body>\n</html>\n"
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(document, encoding="utf-8")
    return target
