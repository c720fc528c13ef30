"""The CAM family: hand values on the toy net of the spec (part C.5), identities, layer selection through nested
models, TF1 == Keras, bad input; tf-keras-vis and Captum parity on the same weights (skipped without them)."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from deepexplain import Explainer  # noqa: E402
from deepexplain.adapters.layers import last_spatial_layer  # noqa: E402
from deepexplain.errors import InvalidInputError, InvalidTypeError  # noqa: E402
from deepexplain.tensorflow import DeepExplain  # noqa: E402
from deepexplain.tensorflow.methods.cam import upsample  # noqa: E402

K1 = np.array([[1.0, 0.0], [0.0, 1.0]])
K2 = np.array([[0.0, 1.0], [-1.0, 0.0]])
TOY_X = np.array([[1.0, 2.0, 0.0], [0.0, 1.0, 3.0], [2.0, 0.0, 1.0]], np.float32)[None, :, :, None]
A1 = np.array([[2.0, 5.0], [0.0, 2.0]])
A2 = np.array([[2.0, -1.0], [-1.0, 3.0]])


def toy(head=((1.0,), (-2.0,)), bias=None):
    """x (3×3×1) -> Conv2D(2 filters 2×2, K1 and K2, no bias) -> GAP -> Dense(head, bias): y = 0.75 for TOY_X."""
    head = np.asarray(head, np.float32)
    inputs = keras.Input((3, 3, 1))
    maps = keras.layers.Conv2D(2, 2, use_bias=False, name="conv")(inputs)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(maps)
    outputs = keras.layers.Dense(head.shape[1], use_bias=bias is not None, name="dense")(pooled)
    model = keras.Model(inputs, outputs)
    model.get_layer("conv").set_weights([np.stack([K1, K2], -1)[:, :, None, :].astype(np.float32)])
    model.get_layer("dense").set_weights([head] + ([np.asarray(bias, np.float32)] if bias is not None else []))
    return model


def minmax(values):
    values = np.asarray(values, np.float64)
    return (values - values.min()) / (values.max() - values.min())


# ---------------------------------------------------------------------------------------------------------------------
# Hand values (spec C.5)


def test_gradcam_hand_values_and_the_gap_dense_identity():
    model = toy()
    raw = Explainer("gradcam", model, relu=False, upsample=None).run(TOY_X, target=0)
    np.testing.assert_allclose(raw[0], [[-0.5, 1.75], [0.5, -1.0]], atol=1e-6)
    assert raw.sum() == pytest.approx(0.75, abs=1e-6)  # sum of the raw map = y for a GAP -> dense head
    relu = Explainer("gradcam", model, upsample=None).run(TOY_X, target=0)
    np.testing.assert_allclose(relu[0], [[0.0, 1.75], [0.5, 0.0]], atol=1e-6)
    normalized = Explainer("gradcam", model, upsample=None, normalize=True).run(TOY_X, target=0)
    np.testing.assert_allclose(normalized[0], [[0.0, 1.0], [0.5 / 1.75, 0.0]], atol=1e-6)


def test_gradcam_raw_map_sums_to_logit_minus_bias():
    rng = np.random.default_rng(0)
    model = toy(head=rng.normal(size=(2, 3)), bias=rng.normal(size=3))
    xs = rng.normal(size=(4, 3, 3, 1)).astype(np.float32)
    logits = model(xs).numpy()
    bias = model.get_layer("dense").get_weights()[1]
    for target in range(3):
        raw = Explainer("gradcam", model, relu=False, upsample=None).run(xs, target=target)
        np.testing.assert_allclose(raw.sum(axis=(1, 2)), logits[:, target] - bias[target], atol=1e-5)


def test_gradcam_plus_plus_paper_and_normalized_alpha():
    model = toy()
    # constant gradients g1 = 0.25, g2 = -0.5: alpha = 1 / (2 + g * sum A) per channel (Eq. 19); only channel 1 has
    # a positive gradient, so the map is w1 * A1 with w1 = 4 * alpha1 * 0.25
    paper = Explainer("gradcam++", model, upsample=None).run(TOY_X, target=0)
    np.testing.assert_allclose(paper[0], A1 / (2 + 0.25 * A1.sum()), atol=1e-6)
    # alpha normalized to sum to 1 per channel (tf-keras-vis): w1 = 0.25 (e^y * 0.25 = 0.52925 there)
    normalized_alpha = Explainer("gradcam++", model, upsample=None, normalize_alpha=True).run(TOY_X, target=0)
    np.testing.assert_allclose(normalized_alpha[0], 0.25 * A1, atol=1e-6)
    normalized = Explainer("gradcam++", model, upsample=None, normalize=True).run(TOY_X, target=0)
    np.testing.assert_allclose(normalized[0], [[0.4, 1.0], [0.0, 0.4]], atol=1e-6)


def test_layercam_hand_values():
    model = toy()
    layercam = Explainer("layercam", model, upsample=None).run(TOY_X, target=0)
    np.testing.assert_allclose(layercam[0], [[0.5, 1.25], [0.0, 0.5]], atol=1e-6)


@pytest.mark.parametrize(
    ("mode", "first_rows"),
    [
        ("bilinear_align_corners", [[0, 0.5833333, 1.1666667, 1.75], [1 / 6, 0.5, 0.8333333, 1.1666667]]),
        ("bilinear", [[0, 0.4375, 1.3125, 1.75], [0.125, 0.421875, 1.015625, 1.3125]]),
        ("nearest", [[0, 0, 1.75, 1.75], [0, 0, 1.75, 1.75]]),
    ],
)
@pytest.mark.parametrize("kind", ["array", "tensor", "dynamic"])
def test_upsampling_conventions(mode, first_rows, kind):
    """The ReLU'd toy map [[0, 1.75], [0.5, 0]] stretched 2 -> 4 (spec C.4: scipy zoom order=1, half-pixel
    bilinear, nearest), on arrays, on tensors and in a graph that knows no size."""
    toy_map = np.array([[[0.0, 1.75], [0.5, 0.0]]], np.float32)
    if kind == "array":
        maps = upsample(toy_map, (4, 4), mode)
    elif kind == "tensor":
        maps = upsample(tf.constant(toy_map), (4, 4), mode).numpy()
    else:
        spec = tf.TensorSpec((None, None, None), tf.float32), tf.TensorSpec((2,), tf.int32)
        maps = tf.function(lambda m, s: upsample(m, s, mode), input_signature=spec)(toy_map, [4, 4]).numpy()
    np.testing.assert_allclose(maps[0, :2], first_rows, atol=1e-6)
    if mode == "bilinear_align_corners":
        np.testing.assert_allclose(maps[0, -1], [0.5, 1 / 3, 1 / 6, 0.0], atol=1e-6)


@pytest.mark.parametrize("mode", ["bilinear", "bilinear_align_corners", "nearest"])
def test_upsampling_equals_tensorflow_resize(mode):
    rng = np.random.default_rng(13)
    maps = rng.normal(size=(2, 5, 7)).astype(np.float32)
    if mode == "nearest":
        resized = tf.raw_ops.ResizeNearestNeighbor(images=maps[..., None], size=(13, 9), half_pixel_centers=False)
    else:
        corners = mode == "bilinear_align_corners"
        resized = tf.raw_ops.ResizeBilinear(images=maps[..., None], size=(13, 9), align_corners=corners,
                                            half_pixel_centers=not corners)  # fmt: skip
    np.testing.assert_allclose(upsample(maps, (13, 9), mode), resized.numpy()[..., 0], atol=1e-5)


def test_upsampled_gradcam_matches_the_input_and_scipy_zoom():
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    rng = np.random.default_rng(1)
    model = small_cnn(rng)
    xs = rng.normal(size=(3, 12, 12, 3)).astype(np.float32)
    low = Explainer("gradcam", model, layer="maps", upsample=None).run(xs, target=1)
    high = Explainer("gradcam", model, layer="maps", upsample="bilinear_align_corners").run(xs, target=1)
    assert high.shape == (3, 12, 12)
    zoomed = np.stack([scipy_ndimage.zoom(m, (12 / m.shape[0], 12 / m.shape[1]), order=1) for m in low])
    np.testing.assert_allclose(high, zoomed, atol=1e-5)


def _score_cam_by_hand(model, x, target, softmax):
    """Score-CAM of the toy layer 'conv' in numpy: masks = minmax(half-pixel bilinear upsampling of A^k)."""
    conv = keras.Model(model.inputs[0], model.get_layer("conv").output)
    maps = conv(x).numpy()[0]
    weights = []
    for k in range(maps.shape[-1]):
        mask = upsample(maps[None, ..., k], x.shape[1:3], "bilinear")[0]
        out = model(x * minmax(mask)[None, :, :, None].astype(np.float32)).numpy()[0]
        out = np.exp(out - out.max()) / np.exp(out - out.max()).sum() if softmax else out
        weights.append(out[target])
    return np.maximum((maps * np.array(weights)).sum(-1), 0)


@pytest.mark.parametrize("softmax", [False, True])
def test_scorecam_hand_values(softmax):
    model = toy(head=[[1.0, -1.0], [-2.0, 0.5]])
    expected = _score_cam_by_hand(model, TOY_X, 0, softmax)
    result = Explainer("scorecam", model, upsample=None, softmax=softmax).run(TOY_X, target=0)
    np.testing.assert_allclose(result[0], expected, rtol=1e-5, atol=1e-6)


def test_scorecam_one_channel_is_the_normalized_map_and_invariances():
    rng = np.random.default_rng(2)
    inputs = keras.Input((6, 6, 2))
    maps = keras.layers.Conv2D(1, 3, activation="relu", name="maps")(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(maps))
    model = keras.Model(inputs, outputs)
    xs = rng.normal(size=(5, 6, 6, 2)).astype(np.float32)
    normalized = Explainer("scorecam", model, upsample=None, normalize=True).run(xs, target=2)
    layer = keras.Model(inputs, maps)(xs).numpy()[..., 0]
    for got, expected in zip(normalized, layer, strict=True):
        np.testing.assert_allclose(got, minmax(expected), atol=1e-6)
    cnn = small_cnn(rng)
    xs = rng.normal(size=(5, 12, 12, 3)).astype(np.float32)
    full = Explainer("scorecam", cnn, layer="maps").run(xs, target=0, batch_size=3)
    np.testing.assert_allclose(Explainer("scorecam", cnn, layer="maps").run(xs, target=0, batch_size=64), full,
                               rtol=1e-5, atol=1e-7)  # fmt: skip
    np.testing.assert_allclose(Explainer("scorecam", cnn, layer="maps", max_channels=4).run(xs, target=0), full,
                               rtol=1e-5, atol=1e-7)  # fmt: skip
    fewer = Explainer("scorecam", cnn, layer="maps", max_channels=2).run(xs, target=0)
    assert fewer.shape == full.shape and not np.allclose(fewer, full)


def test_class_sensitivity_raw_maps_are_negatives():
    model = toy(head=[[1.0, -1.0], [-2.0, 2.0]])
    explainer = Explainer("gradcam", model, relu=False, upsample=None)
    np.testing.assert_allclose(explainer.run(TOY_X, target=0), -explainer.run(TOY_X, target=1), atol=1e-6)
    relu = Explainer("gradcam", model, upsample=None)
    assert not np.any((relu.run(TOY_X, target=0) > 0) & (relu.run(TOY_X, target=1) > 0))


def test_cams_explain_logits_of_a_softmax_model():
    rng = np.random.default_rng(3)
    logits_model = small_cnn(rng)
    softmax_model = keras.Model(logits_model.inputs, keras.layers.Softmax()(logits_model.outputs[0]))
    xs = rng.normal(size=(2, 12, 12, 3)).astype(np.float32)
    for method in ("gradcam", "gradcam++", "layercam", "scorecam"):
        expected = Explainer(method, logits_model, layer="maps").run(xs, target=1)
        np.testing.assert_allclose(Explainer(method, softmax_model, layer="maps").run(xs, target=1), expected,
                                   rtol=1e-5, atol=1e-6)  # fmt: skip


def test_guided_gradcam_is_guided_backprop_times_the_map():
    rng = np.random.default_rng(4)
    model = small_cnn(rng)
    xs = rng.normal(size=(3, 12, 12, 3)).astype(np.float32)
    guided = Explainer("guided_backprop", model).run(xs, target=2)
    cam = Explainer("gradcam", model, layer="maps").run(xs, target=2)
    result = Explainer("guided_gradcam", model, layer="maps").run(xs, target=2)
    assert result.shape == xs.shape
    np.testing.assert_allclose(result, guided * cam[..., None], rtol=1e-5, atol=1e-7)


def test_targets_max_callable_and_ys():
    rng = np.random.default_rng(5)
    model = small_cnn(rng)
    xs = rng.normal(size=(4, 12, 12, 3)).astype(np.float32)
    explainer = Explainer("gradcam", model, layer="maps")
    top = model(xs).numpy().argmax(1)
    np.testing.assert_allclose(explainer.run(xs), explainer.run(xs, target=top), atol=1e-6)
    np.testing.assert_allclose(explainer.run(xs, target=lambda out: out[:, 1] - out[:, 0]),
                               explainer.run(xs, ys=np.tile([[-1.0, 1.0, 0.0]], (4, 1)).astype(np.float32),
                                             target=None), atol=1e-6)  # fmt: skip


def test_sequence_model_gives_maps_over_time():
    rng = np.random.default_rng(6)
    inputs = keras.Input((20, 3))
    h = keras.layers.Conv1D(4, 3, activation="relu", name="c1")(inputs)
    h = keras.layers.Conv1D(5, 3, strides=2, activation="relu", name="c2")(h)
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(h))
    model = keras.Model(inputs, outputs)
    xs = rng.normal(size=(3, 20, 3)).astype(np.float32)
    result = Explainer("gradcam", model).run(xs, target=0)
    assert result.shape == (3, 20)
    low = Explainer("gradcam", model, layer="c2", upsample=None, relu=False).run(xs, target=0)
    assert low.shape == (3, 8)
    bias = model.layers[-1].get_weights()[1][0]
    np.testing.assert_allclose(low.sum(1) * 1.0, model(xs).numpy()[:, 0] - bias, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Layers: the default, nested models, bad input


def small_cnn(rng, classes=3):
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    h = keras.layers.MaxPooling2D(name="pool")(h)
    h = keras.layers.Conv2D(5, 3, activation="relu", name="maps")(h)
    h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
    outputs = keras.layers.Dense(classes, name="logits")(h)
    model = keras.Model(inputs, outputs)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def backbone(rng):
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="b1")(inputs)
    h = keras.layers.Conv2D(6, 3, name="b2")(h)
    h = keras.layers.Activation("relu", name="out")(h)
    model = keras.Model(inputs, h, name="backbone")
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def gradcam_by_tape(features, head, xs, target):
    """Grad-CAM from its definition with a GradientTape: features(x) -> A, head(A) -> logits."""
    a = tf.constant(features(xs))
    with tf.GradientTape() as tape:
        tape.watch(a)
        y = head(a)[:, target]
    g = tape.gradient(y, a).numpy()
    return np.maximum((g.mean(axis=(1, 2), keepdims=True) * a.numpy()).sum(-1), 0)


@pytest.mark.parametrize("kind", ["functional", "sequential"])
def test_default_layer_inside_a_nested_backbone(kind):
    rng = np.random.default_rng(7)
    base = backbone(rng)
    classifier = [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3)]
    if kind == "sequential":
        model = keras.Sequential([keras.Input((12, 12, 3)), base, *classifier])
    else:
        inputs = keras.Input((12, 12, 3))
        model = keras.Model(inputs, classifier[1](classifier[0](base(keras.layers.Rescaling(0.5)(inputs)))))
    model.layers[-1].set_weights([rng.normal(size=(6, 3)).astype(np.float32), np.zeros(3, np.float32)])
    explainer = Explainer("gradcam", model, upsample=None)
    assert explainer.adapter.layer_path.name == "backbone/out"
    xs = rng.normal(size=(2, 12, 12, 3)).astype(np.float32)
    scale = 1.0 if kind == "sequential" else 0.5
    expected = gradcam_by_tape(lambda x: base(x * scale), lambda a: classifier[1](classifier[0](a)), xs, 2)
    np.testing.assert_allclose(explainer.run(xs, target=2), expected, rtol=1e-5, atol=1e-6)
    inner = Explainer("gradcam", model, layer="backbone/b1", upsample=None).run(xs, target=2)
    by_name = Explainer("gradcam", model, layer="b1", upsample=None).run(xs, target=2)
    by_object = Explainer("gradcam", model, layer=base.get_layer("b1"), upsample=None).run(xs, target=2)
    assert inner.shape == (2, 10, 10)
    np.testing.assert_allclose(by_name, inner)
    np.testing.assert_allclose(by_object, inner)


def test_attributions_to_a_layer_inside_a_nested_model():
    """``layer=`` of the other methods takes the same names: the gradient with respect to a nested layer's output."""
    rng = np.random.default_rng(17)
    base = backbone(rng)
    model = keras.Sequential([keras.Input((12, 12, 3)), base, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(3)])  # fmt: skip
    xs = rng.normal(size=(2, 12, 12, 3)).astype(np.float32)
    got = Explainer("grad*input", model, layer="backbone/b1").run(xs, target=1)
    first = keras.Model(base.inputs[0], base.get_layer("b1").output)
    rest = keras.Model(base.get_layer("b1").output, base.outputs[0])
    a = tf.constant(first(xs))
    with tf.GradientTape() as tape:
        tape.watch(a)
        y = model.layers[-1](model.layers[-2](rest(a)))[:, 1]
    np.testing.assert_allclose(got, (tape.gradient(y, a) * a).numpy(), rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidInputError, match=r"'backbone/b3' is not a layer of the model \(did you mean"):
        Explainer("saliency", model, layer="backbone/b3")


def test_default_layer_skips_1x1_maps_after_global_pooling():
    """A MobileNetV3-like head: GAP (keepdims) -> 1×1 conv -> 1×1 logits conv -> flatten; the default is the last
    map with more than one position, not the last convolution."""
    inputs = keras.Input((16, 16, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="stem")(inputs)
    h = keras.layers.Conv2D(8, 3, activation="relu", name="last_maps")(h)
    h = keras.layers.GlobalAveragePooling2D(keepdims=True)(h)
    h = keras.layers.Conv2D(16, 1, activation="hard_swish", name="head_conv")(h)
    h = keras.layers.Conv2D(4, 1, name="logits")(h)
    model = keras.Model(inputs, keras.layers.Flatten()(h))
    explainer = Explainer("gradcam", model)
    assert explainer.adapter.layer_path.name == "last_maps"
    assert explainer.run(np.ones((1, 16, 16, 3), np.float32)).shape == (1, 16, 16)


def test_default_layer_of_applications_mobilenet_v3_small():
    model = keras.applications.MobileNetV3Small(input_shape=(64, 64, 3), weights=None)
    path = last_spatial_layer(model)
    assert path.output_shape[1:3] == (2, 2)
    assert path.layer is next(layer for layer in reversed(model.layers) if layer.output.shape[1:3] == (2, 2))


def test_bad_layers_give_clear_errors():
    rng = np.random.default_rng(8)
    model = small_cnn(rng)
    with pytest.raises(InvalidInputError, match=r"'mapz' is not a layer of the model \(did you mean 'maps'\?\)"):
        Explainer("gradcam", model, layer="mapz")
    with pytest.raises(InvalidInputError, match=r"layer 'gap' outputs \(None, 5\); the last layer with feature maps "
                                                r"is 'maps'"):  # fmt: skip
        Explainer("gradcam", model, layer="gap")
    with pytest.raises(InvalidInputError, match="needs a layer with feature maps"):
        Explainer("scorecam", model, layer=model.get_layer("logits"))
    with pytest.raises(InvalidInputError, match="upsample of gradcam must be one of"):
        Explainer("gradcam", model, upsample="cubic")
    with pytest.raises(InvalidInputError, match="normalize of layercam must be True or False"):
        Explainer("layercam", model, normalize="yes")
    with pytest.raises(InvalidInputError, match="upsample of guided_gradcam cannot be None"):
        Explainer("guided_gradcam", model, upsample=None)
    with pytest.raises(InvalidInputError, match="max_channels of scorecam must be a positive integer"):
        Explainer("scorecam", model, max_channels=0)
    with pytest.raises(InvalidTypeError, match="gradcam reads a layer's feature maps, so it needs a Keras model"):
        Explainer("gradcam", tf.function(lambda x: tf.reduce_sum(x, axis=[1, 2])))
    regression = keras.Model(model.inputs, keras.layers.Dense(1)(model.get_layer("gap").output))
    with pytest.raises(InvalidInputError, match="pass softmax=False"):
        Explainer("scorecam", regression)


def test_a_layer_bypassed_by_the_output_is_still_explained():
    """A skip connection around the layer: the gradient with respect to the layer's output is the partial
    derivative, as a model with both outputs gives it (tf-keras-vis's construction)."""
    rng = np.random.default_rng(9)
    inputs = keras.Input((8, 8, 2))
    a = keras.layers.Conv2D(2, 3, padding="same", name="inner")(inputs)
    h = keras.layers.Add()([keras.layers.ReLU()(a), inputs])
    outputs = keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h))
    model = keras.Model(inputs, outputs)
    xs = rng.normal(size=(2, 8, 8, 2)).astype(np.float32)
    both = keras.Model(inputs, [a, outputs])
    av = tf.constant(both(xs)[0])
    with tf.GradientTape() as tape:
        tape.watch(av)
        y = model.layers[-1](model.layers[-2](model.layers[-3]([tf.nn.relu(av), xs])))[:, 1]
    g = tape.gradient(y, av).numpy()
    expected = (g.mean(axis=(1, 2), keepdims=True) * av.numpy()).sum(-1)
    got = Explainer("gradcam", model, layer="inner", relu=False, upsample=None).run(xs, target=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# TF1 == Keras


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam", "scorecam", "guided_gradcam"])
def test_tf1_context_equals_keras(method):
    rng = np.random.default_rng(10)
    model = small_cnn(rng)
    weights = model.get_weights()
    xs = rng.normal(size=(3, 12, 12, 3)).astype(np.float32)
    expected = Explainer(method, model, layer="maps").run(xs, target=1)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        X = tf.compat.v1.placeholder(tf.float32, (None, 12, 12, 3))
        h = tf.nn.relu(tf.nn.conv2d(X, weights[0], 1, "VALID") + weights[1])
        h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        maps = tf.nn.relu(tf.nn.conv2d(h, weights[2], 1, "VALID") + weights[3])
        T = tf.matmul(tf.reduce_mean(maps, axis=[1, 2]), weights[4]) + weights[5]
        got = _tf1_explain(session, method, T, X, xs, maps)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def _tf1_explain(session, method, T, X, xs, maps):
    with DeepExplain(session=session) as de:
        got = de.explain(method, T, X, xs, ys=np.eye(3, dtype=np.float32)[[1, 1, 1]], layer=maps)
        with pytest.raises(InvalidInputError, match="pass layer=<the tensor of the feature maps"):
            de.explain(method, T, X, xs)
        with pytest.raises(InvalidInputError, match="layer must be feature maps"):
            de.explain(method, T, X, xs, layer=T)
    return got


# ---------------------------------------------------------------------------------------------------------------------
# Peers on the same weights


def test_tf_keras_vis_parity():
    pytest.importorskip("tf_keras_vis")
    from tf_keras_vis.gradcam import Gradcam
    from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus
    from tf_keras_vis.layercam import Layercam
    from tf_keras_vis.scorecam import Scorecam
    from tf_keras_vis.utils.scores import CategoricalScore

    rng = np.random.default_rng(11)
    model = small_cnn(rng)
    xs = rng.uniform(0, 1, size=(3, 12, 12, 3)).astype(np.float32)
    score = CategoricalScore([1, 1, 1])
    peer = dict(penultimate_layer="maps", expand_cam=False, normalize_cam=False)
    for ours, theirs in [("gradcam", Gradcam), ("layercam", Layercam)]:
        expected = np.asarray(theirs(model)(score, xs, **peer))
        got = Explainer(ours, model, layer="maps", upsample=None).run(xs, target=1)
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    plus = np.asarray(GradcamPlusPlus(model)(score, xs, **peer))
    logits = model(xs).numpy()[:, 1]
    got = Explainer("gradcam++", model, layer="maps", upsample=None, normalize_alpha=True).run(xs, target=1)
    np.testing.assert_allclose(got * np.exp(logits)[:, None, None], plus, rtol=1e-4, atol=1e-6)  # tf-keras-vis: e^y
    normalized = GradcamPlusPlus(model)(score, xs, penultimate_layer="maps")
    got = Explainer("gradcam++", model, layer="maps", upsample="bilinear_align_corners", normalize_alpha=True,
                    normalize=True).run(xs, target=1)  # fmt: skip
    np.testing.assert_allclose(got, np.asarray(normalized), atol=1e-5)
    # Score-CAM: tf-keras-vis applies a softmax to the model's outputs (logits here) and zooms with aligned corners
    expected = np.asarray(Scorecam(model)(score, xs, penultimate_layer="maps", normalize_cam=False))
    got = Explainer("scorecam", model, layer="maps", upsample="bilinear_align_corners").run(xs, target=1)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_captum_layer_gradcam_on_a_torch_twin():
    torch = pytest.importorskip("torch")
    captum_attr = pytest.importorskip("captum.attr")
    rng = np.random.default_rng(12)
    model = small_cnn(rng)
    w = model.get_weights()

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(3, 4, 3)
            self.maps = torch.nn.Conv2d(4, 5, 3)
            self.logits = torch.nn.Linear(5, 3)

        def forward(self, x):
            h = torch.nn.functional.max_pool2d(torch.relu(self.c1(x)), 2)
            h = torch.relu(self.maps(h))
            return self.logits(h.mean(dim=(2, 3)))

    twin = Twin().double()
    with torch.no_grad():
        for conv, (kernel, bias) in [(twin.c1, w[0:2]), (twin.maps, w[2:4])]:
            conv.weight.copy_(torch.from_numpy(kernel.transpose(3, 2, 0, 1).astype(np.float64)))
            conv.bias.copy_(torch.from_numpy(bias.astype(np.float64)))
        twin.logits.weight.copy_(torch.from_numpy(w[4].T.astype(np.float64)))
        twin.logits.bias.copy_(torch.from_numpy(w[5].astype(np.float64)))
    xs = rng.normal(size=(4, 12, 12, 3)).astype(np.float32)
    inputs = torch.from_numpy(xs.transpose(0, 3, 1, 2).astype(np.float64))
    # Captum's layer is the conv module, whose output is pre-ReLU; Keras fuses the ReLU: attach to a ReLU module
    twin.relu_maps = torch.nn.ReLU()
    twin.forward = lambda x: twin.logits(
        twin.relu_maps(twin.maps(torch.nn.functional.max_pool2d(torch.relu(twin.c1(x)), 2))).mean(dim=(2, 3))
    )
    cam = captum_attr.LayerGradCam(twin.forward, twin.relu_maps)
    target = [0, 2, 1, 2]
    expected = cam.attribute(inputs, target=target).detach()
    got = Explainer("gradcam", model, layer="maps", relu=False, upsample=None).run(xs, target=np.array(target))
    np.testing.assert_allclose(got, expected.numpy()[:, 0], rtol=1e-4, atol=1e-6)
    for mode, theirs in [("nearest", "nearest"), ("bilinear", "bilinear")]:
        stretched = captum_attr.LayerAttribution.interpolate(expected, (12, 12), interpolate_mode=theirs)
        ours = Explainer("gradcam", model, layer="maps", relu=False, upsample=mode).run(xs, target=np.array(target))
        np.testing.assert_allclose(ours, stretched.numpy()[:, 0], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# tf_keras and real architectures


def _small_cnn_of(library, weights):
    layers = library.layers
    inputs = library.Input((12, 12, 3))
    h = layers.Conv2D(4, 3, activation="relu", name="c1")(inputs)
    h = layers.MaxPooling2D(name="pool")(h)
    h = layers.Conv2D(5, 3, activation="relu", name="maps")(h)
    outputs = layers.Dense(3, name="logits")(layers.GlobalAveragePooling2D(name="gap")(h))
    model = library.Model(inputs, outputs)
    model.set_weights(weights)
    return model


def test_tf_keras_graph_and_eager_models_equal_keras_3():
    tf_keras = pytest.importorskip("tf_keras")
    rng = np.random.default_rng(14)
    reference = small_cnn(rng)
    weights = reference.get_weights()
    xs = rng.normal(size=(3, 12, 12, 3)).astype(np.float32)
    expected = {m: Explainer(m, reference, layer="maps").run(xs, target=2) for m in ("gradcam", "scorecam")}
    with tf.Graph().as_default():  # first: tf_keras invalidates eager models once a layer is made in a graph
        graph_model = _small_cnn_of(tf_keras, weights)
        for method, values in expected.items():
            got = Explainer(method, graph_model, progress=False).run(xs, target=2)  # the default layer: 'maps'
            np.testing.assert_allclose(got, values, rtol=1e-4, atol=1e-6, err_msg=method)
    inner = _small_cnn_of(tf_keras, weights)
    nested = tf_keras.Sequential([tf_keras.Input((12, 12, 3)), inner])
    for method, values in expected.items():
        explainer = Explainer(method, nested)
        assert explainer.adapter.layer_path.name == f"{inner.name}/maps"
        np.testing.assert_allclose(explainer.run(xs, target=2), values, rtol=1e-4, atol=1e-6, err_msg=method)


def test_applications_nested_resnet50_and_efficientnet():
    """The default layer of Sequential([ResNet50, GAP, Dense]) is the backbone's last block, and the map equals the
    GradientTape computation; EfficientNet's swish (a custom gradient) works too."""
    rng = np.random.default_rng(15)
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3))
    head = [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)]
    model = keras.Sequential([keras.Input((64, 64, 3)), base, *head])
    xs = rng.uniform(0, 1, size=(2, 64, 64, 3)).astype(np.float32)
    explainer = Explainer("gradcam", model, upsample=None)
    assert explainer.adapter.layer_path.name == f"{base.name}/conv5_block3_out"
    expected = gradcam_by_tape(lambda x: base(x, training=False), lambda a: head[1](head[0](a)), xs, 3)
    np.testing.assert_allclose(explainer.run(xs, target=3), expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    efficient = keras.applications.EfficientNetB0(weights=None, input_shape=(64, 64, 3), classes=5,
                                                  classifier_activation=None)  # fmt: skip
    cams = Explainer("gradcam++", efficient).run(xs, target="max")
    assert cams.shape == (2, 64, 64) and np.all(np.isfinite(cams))


def test_segmentation_score_as_a_callable_target():
    """A fully convolutional segmentation model: the score of class 1 over a region, as a callable target."""
    rng = np.random.default_rng(16)
    inputs = keras.Input((10, 10, 2))
    features = keras.layers.Conv2D(6, 3, padding="same", activation="relu", name="features")(inputs)
    outputs = keras.layers.Conv2D(3, 1, name="classes")(features)
    model = keras.Model(inputs, outputs)
    xs = rng.normal(size=(2, 10, 10, 2)).astype(np.float32)

    def score(out):
        return tf.reduce_sum(out[:, 2:6, 2:6, 1], axis=[1, 2])

    got = Explainer("gradcam", model, upsample=None).run(xs, target=score)
    features_model = keras.Model(inputs, features)
    a = tf.constant(features_model(xs))
    with tf.GradientTape() as tape:
        tape.watch(a)
        y = score(model.get_layer("classes")(a))
    g = tape.gradient(y, a).numpy()
    expected = np.maximum((g.mean(axis=(1, 2), keepdims=True) * a.numpy()).sum(-1), 0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
