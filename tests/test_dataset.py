"""explain_dataset on the local engine: every data source equals Explainer.run, a job killed half-way resumes without
redoing finished shards, the driver's memory does not grow with N, and misuse is refused before anything is written.
The Ray engine: test_dataset_ray.py."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import deepexplain
from deepexplain.errors import InvalidInputError, InvalidTypeError
from deepexplain.files import read_input

keras = pytest.importorskip("keras")

HERE = Path(__file__).parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(HERE.parent)}


def small_cnn(shape=(8, 8, 1), classes=3, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(shape),
        keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(classes),
    ])  # fmt: skip


@pytest.fixture(scope="module")
def model():
    return small_cnn()


@pytest.fixture(scope="module")
def xs():
    return np.random.default_rng(0).random((37, 8, 8, 1)).astype(np.float32)


def labels(n):
    return np.arange(n) % 3


@pytest.mark.parametrize("method,kwargs", [("saliency", {}), ("intgrad", {"steps": 8}), ("deeplift", {})])
def test_array_equals_run_in_memory_and_on_disk(model, xs, tmp_path, method, kwargs):
    expected = deepexplain.Explainer(method, model, **kwargs).run(xs, target=labels(len(xs)))
    in_memory = deepexplain.explain_dataset(method, model, xs, target=labels(len(xs)), shard_size=10,
                                            progress=False, **kwargs)  # fmt: skip
    np.testing.assert_allclose(in_memory.attributions, expected, rtol=1e-6, atol=1e-7)
    on_disk = deepexplain.explain_dataset(method, model, xs, target=labels(len(xs)), out=tmp_path, batch_size=3,
                                          progress=False, **kwargs)  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "attributions.npy"), expected, rtol=1e-6, atol=1e-7)
    assert isinstance(on_disk.attributions, np.memmap) and on_disk.shards_run == on_disk.shards_total == 1
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["done"] == [[0, len(xs)]] and manifest["n"] == len(xs)


def test_npy_path_and_named_targets(model, xs, tmp_path):
    np.save(tmp_path / "xs.npy", xs)
    for target in ("max", 1, "all"):
        expected = deepexplain.Explainer("grad*input", model).run(xs, target=target)
        result = deepexplain.explain_dataset("grad*input", model, tmp_path / "xs.npy", target=target, shard_size=8,
                                             progress=False)  # fmt: skip
        np.testing.assert_allclose(result.attributions, expected, rtol=1e-6, atol=1e-7)
        assert result.shards_run == result.shards_total == 5


def test_output_weights_per_sample(model, xs):
    ys = np.random.default_rng(1).random((len(xs), 3)).astype(np.float32)
    expected = deepexplain.Explainer("saliency", model).run(xs, ys=ys)
    result = deepexplain.explain_dataset("saliency", model, xs, target=ys, shard_size=6, progress=False)
    np.testing.assert_allclose(result.attributions, expected, rtol=1e-6, atol=1e-7)


def write_images(directory, count, size=(10, 12), seed=0):
    from skimage import io

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = directory / f"image_{i:03d}.png"
        io.imsave(path, (rng.random((*size, 3)) * 255).astype(np.uint8), check_contrast=False)
        paths.append(str(path))
    return paths


def test_image_files_are_read_and_fitted_like_the_cli(model, tmp_path):
    paths = write_images(tmp_path, 9)
    images = np.stack([read_input(p, (8, 8, 1)) for p in paths])
    expected = deepexplain.Explainer("saliency", model).run(images)
    result = deepexplain.explain_dataset("saliency", model, paths, shard_size=4, progress=False)
    np.testing.assert_allclose(result.attributions, expected, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("batched", [True, False])
def test_tf_data_with_labels_as_the_target(model, xs, batched):
    dataset = tf.data.Dataset.from_tensor_slices((xs, labels(len(xs))))
    dataset = dataset.batch(5) if batched else dataset
    expected = deepexplain.Explainer("saliency", model).run(xs, target=labels(len(xs)))
    result = deepexplain.explain_dataset("saliency", model, dataset, target="y", shard_size=8, progress=False)
    np.testing.assert_allclose(result.attributions, expected, rtol=1e-6, atol=1e-7)
    assert result.shards_total == 5


def test_tf_data_of_unknown_length_is_counted(model, xs):
    dataset = tf.data.Dataset.from_tensor_slices(xs).filter(lambda x: tf.reduce_sum(x) > -1.0)  # unknown cardinality
    expected = deepexplain.Explainer("saliency", model).run(xs)
    result = deepexplain.explain_dataset("saliency", model, dataset, shard_size=16, progress=False)
    np.testing.assert_allclose(result.attributions, expected, rtol=1e-6, atol=1e-7)


def test_several_model_inputs(xs):
    a, b = keras.Input((8, 8, 1)), keras.Input((4,))
    keras.utils.set_random_seed(2)
    merged = keras.layers.Concatenate()([keras.layers.Flatten()(a), b])
    model = keras.Model([a, b], keras.layers.Dense(2)(keras.layers.Dense(5, activation="tanh")(merged)))
    extra = np.random.default_rng(3).random((len(xs), 4)).astype(np.float32)
    expected = deepexplain.Explainer("intgrad", model, steps=4).run([xs, extra])
    result = deepexplain.explain_dataset("intgrad", model, [xs, extra], steps=4, shard_size=16, progress=False)
    for got, want in zip(result.attributions, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)


def test_cam_maps_and_a_finished_job_is_not_rerun(model, xs, tmp_path):
    expected = deepexplain.Explainer("gradcam", model).run(xs)
    first = deepexplain.explain_dataset("gradcam", model, xs, out=tmp_path, shard_size=16, progress=False)
    assert first.attributions.shape == expected.shape == (len(xs), 8, 8)
    again = deepexplain.explain_dataset("gradcam", model, xs, out=tmp_path, progress=False)
    assert again.shards_run == 0 and again.shards_total == 3
    np.testing.assert_allclose(again.attributions, expected, rtol=1e-6, atol=1e-7)


RESUMABLE_JOB = """
import sys, numpy as np, deepexplain
deepexplain.explain_dataset("intgrad", sys.argv[1], sys.argv[2], out=sys.argv[3], steps=64, shard_size=8,
                            target="max", progress=False)
"""


def test_a_killed_job_resumes_without_redoing_finished_shards(model, tmp_path):
    xs = np.random.default_rng(4).random((800, 8, 8, 1)).astype(np.float32)
    np.save(tmp_path / "xs.npy", xs)
    model.save(tmp_path / "model.keras")
    out = tmp_path / "job"
    arguments = [str(tmp_path / "model.keras"), str(tmp_path / "xs.npy"), str(out)]
    job = subprocess.Popen([sys.executable, "-c", RESUMABLE_JOB, *arguments], env=ENV, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT)  # fmt: skip
    manifest = out / "manifest.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and job.poll() is None:
        if manifest.is_file() and len(json.loads(manifest.read_text())["done"]) >= 3:
            break
        time.sleep(0.01)
    assert job.poll() is None, job.stdout.read().decode()[-2000:]
    job.send_signal(signal.SIGKILL)
    job.wait()
    done = json.loads(manifest.read_text())["done"]
    assert 3 <= len(done) < 100, "the job ran to the end before it was killed"
    assert len({tuple(r) for r in done}) == len(done)

    resumed = deepexplain.explain_dataset("intgrad", tmp_path / "model.keras", tmp_path / "xs.npy", out=out, steps=64,
                                          target="max", progress=False)  # fmt: skip
    assert resumed.shards_run == 100 - len(done) and resumed.shards_total == 100
    expected = deepexplain.Explainer("intgrad", model, steps=64).run(xs)
    np.testing.assert_allclose(np.load(out / "attributions.npy"), expected, rtol=1e-5, atol=1e-6)
    assert sorted(map(tuple, json.loads(manifest.read_text())["done"])) == [(lo, lo + 8) for lo in range(0, 800, 8)]


MEMORY_JOB = """
import sys, threading, time, numpy as np, psutil, keras, deepexplain
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
                          keras.layers.Flatten(), keras.layers.Dense(10)])
path, out = sys.argv[1], sys.argv[2]
process, peak, generation, lock = psutil.Process(), [0], [0], threading.Lock()
def watch():  # a sample taken before a reset of the peak is dropped (under load memory_info is slow)
    while True:
        started = generation[0]
        rss = process.memory_info().rss
        with lock:
            if started == generation[0]:
                peak[0] = max(peak[0], rss)
        time.sleep(0.005)
threading.Thread(target=watch, daemon=True).start()
growth = []
for n, name in ((2000, "small"), (20000, "large")):
    xs = np.load(path, mmap_mode="r")[:n]
    np.save(f"{out}/{name}.npy", xs)
    del xs
    if name == "small":  # compile, warm TensorFlow's allocator
        deepexplain.explain_dataset("saliency", model, f"{out}/small.npy", out=f"{out}/warm", progress=False)
    time.sleep(0.05)
    before = process.memory_info().rss
    with lock:
        generation[0] += 1
        peak[0] = before
    deepexplain.explain_dataset("saliency", model, f"{out}/{name}.npy", out=f"{out}/{name}", progress=False)
    time.sleep(0.05)
    growth.append(peak[0] - before)
print(growth[0], growth[1])
"""


def test_driver_memory_does_not_grow_with_the_number_of_samples(tmp_path):
    pytest.importorskip("psutil")
    data = np.lib.format.open_memmap(tmp_path / "all.npy", mode="w+", dtype=np.float32, shape=(20000, 32, 32, 3))
    for lo in range(0, 20000, 2000):
        data[lo : lo + 2000] = np.random.default_rng(lo).random((2000, 32, 32, 3), dtype=np.float32)
    data.flush()
    del data
    job = subprocess.run([sys.executable, "-c", MEMORY_JOB, str(tmp_path / "all.npy"), str(tmp_path)], env=ENV,
                         capture_output=True, text=True, timeout=300)  # fmt: skip
    assert job.returncode == 0, job.stderr[-3000:]
    small, large = map(int, job.stdout.split()[-2:])
    dataset_bytes = 20000 * 32 * 32 * 3 * 4  # 246 MB of inputs, as many of attributions
    # ten times the samples: the peak grows by far less than one tenth of what the large job reads and writes
    assert large - small < 0.1 * dataset_bytes, (small / 2**20, large / 2**20)
    assert large < 0.4 * dataset_bytes, (small / 2**20, large / 2**20)  # holding either array would be 1.0


# ---------------------------------------------------------------------------------------------------------------------
# Misuse: refused before any work, nothing overwritten


def test_an_unreadable_image_is_named(model, tmp_path):
    paths = write_images(tmp_path, 3)
    with pytest.raises(InvalidInputError, match="missing.png"):
        deepexplain.explain_dataset("saliency", model, [*paths, str(tmp_path / "missing.png")], progress=False)
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(InvalidInputError, match=r"data\[3\].*broken.png"):
        deepexplain.explain_dataset("saliency", model, [*paths, str(tmp_path / "broken.png")], out=tmp_path / "o",
                                    progress=False)  # fmt: skip


def test_images_of_mixed_sizes_for_a_model_of_free_size(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3), keras.layers.GlobalMaxPooling2D()]
    )
    paths = write_images(tmp_path, 2)
    other = tmp_path / "other"
    other.mkdir()
    paths += write_images(other, 1, size=(9, 9))
    with pytest.raises(InvalidInputError, match=r"data\[2\].*\(9, 9, 3\).*\(10, 12, 3\)"):
        deepexplain.explain_dataset("saliency", model, paths, progress=False)


def test_out_is_a_file_or_holds_another_job(model, xs, tmp_path):
    (tmp_path / "file").write_text("keep me")
    with pytest.raises(InvalidInputError, match="is a file"):
        deepexplain.explain_dataset("saliency", model, xs, out=tmp_path / "file", progress=False)
    assert (tmp_path / "file").read_text() == "keep me"

    job = tmp_path / "job"
    deepexplain.explain_dataset("saliency", model, xs, out=job, shard_size=10, progress=False)
    before = {p.name: p.read_bytes() for p in job.iterdir()}
    for kwargs, named in [({"target": 2}, "target"), ({"method": "grad*input"}, "method"),
                          ({"data": xs[:20]}, "number of samples"), ({"data": xs + 1}, "data"),
                          ({"shard_size": 7}, "shard_size")]:  # fmt: skip
        arguments = {"method": "saliency", "data": xs, **kwargs}
        method, data = arguments.pop("method"), arguments.pop("data")
        with pytest.raises(InvalidInputError, match=named):
            deepexplain.explain_dataset(method, model, data, out=job, progress=False, **arguments)
    other_weights = small_cnn(seed=5)
    with pytest.raises(InvalidInputError, match="model"):
        deepexplain.explain_dataset("saliency", other_weights, xs, out=job, progress=False)
    assert {p.name: p.read_bytes() for p in job.iterdir()} == before

    stray = tmp_path / "stray"
    stray.mkdir()
    np.save(stray / "attributions.npy", np.zeros(3))
    with pytest.raises(InvalidInputError, match="no manifest.json"):
        deepexplain.explain_dataset("saliency", model, xs, out=stray, progress=False)


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"engine": "spark"}, InvalidInputError, "engine"),
        ({"num_workers": 2}, InvalidInputError, "num_workers=2 needs engine='ray'"),
        ({"num_workers": 0, "engine": "local"}, InvalidInputError, "num_workers"),
        ({"shard_size": 0}, InvalidInputError, "shard_size"),
        ({"batch_size": -1}, InvalidInputError, "batch_size"),
        ({"target": [0, 1]}, InvalidInputError, r"one entry per sample of data \(37\); got 2"),
        ({"target": "label"}, InvalidInputError, "neither one of"),
        ({"target": 1.5}, InvalidTypeError, "target"),
        ({"target": 7}, InvalidInputError, "7"),
        ({"stpes": 3}, InvalidInputError, "stpes"),
        ({"input_column": "image"}, InvalidInputError, "input_column"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(model, xs, tmp_path, kwargs, error, match):
    out = tmp_path / "job"
    with pytest.raises(error, match=match):
        deepexplain.explain_dataset("intgrad", model, xs, out=out, progress=False, **kwargs)
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    "data,error,match",
    [
        ({"x": 1}, InvalidTypeError, "data must be"),
        (np.zeros((0, 8, 8, 1), np.float32), InvalidInputError, "no samples"),
        (np.zeros((4, 9, 9, 1), np.float32), InvalidInputError, "shape"),
        ("nowhere.npy", InvalidInputError, "nowhere.npy"),
        ("table.csv", InvalidInputError, "must name a .npy file"),
        ([np.zeros((4, 8, 8, 1)), np.zeros((4, 3))], InvalidInputError, "one array per model input"),
        (
            tf.data.Dataset.from_tensor_slices(np.zeros((4, 8, 8, 1), np.float32)).repeat(),
            InvalidInputError,
            "infinite",
        ),
    ],
)
def test_bad_data(model, data, error, match):
    with pytest.raises(error, match=match):
        deepexplain.explain_dataset("saliency", model, data, progress=False)


def test_ray_is_refused_for_a_plain_callable(xs):
    pytest.importorskip("ray")  # without it, engine='ray' is refused for that first
    model = tf.function(lambda x: tf.reduce_sum(x, axis=[1, 2]))
    with pytest.raises(InvalidInputError, match="engine='ray' sends the model"):
        deepexplain.explain_dataset("saliency", model, xs, engine="ray", progress=False)


# ---------------------------------------------------------------------------------------------------------------------
# Command line


def test_cli_explains_and_resumes_a_dataset(model, xs, tmp_path):
    model_path = tmp_path / "model.keras"
    model.save(model_path)
    np.save(tmp_path / "xs.npy", xs)
    np.save(tmp_path / "labels.npy", labels(len(xs)))
    command = [sys.executable, "-m", "deepexplain", "explain-dataset", str(model_path), str(tmp_path / "xs.npy"),
               "--method", "saliency", "--out", str(tmp_path / "job"), "--target", str(tmp_path / "labels.npy"),
               "--no-progress"]  # fmt: skip
    first = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    assert f"explained {len(xs)} samples with saliency (1 shards run" in first.stderr
    expected = deepexplain.Explainer("saliency", model).run(xs, target=labels(len(xs)))
    np.testing.assert_allclose(np.load(tmp_path / "job" / "attributions.npy"), expected, rtol=1e-6, atol=1e-7)
    again = subprocess.run(command, env=ENV, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "0 shards run, 1 finished before" in again.stderr
    changed = subprocess.run([*command[:-3], "--target", "1"], env=ENV, capture_output=True, text=True, timeout=120)
    assert changed.returncode == 1 and "Traceback" not in changed.stderr
    assert changed.stderr.splitlines()[-1].startswith("deepexplain explain-dataset: out: ")
    assert "(target changed)" in changed.stderr
    missing = subprocess.run([*command[:5], str(tmp_path / "none.npy"), *command[6:]], env=ENV, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
    assert missing.returncode == 2 and "none.npy: no such file" in missing.stderr


def test_sums_are_added_in_the_order_of_the_shards():
    from deepexplain.stream import Sums

    parts = [(lo, [np.full(3, 0.1 * (lo + 1))]) for lo in (0, 8, 16, 24)]
    forward, backward = Sums(), Sums()
    for lo, part in parts:
        forward.write(lo, lo + 8, part)
    for lo, part in reversed(parts):
        backward.write(lo, lo + 8, part)
    assert forward.result()[0].tobytes() == backward.result()[0].tobytes()


def test_fit_patterns_checks_its_engine(model, xs):
    with pytest.raises(InvalidInputError, match="engine"):
        deepexplain.fit_patterns(model, xs, engine="dask")


@pytest.mark.parametrize("metric,kwargs", [("deletion", {"steps": 6}), ("insertion", {"steps": 4, "baseline": 0.5}),
                                           ("pixel_flipping", {"steps": 5, "region": 2})])  # fmt: skip
def test_curves_over_a_dataset_equal_the_metric_on_all_of_it(model, xs, tmp_path, metric, kwargs):
    from deepexplain import metrics

    job = deepexplain.explain_dataset("grad*input", model, xs, out=tmp_path / "ig", progress=False)
    expected = getattr(metrics, metric)(model, xs, np.asarray(job.attributions), target=labels(len(xs)), **kwargs)
    curve = deepexplain.evaluate_dataset(metric, model, xs, tmp_path / "ig" / "attributions.npy",
                                         target=labels(len(xs)), shard_size=8, out=tmp_path / "scores",
                                         progress=False, **kwargs)  # fmt: skip
    np.testing.assert_allclose(curve.scores, expected.scores, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(curve.fractions, expected.fractions)
    assert isinstance(curve.scores, np.memmap) and (tmp_path / "scores" / "scores.npy").is_file()
    again = deepexplain.evaluate_dataset(
        metric,
        model,
        xs,
        tmp_path / "ig" / "attributions.npy",
        target=labels(len(xs)),
        out=tmp_path / "scores",
        progress=False,
        **kwargs,
    )
    np.testing.assert_array_equal(again.scores, curve.scores)


def test_evaluate_dataset_refuses_random_metrics_and_misaligned_attributions(model, xs):
    with pytest.raises(InvalidInputError, match="metric must be one of"):
        deepexplain.evaluate_dataset("road", model, xs, np.zeros_like(xs), progress=False)
    with pytest.raises(InvalidInputError, match=r"^attributions: expected one entry per sample \(37\); got 5"):
        deepexplain.evaluate_dataset("deletion", model, xs, np.zeros_like(xs[:5]), progress=False)
    with pytest.raises(InvalidInputError, match="attributions"):
        deepexplain.evaluate_dataset("deletion", model, xs, "nowhere.npy", progress=False)
