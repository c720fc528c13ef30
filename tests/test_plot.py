"""Specification of deepexplain.plot, checked on the rendered pixels where the brief speaks of colours.

Colour oracle: with the default 'RdBu_r', positive attributions are red (R above B and G), negative ones blue (B above
R and G) and zero near-white; the saturated ends of RdBu_r are dark (#67001f, #053061), hence the margins used.
PNGs are read back with matplotlib.image.imread as RGBA floats in [0, 1].
"""

import ast
import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure

from deepexplain import plot

DPI = 150  # documented resolution of every saved PNG


def is_red(rgb) -> bool:
    return rgb[0] - rgb[2] > 0.2 and rgb[0] > rgb[1]


def is_blue(rgb) -> bool:
    return rgb[2] - rgb[0] > 0.2 and rgb[2] > rgb[1]


def is_near_white(rgb) -> bool:
    return bool(np.all(np.asarray(rgb[:3]) > 0.9))


def pixel(png: np.ndarray, shape: tuple[int, int], row: int, col: int) -> np.ndarray:
    """RGB at the centre of element (row, col) of a `shape` map drawn over the whole PNG."""
    y = int((row + 0.5) / shape[0] * png.shape[0])
    x = int((col + 0.5) / shape[1] * png.shape[1])
    return png[y, x, :3]


def two_blobs(size: int = 28) -> np.ndarray:
    """Zero map with a +1 square at the top left and a -1 square at the bottom right."""
    values = np.zeros((size, size))
    values[2:12, 2:12] = 1.0
    values[16:26, 16:26] = -1.0
    return values


@pytest.fixture
def png(tmp_path):
    """Save with `draw(path)` and read the PNG back."""

    def render(draw) -> np.ndarray:
        path = tmp_path / "figure.png"
        draw(path)
        assert path.stat().st_size > 0
        return mpimg.imread(path)

    return render


# ---------------------------------------------------------------------------------------------------------------------
# heatmap


def test_heatmap_png_size_is_four_inches_on_the_longer_side_at_150_dpi(png):
    assert png(lambda p: plot.heatmap(np.ones((28, 28)), save=p)).shape == (600, 600, 4)
    assert png(lambda p: plot.heatmap(np.ones((14, 28)), save=p)).shape == (300, 600, 4)


def test_heatmap_positive_region_red_negative_region_blue_zero_near_white(png):
    values = two_blobs()
    image = png(lambda p: plot.heatmap(values, save=p))
    assert is_red(pixel(image, values.shape, 6, 6))
    assert is_blue(pixel(image, values.shape, 20, 20))
    assert is_near_white(pixel(image, values.shape, 6, 20))
    assert is_near_white(pixel(image, values.shape, 20, 6))


def test_heatmap_colour_limits_are_plus_minus_percentile_of_abs():
    values = np.random.default_rng(0).normal(size=(20, 20)) + 0.5
    ax = plot.heatmap(values, percentile=90)
    limit = np.percentile(np.abs(values), 90)
    assert ax.images[0].get_clim() == pytest.approx((-limit, limit))


def test_heatmap_all_zero_map_renders_near_white(png):
    image = png(lambda p: plot.heatmap(np.zeros((10, 10)), save=p))
    assert is_near_white(image[::50, ::50, :3].min(axis=(0, 1)))


@pytest.mark.parametrize(
    ("channels", "oracle"),
    [
        ("sum", lambda a: np.sum(a, axis=-1)),
        ("abs", lambda a: np.sum(np.abs(a), axis=-1)),
        ("norm", lambda a: np.sqrt(np.sum(a**2, axis=-1))),
    ],
)
def test_channel_aggregation_matches_numpy_and_is_what_heatmap_draws(channels, oracle):
    values = np.random.default_rng(1).normal(size=(6, 5, 3))
    np.testing.assert_allclose(plot.aggregate_channels(values, channels), oracle(values))
    drawn = plot.heatmap(values, channels=channels).images[0].get_array()
    np.testing.assert_allclose(drawn, oracle(values))


def test_two_dimensional_map_is_drawn_as_is_whatever_channels_says():
    values = np.random.default_rng(2).normal(size=(6, 5))
    np.testing.assert_array_equal(plot.heatmap(values, channels="abs").images[0].get_array(), values)


def test_seven_by_seven_map_is_rescaled_onto_a_28_by_28_uint8_image(png):
    coarse = np.zeros((7, 7))
    coarse[:3, :3] = 1.0
    coarse[4:, 4:] = -1.0
    image = np.full((28, 28, 3), 128, dtype=np.uint8)
    ax = plot.heatmap(coarse, image=image, edges=False)
    drawn = ax.images[1].get_array()  # images: grey picture, map
    assert drawn.shape == (28, 28)
    assert drawn[4, 4] > 0.9 and drawn[24, 24] < -0.9 and abs(drawn[4, 24]) < 1e-9

    rendered = png(lambda p: plot.heatmap(coarse, image=image, save=p))
    assert rendered.shape == (600, 600, 4)
    assert is_red(pixel(rendered, (28, 28), 4, 4))
    assert is_blue(pixel(rendered, (28, 28), 24, 24))
    assert is_near_white(pixel(rendered, (28, 28), 4, 24))


def test_edges_of_the_image_are_drawn_dark_over_the_map(png):
    image = np.zeros((28, 28))
    image[7:21, 7:21] = 1.0  # a bright square: Canny finds its outline
    rendered = png(lambda p: plot.heatmap(np.zeros((28, 28)), image=image, edges=True, save=p))
    outline = [pixel(rendered, (28, 28), r, c) for r in range(28) for c in (6, 7, 20, 21)]
    assert min(float(np.mean(rgb)) for rgb in outline) < 0.6
    assert is_near_white(pixel(rendered, (28, 28), 14, 14))  # inside, far from any edge
    assert is_near_white(pixel(rendered, (28, 28), 1, 1))


def test_without_edges_there_is_no_edge_layer_and_the_map_is_translucent():
    ax = plot.heatmap(np.ones((64, 64)), image=np.ones((64, 64)), edges=False)
    assert len(ax.images) == 2
    assert ax.images[1].get_alpha() < 1


def test_small_images_get_no_edge_blocks_and_an_opaque_map_by_default():
    image = np.zeros((28, 28))
    image[7:21, 7:21] = 1.0
    small = plot.heatmap(np.ones((28, 28)), image=image)
    assert len(small.images) == 2 and small.images[1].get_alpha() == 1.0  # picture, map: no edge layer
    large = plot.heatmap(np.ones((64, 64)), image=np.kron(image[:16, :16], np.ones((4, 4))))
    assert len(large.images) == 3  # picture, map, edges


def test_heatmap_title_and_colour_bar_grow_the_figure(png):
    ax = plot.heatmap(np.linspace(-1, 1, 28 * 28).reshape(28, 28), title="deeplift: class 3", colorbar=True)
    assert ax.get_title() == "deeplift: class 3"
    assert len(ax.figure.axes) == 2 and "red: for the output" in ax.figure.axes[1].get_xlabel()
    rendered = png(lambda p: plot.heatmap(np.ones((28, 28)), title="t", colorbar=True, save=p))
    assert rendered.shape[:2] == (int(150 * (4 + 0.4 + 0.7)), 600)


def test_heatmap_draws_on_a_given_ax_and_returns_it():
    ax = Figure().add_subplot()
    assert plot.heatmap(np.ones((4, 4)), ax=ax) is ax
    assert len(ax.images) == 1


def test_heatmap_without_ax_opens_no_pyplot_figure():
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    ax = plot.heatmap(np.ones((4, 4)))
    assert plt.get_fignums() == before
    assert isinstance(ax.figure, Figure)


def test_heatmap_draws_a_cam_from_zero_in_jet_over_the_colour_image():
    rng = np.random.default_rng(1)
    cam = np.maximum(rng.normal(size=(7, 7)), 0)
    image = rng.uniform(size=(28, 28, 3))
    ax = plot.heatmap(cam, image, scale="positive", percentile=100)
    assert len(ax.images) == 2  # the image and the map, no edges
    np.testing.assert_allclose(ax.images[0].get_array(), image)  # in colour
    assert ax.images[1].get_clim() == pytest.approx((0, ax.images[1].get_array().max()))
    assert ax.images[1].get_cmap().name == "jet"
    assert ax.images[1].get_array().shape == (28, 28)  # stretched onto the image


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attribution": np.ones((4, 4)), "scale": "log"}, r"scale: expected 'symmetric' or 'positive', got 'log'"),
        ({"attribution": np.ones(5)}, r"attribution: expected shape \(H, W\) or \(H, W, C\).*\(5,\)"),
        ({"attribution": np.ones((2, 4, 4, 3))}, r"attribution: .*\(2, 4, 4, 3\).*grid"),
        ({"attribution": np.ones((4, 4, 3)), "channels": "max"}, r"channels: expected one of .*'max'"),
        ({"attribution": np.ones((4, 4)), "channels": "max"}, r"channels: expected one of"),
        ({"attribution": np.ones((30, 30)), "image": np.ones((28, 28))}, r"attribution: .*\(28, 28\).*\(30, 30\)"),
        ({"attribution": np.ones((4, 4)), "image": np.ones((4, 4, 2))}, r"image: expected .*\(4, 4, 2\)"),
        ({"attribution": np.ones((4, 4)), "percentile": 0}, r"percentile: expected a number in \(0, 100\]"),
        ({"attribution": np.ones((4, 4)), "percentile": 101}, r"percentile"),
        ({"attribution": np.full((4, 4), np.nan)}, r"attribution: expected finite values"),
        ({"attribution": np.ones((4, 4)), "cmap": "no-such-map"}, r"cmap: .*'no-such-map'"),
        ({"attribution": np.ones((4, 4)), "alpha": 2.0}, r"alpha: expected an opacity in \[0, 1\]"),
    ],
)
def test_heatmap_rejects_bad_input_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot.heatmap(**kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# grid


def test_grid_has_an_image_row_then_one_row_per_method_with_labels_and_titles(png):
    images = np.random.default_rng(3).uniform(size=(3, 28, 28, 3))
    attributions = {"saliency": np.ones((3, 28, 28, 3)), "grad-cam": np.ones((3, 7, 7))}
    figure = plot.grid(attributions, images, titles=["cat", "dog", "car"])
    axes = np.array(figure.axes).reshape(3, 3)
    assert [ax.get_ylabel() for ax in axes[:, 0]] == ["input", "saliency", "grad-cam"]
    assert [ax.get_title() for ax in axes[0]] == ["cat", "dog", "car"]
    assert all(ax.images[1].get_array().shape == (28, 28) for ax in axes[2])  # coarse maps rescaled
    height, width, _ = png(lambda p: plot.grid(attributions, images, save=p)).shape
    assert 3 * 2 * DPI < height < 3 * 2 * DPI + DPI and 3 * 2 * DPI < width < 3 * 2 * DPI + 2 * DPI  # + margins


def test_grid_cells_are_coloured_by_their_own_attribution(tmp_path):
    maps = np.stack([np.ones((10, 10)), -np.ones((10, 10))])  # sample 0 all positive, sample 1 all negative
    figure = plot.grid([maps], None, save=tmp_path / "grid.png")
    rendered = mpimg.imread(tmp_path / "grid.png")
    for ax, check in zip(figure.axes, (is_red, is_blue), strict=True):
        x0, y0, width, height = ax.get_position().bounds  # figure fraction, y upwards
        row, col = int((1 - y0 - height / 2) * rendered.shape[0]), int((x0 + width / 2) * rendered.shape[1])
        assert check(rendered[row, col, :3])


def test_grid_accepts_a_list_and_row_titles_and_no_images():
    figure = plot.grid([np.ones((2, 5, 5)), np.ones((2, 5, 5))], None, row_titles=["a", "b"])
    assert len(figure.axes) == 4
    assert [figure.axes[0].get_ylabel(), figure.axes[2].get_ylabel()] == ["a", "b"]


def test_grid_colour_bar_says_how_to_read_the_colours(tmp_path):
    figure = plot.grid({"a": np.ones((2, 4, 4)), "b": -np.ones((2, 4, 4))}, np.ones((2, 4, 4)), colorbar=True,
                       cell=1.0, percentile=99.0, save=tmp_path / "g.png")  # fmt: skip
    assert len(figure.axes) == 3 * 2 + 1
    bar = figure.axes[-1]
    assert [t.get_text() for t in bar.get_xticklabels()] == ["against", "0", "for the output"]
    assert "99th percentile of its own |attribution|" in bar.get_xlabel()
    height, width = mpimg.imread(tmp_path / "g.png").shape[:2]
    assert 3 * 150 + 100 < height < 3 * 150 + 200 and 300 < width < 450
    assert figure.axes[2].get_ylabel() == "a"


def test_grid_passes_heatmap_options_on():
    figure = plot.grid({"m": np.ones((1, 4, 4, 3))}, np.ones((1, 4, 4)), channels="norm", edges=False)
    np.testing.assert_allclose(figure.axes[1].images[1].get_array(), np.sqrt(3))


@pytest.mark.parametrize(
    ("attributions", "images", "kwargs", "message"),
    [
        ({"m": np.ones((2, 4, 4))}, np.ones((3, 4, 4)), {}, r"attributions 'm': expected 3 samples .*\(2, 4, 4\)"),
        ({"m": np.ones((4, 4))}, np.ones((3, 4, 4)), {}, r"attributions 'm': expected shape \(N, H, W\)"),
        ({"m": np.ones((3, 4, 4))}, np.ones((4, 4)), {}, r"images: expected shape \(N, H, W\)"),
        ({}, np.ones((3, 4, 4)), {}, r"attributions: expected at least one method"),
        ({"m": np.ones((3, 4, 4))}, np.ones((3, 4, 4)), {"titles": ["a"]}, r"titles: expected one per sample \(3\)"),
        ({"m": np.ones((3, 4, 4))}, None, {"row_titles": ["a", "b"]}, r"row_titles: expected one per method \(1\)"),
    ],
)
def test_grid_rejects_bad_input_naming_the_argument(attributions, images, kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot.grid(attributions, images, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# text


def backgrounds(html: str) -> list[tuple[float, float, float]]:
    colours = re.findall(r"background-color: #([0-9a-f]{6})", html)
    return [tuple(int(c[i : i + 2], 16) / 255 for i in (0, 2, 4)) for c in colours]


def test_text_html_holds_every_token_escaped_with_red_positive_blue_negative_white_zero():
    result = plot.text(["good", "<bad>", "the"], [1.0, -1.0, 0.0])
    assert "good" in result.html and "&lt;bad&gt;" in result.html and "the" in result.html
    assert "<bad>" not in result.html
    positive, negative, zero = backgrounds(result.html)
    assert is_red(positive) and is_blue(negative) and is_near_white(zero)


def test_text_scale_is_symmetric_so_a_smaller_positive_score_is_paler():
    positive, negative = backgrounds(plot.text(["a", "b"], [0.25, -1.0]).html)
    assert is_blue(negative)
    assert positive[0] > positive[2] and min(positive) > 0.6  # pale red, not the saturated #67001f


def test_text_ansi_has_24_bit_background_escapes_and_is_its_str():
    result = plot.text(["a", "b"], [1.0, -1.0])
    assert result.ansi.count("\x1b[48;2;") == 2 and result.ansi.endswith("\x1b[0m")
    assert "a" in result.ansi and "b" in result.ansi
    assert str(result) == result.ansi
    assert result._repr_html_() == result.html


def test_text_save_writes_an_html_page(tmp_path):
    path = tmp_path / "text.html"
    result = plot.text(["über", "cool"], [0.5, -0.5], save=path)
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and result.html in page and "über" in page


@pytest.mark.parametrize(
    ("tokens", "scores", "message"),
    [
        (["a", "b", "c"], [1.0, 2.0], r"tokens and scores: expected the same length, got 3 tokens and 2 scores"),
        (["a", "b"], np.ones((2, 8)), r"scores: expected one score per token, shape \(2,\), got \(2, 8\)"),
        ("a b", [1.0, 2.0], r"tokens: expected a sequence of tokens, got a single str"),
        (["a"], [np.inf], r"scores: expected finite values"),
    ],
)
def test_text_rejects_bad_input_naming_the_argument(tokens, scores, message):
    with pytest.raises(ValueError, match=message):
        plot.text(tokens, scores)


# ---------------------------------------------------------------------------------------------------------------------
# bars


def tick_labels(ax) -> list[str]:
    return [label.get_text() for label in ax.get_yticklabels()]


def test_bars_one_sample_sorted_by_abs_score_most_important_on_top():
    ax = plot.bars([0.5, -2.0, 0.1, 1.2, -0.3], feature_names=list("abcde"))
    assert tick_labels(ax) == ["b", "d", "a", "e", "c"]
    bottom, top = ax.get_ylim()
    assert top < bottom  # first label drawn at the top


def test_bars_colour_positive_red_and_negative_blue():
    ax = plot.bars([0.5, -2.0, 1.2, -0.3])
    colours = {bar.get_width() > 0: bar.get_facecolor() for bar in ax.patches}
    assert is_red(colours[True]) and is_blue(colours[False])


def test_bars_top_keeps_the_most_important_features(png):
    ax = plot.bars([0.5, -2.0, 0.1, 1.2, -0.3], feature_names=list("abcde"), top=2)
    assert tick_labels(ax) == ["b", "d"] and len(ax.patches) == 2
    assert png(lambda p: plot.bars([0.5, -2.0, 0.1], save=p)).ndim == 3


def test_bars_many_samples_sorted_by_mean_abs_score_with_one_point_per_sample():
    scores = np.random.default_rng(4).normal(size=(50, 3)) * np.array([0.1, 3.0, 1.0])
    ax = plot.bars(scores, feature_names=["small", "large", "medium"])
    assert tick_labels(ax) == ["large", "medium", "small"]
    assert len(ax.collections[0].get_offsets()) == 50 * 3


def test_bars_draws_on_a_given_ax_and_saves_its_whole_figure(tmp_path):
    ax = Figure(figsize=(4, 2)).add_subplot()
    assert plot.bars([1.0, -1.0], ax=ax, save=tmp_path / "bars.png") is ax
    assert mpimg.imread(tmp_path / "bars.png").shape == (2 * DPI, 4 * DPI, 4)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"scores": np.ones((2, 3, 4))},
            r"scores: expected shape \(n_features,\) or \(N, n_features\), got \(2, 3, 4\)",
        ),
        ({"scores": np.ones(3), "feature_names": ["a"]}, r"feature_names: expected 3 names .*got 1"),
        ({"scores": np.ones(3), "top": 0}, r"top: expected a positive int, got 0"),
        ({"scores": [1.0, np.nan]}, r"scores: expected finite values"),
    ],
)
def test_bars_rejects_bad_input_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plot.bars(**kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# module


def test_module_imports_nothing_from_tensorflow():
    tree = ast.parse(Path(plot.__file__).read_text(encoding="utf-8"))
    imported = [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    imported += [node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    assert not [name for name in imported if name.split(".")[0] in ("tensorflow", "keras", "tf_keras")]


def test_curves_draw_one_line_per_method_with_its_auc():
    from deepexplain.metrics import Curve

    fractions = np.linspace(0, 1, 5)
    curves = {"a": Curve(fractions, np.array([[1.0, 0.5, 0.2, 0.1, 0.0]] * 3)),
              "b": Curve(fractions, np.array([[1.0, 0.9, 0.8, 0.5, 0.0], [1.0, 0.7, 0.6, 0.3, 0.0]]))}  # fmt: skip
    ax = plot.curves(curves, title="deletion")
    assert [line.get_label() for line in ax.lines] == ["a (AUC 0.325)", "b (AUC 0.6)"]
    np.testing.assert_allclose(ax.lines[1].get_ydata(), [1.0, 0.8, 0.7, 0.4, 0.0])
    with pytest.raises(ValueError, match="expected a Curve"):
        plot.curves({"a": np.zeros(3)})


def test_global_summary_of_tabular_attributions_box_plots_per_class():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(40, 5)) * np.array([0.1, 3.0, 1.0, 0.5, 2.0])
    labels = np.arange(40) % 2
    scores[labels == 1, 0] += 10  # feature 0 matters most for class 1 only
    figure = plot.global_summary(scores, labels, feature_names=list("abcde"), top=3)
    first, second = figure.axes
    assert first.get_title() == "class 0 (20 samples)" and second.get_title() == "class 1 (20 samples)"
    assert [t.get_text() for t in first.get_yticklabels()] == ["b", "e", "c"]  # by mean |attribution| in class 0
    assert [t.get_text() for t in second.get_yticklabels()][0] == "a"
    medians = [line.get_xdata()[0] for line in first.lines if len(line.get_xdata()) == 2 and line.get_color() != "0.4"]
    assert any(np.isclose(m, np.median(scores[labels == 0, 1])) for m in medians)
    assert plot.global_summary(scores).axes[0].get_title() == "all 40 samples"


def test_global_summary_of_images_is_the_mean_abs_map_per_class(tmp_path):
    rng = np.random.default_rng(1)
    maps = rng.normal(size=(6, 8, 8, 2))
    labels = np.array([0, 1, 0, 1, 2, 2])
    figure = plot.global_summary(maps, labels, images=rng.random((6, 8, 8)), save=tmp_path / "g.png")
    assert [ax.get_title() for ax in figure.axes] == [f"class {k} (2 samples)" for k in range(3)]
    drawn = figure.axes[1].images[-1].get_array()
    np.testing.assert_allclose(drawn, np.abs(maps[labels == 1]).sum(axis=-1).mean(axis=0))
    assert mpimg.imread(tmp_path / "g.png").std() > 0.05
    with pytest.raises(ValueError, match="labels: expected one per sample"):
        plot.global_summary(maps, labels[:3])


# ---------------------------------------------------------------------------------------------------------------------
# CAM overlays


def test_overlay_stretches_a_coarse_cam_bilinearly_and_draws_it_half_transparent_over_the_colour_image(png):
    """The oracle is alpha compositing: pixel = 0.5 * jet(map) + 0.5 * image, with the map resized by skimage."""
    from matplotlib import colormaps
    from skimage.transform import resize

    cam = np.zeros((4, 4))
    cam[0, 0] = 1.0
    image = np.zeros((64, 64, 3))
    image[..., 1] = 0.8  # green: a colour image, kept in colour
    ax = plot.heatmap(cam, image, scale="positive", overlay=True, percentile=100)
    assert len(ax.images) == 2  # picture and map: no edge layer, though the image is large enough for one
    np.testing.assert_allclose(ax.images[0].get_array(), image)
    stretched = resize(cam, (64, 64), order=1, mode="edge", anti_aliasing=False, preserve_range=True)
    np.testing.assert_allclose(ax.images[1].get_array(), stretched)
    assert ax.images[1].get_alpha() == 0.5 and ax.images[1].get_cmap().name == "jet"

    rendered = png(lambda p: plot.heatmap(cam, image, scale="positive", overlay=True, percentile=100, save=p))
    for row, col in ((0, 0), (40, 40)):
        value = stretched[row, col] / stretched.max()
        expected = 0.5 * np.asarray(colormaps["jet"](value)[:3]) + 0.5 * image[row, col]
        np.testing.assert_allclose(pixel(rendered, (64, 64), row, col), expected, atol=0.02)


def test_overlay_of_a_signed_map_uses_the_diverging_colormap_over_a_small_image():
    """Without overlay a map over an 8×8 image is opaque (the grid's input row gives the context); with it, not."""
    image = np.linspace(0, 1, 64).reshape(8, 8)
    assert plot.heatmap(two_blobs(8), image).images[1].get_alpha() == 1.0
    ax = plot.heatmap(two_blobs(8), image, overlay=True)
    assert ax.images[1].get_alpha() == 0.5 and ax.images[1].get_cmap().name == "RdBu_r"
    assert plot.heatmap(two_blobs(8), image, overlay=True, alpha=0.3).images[1].get_alpha() == 0.3


def test_grid_draws_cam_overlays_with_a_colour_bar_from_zero(tmp_path):
    images = np.random.default_rng(5).uniform(size=(2, 32, 32, 3))
    cams = np.random.default_rng(6).uniform(size=(2, 4, 4))
    figure = plot.grid({"grad-cam": cams}, images, scale="positive", overlay=True, colorbar=True, cell=1.0,
                       save=tmp_path / "cams.png")  # fmt: skip
    overlays = figure.axes[2:4]
    assert all(ax.images[1].get_alpha() == 0.5 and ax.images[1].get_array().shape == (32, 32) for ax in overlays)
    np.testing.assert_allclose(overlays[1].images[0].get_array(), images[1])  # the colour image under the map
    bar = figure.axes[-1]
    assert [t.get_text() for t in bar.get_xticklabels()] == ["0", "most active"]
    assert bar.get_xlabel() == "each panel from 0 to the 99.5th percentile of its own map"
    assert mpimg.imread(tmp_path / "cams.png").shape[1] > 2 * DPI


def test_overlay_without_an_image_is_refused():
    from deepexplain.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=r"overlay: expected an image to draw the map over, got image=None"):
        plot.heatmap(np.ones((4, 4)), overlay=True)


# ---------------------------------------------------------------------------------------------------------------------
# waterfall and force (shap's views of one prediction)

SHAP_VALUES = np.array([0.5, -2.0, 0.1, 1.2, -0.3])  # Σ = -0.5
NAMES = ["age", "income", "height", "hours", "children"]


def figure_texts(figure) -> list[str]:
    from matplotlib.text import Text

    return [t.get_text() for t in figure.findobj(Text) if t.get_visible() and t.get_text()]


def test_waterfall_rows_by_abs_attribution_with_feature_values_in_the_labels():
    ax = plot.waterfall(SHAP_VALUES, features=[42, 1e5, 1.85, 40, 2], feature_names=NAMES)
    assert tick_labels(ax) == ["income = 100000", "hours = 40", "age = 42", "children = 2", "height = 1.85"]
    bottom, top = ax.get_ylim()
    assert top < bottom  # the first row at the top
    assert [t.get_text() for t in ax.texts] == ["-2", "+1.2", "+0.5", "-0.3", "+0.1"]  # each bar's value


def test_waterfall_bars_cumulate_from_the_base_value_at_the_bottom_to_the_output_at_the_top():
    base = 0.25
    ax = plot.waterfall(SHAP_VALUES, feature_names=NAMES, base_value=base, output=base + SHAP_VALUES.sum())
    bars = ax.patches  # top row first
    assert len(bars) == 5
    np.testing.assert_allclose([b.get_width() for b in bars], [-2.0, 1.2, 0.5, -0.3, 0.1])
    assert bars[-1].get_x() == pytest.approx(base)  # the bottom row starts at the base value
    for upper, lower in zip(bars[:-1], bars[1:], strict=True):  # each row starts where the one below it ends
        assert upper.get_x() == pytest.approx(lower.get_x() + lower.get_width())
    assert bars[0].get_x() + bars[0].get_width() == pytest.approx(base + SHAP_VALUES.sum())
    assert is_red(bars[1].get_facecolor()) and is_blue(bars[0].get_facecolor())
    texts = figure_texts(ax.figure)
    assert "f(baseline) = 0.25" in texts and "f(x) = -0.25" in texts
    assert not any("gap" in t for t in texts)  # complete: nothing to report


def test_waterfall_collapses_all_but_top_minus_one_features_into_one_row_as_shap_max_display():
    values = np.arange(1, 13, dtype=float) * (-1) ** np.arange(12)  # |values| 1..12, alternating signs
    ax = plot.waterfall(values, top=4)
    assert tick_labels(ax) == ["feature 11", "feature 10", "feature 9", "9 other features"]
    assert ax.patches[-1].get_width() == pytest.approx(values[:9].sum())
    assert len(plot.waterfall(values[:4], top=4).patches) == 4  # no row of others when all fit
    assert tick_labels(plot.waterfall(values, top=1)) == ["12 other features"]


def test_waterfall_rows_and_collapsed_row_match_shap():
    """The oracle: shap.plots.waterfall's rows (top to bottom) for the same values and max_display."""
    shap = pytest.importorskip("shap")
    import matplotlib.pyplot as plt

    values = np.random.default_rng(7).normal(size=12)
    names = [f"f{i}" for i in range(12)]
    explanation = shap.Explanation(values=values, base_values=0.3, feature_names=names)
    try:
        theirs = shap.plots.waterfall(explanation, max_display=5, show=False)
        ticks = zip(theirs.get_yticks(), theirs.get_yticklabels(), strict=True)
        rows = {round(y): label.get_text() for y, label in ticks}  # shap sets each tick twice, 1e-8 apart
        expected = [rows[y] for y in sorted(rows, reverse=True)]
    finally:
        plt.close("all")
    assert tick_labels(plot.waterfall(values, feature_names=names, base_value=0.3, top=5)) == expected


def test_waterfall_states_the_completeness_gap_when_base_plus_sum_misses_the_output():
    ax = plot.waterfall(SHAP_VALUES, base_value=1.0, output=1.0, title="sample 3")  # Σ = -0.5: a gap of +0.5
    assert ax.get_title() == "sample 3\ncompleteness gap: f(x) − f(baseline) − Σ attribution = +0.5"
    assert ax.patches[0].get_x() + ax.patches[0].get_width() == pytest.approx(0.5)  # the bars end at base + Σ
    assert [line.get_xdata()[0] for line in ax.lines[-3:]] == pytest.approx([1.0, 1.0, 0.5])  # base, f(x), end
    ax = plot.waterfall(SHAP_VALUES, base_value=1.0, output=0.5 + 1e-5)  # within float noise
    assert ax.get_title() == ""


def test_waterfall_without_a_base_value_infers_it_from_the_output_or_starts_at_zero():
    ax = plot.waterfall(SHAP_VALUES, output=2.0)
    assert ax.patches[-1].get_x() == pytest.approx(2.5)
    assert "f(x) − Σ attribution = 2.5" in figure_texts(ax.figure)
    ax = plot.waterfall(SHAP_VALUES)
    assert ax.patches[-1].get_x() == 0.0
    assert {"0", "Σ attribution = -0.5"} <= set(figure_texts(ax.figure))


def test_waterfall_png_shows_red_and_blue_bars_at_its_documented_size(png):
    rendered = png(lambda p: plot.waterfall(SHAP_VALUES, feature_names=NAMES, base_value=0.0, save=p))
    assert rendered.shape[:2] == (int(DPI * (1.6 + 0.35 * 5)), 7 * DPI)
    rgb = rendered[..., :3].reshape(-1, 3)
    assert np.sum((rgb[:, 0] - rgb[:, 2]) > 0.3) > 1000 and np.sum((rgb[:, 2] - rgb[:, 0]) > 0.3) > 1000


def test_force_stacks_red_segments_up_to_the_output_and_blue_ones_beyond_it():
    base = 0.25
    output = base + SHAP_VALUES.sum()
    ax = plot.force(SHAP_VALUES, features=[42, 1e5, 1.85, 40, 2], feature_names=NAMES, base_value=base,
                    output=output)  # fmt: skip
    red = [p for p in ax.patches if is_red(p.get_facecolor())]
    blue = [p for p in ax.patches if is_blue(p.get_facecolor())]
    assert len(red) == 3 and len(blue) == 2
    np.testing.assert_allclose([p.get_width() for p in red], [1.2, 0.5, 0.1])  # largest next to the output
    np.testing.assert_allclose([p.get_width() for p in blue], [2.0, 0.3])
    assert red[0].get_x() + red[0].get_width() == pytest.approx(output) and blue[0].get_x() == pytest.approx(output)
    for near, far in zip(red[:-1], red[1:], strict=True):  # contiguous leftwards
        assert far.get_x() + far.get_width() == pytest.approx(near.get_x())
    # the red part is longer than the blue one by f(x) - f(baseline)
    assert sum(p.get_width() for p in red) - sum(p.get_width() for p in blue) == pytest.approx(output - base)
    texts = figure_texts(ax.figure)
    assert {"f(x) = -0.25", "f(baseline) = 0.25", "higher ", " lower"} <= set(texts)
    assert {"income = 100000", "hours = 40", "age = 42", "children = 2"} <= set(texts)
    assert "height = 1.85" not in texts  # 0.1 of Σ|attribution| = 4.1 is under 5%: too narrow to label


def test_force_collapses_the_rest_into_one_segment_per_sign():
    values = np.array([3.0, -2.5, 0.4, -0.3, 0.2, -0.1])
    ax = plot.force(values, top=3)
    widths = sorted(p.get_width() for p in ax.patches)
    assert widths == pytest.approx([0.4, 0.6, 2.5, 3.0])  # 0.3 + 0.1 against, 0.4 + 0.2 for
    assert {"2 other features"} <= set(figure_texts(ax.figure))


def test_force_states_the_completeness_gap_and_marks_where_the_attributions_end(png):
    ax = plot.force(SHAP_VALUES, base_value=1.0, output=1.0)
    assert ax.get_title() == "completeness gap: f(x) − f(baseline) − Σ attribution = +0.5"
    assert "f(baseline) + Σ attribution = 0.5" in figure_texts(ax.figure)
    rendered = png(lambda p: plot.force(SHAP_VALUES, base_value=1.0, save=p))
    assert rendered.shape[:2] == (int(DPI * 2.6), 9 * DPI)


@pytest.mark.parametrize("draw", [plot.waterfall, plot.force])
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"attribution": np.ones((2, 3))}, r"attribution: expected one sample's .*, got \(2, 3\) \(pass one row"),
        ({"attribution": []}, r"attribution: expected one sample's attributions.*got \(0,\)"),
        ({"attribution": [1.0, np.nan]}, r"attribution: expected finite values, got 1 NaN or inf"),
        ({"attribution": [1.0, 2.0], "top": 0}, r"top: expected a positive int, got 0"),
        ({"attribution": [1.0, 2.0], "top": 2.5}, r"top: expected a positive int, got 2.5"),
        ({"attribution": [1.0, 2.0], "feature_names": ["a"]}, r"feature_names: expected 2 names .*got 1"),
        ({"attribution": [1.0, 2.0], "features": [1, 2, 3]}, r"features: expected .* shape \(2,\), got \(3,\)"),
        ({"attribution": [1.0, 2.0], "base_value": np.inf}, r"base_value: expected a finite number .*got inf"),
        ({"attribution": [1.0, 2.0], "output": [1.0, 2.0]}, r"output: expected one number .*shape \(2,\)"),
        ({"attribution": [1.0, 2.0], "output": "high"}, r"output: expected a number .*'high'"),
    ],
)
def test_waterfall_and_force_reject_bad_input_naming_the_argument(draw, kwargs, message):
    from deepexplain.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match=message):
        draw(**kwargs)
