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
