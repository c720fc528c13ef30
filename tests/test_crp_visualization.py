"""RelMax/ActMax reference sets (FeatureVisualization) and attribution graphs against brute force.

Oracle: per sample, the relevance at each layer conditioned on the sample's label (CondAttribution, one sample at
a time) and the activation; per channel the 'sum' and 'max' scores, divided by the sum of absolute values over
the channels (abs_norm), and the top-k by score then index, sorted in numpy. The streamed run must give the same
index sets and values for any batch size, for a run split in two and merged, for a run resumed from its directory,
and per class. Attribution-graph shares must be the conditional relevances of the lower layer, normalised.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from deepexplain.crp import AttributionGraph, ChannelConcept, CondAttribution, FeatureVisualization  # noqa: E402
from deepexplain.errors import InvalidInputError  # noqa: E402

K = 6


def model_():
    keras.utils.set_random_seed(11)
    return keras.Sequential(
        [
            keras.Input((9, 9, 2)),
            keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
            keras.layers.Conv2D(5, 3, activation="relu", name="c2"),
            keras.layers.Flatten(),
            keras.layers.Dense(6, activation="relu", name="d1"),
            keras.layers.Dense(3, name="logits"),
        ]
    )


@pytest.fixture(scope="module")
def setup():
    model = model_()
    data = np.random.default_rng(4).random((40, 9, 9, 2)).astype(np.float32)
    labels = np.random.default_rng(5).integers(0, 3, len(data))
    attribution = CondAttribution(model, progress=False)
    layers = {"c2": ChannelConcept(), "d1": ChannelConcept()}
    return model, data, labels, attribution, layers


def brute_force(attribution, data, labels, layer, mode, stat, abs_norm=True, k=K, rows=None):
    rows = np.arange(len(data)) if rows is None else rows
    per_sample = []
    for i in rows:
        result = attribution(data[i : i + 1], {"y": int(labels[i])}, record_layer=[layer])
        values = (result.relevances if mode == "relevance" else result.activations)[layer][0]
        flat = values.reshape(-1, values.shape[-1]).astype(np.float64)
        per_sample.append((flat.sum(axis=0) if stat == "sum" else flat.max(axis=0), flat.argmax(axis=0)))
    scores = np.stack([s for s, _ in per_sample])
    if abs_norm:
        scores = scores / (np.abs(scores).sum(axis=1, keepdims=True) + 1e-10)
    rf = np.stack([r for _, r in per_sample])
    indices, values, units = [], [], []
    for c in range(scores.shape[1]):
        order = np.lexsort((rows, -scores[:, c]))[:k]
        indices.append(rows[order])
        values.append(scores[order, c])
        units.append(rf[order, c])
    return np.array(indices), np.array(values), np.array(units)


@pytest.fixture(scope="module")
def expected(setup):
    _, data, labels, attribution, layers = setup
    return {(layer, mode, stat): brute_force(attribution, data, labels, layer, mode, stat)
            for layer in layers for mode in ("relevance", "activation") for stat in ("sum", "max")}  # fmt: skip


def assert_same(fv, expected):
    for (layer, mode, stat), (indices, values, units) in expected.items():
        np.testing.assert_array_equal(fv.reference_indices(layer, mode, stat), indices, err_msg=f"{layer} {mode}")
        np.testing.assert_allclose(fv.reference_scores(layer, mode, stat), values, rtol=1e-5, atol=1e-8)
        np.testing.assert_array_equal(fv.reference_rf(layer, mode, stat), units)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_reference_sets_equal_brute_force_for_any_batch_size(setup, expected, batch_size):
    _, data, labels, attribution, layers = setup
    fv = FeatureVisualization(attribution, data, layers, targets=labels, k=K).run(batch_size, progress=False,
                                                                                  shard_size=16)  # fmt: skip
    assert_same(fv, expected)
    assert fv.reference_indices("c2").dtype == np.int64 and fv.reference_indices("c2").shape == (5, K)


def test_a_run_split_in_two_and_merged(setup, expected, tmp_path):
    _, data, labels, attribution, layers = setup
    first = FeatureVisualization(attribution, data, layers, targets=labels, k=K)
    first.run(progress=False, data_end=17, out=tmp_path / "a")
    second = FeatureVisualization(attribution, data, layers, targets=labels, k=K)
    second.run(progress=False, data_start=17, out=tmp_path / "b")
    assert_same(first.merge(second), expected)
    assert_same(second.merge(first), expected)
    # the first part alone is the brute force over its rows
    part = brute_force(attribution, data, labels, "d1", "relevance", "sum", rows=np.arange(17))
    np.testing.assert_array_equal(first.reference_indices("d1"), part[0])


def test_a_stopped_run_resumes_from_its_directory(setup, expected, tmp_path, monkeypatch):
    from deepexplain.crp import visualization

    _, data, labels, attribution, layers = setup
    calls = {"n": 0}
    original = visualization._FeatureTask.__call__

    def failing(self, columns):
        calls["n"] += 1
        if calls["n"] == 4:  # the check on one sample, two shards, then a failure
            raise KeyboardInterrupt
        return original(self, columns)

    monkeypatch.setattr(visualization._FeatureTask, "__call__", failing)
    with pytest.raises(KeyboardInterrupt):
        FeatureVisualization(attribution, data, layers, targets=labels, k=K).run(shard_size=10, out=tmp_path,
                                                                               progress=False)  # fmt: skip
    monkeypatch.setattr(visualization._FeatureTask, "__call__", original)
    assert (tmp_path / "features.npz").is_file()
    resumed = FeatureVisualization(attribution, data, layers, targets=labels, k=K)
    resumed.run(out=tmp_path, progress=False)
    assert_same(resumed, expected)
    with pytest.raises(InvalidInputError, match="k changed"):
        FeatureVisualization(attribution, data, layers, targets=labels, k=K + 1).run(out=tmp_path, progress=False)


def test_per_class_reference_sets_and_stats(setup):
    _, data, labels, attribution, layers = setup
    fv = FeatureVisualization(attribution, data, layers, targets=labels, k=K).run(progress=False)
    assert fv.targets_seen("c2") == sorted(set(labels.tolist()))
    for t in fv.targets_seen("c2"):
        rows = np.flatnonzero(labels == t)
        indices, values, _ = brute_force(attribution, data, labels, "c2", "relevance", "max", rows=rows)
        np.testing.assert_array_equal(fv.reference_indices("c2", "relevance", "max", target=t), indices)
        np.testing.assert_allclose(fv.reference_scores("c2", "relevance", "max", target=t), values, rtol=1e-5)
    classes, values = fv.compute_stats(2, "c2", mean_N=3)
    means = [fv.reference_scores("c2", target=t)[2, :3].mean() for t in fv.targets_seen("c2")]
    np.testing.assert_allclose(values, sorted(means, reverse=True))
    assert classes[0] == fv.targets_seen("c2")[int(np.argmax(means))]
    with pytest.raises(InvalidInputError, match="no sample of class 7"):
        fv.reference_indices("c2", target=7)


def test_without_targets_the_predicted_class_is_explained(setup):
    model, data, _, attribution, layers = setup
    predicted = model(data).numpy().argmax(axis=1)
    fv = FeatureVisualization(attribution, data, layers, k=K).run(progress=False)
    indices, _, _ = brute_force(attribution, data, predicted, "c2", "relevance", "sum")
    np.testing.assert_array_equal(fv.reference_indices("c2"), indices)


def test_unnormed_scores(setup):
    _, data, labels, attribution, layers = setup
    fv = FeatureVisualization(attribution, data, layers, targets=labels, k=K, abs_norm=False).run(progress=False)
    indices, values, _ = brute_force(attribution, data, labels, "c2", "activation", "sum", abs_norm=False)
    np.testing.assert_array_equal(fv.reference_indices("c2", "activation"), indices)
    np.testing.assert_allclose(fv.reference_scores("c2", "activation"), values, rtol=1e-5)


def test_reference_crops_lie_in_the_receptive_field(setup):
    _, data, labels, attribution, layers = setup
    fv = FeatureVisualization(attribution, data, layers, targets=labels, k=K).run(progress=False)
    refs = fv.get_max_reference([0, 3], "c2", n_ref=4, heatmaps=True)
    assert set(refs) == {0, 3}
    indices, units = fv.reference_indices("c2"), fv.reference_rf("c2")
    for c, crops in refs.items():
        assert len(crops) == 4
        for rank, (image, heat) in enumerate(crops):
            assert image.shape[:2] == heat.shape and image.shape[-1] == 2
            # a unit of c2 (5x5 map) sees 5x5 input pixels: the crop is inside that window
            assert image.shape[0] <= 5 and image.shape[1] <= 5
            row, col = divmod(int(units[c, rank]), 5)
            window = data[indices[c, rank], row : row + 5, col : col + 5]
            assert any(np.array_equal(image, window[r : r + image.shape[0], q : q + image.shape[1]])
                       for r in range(6 - image.shape[0]) for q in range(6 - image.shape[1]))  # fmt: skip


def test_bad_arguments(setup):
    model, data, labels, attribution, layers = setup
    with pytest.raises(InvalidInputError, match="did you mean 'c2'"):
        FeatureVisualization(attribution, data, {"cc2": ChannelConcept()})
    with pytest.raises(InvalidInputError, match="layer_map"):
        FeatureVisualization(attribution, data, {})
    fv = FeatureVisualization(attribution, data, layers, targets=labels, k=K)
    with pytest.raises(InvalidInputError, match="call run"):
        fv.reference_indices("c2")
    with pytest.raises(InvalidInputError, match="target: an array of targets"):
        FeatureVisualization(attribution, data, layers, targets=labels[:5]).run(progress=False)
    with pytest.raises(InvalidInputError, match="data_start and data_end"):
        fv.run(data_start=30, data_end=10, progress=False)
    fv.run(progress=False)
    with pytest.raises(InvalidInputError, match="mode"):
        fv.reference_indices("c2", mode="gradient")


def test_attribution_graph_shares_are_the_conditional_relevances(setup):
    _, data, _, attribution, _ = setup
    layer_map = {"c1": ChannelConcept(), "c2": ChannelConcept(), "d1": ChannelConcept()}
    graph = AttributionGraph(attribution, layer_map)
    assert graph.find_input_layers("d1") == ["c2"] and graph.find_input_layers("c1") == []
    top = attribution(data[:1], {"y": 1}, record_layer=["d1"]).relevances["d1"]
    root = int(np.argmax(np.abs(ChannelConcept.attribute(top)[0])))  # a unit relevance passes (not a dead one)
    nodes, connections = graph(data[0], 1, "d1", root, width=(5, 4))
    assert nodes[0] == ("d1", root)
    lower = attribution(data[:1], {"y": 1, "d1": [root]}, record_layer=["c2"]).relevances["c2"]
    shares = ChannelConcept.attribute(lower)[0]
    np.testing.assert_allclose(np.abs(shares).sum(), 1.0, rtol=1e-6)
    listed = connections[("d1", root)]
    assert [c for _, c, _ in listed] == list(np.argsort(-shares, kind="stable"))
    np.testing.assert_allclose([s for _, _, s in listed], np.sort(shares)[::-1], rtol=1e-6)
    # the next level: each c2 concept in the context of the root concept
    for _, c, _ in listed[:2]:
        below = attribution(data[:1], {"y": 1, "d1": [root], "c2": [c]}, record_layer=["c1"]).relevances["c1"]
        expected = ChannelConcept.attribute(below)[0]
        got = {lc: s for _, lc, s in connections[("c2", c)]}
        assert list(got) == list(np.argsort(-expected, kind="stable")[:4])
        np.testing.assert_allclose(list(got.values()), np.sort(expected)[::-1][:4], rtol=1e-6)
    # without a target, the concept alone: the backward pass starts at its layer
    alone = graph(data[0], None, "c2", 1, width=(2,)).connections[("c2", 1)]
    start = attribution(data[:1], {"c2": [1]}, start_layer="c2", record_layer=["c1"]).relevances["c1"]
    np.testing.assert_allclose([s for _, _, s in alone], np.sort(ChannelConcept.attribute(start)[0])[::-1][:2],
                               rtol=1e-6)  # fmt: skip


def test_top_concepts_and_their_figure(tmp_path):
    pytest.importorskip("matplotlib")
    from deepexplain import plot
    from deepexplain.crp import top_concepts

    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(6, 3, activation="relu", name="conv"),
                              keras.layers.Flatten(), keras.layers.Dense(3, name="logits")])  # fmt: skip
    data = np.random.default_rng(3).random((30, 8, 8, 1)).astype(np.float32)
    attribution = CondAttribution(model, progress=False)
    fv = FeatureVisualization(attribution, data, {"conv": ChannelConcept()}, k=4).run(progress=False)
    concepts = top_concepts(attribution, data[0], "conv", target=2, n_concepts=3, fv=fv, n_ref=4)
    shares = ChannelConcept.attribute(attribution(data[:1], {"y": 2}, record_layer=["conv"]).relevances["conv"])[0]
    assert concepts.ids == list(np.argsort(-np.abs(shares), kind="stable")[:3])
    np.testing.assert_allclose(concepts.shares, shares[concepts.ids])
    for c, heat in zip(concepts.ids, concepts.heatmaps, strict=True):
        expected = attribution(data[:1], {"y": 2, "conv": [c]}).heatmap[0]  # another batch: float32 rounding
        np.testing.assert_allclose(heat, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
        assert len(concepts.references[c]) == 4
    figure = plot.concepts(concepts, save=tmp_path / "concepts.png")
    titles = [ax.get_title() for ax in figure.axes]
    assert titles[:2] == ["input", "class 2"]
    for c, share in zip(concepts.ids, concepts.shares, strict=True):
        assert f"conv #{c}: {100 * share:+.0f}%" in titles
    assert titles.count("reference 1") == 3
    from skimage import io

    png = io.imread(tmp_path / "concepts.png")
    assert png.shape[:2] == (int(150 * (2 * 4 + 0.3)), 150 * 2 * 5)  # 4 rows, 5 columns of 2 inches at 150 dpi
    assert png[..., :3].std() > 10  # not blank
