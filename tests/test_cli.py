"""The command line: ``python -m deepexplain demo`` and ``explain``, and the pieces ``explain`` is built from.

Both commands run in-process through :func:`deepexplain.cli.main` (neither changes TensorFlow's global state: the
demo builds its own graph and session, ``explain`` traces a Keras model into a private graph), which saves a
TensorFlow import (~5 s) per run; ``python -m deepexplain`` itself is run for ``--help``. ``explain`` is checked
end to end on small Keras 3 CNNs saved as ``.keras``: its ``.npy`` files must equal ``deepexplain.explain`` on the
same (resized) inputs.
"""

import contextlib
import io as text_io
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from skimage import io
from skimage.transform import resize
from skimage.util import img_as_float

import deepexplain
from deepexplain.cli import explain_files, main, read_input
from deepexplain.tensorflow import METHODS
from deepexplain.tensorflow.methods import ALIASES

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg")
COMPLETENESS = {"intgrad", "deeplift", "deepshap", "expected_gradients"}
# the demo skips other libraries' aliases and the transformer methods
SHOWN = [name for name in METHODS if name not in ALIASES and not getattr(METHODS[name], "reads_attention", False)]


def _deepexplain(*args, env=ENV, timeout=180):
    command = [sys.executable, "-m", "deepexplain", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def digits_cache(tmp_path_factory):
    """One XDG_CACHE_HOME per test session (tests/test_examples.py uses it too): the digits CNN is trained once."""
    folder = tmp_path_factory.getbasetemp() / "xdg_cache"
    folder.mkdir(exist_ok=True)
    return folder


# ---------------------------------------------------------------------------------------------------------------------
# demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """``deepexplain demo --out OUT --samples 2``: (exit status, stdout, stderr, OUT, cache folder)."""
    out, cache = tmp_path_factory.mktemp("demo"), digits_cache(tmp_path_factory)
    stdout, stderr = text_io.StringIO(), text_io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        patch.setenv("XDG_CACHE_HOME", str(cache))
        status = main(["demo", "--out", str(out), "--samples", "2"])
    assert status == 0, f"demo failed:\n{stdout.getvalue()}\n{stderr.getvalue()[-4000:]}"
    return SimpleNamespace(stdout=stdout.getvalue(), stderr=stderr.getvalue(), out=out, cache=cache)


def _table(stdout: str) -> dict:
    """method -> (seconds, max |completeness error| or None), from the demo's table."""
    rows = {}
    for line in stdout.splitlines():
        match = re.fullmatch(r"(\S+)\s+(\d+\.\d+)\s+(\S+)", line.strip())
        if match:
            name, seconds, error = match.groups()
            rows[name] = (float(seconds), None if error == "-" else float(error))
    return rows


def _report_figures(text: str) -> dict:
    """The figure specs of a report page (id -> {data, layout})."""
    import json

    found = re.search(r'<script type="application/json" id="deepexplain-figures">(.*?)</script>', text, re.S)
    return json.loads(found.group(1))


def test_demo_table_lists_every_method_in_the_registry(demo):
    assert list(_table(demo.stdout)) == SHOWN


def test_demo_reports_completeness_exactly_where_promised(demo):
    """'-' for methods without the promise; DeepLIFT and DeepSHAP sum to f(x) - f(baseline) to float precision."""
    table = _table(demo.stdout)
    assert {name for name, (_, error) in table.items() if error is not None} == COMPLETENESS
    assert table["deeplift"][1] < 1e-4
    assert table["deepshap"][1] < 1e-4
    assert table["intgrad"][1] < 0.5  # 100 Riemann steps on a small ReLU CNN


def test_demo_writes_the_methods_grid_and_the_overview(demo):
    """One input row and one row per method, two columns of 1-inch cells at 150 dpi (plus margins for the labels,
    the titles and a colour bar): blue on the bar's left, red on its right."""
    from deepexplain.demo import OVERVIEW_METHODS

    for name, rows in (("methods.png", len(SHOWN) + 1), ("overview.png", len(OVERVIEW_METHODS) + 1)):
        image = io.imread(demo.out / name)
        assert rows * 150 < image.shape[0] < rows * 150 + 200 and 2 * 150 < image.shape[1] < 2 * 150 + 400
        assert image[..., :3].std() > 10
    overview = io.imread(demo.out / "overview.png")[..., :3].astype(int)
    bar = overview[-120:]  # the colour bar's strip: its darkest blue left of its darkest red
    blue = np.argwhere((bar[..., 2] - bar[..., 0]) > 60)
    red = np.argwhere((bar[..., 0] - bar[..., 2]) > 60)
    assert len(blue) and len(red) and blue[:, 1].mean() < red[:, 1].mean()
    assert "drawing" in demo.stderr


def test_demo_draws_the_picture_the_readme_shows(demo):
    """docs/overview.png, shown in the README, is what the README's command (``deepexplain demo --out demo/``, six
    digits) draws. The fixture's demo explains the first two of those digits (the same two: samples cycle through
    the classes and each panel has its own colour scale), and plot.grid puts panel j at the same pixels whatever the
    number of columns, so its picture is the README's left part, row labels, column titles and panels, up to the
    colour bar (whose width follows the columns). Oracle: mean |pixel difference| (RGB in [0, 1]) under 0.01 and
    under 1% of the pixels off by more than 0.1, which allows for another CPU's float rounding or another
    matplotlib's text rendering; today the two are pixel-identical."""
    from deepexplain.cli import build_parser

    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert '<img src="docs/overview.png"' in readme and "python -m deepexplain demo --out demo/ " in readme
    columns = build_parser().parse_args(["demo"]).samples  # the README's command: the default number of digits
    ours = io.imread(demo.out / "overview.png")[..., :3] / 255.0
    shown = io.imread(Path(__file__).parents[1] / "docs" / "overview.png")[..., :3] / 255.0
    regenerate = "docs/overview.png is stale: run `python -m deepexplain demo --out demo/` and copy demo/*.png to docs/"
    assert shown.shape == (ours.shape[0], ours.shape[1] + (columns - 2) * 150, 3), regenerate  # 1-inch cells
    bar, margin = 120, 15  # the colour bar's strip (0.8 inch) and the right margin (0.1 inch), at 150 dpi
    difference = np.abs(ours[:-bar, :-margin] - shown[: ours.shape[0] - bar, : ours.shape[1] - margin]).max(axis=-1)
    assert difference.mean() < 0.01 and np.mean(difference > 0.1) < 0.01, regenerate


def test_demo_writes_the_interactive_report_of_every_method(demo):
    """report.html: per digit its input and one heatmap per method, the CRP concepts of both digits, and a table of
    every method's deletion and insertion areas, seconds (and completeness); it is opened in a browser by
    tests/test_report.py's pages, which are built the same way."""
    from deepexplain.demo import OVERVIEW_METHODS

    text = (demo.out / "report.html").read_text(encoding="utf-8")
    heatmaps = set(re.findall(r'id="(heatmap-\d+-\d+)"', text))
    assert heatmaps == {f"heatmap-{i}-{j}" for i in range(2) for j in range(len(SHOWN))}
    ids = set(re.findall(r'id="([^"]+)"', text))
    assert {"input-0", "input-1", "colorbar", "overlay-toggle", "summary", "metrics"} <= ids
    assert {"concepts-0", "concepts-1", "concept-1-3", "reference-1-3-3"} <= ids  # 4 concepts, 4 references each
    assert "layer conv2" in text
    head = re.search(r"<thead>(.*?)</thead>", text, re.S).group(1)
    assert re.findall(r'data-metric="([^"]+)"', head) == [
        "deletion (AUC)", "insertion (AUC)", "seconds", "max |completeness error|"]  # fmt: skip
    rows = dict(re.findall(r'<tr data-method="([^"]+)">(.*?)</tr>', text))
    assert list(rows) == SHOWN
    number = r"<td[^>]*>(-?[\d.]+(?:e[-+]?\d+)?) ± "  # a mean ± standard deviation cell
    areas = {method: [float(v) for v in re.findall(number, row)[:2]] for method, row in rows.items()}
    assert all(len(pair) == 2 for pair in areas.values())  # deletion and insertion measured for every method
    # measured, not made up: the gradient-times-input family beats random ordering on both curves
    assert areas["deeplift"][0] < areas["random"][0] and areas["deeplift"][1] > areas["random"][1]
    curves = _report_figures(text)["curve-0"]["data"]
    assert sorted(t["name"].split(" (AUC")[0] for t in curves) == sorted([*OVERVIEW_METHODS, "random"])
    assert not re.search(r"<script[^>]*\ssrc=", text)
    assert f"wrote {demo.out / 'report.html'} (every method, interactive)" in demo.stderr


def test_demo_prints_the_seconds_of_each_phase(demo):
    phases = re.search(r"demo: ([\d.]+) s \((.*)\)", demo.stderr)
    assert phases, demo.stderr[-2000:]
    seconds = dict(part.rsplit(" ", 1) for part in phases.group(2).split(", "))
    assert list(seconds) == ["model", "explain", "concepts", "metrics", "overview.png", "methods.png", "report.html"]
    assert sum(map(float, seconds.values())) == pytest.approx(float(phases.group(1)), abs=0.1 * len(seconds))


def test_explain_all_gives_the_same_maps_in_fresh_graphs_as_in_one(demo):
    """Fresh copies of the network per few methods (faster compiles) change nothing: a tensor argument (gradcam's
    layer) is found by name in each copy; the model's own graph gets no op."""
    from deepexplain.demo import digits_cnn, explain_all, load_digits_data

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("XDG_CACHE_HOME", str(demo.cache))
        data = load_digits_data()
        model = digits_cnn(data, log=None)
    try:
        xs, ys = data.x_test[:2], np.eye(10, dtype=np.float32)[[3, 5]]
        arguments = {"saliency": {}, "gradcam": {"layer": model.features}, "deeplift": {}}
        ops = len(model.graph.get_operations())
        one, _ = explain_all(model, xs, ys, arguments, methods_per_graph=3)
        each, reports = explain_all(model, xs, ys, arguments, methods_per_graph=1)
        assert len(model.graph.get_operations()) == ops
    finally:
        model.close()
    assert [r.method for r in reports] == list(arguments)
    for name in arguments:
        np.testing.assert_allclose(each[name], one[name], rtol=1e-6, atol=1e-7, err_msg=name)


def test_demo_caches_the_trained_weights(demo):
    assert len(list((demo.cache / "deepexplain").glob("digits_cnn-*.npz"))) == 1
    assert f"wrote {demo.out / 'overview.png'} and {demo.out / 'methods.png'}" in demo.stderr


# ---------------------------------------------------------------------------------------------------------------------
# help


def test_help_documents_both_commands_without_importing_tensorflow():
    code = (
        "import sys\n"
        "from deepexplain.cli import build_parser\n"
        "print(build_parser().format_help())\n"
        "print('tensorflow imported:', 'tensorflow' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout and "explain" in result.stdout
    assert "tensorflow imported: False" in result.stdout


def test_python_m_deepexplain_explain_help():
    result = _deepexplain("explain", "--help", timeout=60)
    assert result.returncode == 0, result.stderr
    for text in ("MODEL", "INPUT", "--method", "--target", "--baselines", "--out", ".npy", "Keras", "strip_softmax"):
        assert text in result.stdout


# ---------------------------------------------------------------------------------------------------------------------
# explain, end to end on saved Keras 3 models


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """A Keras 3 CNN (8×8×1 → conv 3×3 (4) + ReLU → max-pool 2 → dense 10 logits, seeded random weights) and the same
    network ending in a softmax, both saved as .keras; two inputs, a 13×11 grey PNG (resized to 8×8 when read) and an
    8×8×1 .npy; and a .npy of 3 reference samples."""
    import keras

    folder = tmp_path_factory.mktemp("keras_cli")

    def cnn(activation=None):
        return keras.Sequential(
            [
                keras.Input((8, 8, 1)),
                keras.layers.Conv2D(
                    4, 3, activation="relu", kernel_initializer=keras.initializers.HeNormal(0), name="conv"
                ),
                keras.layers.MaxPooling2D(2),
                keras.layers.Flatten(),
                keras.layers.Dense(
                    10, activation=activation, kernel_initializer=keras.initializers.HeNormal(1), name="dense"
                ),
            ]
        )

    logits, softmax = cnn(), cnn("softmax")
    softmax.set_weights(logits.get_weights())
    logits.save(folder / "logits.keras")
    softmax.save(folder / "softmax.keras")
    rng = np.random.default_rng(0)
    io.imsave(folder / "digit.png", (rng.random((13, 11)) * 255).astype(np.uint8), check_contrast=False)
    np.save(folder / "noise.npy", rng.random((8, 8, 1)).astype(np.float32))
    np.save(folder / "references.npy", rng.random((3, 8, 8, 1)).astype(np.float32))
    # the inputs as the model sees them: the PNG scaled to [0, 1] and resized (anti-aliased) to 8×8
    image = resize(img_as_float(io.imread(folder / "digit.png")), (8, 8), anti_aliasing=True)[..., None]
    xs = np.stack([image.astype(np.float32), np.load(folder / "noise.npy")])
    return SimpleNamespace(folder=folder, model=logits, xs=xs)


@pytest.mark.parametrize(
    ("saved", "options", "oracle"),
    [
        ("logits", [], ("deeplift", "max", {})),
        ("softmax", ["--method", "intgrad", "--target", "3"], ("intgrad", 3, {})),
        ("logits", ["--method", "deepshap"], ("deeplift", "max", {})),  # one all-zeros baseline: DeepLIFT's
        ("logits", ["--method", "deepshap", "--baselines", "{references}"], ("deepshap", "max", "references")),
        ("logits", ["--method", "lrp.epsilon_gamma_box"], ("lrp.epsilon_gamma_box", "max", {"low": 0, "high": 1})),
        (
            "logits",
            ["--method", "deep_taylor.bounded", "--bounds", "-1", "2"],
            ("deep_taylor.bounded", "max", {"low": -1, "high": 2}),
        ),
        ("softmax", ["--method", "gradcam"], ("gradcam", "max", {})),  # the last maps: the max-pool's
        ("logits", ["--method", "gradcam++", "--layer", "conv"], ("gradcam++", "max", {"layer": "conv"})),
    ],
    ids=[
        "deeplift max",
        "softmax stripped, intgrad class 3",
        "deepshap zeros",
        "deepshap --baselines",
        "box rule, images' range",
        "box rule --bounds",
        "gradcam, default layer",
        "gradcam++ --layer",
    ],
)
def test_explain_writes_what_deepexplain_explain_computes(keras_files, tmp_path, capsys, saved, options, oracle):
    """``deepexplain explain MODEL digit.png noise.npy``: per input a heatmap PNG and the attributions of
    ``deepexplain.explain`` on the in-memory model (the softmax model's logits are the logits model)."""
    folder, out = keras_files.folder, tmp_path / "out"
    options = [o.format(references=folder / "references.npy") for o in options]
    argv = ["explain", str(folder / f"{saved}.keras"), str(folder / "digit.png"), str(folder / "noise.npy")]
    assert main([*argv, *options, "--out", str(out)]) == 0
    stderr = capsys.readouterr().err
    assert f"wrote 4 files to {out}" in stderr
    assert ("strip_softmax" in stderr) == (saved == "softmax")

    method, target, kwargs = oracle
    if kwargs == "references":
        kwargs = {"baselines": np.load(folder / "references.npy")}
    expected = deepexplain.explain(method, keras_files.model, keras_files.xs, target=target, **kwargs)
    assert sorted(p.name for p in out.iterdir()) == ["digit.npy", "digit.png", "noise.npy", "noise.png"]
    for name, attributions in zip(["digit", "noise"], expected, strict=True):
        np.testing.assert_allclose(np.load(out / f"{name}.npy"), attributions, rtol=1e-5, atol=1e-6)
        picture = io.imread(out / f"{name}.png")
        assert picture.ndim == 3 and picture.shape[2] in (3, 4) and picture[..., :3].std() > 10


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--target", "12"], r"target units must be in \[0, 10\)"),
        (["--method", "shapley_exact"], "accepts at most 16 players, got 64"),
        (["--method", "deepshap", "--baselines", "{flat}"], "expected reference samples shaped"),  # (2, 64)
        (["--method", "gradcam", "--layer", "dense"], r"layer 'dense' outputs \(None, 10\)"),
        (["--method", "gradcam", "--layer", "conf"], r"'conf' is not a layer of the model \(did you mean 'conv'"),
    ],
    ids=["target out of range", "too many players", "baselines of the wrong shape", "dense layer", "no such layer"],
)
def test_explain_reports_what_it_cannot_explain_with_status_1(keras_files, tmp_path, capsys, options, message):
    folder = keras_files.folder
    np.save(tmp_path / "flat.npy", np.zeros((2, 64), np.float32))
    options = [o.format(flat=tmp_path / "flat.npy") for o in options]
    argv = ["explain", str(folder / "logits.keras"), str(folder / "digit.png"), "--out", str(tmp_path / "out")]
    assert main([*argv, *options]) == 1
    assert re.search(f"^deepexplain explain: .*{message}", capsys.readouterr().err, re.M)
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------------------------------
# explain: argument checks


@pytest.fixture
def files(tmp_path):
    model = tmp_path / "model.keras"
    model.write_bytes(b"not a real model")
    image = tmp_path / "digit.png"
    io.imsave(image, (np.random.default_rng(0).random((16, 16)) * 255).astype(np.uint8), check_contrast=False)
    return model, image


def test_explain_says_when_the_model_does_not_load(files, tmp_path, capsys):
    model, image = files
    assert main(["explain", str(model), str(image), "--out", str(tmp_path / "out")]) == 1
    assert f"deepexplain explain: MODEL {model}: cannot load it" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["missing.keras", "{image}"], "MODEL missing.keras: no such file"),
        (["{model}", "missing.png"], "INPUT missing.png: no such file"),
        (["{model}", "{model}"], "expected an image"),
        (["{model}", "{image}", "--method", "limes"], "expected one of zero, saliency"),
        (["{model}", "{image}", "--target", "first"], "expected 'max' or a non-negative class index"),
        (["{model}", "{image}", "--baselines", "{image}"], "only deepshap and expected_gradients take baselines"),
        (["{model}", "{image}", "--method", "deepshap", "--baselines", "{image}"], "expected an existing .npy file"),
        (["{model}", "{image}", "--bounds", "0", "1"], "--bounds: only lrp.bounded, lrp.epsilon_gamma_box"),
        (["{model}", "{image}", "--layer", "conv"], "--layer: only gradcam, gradcam++, layercam, scorecam"),
    ],
    ids=[
        "missing model",
        "missing input",
        "not an image",
        "unknown method",
        "bad target",
        "baselines",
        "not npy",
        "bounds",
        "layer",
    ],
)
def test_explain_rejects_bad_arguments_with_usage_error(files, capsys, arguments, message):
    model, image = files
    argv = ["explain"] + [a.format(model=model, image=image) for a in arguments]
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# explain: reading inputs and writing outputs (model-independent)


def test_read_input_fits_an_rgb_image_to_a_grey_model_input(tmp_path):
    path = tmp_path / "rgb.png"
    io.imsave(path, np.full((32, 24, 3), 255, np.uint8), check_contrast=False)
    x = read_input(path, (8, 8, 1))
    assert x.shape == (8, 8, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x, 1.0, atol=1e-6)


def test_read_input_drops_alpha_and_makes_grey_rgb(tmp_path):
    rgba, grey = tmp_path / "rgba.png", tmp_path / "grey.png"
    io.imsave(rgba, np.zeros((10, 10, 4), np.uint8), check_contrast=False)
    io.imsave(grey, np.zeros((10, 10), np.uint8), check_contrast=False)
    assert read_input(rgba, (10, 10, 3)).shape == (10, 10, 3)
    assert read_input(grey, (None, None, 3)).shape == (10, 10, 3)


def test_read_input_takes_npy_as_stored_and_checks_its_shape(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.arange(12.0).reshape(1, 3, 4))
    np.testing.assert_array_equal(read_input(path, (3, 4)), np.arange(12.0).reshape(3, 4))
    with pytest.raises(ValueError, match=r"expected an array of shape \(4, 3\)"):
        read_input(path, (4, 3))


def test_explain_files_writes_a_heatmap_and_the_attributions_per_input(tmp_path, files):
    """With a linear 'model' f(x) = sum(x * w), grad*input is x * w: the .npy holds exactly that."""
    _, image = files
    other = tmp_path / "sub" / "digit.png"  # same stem as `image`: must not overwrite its outputs
    other.parent.mkdir()
    io.imsave(other, np.zeros((8, 8), np.uint8), check_contrast=False)
    weights = np.random.default_rng(1).normal(size=(8, 8, 1)).astype(np.float32)
    targets = []

    def attribute(xs, target):
        targets.append(target)
        return xs * weights

    written = explain_files([image, other], (8, 8, 1), attribute, target=1, out=tmp_path / "out")
    assert targets == [1]  # one call for all inputs, the target passed through
    assert [p.name for p in written] == ["digit.png", "digit.npy", "digit-2.png", "digit-2.npy"]
    np.testing.assert_allclose(np.load(written[1]), read_input(image, (8, 8, 1)) * weights, rtol=1e-6)
    assert io.imread(written[0]).shape[2] in (3, 4)


def test_explain_files_draws_bars_for_a_feature_vector(tmp_path):
    path = tmp_path / "row.npy"
    np.save(path, np.arange(5.0))
    written = explain_files([path], (5,), lambda xs, target: xs * (xs == xs.max()), out=tmp_path / "out")
    assert [p.name for p in written] == ["row.png", "row.npy"]
    np.testing.assert_array_equal(np.load(written[1]), [0, 0, 0, 0, 4])


def test_explain_files_refuses_inputs_of_different_sizes_before_writing(tmp_path):
    """A model with free height and width takes each image at its size, but one batch needs one size."""
    small, large = tmp_path / "small.png", tmp_path / "large.png"
    io.imsave(small, np.zeros((8, 8), np.uint8), check_contrast=False)
    io.imsave(large, np.zeros((9, 8), np.uint8), check_contrast=False)
    with pytest.raises(ValueError, match="the inputs differ in shape"):
        explain_files([small, large], (None, None, 1), lambda xs, target: xs, out=tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_cam_methods_of_the_command_line_are_those_of_the_registry():
    from deepexplain.cli import CAM_METHODS

    assert list(CAM_METHODS) == [name for name, m in METHODS.items() if getattr(m, "uses_layer", False)]


def _bad_inputs(folder):
    good = folder / "digit.png"
    content = good.read_bytes()
    (folder / "truncated.png").write_bytes(content[: len(content) // 2])
    (folder / "text.png").write_text("not an image")
    (folder / "garbage.npy").write_bytes(b"not an array")
    np.save(folder / "wrong.npy", np.zeros((5, 5), np.float32))
    return {
        "truncated.png": "not a readable image",
        "text.png": "not a readable image",
        "garbage.npy": "not a readable .npy array",
        "wrong.npy": r"expected an array of shape \(8, 8, 1\)",
    }


def test_explain_names_a_bad_input_file_in_one_line_with_status_2(keras_files, tmp_path, capsys):
    folder = keras_files.folder
    (tmp_path / "digit.png").write_bytes((folder / "digit.png").read_bytes())
    for name, message in _bad_inputs(tmp_path).items():
        status = main(["explain", str(folder / "logits.keras"), str(tmp_path / name), "--out", str(tmp_path / "out")])
        error = capsys.readouterr().err.strip().splitlines()
        assert status == 2, error
        assert re.match(f"deepexplain explain: INPUT {re.escape(str(tmp_path / name))}: {message}", error[-1])
        assert not any("Traceback" in line for line in error)
        assert not (tmp_path / "out").exists()


def test_grey_and_alpha_images_fit_an_rgb_or_grey_model(tmp_path):
    from deepexplain.files import read_input

    pixels = (np.random.default_rng(0).random((10, 10, 2)) * 255).astype(np.uint8)
    io.imsave(tmp_path / "la.png", pixels, check_contrast=False)
    grey = read_input(tmp_path / "la.png", (10, 10, 1))
    np.testing.assert_allclose(grey[..., 0], pixels[..., 0] / 255, atol=1e-6)  # the alpha channel dropped
    rgb = read_input(tmp_path / "la.png", (10, 10, 3))
    assert rgb.shape == (10, 10, 3) and np.array_equal(rgb[..., 0], rgb[..., 2])


def test_the_command_line_hides_tensorflows_start_up_lines_unless_asked(keras_files, tmp_path):
    folder = keras_files.folder
    arguments = ["explain", str(folder / "logits.keras"), str(folder / "digit.png"), "--out", str(tmp_path / "out")]
    quiet = _deepexplain(*arguments, env={k: v for k, v in ENV.items() if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert quiet.returncode == 0, quiet.stderr
    assert not re.search(r"^[IWE]\d{4} |absl::InitializeLog|oneDNN", quiet.stderr, re.M), quiet.stderr
    assert (tmp_path / "out" / "digit.png").is_file()
    loud = _deepexplain(*arguments, env=dict(ENV, TF_CPP_MIN_LOG_LEVEL="0"))
    assert loud.returncode == 0 and re.search(r"^[IWE]\d{4} ", loud.stderr, re.M), loud.stderr


def test_explain_titles_each_heatmap_with_the_explained_and_predicted_class(keras_files, tmp_path, capsys):
    from deepexplain.cli import load_keras_model

    folder = keras_files.folder
    _, attribute = load_keras_model(folder / "softmax.keras", "deeplift", log=None)
    logits = keras_files.model(keras_files.xs).numpy()
    predicted = logits.argmax(axis=1)
    assert attribute.captions(keras_files.xs, "max") == [
        f"deeplift: class {p} ({logits[i, p]:.3g}), predicted {p}" for i, p in enumerate(predicted)
    ]
    assert attribute.captions(keras_files.xs, 3)[0].startswith(f"deeplift: class 3 ({logits[0, 3]:.3g}), predicted")
    out = tmp_path / "out"
    assert main(["explain", str(folder / "logits.keras"), str(folder / "digit.png"), "--out", str(out)]) == 0
    assert f"wrote {out / 'digit.png'} (heatmap) and {out / 'digit.npy'} (attributions)" in capsys.readouterr().err
