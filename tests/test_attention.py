"""Attention rollout (Abnar & Zuidema 2020) against the product of the layers' (attention + identity) / 2 matrices,
computed here from the scores the same MultiHeadAttention layers return with ``return_attention_scores=True``."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import deepexplain  # noqa: E402
from deepexplain.errors import InvalidInputError  # noqa: E402

T = 6


def transformer(blocks=2, seed=0):
    """Embedding -> blocks of (self-attention + residual + LayerNorm) -> pooling -> logits; and a model of the same
    layers returning every block's attention scores (N, heads, T, T)."""
    keras.utils.set_random_seed(seed)
    ids = keras.Input((T,), dtype="int32")
    h = keras.layers.Embedding(20, 8, name="embedding")(ids)
    scores = []
    for b in range(blocks):
        attention = keras.layers.MultiHeadAttention(2, 4, name=f"attention_{b}")
        attended, score = attention(h, h, return_attention_scores=True)
        h = keras.layers.LayerNormalization()(attended + h)
        scores.append(score)
    logits = keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(h))
    return keras.Model(ids, logits), keras.Model(ids, scores)


def expected(score_model, ids, fuse=np.mean, residual=True):
    rollout = None
    outputs = score_model(ids)
    for score in outputs if isinstance(outputs, list) else [outputs]:
        matrix = fuse(np.asarray(score, np.float64), axis=1)
        if residual:
            matrix = (matrix + np.eye(T)) / 2
            matrix /= matrix.sum(axis=-1, keepdims=True)
        rollout = matrix if rollout is None else matrix @ rollout
    return rollout


IDS = np.random.default_rng(0).integers(0, 20, (4, T))


@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_rollout_is_the_product_of_the_residual_attention_matrices(blocks):
    model, scores = transformer(blocks)
    flow = expected(scores, IDS)
    np.testing.assert_allclose(deepexplain.explain("attention_rollout", model, IDS), flow.mean(axis=1), atol=1e-6)
    token = deepexplain.explain("attention_rollout", model, IDS, token=0)
    np.testing.assert_allclose(token, flow[:, 0], atol=1e-6)
    np.testing.assert_allclose(token.sum(axis=1), 1.0, atol=1e-5)  # rows of stochastic matrices


def test_head_fusion_residual_and_batch_size():
    model, scores = transformer(2)
    for fusion, fuse in (("max", np.max), ("min", np.min)):
        got = deepexplain.explain("attention_rollout", model, IDS, head_fusion=fusion, residual=False, token=2)
        np.testing.assert_allclose(got, expected(scores, IDS, fuse, residual=False)[:, 2], rtol=1e-5, atol=1e-7)
    explainer = deepexplain.Explainer("attention_rollout", model, progress=False)
    np.testing.assert_allclose(explainer.run(IDS, batch_size=1), explainer.run(IDS), atol=1e-7)


def test_bad_arguments_and_models_without_attention():
    model, _ = transformer(1)
    with pytest.raises(InvalidInputError, match="head_fusion"):
        deepexplain.Explainer("attention_rollout", model, head_fusion="sum")
    with pytest.raises(InvalidInputError, match="token .* must index one of 6 positions"):
        deepexplain.explain("attention_rollout", model, IDS, token=9)
    cnn = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                            keras.layers.Dense(2)])  # fmt: skip
    with pytest.raises(InvalidInputError, match="MultiHeadAttention layers; the model has none"):
        deepexplain.Explainer("attention_rollout", cnn)


def bias_free_block(seed=3):
    """Embedding -> self-attention (bias-free) + residual -> LayerNorm (no centre shift) -> ReLU feed-forward +
    residual -> mean -> logits, all bias-free: with the attention weights and the 1/sigma of the normalisation held
    constant it is piecewise linear in the embedding, so the z-rule equals gradient x input of that model."""
    keras.utils.set_random_seed(seed)
    ids = keras.Input((T,), dtype="int32")
    e = keras.layers.Embedding(20, 8, name="tokens")(ids)
    attention = keras.layers.MultiHeadAttention(2, 4, use_bias=False, name="attention")
    h = keras.layers.LayerNormalization(center=False, name="norm")(e + attention(e, e))
    f = keras.layers.Dense(8, use_bias=False)(keras.layers.Dense(16, activation="relu", use_bias=False)(h))
    logits = keras.layers.Dense(3, use_bias=False)(keras.layers.GlobalAveragePooling1D()(h + f))
    return keras.Model(ids, logits)


def frozen_gradient_times_input(model, embedded, target):
    """Gradient x input at the embedding output of the model re-written in TensorFlow with ``tf.stop_gradient`` on
    the attention probabilities and on the normaliser 1/sigma (CP-LRP's constants, Ali et al. 2022)."""
    import tensorflow as tf

    attention, norm = model.get_layer("attention"), model.get_layer("norm")
    wq, wk, wv, wo = (layer.kernel for layer in (attention._query_dense, attention._key_dense,
                                                 attention._value_dense, attention._output_dense))  # fmt: skip
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    x = tf.constant(embedded)
    with tf.GradientTape() as tape:
        tape.watch(x)
        q = tf.einsum("btd,dhk->bthk", x, wq) / np.sqrt(4.0)
        k, v = tf.einsum("btd,dhk->bthk", x, wk), tf.einsum("btd,dhk->bthk", x, wv)
        probabilities = tf.stop_gradient(tf.nn.softmax(tf.einsum("bshk,bthk->bhts", k, q), axis=-1))
        attended = tf.einsum("bthk,hkd->btd", tf.einsum("bhts,bshk->bthk", probabilities, v), wo)
        s = x + attended
        centred = s - tf.reduce_mean(s, axis=-1, keepdims=True)
        scale = tf.stop_gradient(tf.math.rsqrt(tf.reduce_mean(centred**2, axis=-1, keepdims=True) + norm.epsilon))
        h = centred * scale * norm.gamma
        f = tf.nn.relu(h @ dense[0].kernel) @ dense[1].kernel
        logits = tf.reduce_mean(h + f, axis=1) @ dense[2].kernel
        score = tf.reduce_sum(logits * tf.one_hot(target, 3))
    np.testing.assert_allclose(logits.numpy(), model(IDS).numpy(), rtol=1e-4, atol=1e-5)  # the same function
    return (tape.gradient(score, x) * x).numpy()


def test_lrp_treats_attention_weights_and_the_normaliser_as_constants_cp_lrp():
    model = bias_free_block()
    embedded = model.get_layer("tokens")(IDS).numpy()
    target = model(IDS).numpy().argmax(axis=1)
    ours = deepexplain.explain("lrp.z", model, IDS, target=target, layer="tokens", bias=False)
    expected = frozen_gradient_times_input(model, embedded, target)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    logits = model(IDS).numpy()[np.arange(len(IDS)), target]
    np.testing.assert_allclose(ours.reshape(len(IDS), -1).sum(axis=1), logits, rtol=1e-4)  # conserved
    # eps-LRP's modified gradient (elrp) treats the same factors as constants, without a warning for the attention
    # products; its stabiliser sits at the activations, so it agrees closely, not exactly
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        elrp = deepexplain.explain("elrp", model, IDS, target=target, layer="tokens", epsilon=1e-9)
    assert np.corrcoef(elrp.ravel(), expected.ravel())[0, 1] > 0.999


def test_the_attention_products_pass_relevance_through_the_values_only():
    """With the attention probabilities constant, ``einsum(P, V)`` is a layer with weights P: the z-rule there
    equals gradient x input of the value path (an attention written with tf.einsum inside a custom layer)."""
    import tensorflow as tf

    class Mixing(keras.layers.Layer):
        def __init__(self, frozen=False, **kwargs):
            super().__init__(**kwargs)
            self.frozen = frozen

        def call(self, x):
            p = tf.nn.softmax(tf.einsum("btd,bsd->bts", x, x), axis=-1)
            return tf.einsum("bts,bsd->btd", tf.stop_gradient(p) if self.frozen else p, x)

    def model(frozen):
        keras.utils.set_random_seed(3)
        ids = keras.Input((T,), dtype="int32")
        e = keras.layers.Embedding(20, 8, name="tokens")(ids)
        pooled = keras.layers.GlobalAveragePooling1D()(Mixing(frozen)(e))
        return keras.Model(ids, keras.layers.Dense(3, use_bias=False)(pooled))

    ours = deepexplain.explain("lrp.z", model(False), IDS, target=1, layer="tokens", bias=False)
    oracle = deepexplain.explain("grad*input", model(True), IDS, target=1, layer="tokens")
    np.testing.assert_allclose(ours, oracle, rtol=1e-4, atol=1e-6 * np.abs(oracle).max())


def embedded_transformer(blocks=2, seed=1):
    """The blocks of :func:`transformer` on embeddings (N, T, 8) given as the input, with biases."""
    keras.utils.set_random_seed(seed)
    x = keras.Input((T, 8))
    h = x
    for b in range(blocks):
        h = keras.layers.LayerNormalization()(h + keras.layers.MultiHeadAttention(2, 4, name=f"attention_{b}")(h, h))
        h = keras.layers.LayerNormalization()(h + keras.layers.Dense(8)(keras.layers.Dense(16, activation="gelu")(h)))
    return keras.Model(x, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(h)))


@pytest.mark.parametrize("rule", ["rescale", "reveal_cancel"])
def test_deeplift_sums_to_delta_through_attention_softmax_and_layer_norm(rule):
    """DeepLIFT's midpoint rule at query x key and attention x value and its softmax rule keep summation-to-delta
    through every block, with no op left to its gradient (no warning); DeepSHAP over several references too."""
    import warnings

    model = embedded_transformer()
    xs = np.random.default_rng(2).normal(size=(4, T, 8)).astype("float32")
    baseline = np.random.default_rng(3).normal(size=(T, 8)).astype("float32") * 0.5
    with warnings.catch_warnings():
        # RevealCancel notes that a Dense applied per token (a matmul between reshapes) gets the Rescale rule
        warnings.simplefilter("error" if rule == "rescale" else "ignore")
        ours = deepexplain.explain("deeplift", model, xs, target=1, baseline=baseline, rule=rule)
    delta = model(xs).numpy()[:, 1] - model(baseline[None]).numpy()[0, 1]
    np.testing.assert_allclose(ours.reshape(4, -1).sum(axis=1), delta, rtol=1e-4, atol=1e-5)
    references = np.random.default_rng(4).normal(size=(3, T, 8)).astype("float32")
    shap = deepexplain.explain("deepshap", model, xs, target=1, baselines=references)
    expected = model(xs).numpy()[:, 1] - model(references).numpy()[:, 1].mean()
    np.testing.assert_allclose(shap.reshape(4, -1).sum(axis=1), expected, rtol=1e-4, atol=1e-5)


def test_deeplift_on_a_product_of_two_projections_is_the_exact_shapley_value():
    """``f(x) = w . vec((x A)(x B)^T)`` is a polynomial of degree two, for which DeepLIFT's midpoint rule gives the
    Shapley values of the input features exactly (here 6, enumerated by shapley_exact)."""
    import tensorflow as tf

    keras.utils.set_random_seed(5)
    x = keras.Input((2, 3))
    q, k = keras.layers.Dense(2, use_bias=False)(x), keras.layers.Dense(2, use_bias=False)(x)
    scores = keras.layers.Lambda(lambda t: tf.einsum("btd,bsd->bts", t[0], t[1]), output_shape=(2, 2))([q, k])
    model = keras.Model(x, keras.layers.Dense(1)(keras.layers.Flatten()(scores)))
    xs = np.random.default_rng(6).normal(size=(3, 2, 3)).astype("float32")
    baseline = np.random.default_rng(7).normal(size=(2, 3)).astype("float32")
    ours = deepexplain.explain("deeplift", model, xs, target=0, baseline=baseline)
    exact = deepexplain.explain("shapley_exact", model, xs, target=0, baseline=baseline)
    np.testing.assert_allclose(ours, exact, rtol=1e-4, atol=1e-5)
