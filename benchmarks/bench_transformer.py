"""Transformer relevance (AttnLRP, CP-LRP) on a small Keras text Transformer, as ratios to a forward+backward pass.

- ``lrp.attn_b32`` / ``lrp.cp_b32``: ``Explainer(method, model).run`` of 32 sequences of 64 tokens (embedding width
  64, 4 heads, 2 post-LN blocks with a GELU feed-forward of 128, mean pooling, 4 logits), explained at their
  embeddings (the model's float input), for the largest logit; target ratio <= 2 (issue 18).
- The bound: one call of a ``tf.function`` returning the ``GradientTape`` gradient of ``sum(logits * onehot)`` with
  respect to the embeddings, for the same 32 rows (what any gradient method needs at the least).

The rules add, per layer norm, one gradient of the layer with its normaliser held constant, and per attention
product a second transposed product; nothing the size of ``(rows, heads, T, T)`` is kept beyond the attention
probabilities the forward pass holds anyway.

Example::

    python benchmarks/bench_transformer.py --repeats 7 [--json out.json]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_cnn import interleaved_medians  # noqa: E402
from bench_patterns import ratio_main  # noqa: E402

import deepexplain  # noqa: E402

TARGETS = {"lrp.attn_b32": 2.0, "lrp.cp_b32": 2.0}
ROWS, TOKENS, WIDTH, HEADS, CLASSES = 32, 64, 64, 4, 4


def text_transformer(blocks: int = 2, seed: int = 0) -> keras.Model:
    """Embeddings (N, T, D) -> post-LN Transformer blocks -> mean over tokens -> logits."""
    keras.utils.set_random_seed(seed)
    embedded = keras.Input((TOKENS, WIDTH))
    h = embedded
    for _ in range(blocks):
        h = keras.layers.LayerNormalization()(h + keras.layers.MultiHeadAttention(HEADS, WIDTH // HEADS)(h, h))
        f = keras.layers.Dense(2 * WIDTH, activation="gelu")(h)
        h = keras.layers.LayerNormalization()(h + keras.layers.Dense(WIDTH)(f))
    return keras.Model(embedded, keras.layers.Dense(CLASSES)(keras.layers.GlobalAveragePooling1D()(h)))


def measure(repeats: int) -> dict:
    model = text_transformer()
    xs = np.random.default_rng(0).normal(size=(ROWS, TOKENS, WIDTH)).astype("float32")
    onehot = tf.one_hot(np.argmax(model(xs), axis=1), CLASSES)

    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = tf.reduce_sum(model(x) * onehot)
        return tape.gradient(score, x)

    def bound():
        return gradient(tf.constant(xs)).numpy()

    results = {}
    for method in ("lrp.attn", "lrp.cp"):
        explainer = deepexplain.Explainer(method, model, progress=False)

        def explain(explainer=explainer):
            return explainer.run(xs, target="max", batch_size=ROWS)

        method_s, bound_s = interleaved_medians([explain, bound], repeats)
        results[f"{method}_b32"] = {"median_s": method_s, "bound_s": bound_s, "ratio": method_s / bound_s}
    return results


def main(argv=None) -> int:
    return ratio_main(argv, __doc__.splitlines()[0], measure, TARGETS)


if __name__ == "__main__":
    sys.exit(main())
