"""explain_dataset on Ray: two workers on a local cluster started here (num_cpus=2) give the numbers and the order of
Explainer.run for every data source, resume jobs of the local engine, and survive a worker killed mid-run."""

import json
import os
import signal
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import deepexplain
from deepexplain.files import read_input

ray = pytest.importorskip("ray")
keras = pytest.importorskip("keras")
psutil = pytest.importorskip("psutil")

from test_dataset import labels, small_cnn, write_images  # noqa: E402

pytestmark = pytest.mark.xdist_group("ray")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def model():
    return small_cnn()


@pytest.fixture(scope="module")
def xs():
    return np.random.default_rng(0).random((45, 8, 8, 1)).astype(np.float32)


def ray_explained(model, data, **kwargs):
    return deepexplain.explain_dataset("saliency", model, data, engine="ray", num_workers=2, shard_size=8,
                                       progress=False, **kwargs)  # fmt: skip


def test_arrays_and_npy_files_with_per_sample_targets(model, xs, tmp_path):
    expected = deepexplain.Explainer("saliency", model).run(xs, target=labels(len(xs)))
    np.testing.assert_allclose(ray_explained(model, xs, target=labels(len(xs))).attributions, expected, rtol=1e-6,
                               atol=1e-7)  # fmt: skip
    np.save(tmp_path / "xs.npy", xs)
    model.save(tmp_path / "model.keras")
    result = ray_explained(str(tmp_path / "model.keras"), tmp_path / "xs.npy", target=labels(len(xs)),
                           out=tmp_path / "job")  # fmt: skip
    np.testing.assert_allclose(np.load(tmp_path / "job" / "attributions.npy"), expected, rtol=1e-6, atol=1e-7)
    assert result.shards_run == result.shards_total == 6


def test_images(model, tmp_path):
    paths = write_images(tmp_path, 11)
    expected = deepexplain.Explainer("saliency", model).run(np.stack([read_input(p, (8, 8, 1)) for p in paths]))
    np.testing.assert_allclose(ray_explained(model, paths).attributions, expected, rtol=1e-6, atol=1e-7)


def test_tf_data_with_labels(model, xs):
    dataset = tf.data.Dataset.from_tensor_slices((xs, labels(len(xs)))).batch(10)
    expected = deepexplain.Explainer("saliency", model).run(xs, target=labels(len(xs)))
    np.testing.assert_allclose(ray_explained(model, dataset, target="y").attributions, expected, rtol=1e-6, atol=1e-7)


def test_ray_datasets_with_a_label_column_or_an_array_of_targets(model, xs):
    expected = deepexplain.Explainer("saliency", model).run(xs, target=labels(len(xs)))
    items = ray.data.from_items([{"image": x, "label": int(y)} for x, y in zip(xs, labels(len(xs)), strict=True)])
    for engine in ("ray", "local"):
        result = deepexplain.explain_dataset("saliency", model, items, target="label", engine=engine, shard_size=8,
                                             progress=False)  # fmt: skip
        np.testing.assert_allclose(result.attributions, expected, rtol=1e-6, atol=1e-7)
    blocks = ray.data.from_numpy([xs[:10], xs[10:13], xs[13:30], xs[30:]])  # several blocks, each in its place
    result = ray_explained(model, blocks, target=labels(len(xs)))
    np.testing.assert_allclose(result.attributions, expected, rtol=1e-6, atol=1e-7)


def test_a_job_started_locally_is_finished_on_ray(model, xs, tmp_path):
    expected = deepexplain.Explainer("saliency", model).run(xs)
    local = deepexplain.explain_dataset("saliency", model, xs[:], out=tmp_path, shard_size=8, progress=False)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    manifest["done"] = manifest["done"][::2]  # as if the local job had stopped with every other shard done
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    resumed = ray_explained(model, xs, out=tmp_path)
    assert local.shards_total == resumed.shards_total == 6 and resumed.shards_run == 3
    np.testing.assert_allclose(np.load(tmp_path / "attributions.npy"), expected, rtol=1e-6, atol=1e-7)


def _workers() -> list:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if "_RayShards" in command:
            found.append(process)
    return found


def test_a_worker_killed_mid_run_has_its_shard_retried(model, tmp_path):
    xs = np.random.default_rng(5).random((600, 8, 8, 1)).astype(np.float32)
    out = tmp_path / "job"
    outcome = {}

    def job():
        outcome["result"] = deepexplain.explain_dataset("intgrad", model, xs, steps=64, engine="ray", num_workers=2,
                                                        shard_size=6, out=out, progress=False)  # fmt: skip

    thread = threading.Thread(target=job)
    thread.start()
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and thread.is_alive() and time.monotonic() < deadline:
        manifest = out / "manifest.json"
        if manifest.is_file() and len(json.loads(manifest.read_text())["done"]) >= 2:
            workers = _workers()
            if workers:
                killed = workers[0].pid
                os.kill(killed, signal.SIGKILL)
                shards_at_kill = len(json.loads(manifest.read_text())["done"])
        time.sleep(0.02)
    thread.join(timeout=300)
    assert killed is not None and shards_at_kill < 100, "no worker was killed before the job ended"
    result = outcome["result"]
    assert result.shards_total == 100
    done = json.loads((out / "manifest.json").read_text())["done"]
    assert sorted(map(tuple, done)) == [(lo, lo + 6) for lo in range(0, 600, 6)]  # every shard once
    expected = deepexplain.Explainer("intgrad", model, steps=64).run(xs)
    np.testing.assert_allclose(np.load(out / "attributions.npy"), expected, rtol=1e-5, atol=1e-6)


def test_patterns_fitted_on_ray_equal_the_local_fit(model):
    xs = np.random.default_rng(6).random((2500, 8, 8, 1)).astype(np.float32)
    local = deepexplain.fit_patterns(model, xs, progress=False)
    on_ray = deepexplain.fit_patterns(model, xs, engine="ray", num_workers=2, progress=False)
    assert set(local) == set(on_ray)
    for key in local:  # float64 sums added shard by shard instead of batch by batch
        np.testing.assert_allclose(on_ray[key], local[key], rtol=1e-5, atol=1e-6 * np.abs(local[key]).max())


def test_deletion_curves_on_ray(model, xs):
    from deepexplain import metrics

    attributions = deepexplain.Explainer("saliency", model).run(xs)
    expected = metrics.deletion(model, xs, attributions, steps=5)
    curve = deepexplain.evaluate_dataset("deletion", model, xs, attributions, steps=5, engine="ray", num_workers=2,
                                         shard_size=8, progress=False)  # fmt: skip
    np.testing.assert_allclose(curve.scores, expected.scores, rtol=1e-6, atol=1e-7)


def test_feature_visualization_on_ray_equals_the_local_run(model, xs):
    from deepexplain.crp import ChannelConcept, CondAttribution, FeatureVisualization

    layers = {layer.name: ChannelConcept() for layer in model.layers if "conv" in layer.name}
    attribution = CondAttribution(model, progress=False)
    local = FeatureVisualization(attribution, xs, layers, targets=labels(len(xs)), k=6).run(progress=False)
    on_ray = FeatureVisualization(attribution, xs, layers, targets=labels(len(xs)), k=6)
    on_ray.run(engine="ray", num_workers=2, shard_size=8, progress=False)
    for layer in layers:
        for mode in ("relevance", "activation"):
            np.testing.assert_array_equal(on_ray.reference_indices(layer, mode), local.reference_indices(layer, mode))
            np.testing.assert_array_equal(on_ray.reference_indices(layer, mode, target=1),
                                          local.reference_indices(layer, mode, target=1))  # fmt: skip
