"""A small Keras Transformer on the template reviews of ``text_embedding.py``: attention rollout, AttnLRP, CP-LRP
and integrated gradients per token.

The model: token embedding + learned position embedding → one self-attention block (``MultiHeadAttention``,
residual, ``LayerNormalization``, a GELU feed-forward) → mean over positions → logits. Two token-level views:

- ``attention_rollout`` (Abnar & Zuidema 2020): how much each token flows into the pooled representation through the
  attention (class-agnostic), read from the live model's attention probabilities;
- ``lrp.attn`` (AttnLRP, Achtibat et al. 2024) and ``lrp.cp`` (CP-LRP, Ali et al. 2022) at the embedding output
  (``layer='tokens'``), summed over the embedding axis: each token's relevance for the predicted class (signed);
  AttnLRP also follows the relevance through the attention weights into the queries and keys;
- ``intgrad`` at the embedding output, summed the same way: each token's share of ``f(review) - f(no words)``.

Run::

    python examples/transformer_text.py [--out DIR] [--smoke]

Writes ``transformer_reviews.html`` (the reviews coloured by each method) to ``--out`` (default ``examples/out``)
and prints them to the terminal (24-bit ANSI colours).
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from text_embedding import LENGTH, PAD, encode, make_corpus  # noqa: E402

import deepexplain  # noqa: E402
from deepexplain import plot  # noqa: E402


class Positions(keras.layers.Layer):
    """Adds a learned embedding of each position."""

    def build(self, shape):
        self.table = self.add_weight(shape=(shape[1], shape[2]), initializer="random_normal", name="positions")

    def call(self, x):
        return x + self.table


def build_transformer(vocabulary_size, dim=16, heads=2):
    ids = keras.Input((LENGTH,), dtype="int32")
    tokens = keras.layers.Embedding(vocabulary_size, dim, name="tokens")(ids)
    h = Positions(name="positions")(tokens)
    attended = keras.layers.MultiHeadAttention(heads, dim // heads, name="attention")(h, h)
    h = keras.layers.LayerNormalization(name="norm1")(h + attended)
    feed = keras.layers.Dense(dim, name="ff_out")(keras.layers.Dense(2 * dim, activation="gelu", name="ff_in")(h))
    h = keras.layers.LayerNormalization(name="norm2")(h + feed)
    logits = keras.layers.Dense(2, name="logits")(keras.layers.GlobalAveragePooling1D()(h))
    return keras.Model(ids, logits)


def main(argv=None):
    """Train the Transformer, explain a few reviews per token, write them coloured.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out", help="output folder")
    parser.add_argument("--smoke", action="store_true", help="fewer reviews and epochs: a smoke test")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    reviews, labels = make_corpus(600 if args.smoke else 3000)
    vocabulary = {PAD: 0, **{w: i + 1 for i, w in enumerate(sorted({t for r in reviews for t in r}))}}
    ids = encode(reviews, vocabulary)
    model = build_transformer(len(vocabulary))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    split = int(0.8 * len(ids))
    model.fit(ids[:split], labels[:split], epochs=3 if args.smoke else 8, batch_size=64, verbose=0)
    print(f"test accuracy {model.evaluate(ids[split:], labels[split:], verbose=0)[1]:.1%}")

    shown = ids[split : split + 4]
    rollout = deepexplain.explain("attention_rollout", model, shown)  # (N, LENGTH), rows sum to 1
    target = model(shown).numpy().argmax(axis=1)
    per_token = {  # (N, LENGTH) each: the relevance at the embedding output summed over the embedding axis
        name: deepexplain.explain(name, model, shown, target=target, layer="tokens", **kwargs).sum(axis=-1)
        for name, kwargs in (("lrp.attn", {}), ("lrp.cp", {}), ("intgrad", {"steps": 32}))
    }
    rows = []
    for i, (review, flow) in enumerate(zip(reviews[split : split + 4], rollout, strict=True)):
        n = len(review)
        views = [("attention rollout", flow[:n] - flow[:n].mean())]
        views += [(name, scores[i, :n]) for name, scores in per_token.items()]
        for name, values in views:
            coloured = plot.text(review, values)
            print(f"{name:>18}: {coloured}")
            rows.append(f"<p><b>{name}</b>: {coloured.html}</p>")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "transformer_reviews.html").write_text("<html><body>" + "\n".join(rows) + "</body></html>")
    print(f"wrote {args.out / 'transformer_reviews.html'} (rollout shown relative to its mean per review)")


if __name__ == "__main__":
    main()
