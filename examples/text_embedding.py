"""Which words made a sentiment model decide? Attributions at the embedding output, summed per token.

Token ids are integers: no gradient flows into them, so gradient methods cannot explain the id input. Explain the
embedding's *output* instead: pass the embedded tensor as ``X`` and feed it the looked-up vectors (a TF1 session can
feed any tensor, not only placeholders), then sum each token's attributions over the embedding dimension.

The corpus is generated here from templates: short reviews with sentiment words (``great``, ``awful``...) among
neutral ones; a review's label is the majority of its sentiment words, so some reviews hold a word that argues
against the label. The model: embedding (the padding id's vector fixed at zero) → mean over positions → dense
→ ReLU → dense (2 logits). Its attribution baseline, all zeros, is thus an empty review: DeepLIFT and integrated
gradients split ``f(review) - f(empty)`` among the tokens.

Run::

    python examples/text_embedding.py [--out DIR] [--smoke]

Writes ``text_sentences.html`` (coloured reviews, one row per method) and ``text_word_importance.png`` (each word's
mean DeepLIFT score towards "positive" over the corpus) to ``--out`` (default ``examples/out``); prints the coloured
reviews to the terminal (24-bit ANSI colours).
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from deepexplain import plot  # noqa: E402
from deepexplain.tensorflow import DeepExplain  # noqa: E402

POSITIVE = ["good", "great", "excellent", "wonderful", "enjoyable", "brilliant", "superb", "delightful", "lovely"]
NEGATIVE = ["bad", "awful", "terrible", "boring", "dull", "poor", "horrible", "weak", "disappointing"]
NOUNS = ["movie", "film", "plot", "acting", "story", "soundtrack", "cast", "ending", "script"]
ADVERBS = ["really", "quite", "very", "rather", "truly"]
TEMPLATES = [
    "the {noun} was {adj}",
    "a {adv} {adj} {noun}",
    "i found the {noun} {adv} {adj}",
    "the {noun} was {adj} and the {noun2} was {adj2}",
    "{adj} {noun} , {adj2} {noun2} , but a {adj3} {noun3}",
    "the {noun} was {adv} {adj} and {adj2} but the {noun2} was {adj3}",
]
PAD = "<pad>"
LENGTH = 12  # tokens per review, padded
METHODS = {"grad*input": {}, "intgrad": {"steps": 50}, "deeplift": {}}


def make_corpus(count, seed=0):
    """Template reviews and their labels (1: positive), the majority vote of their sentiment words.

    Parameters
    ----------
    count : int
        How many reviews.
    seed : int, default 0
        Seed of the templates and words drawn.

    Returns
    -------
    reviews : list of list of str
        Tokenised reviews, at most :data:`LENGTH` tokens each.
    labels : numpy.ndarray of int, shape (count,)
    """
    rng = np.random.default_rng(seed)
    reviews, labels = [], []
    for _ in range(count):
        template = TEMPLATES[rng.integers(len(TEMPLATES))]
        slots = template.count("{adj")
        label = int(rng.integers(2))
        # with 3 sentiment words, one may dissent: the label is the majority
        polarities = [label] * slots
        if slots == 3 and rng.random() < 0.5:
            polarities[rng.integers(3)] = 1 - label
        suffixes = ["", "2", "3"]
        words = {f"adj{suffixes[i]}": rng.choice(POSITIVE if p else NEGATIVE) for i, p in enumerate(polarities)}
        words.update({f"noun{suffix}": rng.choice(NOUNS) for suffix in suffixes})
        reviews.append(template.format(adv=rng.choice(ADVERBS), **words).split())
        labels.append(label)
    return reviews, np.asarray(labels)


def encode(reviews, vocabulary):
    """Token ids ``(N, LENGTH)``, padded with the id of :data:`PAD` (0)."""
    ids = np.zeros((len(reviews), LENGTH), dtype=np.int32)
    for i, review in enumerate(reviews):
        ids[i, : len(review)] = [vocabulary[token] for token in review]
    return ids


def build_model(vocabulary_size, rng, dim=16, hidden=16):
    """Embedding → mean over positions → dense → ReLU → dense. Returns ``(ids, embedded, logits)``."""
    ids = tf.placeholder(tf.int32, [None, LENGTH], name="token_ids")
    # Row 0 (padding) is a constant zero vector: padding adds nothing, and all-zero embeddings are "no words".
    table = tf.Variable(rng.normal(0, 0.3, (vocabulary_size - 1, dim)).astype(np.float32))
    embeddings = tf.concat([tf.zeros([1, dim]), table], axis=0)
    embedded = tf.nn.embedding_lookup(embeddings, ids)  # (N, LENGTH, dim): the tensor we explain
    pooled = tf.reduce_mean(embedded, axis=1)
    w1 = tf.Variable(rng.normal(0, np.sqrt(2 / dim), (dim, hidden)).astype(np.float32))
    w2 = tf.Variable(rng.normal(0, np.sqrt(1 / hidden), (hidden, 2)).astype(np.float32))
    b1, b2 = tf.Variable(tf.zeros(hidden)), tf.Variable(tf.zeros(2))
    logits = tf.matmul(tf.nn.relu(tf.matmul(pooled, w1) + b1), w2) + b2
    return ids, embedded, logits


def main(argv=None):
    """Train the sentiment model, explain a few reviews per token, save HTML and a bar chart, print ANSI.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out", help="output folder")
    parser.add_argument("--smoke", action="store_true", help="fewer training steps: a smoke test of a few seconds")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)

    reviews, labels = make_corpus(2_000)
    vocabulary = {PAD: 0}
    for token in sorted({token for review in reviews for token in review}):
        vocabulary[token] = len(vocabulary)
    token_ids = encode(reviews, vocabulary)
    train, test = slice(0, 1_600), slice(1_600, None)

    graph = tf.Graph()
    with graph.as_default():
        ids, embedded, logits = build_model(len(vocabulary), rng)
        targets = tf.placeholder(tf.int64, [None])
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=logits))
        train_step = tf.train.AdamOptimizer(1e-2).minimize(loss)
        sess = tf.Session(graph=graph)
        sess.run(tf.global_variables_initializer())
    for _ in range(150 if args.smoke else 400):
        batch = rng.integers(1_600, size=64)
        sess.run(train_step, {ids: token_ids[train][batch], targets: labels[train][batch]})
    accuracy = np.mean(sess.run(logits, {ids: token_ids[test]}).argmax(axis=1) == labels[test])
    print(f"test accuracy: {accuracy:.1%}")

    # Explain the "positive" logit (column 1) at the embedding output, fed with the looked-up vectors.
    vectors = sess.run(embedded, {ids: token_ids})
    ys = np.tile(np.float32([0, 1]), (len(reviews), 1))
    long_ones = [i for i in range(1_600, len(reviews)) if len(reviews[i]) >= 10]
    short_ones = [i for i in range(1_600, len(reviews)) if len(reviews[i]) <= 5]
    shown = long_ones[:3] + short_ones[:2]
    with DeepExplain(session=sess) as de:
        scores = {
            name: de.explain(name, logits, embedded, vectors[shown], ys=ys[shown], **kwargs).sum(axis=-1)
            for name, kwargs in METHODS.items()
        }
        corpus_scores = de.explain("deeplift", logits, embedded, vectors, ys=ys).sum(axis=-1)  # (N, LENGTH)

    # One row per method and review; red tokens push towards "positive", blue ones towards "negative".
    rows = []
    for k, i in enumerate(shown):
        tokens = reviews[i]
        verdict = "positive" if labels[i] else "negative"
        rows.append(f'<tr><th colspan="2" style="text-align: left">review {i} (label: {verdict})</th></tr>')
        for name, values in scores.items():
            coloured = plot.text(tokens, values[k, : len(tokens)])
            rows.append(f"<tr><td>{name}</td><td>{coloured.html}</td></tr>")
            if name == "deeplift":
                print(f"{verdict:>8}  {coloured.ansi}")
    args.out.mkdir(parents=True, exist_ok=True)
    page = args.out / "text_sentences.html"
    page.write_text(
        '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>deepexplain: text</title></head><body>\n'
        "<p>Token scores towards 'positive' (red) or 'negative' (blue); hover a token for its score.</p>\n<table>\n"
        + "\n".join(rows)
        + "\n</table>\n</body></html>\n",
        encoding="utf-8",
    )

    # The global picture: each word's mean DeepLIFT score over the reviews it occurs in.
    words = [w for w in vocabulary if w != PAD]
    means = np.array([corpus_scores[token_ids == vocabulary[w]].mean() for w in words])
    chart = args.out / "text_word_importance.png"
    ax = plot.bars(means, feature_names=words, top=20)
    ax.set_title(f"mean DeepLIFT score towards 'positive' (20 of {len(words)} words)", fontsize=9)
    ax.figure.savefig(chart, dpi=150)
    print(f"wrote {page} and {chart}")
    sess.close()


if __name__ == "__main__":
    main()
