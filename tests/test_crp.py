"""Concept Relevance Propagation (deepexplain.crp) against hand values, identities and zennit-crp.

Oracles:
- zennit-crp's own toy table (its tests/test_attribution.py, values checked by hand in the spec): three bias-free
  Linear layers, two of them in parallel; every row exactly, both exclude_parallel modes, relevances recorded
  before the layer's own mask;
- identities that follow from the linearity of the LRP map (Achtibat et al. 2023): completeness at a bottleneck,
  the bypass identity (exclude_parallel=False), the cut identity (exclude_parallel=True), OR = sum minus the empty
  mask, empty mask = exactly zero, concept relevances summing to the layer's relevance;
- the unconditional heatmap equals the plain LRP explainer's; batch_size and row layout change nothing;
- zennit-crp 0.6.0 on a weight-identical PyTorch twin (test_crp_crosscheck.py).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import deepexplain  # noqa: E402
from deepexplain.crp import ChannelConcept, CondAttribution  # noqa: E402
from deepexplain.errors import InvalidInputError, InvalidTypeError, UnknownMethodError  # noqa: E402


class RawHeatmap(CondAttribution):
    """The input relevance with its channels (zennit-crp's test subclass does the same)."""

    def heatmap_modifier(self, relevance):
        return relevance


def toy_model():
    """zennit-crp's test model: layer3(concat(layer1(x), layer2(x))), bias-free."""
    x = keras.Input((2,))
    layer1 = keras.layers.Dense(2, use_bias=False, name="layer1")
    layer2 = keras.layers.Dense(2, use_bias=False, name="layer2")
    layer3 = keras.layers.Dense(1, use_bias=False, name="layer3")
    model = keras.Model(x, layer3(keras.layers.Concatenate()([layer1(x), layer2(x)])))
    layer1.set_weights([np.array([[1.0, 2.0], [0.0, 1.0]]).T])  # torch (out, in) -> Keras (in, out)
    layer2.set_weights([np.array([[2.0, 3.0], [0.0, 0.0]]).T])
    layer3.set_weights([np.array([[1.0, 4.0, 5.0, 0.0]]).T])
    return model


TOY_X = np.array([[-1.0, 1.0]], np.float32)


@pytest.fixture(scope="module")
def toy():
    return RawHeatmap(toy_model(), "lrp.epsilon", epsilon=1e-6, progress=False)


@pytest.mark.parametrize(
    ("condition", "exclude_parallel", "heatmap", "r1", "r2"),
    [
        ({"y": 0}, True, (-11, 21), (1, 4), (5, 0)),
        ({"y": 0, "layer1": [0], "layer2": []}, False, (-1, 2), (1, 4), (5, 0)),
        ({"y": 0, "layer1": [0]}, True, (-1, 2), (1, 4), (0, 0)),
        ({"y": 0, "layer2": [0], "layer1": [0]}, False, (-11, 17), (1, 4), (5, 0)),
        ({"y": 0, "layer3": [0], "layer1": [0]}, True, (-1, 2), (1, 4), (0, 0)),
        ({"y": 0, "layer1": [1]}, False, (-10, 19), (1, 4), (5, 0)),
        ({"y": 0, "layer1": []}, False, (-10, 15), (1, 4), (5, 0)),
    ],
)
def test_toy_table_of_zennit_crp(toy, condition, exclude_parallel, heatmap, r1, r2):
    result = toy(TOY_X, [condition], record_layer=["layer1", "layer2"], exclude_parallel=exclude_parallel)
    np.testing.assert_allclose(result.heatmap[0], heatmap, atol=1e-4)
    np.testing.assert_allclose(result.relevances["layer1"][0], r1, atol=1e-4)  # before layer1's own mask
    np.testing.assert_allclose(result.relevances["layer2"][0], r2, atol=1e-4)
    np.testing.assert_allclose(result.prediction, [[10.0]], atol=1e-5)


def test_toy_bypass_and_cut_identities(toy):
    heat = {}
    for name, condition, exclude in [
        ("full", {"y": 0}, False),
        ("l1c0", {"y": 0, "layer1": [0]}, False),
        ("l1c1", {"y": 0, "layer1": [1]}, False),
        ("l1none", {"y": 0, "layer1": []}, False),
        ("x1c0", {"y": 0, "layer1": [0]}, True),
        ("x1c1", {"y": 0, "layer1": [1]}, True),
        ("x2c0", {"y": 0, "layer2": [0]}, True),
        ("x2c1", {"y": 0, "layer2": [1]}, True),
    ]:
        heat[name] = toy(TOY_X, condition, exclude_parallel=exclude).heatmap[0]
    # (b) exclude_parallel=False: sum over channels - (C - 1) * the bypass = the full heatmap
    np.testing.assert_allclose(heat["l1c0"] + heat["l1c1"] - heat["l1none"], heat["full"], atol=1e-4)
    # (c) exclude_parallel=True over a cut of two parallel layers: the sum over both layers' channels
    cut = heat["x1c0"] + heat["x1c1"] + heat["x2c0"] + heat["x2c1"]
    np.testing.assert_allclose(cut, heat["full"], atol=1e-4)
    np.testing.assert_allclose(heat["x1c1"], (0, 4), atol=1e-4)


def cnn():
    keras.utils.set_random_seed(3)
    return keras.Sequential(
        [
            keras.Input((10, 10, 2)),
            keras.layers.Conv2D(4, 3, activation="relu", name="c1"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Conv2D(5, 3, activation="relu", name="c2"),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu", name="d1"),
            keras.layers.Dense(3, name="logits"),
        ]
    )


@pytest.fixture(scope="module")
def cnn_ca():
    model = cnn()
    return model, RawHeatmap(model, "lrp.epsilon_plus", progress=False)


XS = np.random.default_rng(0).random((3, 10, 10, 2)).astype(np.float32)


def test_unconditional_heatmap_is_the_lrp_explainers(cnn_ca):
    model, ca = cnn_ca
    plain = deepexplain.explain("lrp.epsilon_plus", model, XS, target=1)
    np.testing.assert_allclose(ca(XS, {"y": [1]}).heatmap, plain, rtol=1e-5, atol=1e-7)
    maximum = deepexplain.explain("lrp.epsilon_plus", model, XS)
    np.testing.assert_allclose(ca(XS, {}).heatmap, maximum, rtol=1e-5, atol=1e-7)  # no 'y': the largest output
    np.testing.assert_allclose(ca(XS, {}).prediction, model(XS).numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("layer", ["c1", "c2", "d1"])
@pytest.mark.parametrize("exclude_parallel", [True, False])
def test_completeness_at_a_bottleneck(cnn_ca, layer, exclude_parallel):
    model, ca = cnn_ca
    channels = model.get_layer(layer).output.shape[-1]
    full = ca(XS, {"y": 2}).heatmap
    per_channel = ca(XS, [{"y": 2, layer: [c]} for c in range(channels)], exclude_parallel=exclude_parallel)
    summed = per_channel.heatmap.reshape(3, channels, *XS.shape[1:]).sum(axis=1)
    np.testing.assert_allclose(summed, full, rtol=1e-5, atol=1e-6 * np.abs(full).max())
    # the concept relevances at the layer sum to the layer's relevance, and each concept's heatmap sums to it
    recorded = ca(XS, {"y": 2}, record_layer=[layer]).relevances[layer]
    concepts = ChannelConcept.attribute(recorded, abs_norm=False)
    np.testing.assert_allclose(concepts.sum(axis=1), recorded.reshape(3, -1).sum(axis=1, dtype=np.float64), rtol=1e-9)
    heat_sums = per_channel.heatmap.reshape(3, channels, -1).sum(axis=-1)
    np.testing.assert_allclose(heat_sums, concepts, rtol=1e-3, atol=1e-5 * np.abs(concepts).max())


def test_empty_channel_list_gives_exactly_zero(cnn_ca):
    _, ca = cnn_ca
    for exclude in (True, False):
        result = ca(XS, {"y": 0, "c2": []}, record_layer=["c1", "c2"], exclude_parallel=exclude)
        assert np.all(result.heatmap == 0)
        assert np.all(result.relevances["c1"] == 0)  # nothing passes below the masked layer
        assert np.any(result.relevances["c2"] != 0)  # what arrives at c2, before its mask


def test_or_is_the_sum_and_and_chains_the_masks(cnn_ca):
    _, ca = cnn_ca
    a, b, both = (ca(XS, {"y": 1, "c2": ch}).heatmap for ch in ([0], [3], [0, 3]))
    np.testing.assert_allclose(both, a + b, rtol=1e-5, atol=1e-7)
    conditions = [{"y": 1, "c2": [0, 3], "c1": [1]}, {"y": 1, "c1": [1], "c2": [0, 3]}]  # any order of layers
    chained = ca(XS, conditions, record_layer=["c1"])
    gated = ca(XS, conditions, record_layer=["c1"], exclude_parallel=False)
    np.testing.assert_allclose(chained.heatmap, gated.heatmap, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(chained.heatmap[0], chained.heatmap[1], rtol=1e-6, atol=1e-9)
    # AND by hand: the relevance at c1 under {c2: [0, 3]}, masked to channel 1, is what c1 records under AND
    upper = ca(XS, {"y": 1, "c2": [0, 3]}, record_layer=["c1"]).relevances["c1"]
    np.testing.assert_allclose(chained.relevances["c1"][::2], upper, rtol=1e-5, atol=1e-9)
    assert np.any(chained.heatmap != 0)


def test_rows_are_sample_major_and_batch_size_changes_nothing(cnn_ca):
    _, ca = cnn_ca
    conditions = [{"y": 0, "c2": [1]}, {"y": 2}, {"c1": [0, 2]}, {"y": 1, "d1": [4]}]
    together = ca(XS, conditions, record_layer=["c2"], batch_size=64)
    assert together.heatmap.shape == (12, *XS.shape[1:])
    for batch_size in (1, 5):
        again = ca(XS, conditions, record_layer=["c2"], batch_size=batch_size)
        np.testing.assert_allclose(again.heatmap, together.heatmap, rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(again.relevances["c2"], together.relevances["c2"], rtol=1e-6, atol=1e-9)
    for n in range(3):
        for k, condition in enumerate(conditions):
            single = ca(XS[n : n + 1], condition, record_layer=["c2"])
            np.testing.assert_allclose(together.heatmap[n * 4 + k], single.heatmap[0], rtol=1e-6, atol=1e-9)
            np.testing.assert_allclose(together.activations["c2"][n * 4 + k], single.activations["c2"][0], rtol=1e-6)
    paired = ca(XS, conditions[:3], pair=True)
    np.testing.assert_allclose(paired.heatmap, together.heatmap[[0, 5, 10]], rtol=1e-6, atol=1e-9)


def test_heatmap_sums_the_channels_by_default():
    model = cnn()
    ca = CondAttribution(model, progress=False)
    result = ca(XS, [{"y": 0}, {"y": 1, "c2": [2]}])
    assert result.heatmap.shape == (6, 10, 10)
    raw = RawHeatmap(model, progress=False)(XS, [{"y": 0}, {"y": 1, "c2": [2]}]).heatmap
    np.testing.assert_allclose(result.heatmap, raw.sum(axis=-1), rtol=1e-6)


def test_single_units_and_the_start_layer(cnn_ca):
    model, ca = cnn_ca
    shape = model.get_layer("c2").output.shape[1:]
    # units of a channel: a dict {channel: [flat spatial index]}; all units of a channel == the channel
    every = ca(XS, {"y": 1, "c2": {2: list(range(int(np.prod(shape[:-1]))))}}).heatmap
    np.testing.assert_allclose(every, ca(XS, {"y": 1, "c2": [2]}).heatmap, rtol=1e-6, atol=1e-9)
    # starting at a layer: the initial relevance is the activation masked to the condition's channels
    start = ca(XS, {"c2": [2]}, start_layer="c2", record_layer=["c2"])
    activation = start.activations["c2"]
    np.testing.assert_allclose(start.prediction, activation)
    total = start.heatmap.reshape(3, -1).sum(axis=1)
    np.testing.assert_allclose(total, activation[..., 2].reshape(3, -1).sum(axis=1), rtol=1e-3, atol=1e-6)
    unit = ca(XS, {"c2": {2: [3]}}, start_layer="c2").heatmap
    np.testing.assert_allclose(unit.reshape(3, -1).sum(axis=1), activation[..., 2].reshape(3, -1)[:, 3],
                               rtol=1e-3, atol=1e-6)  # fmt: skip
    # the unit (row 1, column 1 of c2's 2x2 map) sees only its receptive field: 3x3 of the pooled map, 6x6 of c1,
    # rows and columns 2..9 of the input
    rows, cols = np.nonzero(np.abs(unit).sum(axis=(0, -1)))
    assert rows.min() >= 2 and cols.min() >= 2 and np.any(unit != 0)
    with pytest.raises(InvalidInputError, match="units of channel 2 of layer 'c2': 5 is out of range"):
        ca(XS, {"c2": {2: [5]}}, start_layer="c2")


def residual():
    keras.utils.set_random_seed(5)
    x = keras.Input((8, 8, 2))
    h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(x)
    branch = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="branch")(h)
    skip = keras.layers.Conv2D(4, 1, name="skip")(h)
    s = keras.layers.Add(name="add")([branch, skip])
    c = keras.layers.Conv2D(3, 3, activation="relu", name="c3")(s)
    out = keras.layers.Dense(5, name="logits")(keras.layers.Flatten()(c))
    return keras.Model(x, out)


def test_exclude_parallel_both_ways_on_a_residual_block():
    ca = RawHeatmap(residual(), "lrp.epsilon_plus", progress=False)
    xs = np.random.default_rng(1).random((2, 8, 8, 2)).astype(np.float32)
    full = ca(xs, {"y": 3}).heatmap
    scale = np.abs(full).max()
    # (b) gated where the layer sits: the skip path keeps its relevance
    branch = ca(xs, [{"y": 3, "branch": [c]} for c in range(4)], exclude_parallel=False).heatmap
    bypass = ca(xs, {"y": 3, "branch": []}, exclude_parallel=False).heatmap
    identity = branch.reshape(2, 4, *xs.shape[1:]).sum(axis=1) - 3 * bypass
    np.testing.assert_allclose(identity, full, atol=1e-5 * scale)
    assert np.abs(bypass).max() > 1e-3 * scale  # the skip path does carry relevance
    # (c) chained: only relevance through the layer; the two branches are a cut of the block
    cut = ca(xs, [{"y": 3, name: [c]} for name in ("branch", "skip") for c in range(4)]).heatmap
    np.testing.assert_allclose(cut.reshape(2, 8, *xs.shape[1:]).sum(axis=1), full, atol=1e-5 * scale)
    assert np.all(ca(xs, {"y": 3, "branch": []}).heatmap == 0)
    # two layers on parallel paths cannot be chained
    with pytest.raises(InvalidInputError, match="parallel paths"):
        ca(xs, {"y": 3, "branch": [0], "skip": [1]})
    both = ca(xs, {"y": 3, "branch": [0], "skip": [1]}, exclude_parallel=False).heatmap
    assert np.isfinite(both).all()


def test_mixed_layer_sets_keep_the_input_order_with_exclude_parallel():
    ca = RawHeatmap(residual(), "lrp.epsilon_plus", progress=False)
    xs = np.random.default_rng(2).random((2, 8, 8, 2)).astype(np.float32)
    conditions = [{"y": 1, "branch": [0]}, {"y": 1}, {"y": 1, "c1": [2]}, {"y": 1, "branch": [1], "c1": [2]}]
    together = ca(xs, conditions).heatmap
    for k, condition in enumerate(conditions):
        np.testing.assert_allclose(together[k::4], ca(xs, condition).heatmap, rtol=1e-6, atol=1e-9)


def test_bad_input_is_refused_before_any_work(cnn_ca):
    model, ca = cnn_ca
    with pytest.raises(InvalidInputError, match="did you mean 'c2'"):
        ca(XS, {"y": 0, "cc2": [0]})
    with pytest.raises(InvalidInputError, match="'c3' is not a layer of the model; its layers: .*'c1'"):
        ca(XS, {"y": 0, "c3": [0]})
    with pytest.raises(InvalidInputError, match="channels of layer 'c2': 5 is out of range"):
        ca(XS, {"y": 0, "c2": [5]})
    with pytest.raises(InvalidInputError, match="'y'.*3 is out of range"):
        ca(XS, {"y": 3})
    with pytest.raises(InvalidTypeError, match="must be ints"):
        ca(XS, {"y": 0, "c2": [1.5]})
    with pytest.raises(InvalidInputError, match="conditions must be"):
        ca(XS, [])
    with pytest.raises(InvalidInputError, match="LRP family"):
        CondAttribution(model, "saliency")
    with pytest.raises(UnknownMethodError, match="did you mean"):
        CondAttribution(model, "lrp.epsilon_plsu")
    with pytest.raises(InvalidInputError, match="unexpected argument"):
        CondAttribution(model, "lrp.epsilon", gamma=0.1)
    with pytest.raises(InvalidInputError, match="xs"):
        ca(XS[:, :5], {"y": 0})
    with pytest.raises(InvalidInputError, match="pair=True"):
        ca(XS, [{"y": 0}], pair=True)


def test_a_layer_off_the_explained_path_is_refused():
    x = keras.Input((6,))
    shared = keras.layers.Dense(4, activation="relu", name="shared")(x)
    head_a = keras.layers.Dense(3, name="a")(shared)
    side = keras.layers.Dense(2, activation="relu", name="side")(shared)
    head_b = keras.layers.Dense(2, name="b")(side)
    model = keras.Model(x, [head_a, head_b])
    ca = CondAttribution(model, "lrp.epsilon", output=0, progress=False)
    xs = np.random.default_rng(0).random((2, 6)).astype(np.float32)
    with pytest.raises(InvalidInputError, match="'side' is not on the path"):
        ca(xs, {"y": 0, "side": [0]})
    assert ca(xs, {"y": 0, "shared": [1]}).heatmap.shape == (2, 6)


def test_channel_concept():
    relevance = np.random.default_rng(0).normal(size=(4, 3, 3, 5))
    scores = ChannelConcept.attribute(relevance, abs_norm=False)
    np.testing.assert_allclose(scores, relevance.sum(axis=(1, 2)))
    normed = ChannelConcept.attribute(relevance)
    np.testing.assert_allclose(np.abs(normed).sum(axis=1), 1.0, rtol=1e-9)
    region = np.zeros((3, 3, 1))
    region[0, :] = 1
    np.testing.assert_allclose(ChannelConcept.attribute(relevance, mask=region, abs_norm=False),
                               relevance[:, 0].sum(axis=1))  # fmt: skip
    top, rf = ChannelConcept.reference_sampling(relevance, "max", abs_norm=False)
    np.testing.assert_allclose(top, relevance.reshape(4, 9, 5).max(axis=1))
    np.testing.assert_array_equal(rf, relevance.reshape(4, 9, 5).argmax(axis=1))
    np.testing.assert_array_equal(ChannelConcept.mask([1, 3], 5), [0, 1, 0, 1, 0])
    assert ChannelConcept.mask_rf({2: [4]}, (3, 3, 5))[1, 1, 2] == 1
    with pytest.raises(InvalidInputError, match="stat"):
        ChannelConcept.reference_sampling(relevance, "mean")


def test_the_tf1_api_names_layers_by_tensor_or_op(session):
    import tensorflow as tf

    from deepexplain.tensorflow import DeepExplain

    tf1 = tf.compat.v1
    X = tf1.placeholder(tf.float32, [None, 2])
    h1 = tf.matmul(X, tf.transpose(tf.constant([[1.0, 2.0], [0.0, 1.0]])), name="layer1")
    h2 = tf.matmul(X, tf.transpose(tf.constant([[2.0, 3.0], [0.0, 0.0]])), name="layer2")
    T = tf.matmul(tf.concat([h1, h2], axis=1), tf.constant([[1.0], [4.0], [5.0], [0.0]]), name="layer3")
    with DeepExplain(session=session) as de:
        ca = de.cond_attribution(T, X, "lrp.epsilon", epsilon=1e-6, progress=False)
        ca.heatmap_modifier = lambda relevance: relevance
        result = ca(TOY_X, [{"y": 0, "layer1": [0]}, {"y": 0, "layer1:0": [1]}], record_layer=["layer2"],
                    exclude_parallel=False)  # fmt: skip
        np.testing.assert_allclose(result.heatmap, [(-11, 17), (-10, 19)], atol=1e-4)  # the toy table's values
        np.testing.assert_allclose(result.relevances["layer2"], [(5, 0), (5, 0)], atol=1e-4)
        chained = ca(TOY_X, {"y": 0, "layer1": [0]})
        np.testing.assert_allclose(chained.heatmap, [(-1, 2)], atol=1e-4)
        with pytest.raises(InvalidInputError, match="did you mean 'layer1'"):
            ca(TOY_X, {"y": 0, "layer_1": [0]})
        with pytest.raises(InvalidInputError, match="LRP family"):
            de.cond_attribution(T, X, "saliency")


def test_layers_of_a_nested_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv_a")(inputs)
    backbone = keras.Model(inputs, keras.layers.Conv2D(5, 3, activation="relu", name="conv_b")(h), name="backbone")
    model = keras.Sequential([keras.Input((8, 8, 1)), backbone, keras.layers.Flatten(), keras.layers.Dense(3)])
    xs = np.random.default_rng(0).random((4, 8, 8, 1)).astype(np.float32)
    ca = CondAttribution(model, progress=False)
    full = ca(xs, {"y": 1}).heatmap
    parts = ca(xs, [{"y": 1, "backbone/conv_b": [c]} for c in range(5)], record_layer=["conv_a"])
    np.testing.assert_allclose(parts.heatmap.reshape(4, 5, 8, 8).sum(axis=1), full, atol=1e-6 * np.abs(full).max())
    assert parts.relevances["conv_a"].shape == (20, 6, 6, 4)
    with pytest.raises(InvalidInputError, match="different \\(nested\\) models"):
        ca(xs, {"y": 1, "backbone/conv_b": [0], model.layers[-1].name: [0]})


def test_completeness_on_keras_applications_mobilenetv2():
    """Batch norm as Keras 3 writes it (Mul/Add), depthwise convolutions, ReLU6 and residual additions."""
    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=5,
                                           classifier_activation=None)  # fmt: skip
    xs = np.random.default_rng(0).random((1, 32, 32, 3)).astype(np.float32)
    # an untrained MobileNetV2's logits are ~1e-12: a stabiliser of 1e-6 would absorb all relevance
    ca = CondAttribution(model, "lrp.epsilon_plus", epsilon=1e-30, progress=False)
    full = ca(xs, {"y": 1}).heatmap
    layer = "block_16_project_BN"
    channels = model.get_layer(layer).output.shape[-1]
    parts = ca(xs, [{"y": 1, layer: [c]} for c in range(channels)], batch_size=160).heatmap
    assert np.abs(full).max() > 0
    np.testing.assert_allclose(parts.sum(axis=0), full[0], atol=1e-5 * np.abs(full).max())
