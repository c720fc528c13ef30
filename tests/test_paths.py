"""Blur IG and Guided IG: PAIR saliency on the same Keras model, identities (Guided IG with max_dist=0 is integrated
gradients; both paths sum to the output difference of their ends), batching, TF1 == Keras, bad input."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from deepexplain import Explainer  # noqa: E402
from deepexplain.errors import InvalidInputError  # noqa: E402
from deepexplain.tensorflow import DeepExplain  # noqa: E402
from deepexplain.tensorflow.methods.paths import gaussian_blur  # noqa: E402


def cnn(seed=0):
    rng = np.random.default_rng(seed)
    inputs = keras.Input((10, 10, 2))
    h = keras.layers.Conv2D(4, 3, activation="softplus")(inputs)
    h = keras.layers.Conv2D(3, 3, activation="tanh")(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


XS = np.random.default_rng(1).uniform(size=(3, 10, 10, 2)).astype(np.float32)


def pair_call(model, target):
    saliency = pytest.importorskip("saliency.core")

    def call(x, call_model_args=None, expected_keys=None):
        x = tf.constant(np.asarray(x, np.float32))
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = model(x)[:, target]
        return {saliency.INPUT_OUTPUT_GRADIENTS: tape.gradient(y, x).numpy()}

    return saliency, call


def test_blur_ig_equals_pair():
    model = cnn()
    saliency, call = pair_call(model, 2)
    for kwargs in ({"max_sigma": 4.0, "steps": 16}, {"max_sigma": 3.0, "steps": 12, "sqrt": True}):
        theirs = np.stack([saliency.BlurIG().GetMask(x.astype(np.float64), call, batch_size=1, **kwargs) for x in XS])
        ours = Explainer("blur_ig", model, **kwargs).run(XS, target=2, batch_size=7)
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-6)


def test_guided_ig_equals_pair(monkeypatch):
    model = cnn()
    saliency, call = pair_call(model, 1)
    from saliency.core import guided_ig

    quantile = np.quantile  # PAIR 0.2.1 passes numpy's removed `interpolation=` keyword

    def pair_quantile(a, q, interpolation=None, method="linear"):
        return quantile(a, q, method=interpolation or method)

    monkeypatch.setattr(guided_ig.np, "quantile", pair_quantile)
    baseline = np.full((10, 10, 2), 0.2, np.float32)
    theirs = np.stack([saliency.GuidedIG().GetMask(x, call, x_baseline=baseline, x_steps=25, fraction=0.1,
                                                   max_dist=0.05) for x in XS])  # fmt: skip
    ours = Explainer("guided_ig", model, baseline=baseline, steps=25, fraction=0.1, max_dist=0.05).run(XS, target=1)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-7)


def test_guided_ig_without_deviation_is_integrated_gradients():
    model = cnn()
    ours = Explainer("guided_ig", model, steps=16, max_dist=0.0).run(XS, target=0, batch_size=2)
    ig = Explainer("intgrad", model, steps=16, integration="riemann_left").run(XS, target=0)
    np.testing.assert_allclose(ours, ig, rtol=1e-4, atol=1e-6)


def test_paths_sum_to_the_output_difference_of_their_ends():
    model = cnn()
    logits = model(XS).numpy()[:, 0]
    guided = Explainer("guided_ig", model, steps=400).run(XS, target=0)
    np.testing.assert_allclose(guided.reshape(3, -1).sum(1), logits - model(np.zeros_like(XS)).numpy()[:, 0],
                               atol=0.02 * np.abs(logits).max())  # fmt: skip
    blur = Explainer("blur_ig", model, max_sigma=6.0, steps=400).run(XS, target=0)
    start = model(gaussian_blur(XS.astype(np.float64), 6.0).astype(np.float32)).numpy()[:, 0]
    np.testing.assert_allclose(blur.reshape(3, -1).sum(1), logits - start, atol=0.02 * np.abs(logits).max())


@pytest.mark.parametrize(("method", "kwargs"), [("blur_ig", {"max_sigma": 3.0, "steps": 10}),
                                                ("guided_ig", {"steps": 10})])  # fmt: skip
def test_tf1_context_equals_keras(method, kwargs):
    model = cnn()
    w = model.get_weights()
    expected = Explainer(method, model, **kwargs).run(XS, target=1)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        X = tf.compat.v1.placeholder(tf.float32, (None, 10, 10, 2))
        h = tf.nn.softplus(tf.nn.conv2d(X, w[0], 1, "VALID") + w[1])
        h = tf.tanh(tf.nn.conv2d(h, w[2], 1, "VALID") + w[3])
        T = tf.matmul(tf.reshape(h, (-1, 108)), w[4]) + w[5]
        with DeepExplain(session=session) as de:
            got = de.explain(method, T, X, XS, ys=np.eye(3, dtype=np.float32)[[1, 1, 1]], **kwargs)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


def test_bad_arguments():
    model = cnn()
    with pytest.raises(InvalidInputError, match=r"fraction of guided_ig must be a number in \[0.0, 1.0\]"):
        Explainer("guided_ig", model, fraction=2)
    with pytest.raises(InvalidInputError, match="max_sigma of blur_ig must be a number >= 0"):
        Explainer("blur_ig", model, max_sigma=-1)
    with pytest.raises(InvalidInputError, match="steps of guided_ig must be a positive integer"):
        Explainer("guided_ig", model, steps=0)


# ---------------------------------------------------------------------------------------------------------------------
# XRAI


def astronauts():
    from skimage import data, transform

    image = transform.resize(data.astronaut(), (32, 32), anti_aliasing=True).astype(np.float32)
    return np.stack([image, image[::-1]])


def image_cnn():
    rng = np.random.default_rng(2)
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    h = keras.layers.Conv2D(3, 3, activation="tanh")(h)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(h)))
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


@pytest.mark.parametrize("algorithm", ["full", "fast"])
def test_xrai_equals_pair(algorithm):
    model = image_cnn()
    saliency, call = pair_call(model, 1)
    xs = astronauts()
    parameters = saliency.XRAIParameters(steps=12, algorithm=algorithm)
    theirs = np.stack([saliency.XRAI().GetMask(x, call, batch_size=24, extra_parameters=parameters) for x in xs])
    ours = Explainer("xrai", model, steps=12, algorithm=algorithm).run(xs, target=1, batch_size=30)
    assert ours.shape == (2, 32, 32)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-9)


def test_xrai_on_given_segments_is_region_densities_of_the_attribution():
    import deepexplain

    model = image_cnn()
    xs = astronauts()
    labels = deepexplain.segments(xs, "grid", cells=(2, 2))
    maps = Explainer("xrai", model, steps=8, segments=labels, min_pixel_diff=1).run(xs, target=0)
    flat = xs.reshape(2, -1)
    attribution = 0
    for b in (flat.min(1), flat.max(1)):  # PAIR's IG from black and white: linspace points, weights 1/steps
        base = np.broadcast_to(b[:, None, None, None], xs.shape)
        points = np.concatenate([base + a * (xs - base) for a in np.linspace(0, 1, 8)]).astype(np.float32)
        x = tf.constant(points)
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = model(x)[:, 0]
        g = tape.gradient(y, x).numpy().reshape(8, 2, 32, 32, 3).mean(0)
        attribution = attribution + g * (xs - base) / 2
    attribution = attribution.max(-1)
    for k in range(2):
        for cell in range(4):
            region = labels[k, ..., 0] == cell
            np.testing.assert_allclose(maps[k][region], attribution[k][region].mean(), rtol=1e-4, atol=1e-9)
    with pytest.raises(InvalidInputError, match="segments of xrai must be integer labels"):
        Explainer("xrai", model, segments=np.zeros((2, 8, 8), int))
    with pytest.raises(InvalidInputError, match="algorithm of xrai must be 'full' or 'fast'"):
        Explainer("xrai", model, algorithm="greedy")
