"""``deepexplain.report``: the interactive HTML page, opened in a real headless browser (Debian's chromium driven by
playwright; skipped without them), and its argument checks, self-containment and the ``deepexplain report`` command.

The browser tests read what a user sees: no console errors, one drawn panel per sample and method, the colour bar,
captions, summary and metrics table; the hover label of a known cell (the mouse moved to the cell's pixel, computed
from plotly's axis layout) against the attribution computed here; a full-page screenshot with colour in it. One
browser per module; each page is loaded once.
"""

import base64
import io
import json
import re
import shutil
from types import SimpleNamespace

import numpy as np
import pytest

import deepexplain
from deepexplain.cli import main
from deepexplain.crp import Concepts
from deepexplain.metrics import Curve
from deepexplain.reporting import OVERLAY_OPACITY

N = 3
RNG = np.random.default_rng(0)
IMAGES = RNG.random((N, 8, 8, 3)).astype(np.float32)
ATTRIBUTIONS = {
    "saliency": RNG.normal(size=(N, 8, 8, 3)),
    "integrated <gradients>": 0.01 * RNG.normal(size=(N, 8, 8, 3)),  # a name that needs escaping
    "gradcam": RNG.random((N, 4, 4)),  # a coarse map, shown at its own resolution
}
LABELS = np.array([0, 1, 1])
LOGITS = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0], [-1.0, 4.0, 0.0]])
CLASS_NAMES = ["cat", "dog", "bird"]
FRACTIONS = np.linspace(0, 1, 5)
METRICS = {
    "saliency": {"deletion": Curve(FRACTIONS, np.array([[1.0, 0.6, 0.3, 0.1, 0.0]] * N)),
                 "sparseness": [0.2, 0.4, 0.3]},
    "integrated <gradients>": {"deletion": Curve(FRACTIONS, np.array([[1.0, 0.9, 0.8, 0.5, 0.0]] * N)),
                               "sparseness": 0.5},
    "gradcam": {"sparseness": 0.1},
}  # fmt: skip
CONCEPTS = Concepts(image=IMAGES[1], layer="conv", target=1, heatmap=RNG.normal(size=(8, 8)), ids=[3, 5],
                    shares=np.array([0.4, -0.2]), heatmaps=RNG.normal(size=(2, 8, 8)),
                    references={3: [RNG.random((4, 4, 3)), RNG.random((4, 4, 3))], 5: []})  # fmt: skip
TABULAR = RNG.normal(size=(12, 5)) * np.array([3.0, 0.1, 1.0, 0.5, 2.0])
FEATURES = RNG.random((12, 5))


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """The two reports of this module: images (with everything) and tabular data."""
    folder = tmp_path_factory.mktemp("report")
    images = deepexplain.report(ATTRIBUTIONS, IMAGES, folder / "images.html", labels=LABELS, predictions=LOGITS,
                                class_names=CLASS_NAMES, titles=["a.png", "b.png", "c.png"], concepts=CONCEPTS,
                                metrics=METRICS)  # fmt: skip
    tabular = deepexplain.report({"deepshap": TABULAR, "saliency": -TABULAR / 2}, FEATURES, folder / "tabular.html",
                                 labels=np.arange(12) % 2, feature_names=list("abcde"), scale="method")  # fmt: skip
    return SimpleNamespace(images=images, tabular=tabular)


def _figures(text: str) -> dict:
    """The page's figure specs (id -> {data, layout})."""
    found = re.search(r'<script type="application/json" id="deepexplain-figures">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


def _ids(text: str, prefix: str) -> list[str]:
    return re.findall(rf'id="({prefix}[^"]*)"', text)


def _underlays(text: str) -> dict:
    """The page's grey inputs drawn under the heatmaps while the overlay is on: {opacity, inputs: sample -> trace}."""
    found = re.search(r'<script type="application/json" id="deepexplain-underlays">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


def _decoded(typed: dict) -> np.ndarray:
    """A base64 typed array of the page, as plotly.js decodes it."""
    shape = [int(n) for n in typed["shape"].split(",")]
    return np.frombuffer(base64.b64decode(typed["bdata"]), {"f4": "<f4", "u1": "u1"}[typed["dtype"]]).reshape(shape)


# ---------------------------------------------------------------------------------------------------------------------
# The page as written


def test_report_is_one_self_contained_file(pages):
    text = pages.images.read_text(encoding="utf-8")
    assert "plotly.js v" in text[:200_000]  # the library itself, inline
    assert not re.search(r"<script[^>]*\ssrc=|<link\b|<img[^>]*\ssrc=|<iframe", text)
    assert not re.search(r"NaN|Infinity", json.dumps(_figures(text)))
    assert 4_000_000 < len(text.encode()) < 7_000_000  # plotly.js is most of it


def test_every_figure_is_a_valid_plotly_figure(pages):
    """plotly.js ignores misspelt attributes silently; plotly's Python validator does not."""
    go = pytest.importorskip("plotly.graph_objects")
    for path in (pages.images, pages.tabular):
        for figure in _figures(path.read_text(encoding="utf-8")).values():
            go.Figure(data=figure["data"], layout=figure["layout"])


def test_report_has_a_panel_per_sample_and_method_and_every_section(pages):
    text = pages.images.read_text(encoding="utf-8")
    assert sorted(_ids(text, "heatmap-")) == sorted(f"heatmap-{i}-{j}" for i in range(N) for j in range(3))
    assert _ids(text, "input-") == [f"input-{i}" for i in range(N)]
    assert sorted(_ids(text, "summary-")) == sorted(f"summary-{j}-{g}" for j in range(3) for g in range(3))
    for element in ("colorbar", "scale-note", "metrics", "concepts-0", "concept-0-1", "reference-0-0-1", "curve-0"):
        assert f'id="{element}"' in text
    assert "integrated &lt;gradients&gt;" in text and "integrated <gradients>" not in text.split("<script>")[0]


def test_heatmaps_carry_their_input_in_grey_to_draw_under_them(pages):
    """One grey input per sample (Rec. 601 luma of the RGB input), placed under every map of the sample: over the
    map's own cells, so the 4×4 gradcam's input pixels are half a cell wide; off by default (maps opaque)."""
    text = pages.images.read_text(encoding="utf-8")
    underlays, figures = _underlays(text), _figures(text)
    assert sorted(underlays["inputs"]) == [str(i) for i in range(N)] and underlays["opacity"] == OVERLAY_OPACITY
    grey = _decoded(underlays["inputs"]["1"]["z"])
    np.testing.assert_allclose(grey, IMAGES[1] @ [0.299, 0.587, 0.114], atol=1e-6)
    assert underlays["inputs"]["1"]["hoverinfo"] == "skip"  # the cursor reads the map above it
    assert figures["heatmap-1-0"]["underlay"] == {"input": "1", "x0": 0.0, "dx": 1.0, "y0": 0.0, "dy": 1.0}
    assert figures["heatmap-1-2"]["underlay"] == {"input": "1", "x0": -0.25, "dx": 0.5, "y0": -0.25, "dy": 0.5}
    assert {figures[f"heatmap-{i}-{j}"]["data"][0]["opacity"] for i in range(N) for j in range(3)} == {1.0}
    assert 'id="overlay-toggle">' in text and '<body data-overlay="false">' in text
    go = pytest.importorskip("plotly.graph_objects")
    place = {k: v for k, v in figures["heatmap-0-2"]["underlay"].items() if k != "input"}
    go.Heatmap(**underlays["inputs"]["0"], **place)  # what the page draws: a valid plotly trace


def test_panels_of_a_sample_are_linked_on_their_own_grids(pages):
    text = pages.images.read_text(encoding="utf-8")
    links = dict(re.findall(r'id="((?:heatmap|input)-[^"]+)"[^>]*data-link="1" data-grid="([^"]+)"', text))
    assert links == {"input-1": "8,8", "heatmap-1-0": "8,8", "heatmap-1-1": "8,8", "heatmap-1-2": "4,4"}
    tabular = re.sub(r"<script.*?</script>", "", pages.tabular.read_text(encoding="utf-8"), flags=re.S)  # its HTML
    assert "data-link=" not in tabular and "overlay-toggle" not in tabular  # no picture to draw over or point into


def test_overlay_opens_the_page_with_the_maps_over_their_inputs(tmp_path):
    text = deepexplain.report(ATTRIBUTIONS, IMAGES[..., :1], tmp_path / "r.html", overlay=True).read_text("utf-8")
    figures = _figures(text)
    assert '<body data-overlay="true">' in text and 'id="overlay-toggle" checked>' in text
    assert {figures[f"heatmap-{i}-{j}"]["data"][0]["opacity"] for i in range(N) for j in range(3)} == {OVERLAY_OPACITY}
    np.testing.assert_allclose(_decoded(_underlays(text)["inputs"]["2"]["z"]), IMAGES[2, ..., 0], atol=1e-6)


def test_captions_name_the_label_the_prediction_and_the_explained_output(pages):
    text = pages.images.read_text(encoding="utf-8")
    captions = {i: re.sub("<[^>]+>", " ", re.search(rf'id="caption-{i}"[^>]*>(.*?)</div></div>', text).group(1))
                for i in range(N)}  # fmt: skip
    assert "b.png" in captions[1] and "label 1 (dog), predicted 2 (bird), explained 2 (bird), output 3" in captions[1]
    assert re.search(r'id="caption-1" data-correct="false"', text) and 'id="caption-0" data-correct="true"' in text


def test_metrics_table_marks_the_best_method_of_known_metrics(pages):
    table = re.search(r'<table id="metrics".*?</table>', pages.images.read_text(encoding="utf-8"), re.S).group(0)
    assert "deletion (AUC) ↓" in table and "sparseness ↑" in table
    rows = dict(re.findall(r'<tr data-method="([^"]+)">(.*?)</tr>', table))
    assert "<td class=best>0.375 ± 0</td>" in rows["saliency"]  # the smaller deletion AUC, mean((s[:-1] + s[1:]) / 2)
    assert "<td class=best>0.5</td>" in rows["integrated &lt;gradients&gt;"]  # the largest sparseness
    assert "0.3 ± 0.082" in rows["saliency"] and '<td class="missing">–</td>' in rows["gradcam"]


def test_metrics_take_an_evaluation_with_its_directions(tmp_path):
    from deepexplain.metrics import Evaluation

    values = {("a", "deletion"): np.array([0.2, 0.4]), ("a", "insertion"): np.array([0.5, 0.7]),
              ("b", "deletion"): np.array([0.1, 0.1]), ("b", "insertion"): np.array([0.9, 0.7])}  # fmt: skip
    evaluation = Evaluation(values, ("a", "b"), ("deletion", "insertion"))
    maps = {"a": np.ones((2, 4)), "b": np.ones((2, 4))}
    text = deepexplain.report(maps, None, tmp_path / "r.html", metrics=evaluation).read_text(encoding="utf-8")
    rows = dict(re.findall(r'<tr data-method="([^"]+)">(.*?)</tr>', text))
    assert "deletion ↓" in text and "insertion ↑" in text
    assert rows["a"] == "<th>a</th><td>0.3 ± 0.1</td><td>0.6 ± 0.1</td>"
    assert rows["b"] == "<th>b</th><td class=best>0.1 ± 0</td><td class=best>0.8 ± 0.1</td>"


def test_per_sample_areas_join_the_column_of_a_curve_without_being_drawn(tmp_path):
    """The demo's table: curves for a few methods, the areas under them for the others, in one column."""
    maps = {"a": np.ones((3, 4)), "b": np.ones((3, 4))}
    given = {"a": {"deletion": METRICS["saliency"]["deletion"]}, "b": {"deletion (AUC)": [0.1, 0.2, 0.3]}}
    text = deepexplain.report(maps, None, tmp_path / "r.html", metrics=given).read_text(encoding="utf-8")
    assert re.findall(r'<th data-metric="([^"]+)">', text) == ["deletion (AUC)"] and "deletion (AUC) ↓" in text
    rows = dict(re.findall(r'<tr data-method="([^"]+)">(.*?)</tr>', text))
    assert rows == {"a": "<th>a</th><td>0.375 ± 0</td>", "b": "<th>b</th><td class=best>0.2 ± 0.082</td>"}
    assert [trace["name"] for trace in _figures(text)["curve-0"]["data"]] == ["a (AUC 0.375)"]


@pytest.mark.parametrize(("scale", "distinct"), [("sample", 9), ("method", 3), ("shared", 1)])
def test_scale_sets_one_colour_limit_per_panel_method_or_page(tmp_path, scale, distinct):
    text = deepexplain.report(ATTRIBUTIONS, IMAGES, tmp_path / "r.html", scale=scale).read_text(encoding="utf-8")
    limits = [float(v) for v in re.findall(r'id="heatmap-[^"]+"[^>]*data-limit="([^"]+)"', text)]
    assert len(limits) == 9 and len(set(limits)) == distinct
    figure = _figures(text)["heatmap-0-0"]["data"][0]
    assert figure["zmin"] == -figure["zmax"]  # symmetric: zero is white
    if scale == "shared":
        magnitudes = np.concatenate([np.abs(ATTRIBUTIONS["saliency"].sum(-1)).ravel(),
                                     np.abs(ATTRIBUTIONS["integrated <gradients>"].sum(-1)).ravel(),
                                     ATTRIBUTIONS["gradcam"].ravel()])  # fmt: skip
        assert limits[0] == pytest.approx(np.percentile(magnitudes, 99.5), rel=1e-5)


def test_max_samples_caps_the_panels_and_the_page_says_so(tmp_path):
    many = {"saliency": RNG.normal(size=(5, 6, 6))}
    text = deepexplain.report(many, None, tmp_path / "r.html", max_samples=2).read_text(encoding="utf-8")
    assert _ids(text, "heatmap-") == ["heatmap-0-0", "heatmap-1-0"] and not _ids(text, "input-")
    assert "The first 2 of 5 samples are drawn" in text and "all 5 samples" in text  # the summary takes all


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"attributions": [np.zeros((3, 8, 8))]}, r"attributions: expected a mapping method name -> array"),
        ({"attributions": {}}, r"attributions: expected at least one method"),
        ({"attributions": {"a": np.zeros(3)}}, r"attributions\['a'\]: expected shape \(N, H, W\[, C\]\) .*got \(3,\)"),
        ({"attributions": {"a": np.zeros((3, 4, 4)), "b": np.zeros((2, 4, 4))}}, r"\['b'\]: expected 3 samples"),
        ({"attributions": {"a": np.zeros((3, 4, 4)), "b": np.zeros((3, 4))}}, r"\['b'\]: expected every method to"),
        (
            {"attributions": {"a": np.where(np.eye(4) > 0, np.nan, 0)[None].repeat(3, 0)}},
            r"attributions\['a'\]: expected finite values, got NaN or inf in 3 samples \(0, 1, 2\)",
        ),
        ({"inputs": np.zeros((2, 8, 8))}, r"inputs: expected 3 samples"),
        ({"inputs": np.zeros((3, 8, 8, 2))}, r"inputs: expected images shaped .* C in \(1, 3, 4\), got \(3, 8, 8, 2\)"),
        ({"labels": [0, 1]}, r"labels: expected one integer class index per sample, shape \(3,\), got int64 of shape"),
        ({"labels": [0.5, 1, 2]}, r"labels: expected one integer class index per sample"),
        ({"predictions": np.zeros((3, 3, 1))}, r"predictions: expected the model's outputs \(N, K\) or one predicted"),
        ({"predictions": np.ones((3, 2)), "targets": 2}, r"targets: expected class indices below 2"),
        ({"labels": [0, 1, 5], "class_names": ["a", "b"]}, r"class_names: expected a name for each class index up"),
        ({"titles": "one title"}, r"titles: expected one title per sample \(3\), got a str"),
        ({"feature_names": ["x"]}, r"feature_names: expected None for image attributions"),
        ({"scale": "panel"}, r"scale: expected one of \('sample', 'method', 'shared'\), got 'panel'"),
        ({"channels": "max"}, r"channels: expected one of \('sum', 'abs', 'norm'\), got 'max'"),
        ({"percentile": 0}, r"percentile: expected a number in \(0, 100\], got 0"),
        ({"max_samples": 0}, r"max_samples: expected a positive int or None, got 0"),
        ({"overlay": "yes"}, r"overlay: expected True or False, got 'yes'"),
        ({"overlay": True}, r"overlay: expected image inputs \(N, H, W\[, C\]\) to draw the maps over, got no inputs"),
        ({"concepts": {"ids": [1]}}, r"concepts: expected a deepexplain.crp.Concepts \(from top_concepts\) or a list"),
        ({"concepts": [object()]}, r"concepts\[0\]: expected a deepexplain.crp.Concepts .* without image, layer"),
        ({"metrics": {"a": 0.5}}, r"metrics: expected a deepexplain.metrics.Evaluation or a mapping method ->"),
        ({"metrics": {"a": {"deletion": float("nan")}}}, r"metrics\['a'\]\['deletion'\]: expected finite values"),
        ({"metrics": {"a": {"deletion": "low"}}}, r"metrics\['a'\]\['deletion'\]: expected a number, per-sample"),
    ],
    ids=lambda value: None if isinstance(value, dict) else "",
)
def test_report_rejects_bad_arguments_naming_them(tmp_path, changes, message):
    arguments = {"attributions": {"a": np.zeros((3, 8, 8))}, "inputs": None} | changes
    with pytest.raises(ValueError, match=message):
        deepexplain.report(arguments.pop("attributions"), arguments.pop("inputs"), tmp_path / "r.html", **arguments)
    assert not (tmp_path / "r.html").exists()


def test_tabular_feature_names_must_fit_and_be_distinct(tmp_path):
    with pytest.raises(ValueError, match=r"feature_names: expected 5 names \(one per feature\), got 2"):
        deepexplain.report({"a": TABULAR}, None, tmp_path / "r.html", feature_names=["x", "y"])
    with pytest.raises(ValueError, match=r"feature_names: expected distinct names, got \['x'\] more than once"):
        deepexplain.report({"a": TABULAR}, None, tmp_path / "r.html", feature_names=["x", "x", "y", "z", "w"])
    with pytest.raises(ValueError, match=r"inputs: expected shape \(12, 5\)"):
        deepexplain.report({"a": TABULAR}, FEATURES[:, :3], tmp_path / "r.html")


def test_report_is_the_package_function_also_once_its_module_is_imported():
    import deepexplain.reporting

    assert deepexplain.report is deepexplain.reporting.report and callable(deepexplain.report)


# ---------------------------------------------------------------------------------------------------------------------
# In the browser


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = shutil.which("chromium") or shutil.which("chromium-browser")
    if executable is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        # playwright's own browser download needs the network: the system's chromium instead
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


def _open(browser, path):
    """The page loaded with every panel drawn, and the console errors and uncaught exceptions it gave."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())
    page.evaluate("window.deepexplainReport.renderAll()")
    page.wait_for_selector("body[data-rendered=all]", timeout=30_000)
    return SimpleNamespace(page=page, errors=errors)


@pytest.fixture(scope="module")
def images_page(browser, pages):
    opened = _open(browser, pages.images)
    yield opened
    opened.page.close()


@pytest.fixture(scope="module")
def tabular_page(browser, pages):
    opened = _open(browser, pages.tabular)
    yield opened
    opened.page.close()


def _point(page, element_id: str, x: float, y: float) -> tuple[float, float]:
    """Where the data point (x, y) of a panel is in the viewport, from plotly's axis layout."""
    return tuple(
        page.evaluate(
            """([id, x, y]) => {
                const element = document.getElementById(id), layout = element._fullLayout;
                const box = element.getBoundingClientRect();
                return [box.left + layout.xaxis._offset + layout.xaxis.l2p(x),
                        box.top + layout.yaxis._offset + layout.yaxis.l2p(y)];
            }""",
            [element_id, x, y],
        )
    )


def _hover(page, element_id: str, x: float, y: float) -> str:
    """The hover label's text with the mouse on the data point (x, y) of a panel (plotly's axis layout)."""
    page.locator(f"#{element_id}").scroll_into_view_if_needed()
    page.mouse.move(*_point(page, element_id, x, y))
    label = page.locator(f"#{element_id} .hovertext")
    label.wait_for(timeout=5_000)
    text = label.text_content()
    page.mouse.move(0, 0)
    return text


def _attribution(text: str) -> float:
    return float(re.search(r"attribution ([-+]?[\d.]+(?:e[-+]?\d+)?)", text).group(1))


def test_the_page_draws_every_panel_without_console_errors(images_page):
    page = images_page.page
    assert images_page.errors == []
    panels = page.locator(".panel")
    assert panels.count() == page.locator(".panel[data-rendered=true]").count() == len(_figures(page.content()))
    assert page.locator(".panel.heatmap[id^=heatmap-] .main-svg").count() >= N * 3  # plotly drew each one
    shown = ("#colorbar", "#overlay-toggle", "#scale-note", "#metrics", "#summary", "#concepts-0", "#caption-2")
    for element in (*shown, "#curve-0"):
        assert page.locator(element).is_visible(), element
    assert "Red" in page.locator("#scale-note").inner_text() and "own scale" in page.locator("#scale-note").inner_text()
    assert page.locator("#method-1").inner_text() == "integrated <gradients>"
    assert page.locator("#metrics tbody tr").count() == 3


@pytest.mark.parametrize(("sample", "method", "row", "column"), [(1, 0, 3, 5), (2, 1, 0, 7), (0, 2, 2, 1)])
def test_hover_shows_the_attribution_of_the_cell_under_the_cursor(images_page, sample, method, row, column):
    """The value after the channel sum (the same reduction as plot.aggregate_channels), to 4 significant digits."""
    name = list(ATTRIBUTIONS)[method]
    values = ATTRIBUTIONS[name][sample]
    expected = values[row, column].sum() if values.ndim == 3 else values[row, column]
    text = _hover(images_page.page, f"heatmap-{sample}-{method}", column, row)
    assert f"sample {sample}" in text and f"row {row}, column {column}" in text
    assert _attribution(text) == pytest.approx(expected, rel=1e-3, abs=1e-12)
    assert "colour scale ±" in text


def test_hover_over_the_input_shows_its_pixel(images_page):
    text = _hover(images_page.page, "input-1", 4, 6)
    expected = np.round(IMAGES[1, 6, 4] * 255).astype(int)
    assert [int(v) for v in re.findall(r"\d+", text.split("RGB")[1])[:3]] == expected.tolist()


def test_the_screenshot_shows_the_heatmaps_in_colour(images_page):
    imageio = pytest.importorskip("imageio.v3")
    page = images_page.page
    page.evaluate("window.scrollTo(0, 0)")
    shot = imageio.imread(io.BytesIO(page.screenshot()))[..., :3].astype(int)  # what a user sees first
    assert shot.shape[:2] == (900, 1280)
    assert (shot.min(axis=-1) < 235).mean() > 0.05  # not blank
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 200
    red = (shot[..., 0] - shot[..., 2] > 80).sum()
    blue = (shot[..., 2] - shot[..., 0] > 80).sum()
    assert red > 500 and blue > 500  # both signs of the diverging scale


def _markers(page) -> dict:
    """Panel id -> ((first row, last row), (first column, last column)) of each marker shown."""
    shown = page.evaluate(
        """() => [...document.querySelectorAll('.marker:not([hidden])')].map(
            m => [m.parentElement.id, m.dataset.rows, m.dataset.columns])"""
    )
    return {
        panel: tuple(tuple(map(int, cells.split(","))) for cells in (rows, columns)) for panel, rows, columns in shown
    }


@pytest.mark.parametrize(
    ("source", "row", "column", "expected"),
    [
        ("heatmap-1-0", 3, 5, {"input-1": ((3, 3), (5, 5)), "heatmap-1-1": ((3, 3), (5, 5)),
                               "heatmap-1-2": ((1, 1), (2, 2))}),  # the 4×4 gradcam cell over pixel (3, 5)
        ("heatmap-2-2", 1, 3, {"input-2": ((2, 3), (6, 7)), "heatmap-2-0": ((2, 3), (6, 7)),
                               "heatmap-2-1": ((2, 3), (6, 7))}),  # a gradcam cell: the 2×2 pixels under it
        ("input-0", 6, 4, {"heatmap-0-0": ((6, 6), (4, 4)), "heatmap-0-1": ((6, 6), (4, 4)),
                           "heatmap-0-2": ((3, 3), (2, 2))}),
    ],
    ids=["map", "coarse map", "input"],
)  # fmt: skip
def test_hovering_a_pixel_marks_the_same_place_in_the_other_panels_of_its_sample(
    images_page, source, row, column, expected
):
    """A real mouse on a known cell: a marker over the same cells in each sibling panel (and only there), where
    plotly's axes put those cells; gone once the mouse leaves."""
    page = images_page.page
    page.locator(f"#{source}").scroll_into_view_if_needed()
    page.mouse.move(*_point(page, source, column, row))
    page.wait_for_function("n => document.querySelectorAll('.marker:not([hidden])').length === n", arg=len(expected))
    assert _markers(page) == expected
    for panel, ((top, bottom), (left, right)) in expected.items():
        box = page.locator(f"#{panel} > .marker").bounding_box()
        x0, y0 = _point(page, panel, left - 0.5, top - 0.5)
        x1, y1 = _point(page, panel, right + 0.5, bottom + 0.5)
        assert [box["x"], box["y"], box["x"] + box["width"], box["y"] + box["height"]] == pytest.approx(
            [x0, y0, x1, y1], abs=1.5
        ), panel
    page.mouse.move(0, 0)
    page.wait_for_function("() => document.querySelectorAll('.marker:not([hidden])').length === 0")
    assert images_page.errors == []


def test_the_overlay_switch_draws_each_map_over_its_grey_input(images_page):
    """Oracle: alpha compositing. With the switch on, a cell's colour on screen is OVERLAY_OPACITY of its colour
    without the overlay plus the rest of the input's grey (Rec. 601 luma); the cursor still reads the map."""
    imageio = pytest.importorskip("imageio.v3")
    page, switch = images_page.page, images_page.page.locator("#overlay-toggle")
    assert switch.is_visible() and not switch.is_checked()
    panel = page.locator("#heatmap-1-0")
    panel.scroll_into_view_if_needed()
    page.mouse.move(0, 0)

    def cells():  # the colour at the centre of each of the 8×8 cells
        shot = imageio.imread(io.BytesIO(panel.screenshot()))[..., :3].astype(float)
        centres = ((np.arange(8) + 0.5) * shot.shape[0] / 8).astype(int)
        return shot[np.ix_(centres, centres)]

    plain = cells()
    switch.click()
    try:
        page.wait_for_selector("body[data-overlay=true]")
        traces = "id => document.getElementById(id).data.map(t => [t.name, t.visible, t.opacity])"
        assert page.evaluate(traces, "heatmap-1-2") == [["input", True, 1], [None, True, OVERLAY_OPACITY]]
        grey = 255 * IMAGES[1] @ [0.299, 0.587, 0.114]
        expected = OVERLAY_OPACITY * plain + (1 - OVERLAY_OPACITY) * grey[..., None]
        assert np.abs(cells() - expected).max() <= 3
        text = _hover(page, "heatmap-0-2", 1, 2)  # gradcam over its input: still the map's value
        assert _attribution(text) == pytest.approx(ATTRIBUTIONS["gradcam"][0, 2, 1], rel=1e-3)
    finally:
        switch.click()
        page.wait_for_selector("body[data-overlay=false]")
    assert np.abs(cells() - plain).max() <= 1
    assert images_page.errors == []


def test_tabular_report_draws_bars_and_box_plots_with_hover_values(tabular_page):
    page = tabular_page.page
    assert tabular_page.errors == []
    assert page.locator(".panel.bars").count() == 12 * 2 and page.locator("#summary-1 .main-svg").count() >= 1
    assert page.locator(".panel[data-rendered=true]").count() == page.locator(".panel").count()
    values = -TABULAR[4] / 2  # sample 4 of 'saliency': the bars sorted by |attribution|, the largest on top
    top = int(np.argmax(np.abs(values)))
    text = _hover(page, "bars-4-1", values[top] / 2, 0)
    assert f"{'abcde'[top]} = " in text
    assert _attribution(text) == pytest.approx(values[top], rel=1e-3)
    assert "±" in page.locator("#method-0").inner_text()  # scale='method': the limit under the name


# ---------------------------------------------------------------------------------------------------------------------
# deepexplain report


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A Keras 3 CNN on 6×6 grey images (conv 3×3 (2) + ReLU, dense 3), saved, with a PNG and a .npy input."""
    import keras
    from skimage import io as image_io

    folder = tmp_path_factory.mktemp("report_cli")
    inputs = keras.Input((6, 6, 1))
    features = keras.layers.Conv2D(2, 3, activation="relu", name="features")(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(features))
    keras.Model(inputs, outputs).save(folder / "tiny.keras")
    image_io.imsave(folder / "one.png", (RNG.random((6, 6)) * 255).astype(np.uint8), check_contrast=False)
    np.save(folder / "two.npy", RNG.random((6, 6, 1)).astype(np.float32))
    (folder / "classes.txt").write_text("zero\none\ntwo\n")
    return folder


def test_report_command_explains_every_input_with_each_method(tiny_model, tmp_path, capsys):
    out = tmp_path / "page" / "report.html"
    argv = ["report", str(tiny_model / "tiny.keras"), str(tiny_model / "one.png"), str(tiny_model / "two.npy"),
            "--methods", "saliency,intgrad,gradcam", "--class-names", str(tiny_model / "classes.txt"),
            "--target", "2", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert f"wrote {out} (2 inputs x 3 methods): open it in a browser" in capsys.readouterr().err
    text = out.read_text(encoding="utf-8")
    assert sorted(_ids(text, "heatmap-")) == sorted(f"heatmap-{i}-{j}" for i in range(2) for j in range(3))
    assert [re.search(r'data-method="([^"]+)"', m).group(1) for m in re.findall(r'id="method-\d"[^>]*>', text)] == [
        "saliency", "intgrad", "gradcam"]  # fmt: skip
    assert "<b>#0</b><div>one</div><div>predicted" in text and "explained 2 (two), output" in text
    figures = _figures(text)
    assert figures["heatmap-1-2"]["layout"]["width"] == 128  # the gradcam map of the conv layer, 4×4
    assert 'data-overlay="false"' in text and 'id="overlay-toggle"' in text


def test_report_command_overlay_opens_the_page_with_maps_over_their_inputs(tiny_model, tmp_path):
    out = tmp_path / "overlay.html"
    argv = ["report", str(tiny_model / "tiny.keras"), str(tiny_model / "one.png"), "--methods", "saliency",
            "--overlay", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    text = out.read_text(encoding="utf-8")
    assert 'data-overlay="true"' in text and re.search(r'id="overlay-toggle" checked', text)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--methods", "saliency,limes"], "--methods 'limes': expected one of"),
        (["--methods", "saliency,saliency"], "expected distinct method names separated by commas"),
        (["--baselines", "{png}"], "--baselines: only deepshap and expected_gradients take baselines, not 'saliency',"),
        (["--class-names", "missing.txt"], "--class-names missing.txt: no such file"),
    ],
    ids=["unknown method", "twice", "baselines for none", "no class names"],
)
def test_report_command_rejects_bad_arguments_with_usage_error(tiny_model, tmp_path, capsys, options, message):
    options = [o.format(png=tiny_model / "one.png") for o in options]
    argv = ["report", str(tiny_model / "tiny.keras"), str(tiny_model / "one.png"), "--out", str(tmp_path / "r.html")]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, *options])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r.html").exists()
