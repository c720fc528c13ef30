"""The live model is explained as it is: real architectures, changed weights, variable shapes, XLA.

Oracles: ``tf.GradientTape`` on the live Keras model (saliency), summation-to-delta / conservation (DeepLIFT, LRP),
a twin model with the same weights in another form (grouped convolution vs depthwise convolution), a fresh explainer
(after ``set_weights``), and the explanation without XLA (``jit_compile=True``).
"""

import os
import warnings

import numpy as np
import pytest
import tensorflow as tf

import deepexplain

keras = pytest.importorskip("keras")


def tape_gradient(model, xs, unit):
    x = tf.constant(xs)
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = model(x, training=False)[:, unit]
    return tape.gradient(score, x).numpy()


def tape_saliency(model, xs, unit):
    return np.abs(tape_gradient(model, xs, unit))


# ----------------------------------------------------------------------------------------------------------------
# keras.applications with custom gradients (swish), squeeze-excitation, layer norm, XLA-wrapped grouped convolutions
# ----------------------------------------------------------------------------------------------------------------

APPLICATIONS = {"EfficientNetB0": 32, "ConvNeXtTiny": 32}
RULE_METHODS = [("intgrad", {"steps": 3}), ("smoothgrad", {"samples": 2, "seed": 0}), ("deeplift", {}),
                ("elrp", {}), ("lrp.epsilon_plus", {})]  # fmt: skip


@pytest.mark.parametrize("name", APPLICATIONS)
def test_applications_saliency_equals_gradient_tape_and_rule_methods_run_cleanly(name):
    size = APPLICATIONS[name]
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    xs = (np.random.default_rng(0).random((1, size, size, 3)) * 255).astype(np.float32)
    saliency = deepexplain.explain("saliency", model, xs, target=3, progress=False)
    expected = tape_saliency(model, xs, 3)
    np.testing.assert_allclose(saliency, expected, rtol=1e-4, atol=1e-5 * expected.max())
    for method, kwargs in RULE_METHODS:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # every op on the path has a rule of the method
            attributions = deepexplain.explain(method, model, xs, target=3, progress=False, **kwargs)
        assert attributions.shape == xs.shape and np.isfinite(attributions).all(), method
        assert np.abs(attributions).max() > 0, method


@pytest.mark.skipif(
    not os.environ.get("DEEPEXPLAIN_SLOW"), reason="every keras.applications family: set DEEPEXPLAIN_SLOW=1"
)
@pytest.mark.parametrize(
    "name",
    ["ResNet50", "VGG16", "DenseNet121", "InceptionV3", "Xception", "MobileNetV2", "MobileNetV3Small",
     "EfficientNetB0", "EfficientNetV2B0", "ConvNeXtTiny", "NASNetMobile", "ResNet50V2"],
)  # fmt: skip
def test_every_application_family(name):
    size = 75 if name in ("InceptionV3", "Xception") else 64
    model = getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classifier_activation=None)
    xs = (np.random.default_rng(0).random((1, size, size, 3)) * 255).astype(np.float32)
    expected = tape_saliency(model, xs, 3)
    np.testing.assert_allclose(
        deepexplain.explain("saliency", model, xs, target=3), expected, rtol=1e-4, atol=1e-5 * expected.max()
    )
    for method, kwargs in RULE_METHODS:
        attributions = deepexplain.explain(method, model, xs, target=3, progress=False, **kwargs)
        assert np.isfinite(attributions).all(), method


# ----------------------------------------------------------------------------------------------------------------
# Activations written as several ops, gates and normalisations
# ----------------------------------------------------------------------------------------------------------------


def activation_mlp(activations, seed=0):
    x = keras.Input((5,))
    h = x
    for activation in activations:
        h = keras.layers.Dense(6, activation=activation)(h)
    model = keras.Model(x, keras.layers.Dense(3)(h))
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.8, w.shape).astype(np.float32) for w in model.get_weights()])
    return model


@pytest.mark.parametrize(
    "activations",
    [["swish", "gelu"], ["silu", "mish"], [keras.activations.gelu, "hard_swish"],
     [lambda z: keras.activations.gelu(z, approximate=True), "swish"]],
)  # fmt: skip
def test_deeplift_is_exact_through_activations_of_several_ops(activations):
    """swish/silu (a custom gradient), gelu (erfc or tanh form), mish and hard_swish are one nonlinearity each:
    summation-to-delta holds, and no op is reported without a rule."""
    model = activation_mlp(activations)
    xs = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explainer = deepexplain.Explainer("deeplift", model, baseline=np.full(5, 0.2, np.float32))
        errors = explainer.completeness_error(xs, target="max")
        for method in ("elrp", "lrp.epsilon", "lrp.alpha_1_beta_0", "deeplift"):
            assert np.isfinite(deepexplain.explain(method, model, xs, target=0)).all()
    np.testing.assert_allclose(errors, 0, atol=1e-3)


def test_deeplift_rescale_of_gelu_is_the_secant_of_gelu():
    """Hand value: one gelu unit between a linear input and output, y = gelu(w x); DeepLIFT's attribution with
    reference 0 is gelu(w x) - gelu(0) exactly (the secant times the input difference)."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, activation="gelu")])
    model.set_weights([np.array([[1.7]], np.float32)])
    xs = np.array([[0.8], [-1.3], [2.5]], np.float32)
    z = 1.7 * xs.astype(np.float64)
    from scipy.special import erf

    gelu = 0.5 * z * (1 + erf(z / np.sqrt(2)))
    np.testing.assert_allclose(deepexplain.explain("deeplift", model, xs, target=0), gelu, rtol=1e-5)
    # eLRP: x times the ratio y / z at the activation, i.e. y itself for one linear layer below
    np.testing.assert_allclose(deepexplain.explain("elrp", model, xs, target=0), gelu, rtol=1e-3)


def test_lrp_conserves_relevance_through_gates_and_layer_norm():
    """Squeeze-excitation gate and layer normalisation (without shift and bias): their modulating factors are
    constants for LRP, so the z-rule without biases conserves relevance exactly; DeepLIFT stays exact through the
    gate (Shapley midpoint rule)."""
    x = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu", use_bias=False)(x)
    gate = keras.layers.Dense(8, activation="sigmoid")(h)
    h = keras.layers.Multiply()([h, gate])
    h = keras.layers.LayerNormalization(center=False)(keras.layers.Dense(8, use_bias=False)(h))
    model = keras.Model(x, keras.layers.Dense(3, use_bias=False)(h))
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(0, 0.7, w.shape).astype(np.float32) for w in model.get_weights()])
    xs = rng.normal(size=(5, 6)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        relevance = deepexplain.explain("lrp.z", model, xs, target=1, bias=False)
    np.testing.assert_allclose(relevance.sum(axis=1), model(xs).numpy()[:, 1], rtol=1e-4, atol=1e-5)

    gated = keras.Model(model.inputs, model.layers[3].output)  # up to the gate
    head = keras.Model(gated.inputs, keras.layers.Dense(2)(gated.output))
    explainer = deepexplain.Explainer("deeplift", head)
    np.testing.assert_allclose(explainer.completeness_error(xs, target=0), 0, atol=1e-5)


def test_xla_wrapped_grouped_convolution_equals_depthwise_twin():
    """Keras 3 runs Conv2D(groups=channels) as an XLA-compiled function; LRP and DeepLIFT rules treat it as the
    depthwise convolution it is: the same numbers as a twin built with DepthwiseConv2D on the same weights."""
    rng = np.random.default_rng(3)
    grouped = keras.Sequential(
        [keras.Input((6, 6, 4)), keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
         keras.layers.Conv2D(8, 3, groups=8, padding="same", activation="relu"), keras.layers.Flatten(),
         keras.layers.Dense(3)]
    )  # fmt: skip
    depthwise = keras.Sequential(
        [keras.Input((6, 6, 4)), keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
         keras.layers.DepthwiseConv2D(3, padding="same", activation="relu"), keras.layers.Flatten(),
         keras.layers.Dense(3)]
    )  # fmt: skip
    weights = [rng.normal(0, 0.4, w.shape).astype(np.float32) for w in grouped.get_weights()]
    grouped.set_weights(weights)
    twin = list(weights)
    twin[2] = weights[2].reshape(3, 3, 8, 1)  # (kh, kw, 1, C) grouped kernel -> (kh, kw, C, 1) depthwise kernel
    depthwise.set_weights(twin)
    xs = rng.random((3, 6, 6, 4)).astype(np.float32)
    np.testing.assert_allclose(grouped(xs).numpy(), depthwise(xs).numpy(), rtol=1e-5, atol=1e-5)
    for method, kwargs in [("lrp.epsilon_plus", {}), ("lrp.alpha_2_beta_1", {}), ("deeplift", {}), ("elrp", {})]:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ours = deepexplain.explain(method, grouped, xs, target=1, **kwargs)
        expected = deepexplain.explain(method, depthwise, xs, target=1, **kwargs)
        np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-6, err_msg=method)


# ----------------------------------------------------------------------------------------------------------------
# Live weights, shapes, XLA, softmax outputs
# ----------------------------------------------------------------------------------------------------------------


def small_cnn():
    return keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.MaxPooling2D(),
         keras.layers.Flatten(), keras.layers.Dense(3)]
    )  # fmt: skip


@pytest.mark.parametrize("method", ["saliency", "deeplift", "lrp.alpha_2_beta_1", "occlusion"])
def test_run_after_set_weights_explains_the_new_weights(method):
    rng = np.random.default_rng(4)
    model = small_cnn()
    xs = rng.normal(size=(3, 8, 8, 1)).astype(np.float32)
    explainer = deepexplain.Explainer(method, model)
    before = explainer.run(xs, target=1)
    model.set_weights([w + rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    after = explainer.run(xs, target=1)
    fresh = deepexplain.Explainer(method, model).run(xs, target=1)
    np.testing.assert_allclose(after, fresh, rtol=1e-6, atol=1e-7)
    assert not np.allclose(before, after)


def test_variable_length_sequences_share_one_trace():
    """A recurrent model on inputs of shape (None, None, 3): five lengths, one compiled explanation, each equal to
    the live model's gradient."""
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.GRU(4), keras.layers.Dense(2)])
    rng = np.random.default_rng(5)
    explainer = deepexplain.Explainer("saliency", model)
    for length in (3, 5, 7, 2, 9):
        xs = rng.normal(size=(2, length, 3)).astype(np.float32)
        np.testing.assert_allclose(explainer.run(xs, target=1), tape_saliency(model, xs, 1), rtol=1e-4, atol=1e-6)
    assert len(explainer._compiled) == 1


def test_subclassed_model_relaxes_its_signature_instead_of_tracing_every_length():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(2)

        def call(self, x, training=False):
            return self.dense(tf.reduce_mean(x, axis=1))

    model = Net()
    model(np.zeros((1, 4, 3), np.float32))
    explainer = deepexplain.Explainer("grad*input", model)
    rng = np.random.default_rng(6)
    for length in (4, 6, 8, 10):
        xs = rng.normal(size=(2, length, 3)).astype(np.float32)
        expected = xs * tape_gradient(model, xs, 0)
        np.testing.assert_allclose(explainer.run(xs, target=0), expected, rtol=1e-5, atol=1e-6)
    assert len(explainer._compiled) <= 2  # the first length, then one signature with the length dynamic


@pytest.mark.parametrize(
    "method, kwargs",
    [("saliency", {}), ("intgrad", {"steps": 5}), ("deeplift", {}), ("elrp", {}), ("lrp.epsilon_plus", {}),
     ("lrp.alpha_2_beta_1", {}), ("lrp.gamma", {}), ("deepshap", {"baselines": np.zeros((2, 8, 8, 1), np.float32)})],
)  # fmt: skip
def test_jit_compile_gives_the_same_numbers(method, kwargs):
    rng = np.random.default_rng(7)
    model = small_cnn()
    # seeded weights: with Keras' unseeded initialisation an eps-LRP denominator near 0 now and then amplifies the
    # rounding differences of XLA's fused kernels beyond the tolerance
    model.set_weights([rng.normal(0, 0.5, w.shape).astype(np.float32) for w in model.get_weights()])
    xs = rng.normal(size=(4, 8, 8, 1)).astype(np.float32)  # signed inputs: alpha-beta takes its run-time branch
    plain = deepexplain.explain(method, model, xs, target="max", **kwargs)
    compiled = deepexplain.Explainer(method, model, jit_compile=True, **kwargs).run(xs, target="max")
    np.testing.assert_allclose(compiled, plain, rtol=1e-5, atol=1e-5 * np.abs(plain).max())
    positive = np.abs(xs)  # and the non-negative branch
    np.testing.assert_allclose(
        deepexplain.Explainer(method, model, jit_compile=True, **kwargs).run(positive, target=0),
        deepexplain.explain(method, model, positive, target=0, **kwargs),
        rtol=1e-5,
        atol=1e-5 * np.abs(plain).max(),
    )


def test_relevance_methods_explain_the_logits_of_a_softmax_model():
    rng = np.random.default_rng(8)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3, activation="softmax")]
    )
    model.set_weights([rng.normal(0, 0.8, w.shape).astype(np.float32) for w in model.get_weights()])
    logits = deepexplain.strip_softmax(model)
    xs = rng.normal(size=(4, 4)).astype(np.float32)
    for method in ("lrp.epsilon", "deeplift", "elrp", "lrp.alpha_1_beta_0"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            ours = deepexplain.explain(method, model, xs)  # target 'max': the same unit on logits and probabilities
        np.testing.assert_allclose(ours, deepexplain.explain(method, logits, xs), rtol=1e-5, atol=1e-7)
    with pytest.warns(UserWarning, match="strip_softmax"):
        deepexplain.Explainer("saliency", model)


def test_explainer_holds_no_copy_of_the_weights():
    """An explainer of an MLP with 64 MB of weights adds far less than that to the process (no frozen graph)."""
    psutil = pytest.importorskip("psutil")
    model = keras.Sequential([keras.Input((2048,)), keras.layers.Dense(4096), keras.layers.Dense(2048)])
    xs = np.random.default_rng(9).normal(size=(2, 2048)).astype(np.float32)
    deepexplain.explain("saliency", model, xs, target=0)  # warm: TensorFlow's own first-use allocations
    process = psutil.Process()
    before = process.memory_info().rss
    explainers = [deepexplain.Explainer("saliency", model) for _ in range(3)]
    for explainer in explainers:
        explainer.run(xs, target=0)
    added = process.memory_info().rss - before
    weights = sum(w.nbytes for w in model.get_weights())
    assert added < 0.5 * weights, f"3 explainers added {added / 2**20:.0f} MiB for {weights / 2**20:.0f} MiB of weights"
