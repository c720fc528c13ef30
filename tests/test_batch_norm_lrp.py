"""Batch normalisation folded into the layer before it, for every LRP rule; the relevance-explosion warning.

Oracle: the same network with each batch norm folded by hand (numpy) into the layer before it, ``W' = W s`` along
the output units and ``b' = s b + t`` with ``s = gamma / sqrt(var + eps)``, ``t = beta - mean s``. The two models
compute the same function (checked), and LRP must give the same relevance on both for every rule: before folding,
the sign-splitting rules (alpha-beta, z+, gamma, the presets) applied to ``W`` what the output sees as ``W s`` (a
negative gamma flips it), off by up to 160 times the attribution scale on the model below. zennit's canonizer
(``SequentialMergeBatchNorm``) on a PyTorch twin is the peer check, in ``test_zennit_crosscheck``.

Layouts folded: Keras 3's batch norm (``x * s + t`` ops) after Conv2D with and without bias, DepthwiseConv2D,
Conv2DTranspose, Dense and Conv1D (a Conv2D between reshapes); TensorFlow's fused batch norm in a TF1 graph.

Also: a fused batch norm normalising by its input's statistics (tf_keras' LayerNormalization) against Keras 3's
LayerNormalization on the same weights; relevance explosions warned, naming the op.
"""

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402
from conftest import tf1  # noqa: E402

import deepexplain  # noqa: E402
from deepexplain.tensorflow import DeepExplain  # noqa: E402

keras = pytest.importorskip("keras")
layers = keras.layers

METHODS = ["lrp.z", "lrp.epsilon", "lrp.alpha_2_beta_1", "lrp.alpha_1_beta_0", "lrp.z_plus", "lrp.gamma",
           "lrp.epsilon_plus", "lrp.w_square", "lrp.flat", "deep_taylor", "lrp.sequential_preset_a"]  # fmt: skip
RTOL, ATOL_SCALE = 1e-4, 1e-4  # float32 sums in a different order


def _image_model(folded: bool):
    """conv+BN, conv (no bias)+BN, depthwise+BN, transposed conv+BN, pooled, dense (no bias)+BN, dense."""
    inp = keras.Input((8, 8, 2))
    h = inp
    for name, layer in [
        ("conv", layers.Conv2D(4, 3, padding="same", name="conv")),
        ("conv_nobias", layers.Conv2D(3, 3, padding="same", use_bias=folded, name="conv_nobias")),
        ("depthwise", layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="depthwise")),
        ("transposed", layers.Conv2DTranspose(3, 3, strides=2, padding="same", name="transposed")),
    ]:
        h = layer(h)
        if not folded:
            h = layers.BatchNormalization(name=f"{name}_bn")(h)
        h = layers.ReLU()(h)
    h = layers.GlobalAveragePooling2D()(h)
    h = layers.Dense(5, use_bias=folded, name="dense")(h)
    if not folded:
        h = layers.BatchNormalization(name="dense_bn")(h)
    h = layers.ReLU()(h)
    return keras.Model(inp, layers.Dense(3, name="logits")(h))


def _sequence_model(folded: bool):
    """Conv1D+BN (a Conv2D between ExpandDims and Squeeze, then the batch norm), flatten, dense."""
    inp = keras.Input((10, 3))
    h = layers.Conv1D(4, 3, name="conv1d")(inp)
    if not folded:
        h = layers.BatchNormalization(name="conv1d_bn")(h)
    h = layers.Flatten()(layers.ReLU()(h))
    return keras.Model(inp, layers.Dense(3, name="logits")(h))


def _randomised(model, rng):
    """Weights N(0, 0.5); batch norms with signed gammas (some < 0), shifted means, variances in [0.2, 2]."""
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, layers.BatchNormalization):
            c = weights[0].shape[0]
            gamma = rng.normal(0, 1, c)
            layer.set_weights([gamma, rng.normal(0, 0.5, c), rng.normal(0, 0.3, c), rng.uniform(0.2, 2, c)])
        elif weights:
            layer.set_weights([rng.normal(0, 0.5, w.shape) for w in weights])
    return model


def _hand_folded(model, build):
    """``build(folded=True)`` with each layer's weights and its batch norm folded by hand."""
    folded = build(True)
    for layer in folded.layers:
        if not layer.get_weights():
            continue
        source = model.get_layer(layer.name)
        weights = source.get_weights()
        try:
            bn = model.get_layer(f"{layer.name}_bn")
        except ValueError:
            layer.set_weights(weights)
            continue
        gamma, beta, mean, variance = bn.get_weights()
        s = gamma / np.sqrt(variance + bn.epsilon)
        kernel = weights[0]
        bias = weights[1] if len(weights) > 1 else np.zeros_like(s)
        if isinstance(layer, layers.DepthwiseConv2D):  # (kh, kw, channels, multiplier): units are channels*mult
            kernel = kernel * s.reshape(kernel.shape[2:])
        elif isinstance(layer, layers.Conv2DTranspose):  # (kh, kw, out, in)
            kernel = kernel * s[:, None]
        else:
            kernel = kernel * s
        layer.set_weights([kernel, s * bias + beta - mean * s])
    return folded


@pytest.fixture(scope="module")
def twins():
    rng = np.random.default_rng(3)
    result = {}
    for name, build, shape in [("image", _image_model, (6, 8, 8, 2)), ("sequence", _sequence_model, (6, 10, 3))]:
        model = _randomised(build(False), rng)
        xs = rng.normal(0, 1, shape).astype(np.float32)
        folded = _hand_folded(model, build)
        np.testing.assert_allclose(model(xs).numpy(), folded(xs).numpy(), rtol=1e-4, atol=1e-5)
        targets = model(xs).numpy().argmax(axis=1)  # positive outputs mostly: z+ rules carry relevance
        result[name] = (model, folded, xs, targets)
    return result


@pytest.mark.parametrize("twin", ["image", "sequence"])
@pytest.mark.parametrize("method", METHODS)
def test_batch_norm_is_folded_into_the_layer_before_it(twins, twin, method):
    model, folded, xs, targets = twins[twin]
    ours = deepexplain.explain(method, model, xs, target=targets)
    expected = deepexplain.explain(method, folded, xs, target=targets)
    scale = np.abs(expected).max()
    assert scale > 1e-6 and np.isfinite(ours).all()
    np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=ATOL_SCALE * scale)


def _tf1_graph(folded: bool, rng_seed=11):
    """TF1: conv -> fused batch norm (inference) -> ReLU -> dense (logits); or the conv folded by hand."""
    rng = np.random.default_rng(rng_seed)
    kernel = rng.normal(0, 0.5, (3, 3, 2, 4)).astype(np.float32)
    bias = rng.normal(0, 0.3, 4).astype(np.float32)
    gamma, beta = rng.normal(0, 1, 4).astype(np.float32), rng.normal(0, 0.5, 4).astype(np.float32)
    mean, variance = rng.normal(0, 0.3, 4).astype(np.float32), rng.uniform(0.2, 2, 4).astype(np.float32)
    w = rng.normal(0, 0.5, (8 * 8 * 4, 3)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        X = tf1.placeholder(tf.float32, [None, 8, 8, 2], name="X")
        if folded:
            s = gamma / np.sqrt(variance + 1e-3)
            z = tf.nn.conv2d(X, tf.constant(kernel * s), 1, "SAME") + tf.constant(s * bias + beta - mean * s)
        else:
            z = tf.nn.bias_add(tf.nn.conv2d(X, tf.constant(kernel), 1, "SAME"), tf.constant(bias))
            z, _, _ = tf1.nn.fused_batch_norm(z, gamma, beta, mean, variance, epsilon=1e-3, is_training=False)
            assert z.op.type.startswith("FusedBatchNorm")
        T = tf.matmul(tf.reshape(tf.nn.relu(z), [-1, 8 * 8 * 4]), tf.constant(w))
    return graph, X, T


@pytest.mark.parametrize("method", ["lrp.alpha_2_beta_1", "lrp.epsilon_plus", "lrp.gamma", "lrp.z"])
def test_fused_batch_norm_is_folded_in_a_tf1_graph(method):
    xs = np.random.default_rng(0).normal(0, 1, (4, 8, 8, 2)).astype(np.float32)
    results = []
    for folded in (False, True):
        graph, X, T = _tf1_graph(folded)
        with tf1.Session(graph=graph) as session, DeepExplain(session=session) as de:
            ys = np.eye(3, dtype=np.float32)[session.run(T, {X: xs}).argmax(axis=1)]
            results.append(de.explain(method, T, X, xs, ys=ys))
    ours, expected = results
    np.testing.assert_allclose(ours, expected, rtol=RTOL, atol=ATOL_SCALE * np.abs(expected).max())


# ----------------------------------------------------------------------------------------------------------------
# Relevance that explodes is reported, naming where
# ----------------------------------------------------------------------------------------------------------------


def _near_zero_model():
    """x -> dense 'hidden' (z = W x ~ 0 for the first unit, bias 2) -> ReLU -> dense 'logits'. With bias=False the
    z-rule divides the hidden unit's relevance (carried by its bias) by W x ~ 1e-6: relevance explodes there."""
    inp = keras.Input((3,))
    h = layers.Dense(2, activation="relu", name="hidden")(inp)
    model = keras.Model(inp, layers.Dense(1, name="logits")(h))
    model.get_layer("hidden").set_weights([np.array([[1.0, 0.5], [-1.0, 0.2], [1e-6, 0.1]], np.float32),
                                           np.array([2.0, 0.0], np.float32)])  # fmt: skip
    model.get_layer("logits").set_weights([np.array([[1.0], [1.0]], np.float32), np.zeros(1, np.float32)])
    return model


def test_relevance_explosion_warns_naming_the_op_where_it_grows():
    model = _near_zero_model()
    xs = np.array([[1.0, 1.0, 1.0], [0.5, -0.2, 0.3]], np.float32)  # row 0: W x = 1e-6 at the first hidden unit
    with pytest.warns(RuntimeWarning, match="relevance exploded") as caught:
        a = deepexplain.explain("lrp.z", model, xs, target=0, bias=False)
    message = str(next(w.message for w in caught if "exploded" in str(w.message)))
    assert "1 of 2 sample(s) (first: sample 0" in message
    assert "hidden" in message and "grows most at op" in message and "keep bias=True" in message
    f = model(xs).numpy()[:, 0]
    assert np.abs(a[0]).sum() > 100 * abs(f[0])  # what the warning says: +-2e6 that cancel to about f
    np.testing.assert_allclose(a[1].sum(), f[1], rtol=1e-5)  # the other row conserves exactly (bias=False)


def test_no_explosion_warning_where_relevance_is_sane(twins):
    model, _, xs, targets = twins["image"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deepexplain.explain("lrp.epsilon_plus", model, xs, target=targets)
        deepexplain.explain("lrp.alpha_2_beta_1", model, xs, target=targets)


@pytest.mark.skipif(
    not os.environ.get("DEEPEXPLAIN_SLOW"), reason="keras.applications batch-norm nets: DEEPEXPLAIN_SLOW=1"
)
@pytest.mark.parametrize("name", ["ResNet50", "MobileNetV2", "DenseNet121", "Xception"])
def test_batch_norm_networks_give_finite_relevance(name):
    """keras.applications (``weights=None``) with batch-norm statistics calibrated on the explained data: the sign
    rules finite and sane (no explosion warning); ``lrp.z(bias=False)``, whose denominators ``W x`` leave batch
    norm's shift out and vanish, warns (measured: NaN on all four, with or without folding). Before folding, αβ gave
    sum R = 9e21 f on Xception and -1855 f on MobileNetV2."""
    size = 75
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10,
                                              classifier_activation=None)  # fmt: skip
    rng = np.random.default_rng(0)
    xs = rng.uniform(0, 1, (8, size, size, 3)).astype(np.float32)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = 0.0
            layer.gamma.assign(rng.uniform(0.5, 1.5, layer.gamma.shape).astype(np.float32))
            layer.beta.assign(rng.normal(0, 0.1, layer.beta.shape).astype(np.float32))
    model(xs, training=True)  # the moving statistics become these samples'
    x = xs[:2]
    for method in ("lrp.epsilon_plus", "lrp.alpha_1_beta_0"):
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)
            assert np.isfinite(deepexplain.explain(method, model, x, target=0, progress=False)).all(), method
    with warnings.catch_warnings():  # finite; on Xception large (sum R ~ 400 f where a residual sum is near 0): warned
        warnings.simplefilter("ignore", RuntimeWarning)
        assert np.isfinite(deepexplain.explain("lrp.alpha_2_beta_1", model, x, target=0, progress=False)).all()
    with pytest.warns(RuntimeWarning, match="relevance exploded"):
        deepexplain.explain("lrp.z", model, x, target=0, bias=False, progress=False)


# ----------------------------------------------------------------------------------------------------------------
# A fused batch norm with the statistics of its input: tf_keras' LayerNormalization
# ----------------------------------------------------------------------------------------------------------------


def _layer_norm_block(K, center):
    """Per-token dense -> LayerNormalization -> per-token dense + ReLU -> flatten -> dense, no other biases."""
    inp = K.Input((4, 6))
    h = K.layers.Dense(6, use_bias=False)(inp)
    h = K.layers.LayerNormalization(center=center)(h)
    h = K.layers.Flatten()(K.layers.Dense(5, use_bias=False, activation="relu")(h))
    return K.Model(inp, K.layers.Dense(3, use_bias=False)(h))


@pytest.mark.parametrize("center", [False, True], ids=["no_shift", "shift"])
@pytest.mark.parametrize("method,kwargs", [("lrp.cp", {}), ("lrp.attn", {}), ("lrp.z", {"bias": False})])
def test_tf_keras_layer_normalisation_gets_the_normalisation_rule(method, kwargs, center):
    """tf_keras runs LayerNormalization as a training-mode FusedBatchNormV3 on the input reshaped to one channel per
    token (before: treated as the inference affine map, lrp.cp's sum R / f was 0.0004); it must give what Keras 3's
    LayerNormalization (ops with an Rsqrt: the recognised normalisation region) gives on the same weights.

    With a large epsilon they differ by design: tf_keras applies gamma and beta as ops of their own after the fused
    op, so the epsilon stabilises two divisions there instead of one (lrp.epsilon(0.01): up to 47% of an entry)."""
    tf_keras = pytest.importorskip("tf_keras")
    rng = np.random.default_rng(5)
    ours, twin = _layer_norm_block(tf_keras, center), _layer_norm_block(keras, center)
    weights = [rng.normal(0.3 if w.ndim == 1 else 0, 1, w.shape).astype(np.float32) for w in ours.get_weights()]
    ours.set_weights(weights)
    twin.set_weights(weights)
    xs = rng.normal(0, 1, (3, 4, 6)).astype(np.float32)
    np.testing.assert_allclose(ours(xs).numpy(), twin(xs).numpy(), rtol=1e-4, atol=1e-5)
    a = deepexplain.explain(method, ours, xs, target=1, **kwargs)
    expected = deepexplain.explain(method, twin, xs, target=1, **kwargs)
    np.testing.assert_allclose(a, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    if not center:  # bias-free: relevance conserved
        np.testing.assert_allclose(a.reshape(3, -1).sum(axis=1), twin(xs).numpy()[:, 1], rtol=1e-4)
