"""The eager/Keras path against the TF1 graph API on the same weights, for Keras 3 and tf_keras models.

Oracle: the same architecture built with tf_keras inside a TF1 graph, given the same weights, and explained through
the DeepExplain context (a different construction of the graph: Keras' own graph-mode layers instead of a traced,
frozen function). Plus completeness of DeepLIFT/IG on the eager path itself.
"""

import warnings

import numpy as np
import pytest
import tensorflow as tf
from conftest import one_hot

import deepexplain
from deepexplain.tensorflow import DeepExplain

keras = pytest.importorskip("keras")
tf_keras = pytest.importorskip("tf_keras")

LIBRARIES = {"keras3": keras, "tf_keras": tf_keras}


# ----------------------------------------------------------------------------------------------------------------
# Architectures, written once for both Keras packages
# ----------------------------------------------------------------------------------------------------------------


def sequential_cnn(K):
    return K.Sequential(
        [
            K.Input((8, 8, 1)),
            K.layers.Conv2D(4, 3, padding="same", activation="relu"),
            K.layers.MaxPooling2D(),
            K.layers.Conv2D(3, 3, activation="tanh"),
            K.layers.Flatten(),
            K.layers.Dense(4),
        ]
    )


def residual_concat(K):
    x = K.Input((6,))
    h = K.layers.Dense(6, activation="relu")(x)
    added = K.layers.Add()([x, h])
    a = K.layers.Dense(4, activation="sigmoid")(added)
    b = K.layers.Dense(3, activation="softplus")(x)
    return K.Model(x, K.layers.Dense(3)(K.layers.Concatenate()([a, b])))


def batchnorm_dropout(K):
    return K.Sequential(
        [
            K.Input((6,)),
            K.layers.Dense(8),
            K.layers.BatchNormalization(),
            K.layers.Activation("relu"),
            K.layers.Dropout(0.5),
            K.layers.Dense(3),
        ]
    )


def text_classifier(K):
    ids = K.Input((5,), dtype="int32")
    embedded = K.layers.Embedding(20, 4, name="embedding")(ids)
    pooled = K.layers.GlobalAveragePooling1D()(embedded)
    return K.Model(ids, K.layers.Dense(3)(K.layers.Dense(6, activation="tanh")(pooled)))


def two_inputs(K):
    a, b = K.Input((4,)), K.Input((3,))
    joined = K.layers.Concatenate()([K.layers.Dense(3, activation="elu")(a), K.layers.Dense(3)(b)])
    return K.Model([a, b], K.layers.Dense(2)(K.layers.Dense(5, activation="relu")(joined)))


def subclassed(K):
    class Net(K.Model):
        def __init__(self):
            super().__init__()
            self.hidden = K.layers.Dense(5, activation="tanh")
            self.out = K.layers.Dense(3)

        def call(self, x, training=False):
            return self.out(self.hidden(x))

    return Net()


ARCHITECTURES = {
    "sequential_cnn": (sequential_cnn, [(8, 8, 1)]),
    "residual_concat": (residual_concat, [(6,)]),
    "batchnorm_dropout": (batchnorm_dropout, [(6,)]),
    "two_inputs": (two_inputs, [(4,), (3,)]),
    "subclassed": (subclassed, [(6,)]),
}


def weights_for(model, rng):
    """Non-trivial weights (biases and batch-norm statistics too; variances stay positive)."""
    weights = []
    for value, variable in zip(model.get_weights(), model.weights, strict=True):
        name = getattr(variable, "path", getattr(variable, "name", ""))
        changed = np.abs(value) + 0.5 if "variance" in name else value + rng.normal(0, 0.3, value.shape)
        weights.append(changed.astype(np.float32))
    return weights


def make_inputs(shapes, rng, n=3):
    return [rng.normal(size=(n, *s)).astype(np.float32) for s in shapes]


def eager_model(K, build, shapes, rng, weights=None):
    """The architecture built with ``K`` in eager mode; random non-trivial weights unless given."""
    model = build(K)
    if not model.built:
        model(*[tf.zeros((1, *s)) for s in shapes])
    model.set_weights(weights_for(model, rng) if weights is None else weights)
    return model


def twins(library, build, shapes, rng):
    """(eager model, graph twin) on the same weights. The graph twin is built first: tf_keras invalidates models
    made in eager mode once a layer is made inside a tf.Graph."""
    weights = eager_model(keras, build, shapes, rng).get_weights()
    twin = graph_twin(build, shapes, weights)
    return eager_model(LIBRARIES[library], build, shapes, rng, weights), twin


def graph_twin(build, shapes, weights):
    """The architecture built with tf_keras in a TF1 graph: (session, input tensors, model)."""
    graph = tf.Graph()
    with graph.as_default():
        model = build(tf_keras)
        if not model.built:
            inputs = [tf.compat.v1.placeholder(tf.float32, (None, *s)) for s in shapes]
            output = model(inputs[0] if len(inputs) == 1 else inputs)
        else:
            inputs, output = list(model.inputs), model.output
        session = tf_keras.src.backend.get_session()
        model.set_weights(weights)
    return session, inputs, output, model


QUADRANTS = (np.arange(8)[:, None] // 4 * 2 + np.arange(8)[None, :] // 4)[..., None]  # 4 players of an 8x8 image


def method_arguments(rng, shapes):
    baselines = [rng.normal(size=(3, *s)).astype(np.float32) for s in shapes]
    single = len(shapes) == 1
    return {
        "saliency": {},
        "grad*input": {},
        "intgrad": {"steps": 8, "baseline": [b[0] for b in baselines] if not single else baselines[0][0]},
        "elrp": {},
        "deeplift": {"baseline": [b[0] for b in baselines] if not single else baselines[0][0]},
        "smoothgrad": {"samples": 4, "seed": 1},
        "expected_gradients": {"baselines": baselines if not single else baselines[0], "samples": 5, "seed": 2},
        "deepshap": {"baselines": baselines if not single else baselines[0]},
        "occlusion": {"window_shape": (2, 2, 1), "step": 1} if shapes[0] == (8, 8, 1) else {},
        "shapley_sampling": {"samples": 3, "seed": 3},
        "feature_ablation": {},
        "shapley_exact": {"feature_mask": QUADRANTS} if shapes[0] == (8, 8, 1) else {},
        "zero": {},
        "guided_backprop": {},
        "deconvnet": {},
        "lrp.epsilon": {"epsilon": 1e-3},
        "lrp.epsilon_gamma_box": {"low": -3.0, "high": 3.0},  # the z^B, gamma and epsilon layer rules
        "random": {"seed": 4},
    }


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("architecture", ARCHITECTURES)
def test_eager_path_equals_graph_api_for_every_method(library, architecture):
    build, shapes = ARCHITECTURES[architecture]
    rng = np.random.default_rng(0)
    model, (session, inputs, output, _) = twins(library, build, shapes, rng)
    xs = make_inputs(shapes, rng)
    ys = one_hot(rng.integers(0, output.shape[1], size=3), output.shape[1])
    X = inputs if len(inputs) > 1 else inputs[0]
    data = xs if len(xs) > 1 else xs[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tf_keras graphs hold functional If ops for the learning phase
        for method, kwargs in method_arguments(rng, shapes).items():
            if method.startswith("lrp.") and architecture == "batchnorm_dropout":
                continue  # tf_keras' graph puts batch norm inside a learning-phase If op, where no rule reaches
            eager = deepexplain.explain(method, model, data, ys=ys, progress=False, **kwargs)
            with DeepExplain(session=session) as de:
                graph = de.explain(method, output, X, data, ys=ys, progress=False, **kwargs)
            for e, g in zip(eager if len(xs) > 1 else [eager], graph if len(xs) > 1 else [graph], strict=True):
                np.testing.assert_allclose(e, g, rtol=1e-4, atol=1e-5, err_msg=method)


@pytest.mark.parametrize("library", LIBRARIES)
def test_embedding_layer_attributions_equal_graph_api(library):
    rng = np.random.default_rng(1)
    model, (session, inputs, output, twin) = twins(library, text_classifier, [], rng)
    ids = rng.integers(0, 20, size=(4, 5)).astype(np.int32)
    embedded_tensor = twin.get_layer("embedding").output
    embedded = session.run(embedded_tensor, {inputs[0]: ids})
    for method, kwargs in [("intgrad", {"steps": 16}), ("deeplift", {}), ("grad*input", {})]:
        eager = deepexplain.explain(method, model, ids, target=1, layer="embedding", **kwargs)
        assert eager.shape == (4, 5, 4)
        with DeepExplain(session=session) as de:
            reference = de.explain(method, output, embedded_tensor, embedded, ys=one_hot([1] * 4, 3), **kwargs)
        np.testing.assert_allclose(eager, reference, rtol=1e-4, atol=1e-6)
    explainer = deepexplain.Explainer("deeplift", model, layer="embedding")
    np.testing.assert_allclose(explainer.completeness_error(ids, target=2), 0, atol=1e-5)


def smooth_cnn(K):
    return K.Sequential(
        [
            K.Input((8, 8, 1)),
            K.layers.Conv2D(4, 3, padding="same", activation="softplus"),
            K.layers.AveragePooling2D(2),
            K.layers.Conv2D(3, 3, activation="tanh"),
            K.layers.Flatten(),
            K.layers.Dense(4),
        ]
    )


@pytest.mark.parametrize("library", LIBRARIES)
@pytest.mark.parametrize("method", ["deeplift", "intgrad"])
def test_completeness_on_eager_cnn(library, method):
    """DeepLIFT: exact on a ReLU/max-pool CNN. IG: Gauss-Legendre is exact to float precision on a smooth CNN (on
    ReLU nets it converges only like a Riemann sum across the kinks)."""
    rng = np.random.default_rng(2)
    build = sequential_cnn if method == "deeplift" else smooth_cnn
    model = eager_model(LIBRARIES[library], build, [(8, 8, 1)], rng)
    xs = make_inputs([(8, 8, 1)], rng, n=4)[0]
    kwargs = {"steps": 32, "integration": "gausslegendre"} if method == "intgrad" else {}
    explainer = deepexplain.Explainer(method, model, baseline=rng.normal(size=(8, 8, 1)) * 0.3, **kwargs)
    np.testing.assert_allclose(explainer.completeness_error(xs, target="max"), 0, atol=1e-4)


@pytest.mark.parametrize("library", LIBRARIES)
def test_lrp_z_equals_grad_times_input_through_batch_norm(library):
    """LRP-0 equals gradient x input on ReLU networks with affine layers: inference batch norm included (fused op in
    one library, Mul/Add ops in the other)."""
    rng = np.random.default_rng(13)
    model = eager_model(LIBRARIES[library], batchnorm_dropout, [(6,)], rng)
    xs = make_inputs([(6,)], rng, n=4)[0]
    np.testing.assert_allclose(
        deepexplain.explain("lrp.z", model, xs, target=1),
        deepexplain.explain("grad*input", model, xs, target=1),
        rtol=1e-4,
        atol=1e-5,
    )


def test_targets_max_int_sequence_and_callable_select_outputs():
    rng = np.random.default_rng(3)
    model = eager_model(keras, residual_concat, [(6,)], rng)
    xs = make_inputs([(6,)], rng, n=4)[0]
    logits = model(xs).numpy()
    explainer = deepexplain.Explainer("grad*input", model)
    by_max = explainer.run(xs, target="max")
    np.testing.assert_allclose(by_max, explainer.run(xs, ys=one_hot(logits.argmax(1), 3)), rtol=1e-6)
    np.testing.assert_allclose(explainer.run(xs, target=2), explainer.run(xs, ys=one_hot([2] * 4, 3)), rtol=1e-6)
    per_sample = [0, 1, 2, 1]
    np.testing.assert_allclose(explainer.run(xs, target=per_sample), explainer.run(xs, ys=one_hot(per_sample, 3)))
    summed = explainer.run(xs, target=lambda out: out[:, 0] + 2 * out[:, 2])
    np.testing.assert_allclose(summed, explainer.run(xs, ys=np.tile([1.0, 0.0, 2.0], (4, 1))), rtol=1e-5)


def test_saved_keras_model_is_loaded_by_path(tmp_path):
    rng = np.random.default_rng(4)
    model = eager_model(keras, sequential_cnn, [(8, 8, 1)], rng)
    path = tmp_path / "cnn.keras"
    model.save(path)
    xs = make_inputs([(8, 8, 1)], rng)[0]
    np.testing.assert_allclose(
        deepexplain.explain("deeplift", str(path), xs, target=1), deepexplain.explain("deeplift", model, xs, target=1)
    )


def test_savedmodel_directory_is_loaded_by_path(tmp_path):
    rng = np.random.default_rng(12)
    model = eager_model(keras, residual_concat, [(6,)], rng)
    model.export(str(tmp_path / "saved"), verbose=False)
    xs = make_inputs([(6,)], rng)[0]
    np.testing.assert_allclose(
        deepexplain.explain("deeplift", tmp_path / "saved", xs, target=2),
        deepexplain.explain("deeplift", model, xs, target=2),
        rtol=1e-5,
        atol=1e-6,
    )


def test_legacy_h5_model_is_loaded_by_path(tmp_path):
    rng = np.random.default_rng(5)
    model = eager_model(tf_keras, batchnorm_dropout, [(6,)], rng)
    path = tmp_path / "mlp.h5"
    model.save(path)
    xs = make_inputs([(6,)], rng)[0]
    np.testing.assert_allclose(
        deepexplain.explain("intgrad", path, xs, target=0), deepexplain.explain("intgrad", model, xs, target=0)
    )


def test_plain_tf_function_callable_is_explained():
    weights = tf.constant(np.array([[1.0, -2.0], [0.5, 3.0]], np.float32))

    @tf.function
    def model(x):
        return tf.matmul(tf.nn.relu(x), weights)

    xs = np.array([[1.0, 2.0], [-1.0, 1.0]], np.float32)
    np.testing.assert_allclose(deepexplain.explain("grad*input", model, xs, target=1), [[-2.0, 6.0], [0.0, 3.0]])


def test_softmax_output_warns_and_strip_softmax_gives_logits():
    rng = np.random.default_rng(6)
    model = keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(5, activation="tanh"), keras.layers.Dense(3, activation="softmax")]
    )
    model.set_weights(weights_for(model, rng))
    xs = rng.normal(size=(2, 4)).astype(np.float32)
    with pytest.warns(UserWarning, match="strip_softmax"):
        deepexplain.Explainer("saliency", model)
    logits_model = deepexplain.strip_softmax(model)
    np.testing.assert_allclose(tf.nn.softmax(logits_model(xs)).numpy(), model(xs).numpy(), rtol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deepexplain.Explainer("saliency", logits_model).run(xs)


def test_explaining_never_changes_the_execution_mode():
    rng = np.random.default_rng(7)
    model = eager_model(keras, two_inputs, [(4,), (3,)], rng)
    deepexplain.explain("deeplift", model, make_inputs([(4,), (3,)], rng), target=0)
    assert tf.executing_eagerly()


def test_multiple_outputs_are_chosen_by_index_or_name():
    x = keras.Input((3,))
    first = keras.layers.Dense(2, name="first")(x)
    second = keras.layers.Dense(4, name="second")(keras.layers.Dense(3, activation="relu")(x))
    model = keras.Model(x, [first, second])
    xs = np.random.default_rng(8).normal(size=(2, 3)).astype(np.float32)
    by_index = deepexplain.explain("saliency", model, xs, target=3, output=1)
    assert by_index.shape == (2, 3)
    with pytest.raises(ValueError, match="output must index"):
        deepexplain.explain("saliency", model, xs, output=5)


def test_rule_methods_name_uncovered_ops_of_custom_layers():
    """A custom layer with an op DeepLIFT has no rule for (a maximum over features): one warning names it at the
    user's line. A gating product of two functions of the input and an elementwise square have rules: DeepLIFT stays
    exact (summation-to-delta) and says nothing."""

    class TopFeature(keras.layers.Layer):
        def call(self, x):
            return keras.ops.max(x, axis=-1, keepdims=True)

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), TopFeature(), keras.layers.Dense(2)])
    with pytest.warns(UserWarning, match=r"Max ×1 \(") as caught:
        deepexplain.Explainer("deeplift", model)
    assert len(caught) == 1 and caught[0].filename == __file__

    class Gate(keras.layers.Layer):
        def call(self, inputs):
            return inputs[0] * inputs[1]

    class Squared(keras.layers.Layer):
        def call(self, x):
            return x * x

    x = keras.Input((3,))
    gated = Gate()([keras.layers.Dense(4)(x), keras.layers.Dense(4, activation="sigmoid")(x)])
    model = keras.Model(x, keras.layers.Dense(2)(Squared()(gated)))
    model.set_weights(weights_for(model, np.random.default_rng(1)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explainer = deepexplain.Explainer("deeplift", model, baseline=np.full(3, 0.3, np.float32))
    xs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_allclose(explainer.completeness_error(xs, target=1), 0, atol=1e-5)


def test_bad_target_and_xs_raise_clear_errors():
    rng = np.random.default_rng(9)
    model = eager_model(keras, residual_concat, [(6,)], rng)
    explainer = deepexplain.Explainer("saliency", model)
    xs = make_inputs([(6,)], rng)[0]
    with pytest.raises(ValueError, match=r"target units must be in \[0, 3\)"):
        explainer.run(xs, target=7)
    with pytest.raises(ValueError, match="target has 2 entries for 3 samples"):
        explainer.run(xs, target=[0, 1])
    with pytest.raises(ValueError, match="target must be"):
        explainer.run(xs, target="min")
    with pytest.raises(ValueError, match=r"shape \(3, 5\)"):
        explainer.run(rng.normal(size=(3, 5)))
    with pytest.raises(RuntimeError, match="Method must be in"):
        deepexplain.Explainer("nope", model)


def test_eager_execution_off_with_a_tf_keras_graph_model(tmp_path):
    """In a process with eager execution disabled, a tf_keras model built in the graph is explained through its own
    session; the numbers equal the eager path's on a Keras 3 model with the same weights."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    def build(K):
        x = K.Input((6,))
        h = K.layers.Dense(6, activation="relu")(x)
        return K.Model(x, K.layers.Dense(3)(K.layers.Dense(4, activation="sigmoid")(K.layers.Add()([x, h]))))

    rng = np.random.default_rng(10)
    model = eager_model(keras, build, [(6,)], rng)
    xs = rng.normal(size=(3, 6)).astype(np.float32)
    np.savez(tmp_path / "w.npz", **{f"w{i}": w for i, w in enumerate(model.get_weights())})
    np.save(tmp_path / "x.npy", xs)
    program = Path(__file__).parent / "programs" / "eager_off_tf_keras.py"
    completed = subprocess.run(
        [sys.executable, str(program), str(tmp_path / "w.npz"), str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = json.loads(completed.stdout.strip().splitlines()[-1])
    assert results.pop("eager_after") is False
    lrp, gradient_x_input = results.pop("batchnorm lrp.z"), results.pop("batchnorm grad*input")
    np.testing.assert_allclose(lrp, gradient_x_input, rtol=1e-4, atol=1e-6)  # LRP-0 through batch norm
    assert np.abs(lrp).max() > 1e-3
    for method, values in results.items():
        kwargs = {"steps": 10} if method == "intgrad" else {}
        expected = deepexplain.explain(method, model, xs, target=1, **kwargs)
        np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-6, err_msg=method)


def test_lstm_model_works_with_gradient_and_perturbation_methods_and_rules_name_the_loop():
    """Oracle for the gradient: tf.GradientTape on the eager model itself."""
    rng = np.random.default_rng(11)
    model = keras.Sequential([keras.Input((5, 3)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    model.set_weights(weights_for(model, rng))
    xs = rng.normal(size=(2, 5, 3)).astype(np.float32)
    x = tf.constant(xs)
    with tf.GradientTape() as tape:
        tape.watch(x)
        score = model(x)[:, 1]
    np.testing.assert_allclose(
        deepexplain.explain("saliency", model, xs, target=1), np.abs(tape.gradient(score, x)), rtol=1e-4, atol=1e-6
    )
    occlusion = deepexplain.explain("occlusion", model, xs, target=1)
    assert occlusion.shape == xs.shape and np.isfinite(occlusion).all()
    with pytest.warns(UserWarning, match=r"While ×1 \(sequential.*/while\)"):
        deepexplain.Explainer("deeplift", model)
