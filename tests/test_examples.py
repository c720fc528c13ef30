"""Every script in examples/ runs offline with ``--smoke`` and writes readable, non-blank pictures.

Each script runs once, as ``python examples/<script> --smoke --out DIR`` would run it: as ``__main__`` (through
:func:`runpy.run_path`), with that ``sys.argv``, its folder first on ``sys.path`` and its own stdout and stderr. What
costs most is not the scripts but TensorFlow's import (~5 s, mostly single-threaded), so the scripts run in two
worker processes, one per :data:`LANES` entry, each importing TensorFlow once and running its scripts one after
the other; the two lanes use the two cores. No script changes TensorFlow's global state (each builds its own graph
and session, or runs Keras eagerly), so sharing a process changes nothing they print or draw.
"""

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from skimage import io

EXAMPLES_DIR = Path(__file__).parent.parent / "examples"

# script -> files it must write into --out
EXPECTED = {
    "quickstart.py": ["quickstart.png"],
    "compare_methods.py": ["compare_methods.png", "compare_agreement.png"],
    "text_embedding.py": ["text_word_importance.png", "text_sentences.html"],
    "explainer_loop.py": ["explainer_loop_class_means.png"],
    "tabular.py": ["tabular_sample_0.png", "tabular_sample_1.png", "tabular_sample_2.png", "tabular_global.png"],
    "keras_eager.py": ["keras_eager.png"],
    "patterns_digits.py": ["patterns_digits.png"],
    "evaluate_methods.py": ["evaluate_deletion.png"],
    "dataset_scale.py": ["dataset_class_means.png"],
    "concepts_digits.py": ["concepts_digits.png"],
    "concepts_images.py": ["concepts_chelsea.png", "concepts_coffee.png", "concepts_rocket.png"],
    "transformer_text.py": ["transformer_reviews.html"],
    "vit_digits.py": ["vit_digits.png"],
}
# script -> text its standard output must contain
PRINTS = {
    "quickstart.py": "deeplift: max |sum(attributions)",
    "compare_methods.py": "shapley_exact",
    "text_embedding.py": "\x1b[48;2;",  # the reviews coloured with 24-bit ANSI backgrounds
    "explainer_loop.py": "1000 samples in",
    "tabular.py": "deepshap: max |sum(attributions)",
    "keras_eager.py": "deeplift: max |sum(attributions) - (f(x) - f(0))| = ",
    "patterns_digits.py": "gradient    linear      relu",
    "evaluate_methods.py": "relevance_rank_accuracy ↑",
    "dataset_scale.py": "second call (resumes): 0 of 2 shards run",
    "concepts_digits.py": "carries",
    "concepts_images.py": "32 channels sum to the heatmap",
    "transformer_text.py": "attention rollout: \x1b[48;2;",
    "vit_digits.py": "lrp.cp: sum of relevances / logit",
}
# One worker process per lane, its scripts in this order; the lanes take about as long (~8 s of work each after the
# ~6 s import). explainer_loop follows compare_methods: it loads the digits CNN that compare_methods trained and
# cached (or found cached by tests/test_cli.py's demo).
LANES = (
    (
        "compare_methods.py",
        "explainer_loop.py",
        "tabular.py",
        "evaluate_methods.py",
        "concepts_digits.py",
        "transformer_text.py",
    ),
    (
        "quickstart.py",
        "keras_eager.py",
        "patterns_digits.py",
        "text_embedding.py",
        "dataset_scale.py",
        "concepts_images.py",
        "vit_digits.py",
    ),
)
TIMEOUT_S = 300  # per lane

# The worker: runs each script of argv[1] (JSON) as __main__ and writes its exit status and seconds to a file.
WORKER = r"""
import contextlib, json, os, runpy, sys, time, traceback

for run in json.loads(sys.argv[1]):
    start = time.perf_counter()
    with open(run["stdout"], "w", encoding="utf-8") as out, open(run["stderr"], "w", encoding="utf-8") as err:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            sys.argv = [run["script"], "--smoke", "--out", run["out"]]
            sys.path.insert(0, os.path.dirname(run["script"]))
            try:
                runpy.run_path(run["script"], run_name="__main__")
                code = 0
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else int(exit.code is not None)
                if not isinstance(exit.code, int | None):
                    print(exit.code, file=sys.stderr)
            except Exception:
                traceback.print_exc()
                code = 1
            finally:
                sys.path.pop(0)
    with open(run["status"], "w", encoding="utf-8") as status:
        json.dump({"returncode": code, "seconds": time.perf_counter() - start}, status)
"""


@dataclass
class Result:
    """What one script did: its exit status, standard output and error, and seconds (a lane's first script pays the
    imports)."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float


class Lane:
    """A worker process running some scripts, started at once; :meth:`result` waits for it."""

    def __init__(self, scripts, folder: Path, outs: dict, env: dict):
        self.files = {s: {k: folder / f"{s}.{k}" for k in ("stdout", "stderr", "status")} for s in scripts}
        runs = [
            {"script": str(EXAMPLES_DIR / s), "out": str(outs[s]), **{k: str(p) for k, p in self.files[s].items()}}
            for s in scripts
        ]
        command = [sys.executable, "-c", WORKER, json.dumps(runs)]
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.output = None  # the worker's own output (TensorFlow's C++ logs, a crash), once it has finished

    def result(self, script: str) -> Result:
        if self.output is None:
            try:
                self.output, _ = self.process.communicate(timeout=TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.output, _ = self.process.communicate()
                self.output += f"\n[worker killed after {TIMEOUT_S} s]"
        files = self.files[script]
        if not files["status"].is_file():
            text = files["stderr"].read_text(encoding="utf-8") if files["stderr"].is_file() else ""
            status = self.process.returncode
            pytest.fail(
                f"{script}: its worker (status {status}) did not finish it:\n{self.output[-4000:]}\n{text[-4000:]}"
            )
        status = json.loads(files["status"].read_text(encoding="utf-8"))
        stdout, stderr = (files[k].read_text(encoding="utf-8") for k in ("stdout", "stderr"))
        return Result(status["returncode"], stdout, stderr, status["seconds"])

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate()


@pytest.fixture(scope="module")
def smoke_runs(request, tmp_path_factory):
    """script -> (its --out folder, its Lane), for the scripts this session selected; the lanes start at once."""
    selected = {
        item.callspec.params["script"]
        for item in request.session.items
        if item.path == request.path and "script" in getattr(getattr(item, "callspec", None), "params", {})
    }
    # the session's XDG_CACHE_HOME, as in tests/test_cli.py: the digits CNN of the demo is trained once per session
    cache = tmp_path_factory.getbasetemp() / "xdg_cache"
    cache.mkdir(exist_ok=True)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MPLBACKEND="Agg", XDG_CACHE_HOME=str(cache))
    logs = tmp_path_factory.mktemp("logs")
    outs = {s: tmp_path_factory.mktemp(s.removesuffix(".py")) for s in EXPECTED if s in selected}
    runs, lanes = {}, []
    for lane_scripts in LANES:
        scripts = [s for s in lane_scripts if s in selected]
        if scripts:
            lanes.append(Lane(scripts, logs, outs, env))
            runs.update({s: (outs[s], lanes[-1]) for s in scripts})
    yield runs
    for lane in lanes:
        lane.stop()


def test_every_example_is_tested():
    """A new script in examples/ needs its entries in EXPECTED and PRINTS, and a place in one of the LANES."""
    scripts = sorted(p.name for p in EXAMPLES_DIR.glob("*.py"))
    assert scripts == sorted(EXPECTED) == sorted(PRINTS) == sorted(s for lane in LANES for s in lane)


def _check_png(path: Path) -> None:
    image = io.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4), f"{path.name}: not an RGB(A) image, shape {image.shape}"
    height, width = image.shape[:2]
    assert 300 <= height <= 20000 and 300 <= width <= 6000, f"{path.name}: unexpected size {width}×{height}"
    rgb = image[..., :3].astype(float)
    assert rgb.std() > 10, f"{path.name}: (nearly) blank image"
    # a heatmap, bar chart or matrix has colour: some pixels are far from grey
    assert np.any(np.ptp(rgb, axis=2) > 60), f"{path.name}: no coloured pixels"


def _finished(script: str, smoke_runs) -> tuple[Path, Result]:
    out, lane = smoke_runs[script]
    result = lane.result(script)
    assert result.returncode == 0, f"{script} failed:\n{result.stdout}\n{result.stderr[-4000:]}"
    return out, result


@pytest.mark.parametrize("script", list(EXPECTED))
def test_example_smoke(script, smoke_runs):
    """``python examples/<script> --smoke --out DIR`` exits 0 and writes its files, which are not trivial."""
    out, result = _finished(script, smoke_runs)
    assert PRINTS[script] in result.stdout, f"{script} printed:\n{result.stdout}"
    for name in EXPECTED[script]:
        path = out / name
        assert path.is_file(), f"{script} did not write {name}; it wrote {sorted(p.name for p in out.iterdir())}"
        if path.suffix == ".png":
            _check_png(path)
        else:
            page = path.read_text(encoding="utf-8")
            assert page.count("<span") >= 10 and "background-color" in page, f"{name}: no coloured tokens"


@pytest.mark.parametrize("script", ["keras_eager.py"])
def test_keras_eager_deeplift_and_deepshap_are_complete(script, smoke_runs):
    """The Keras 3 model explained eagerly: DeepLIFT and DeepSHAP sum to f(x) - f(reference) to float precision."""
    _, result = _finished(script, smoke_runs)
    errors = re.findall(r"^(deeplift|deepshap): max \|sum\(attributions\) - .*\| = (\S+)$", result.stdout, re.M)
    assert [name for name, _ in errors] == ["deeplift", "deepshap"], result.stdout
    assert all(float(error) < 1e-4 for _, error in errors), result.stdout
