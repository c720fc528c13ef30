"""Tabular data: which measurements made an MLP call a breast tumour benign? One sample at a time, and over many.

scikit-learn's breast-cancer data (569 tumours, 30 measurements, shipped with scikit-learn) is standardised with the
training set's mean and standard deviation, and a small MLP (30 → 32 → 16 → 1 logit, "benign") is trained on it.

DeepSHAP explains the logit against a set of reference tumours from the training set: each attribution says how much
a measurement moved this tumour's logit away from the references' average logit, and the attributions of a tumour
add up to exactly that difference (its completeness error is printed). (With standardised inputs, DeepLIFT's
default all-zero baseline would stand for a made-up average tumour; the references are real ones.)

Run::

    python examples/tabular.py [--out DIR] [--smoke]

Writes to ``--out`` (default ``examples/out``) ``tabular_sample_<k>.png``, the bars of three test tumours (a benign
one, a malignant one and the closest call), and ``tabular_global.png``, per measurement the attributions of every
test tumour: the global picture.
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
from sklearn.datasets import load_breast_cancer  # noqa: E402

from deepexplain import plot  # noqa: E402
from deepexplain.tensorflow import DeepExplain  # noqa: E402


def load_data(seed=0):
    """Standardised breast-cancer features split 75/25, labels (1: benign) and the feature names."""
    data = load_breast_cancer()
    order = np.random.default_rng(seed).permutation(len(data.target))
    split = int(0.75 * len(order))
    train, test = order[:split], order[split:]
    mean, std = data.data[train].mean(axis=0), data.data[train].std(axis=0)
    features = ((data.data - mean) / std).astype(np.float32)
    return features[train], data.target[train], features[test], data.target[test], list(data.feature_names)


def build_mlp(rng, sizes=(30, 32, 16, 1)):
    """A ReLU MLP with one output logit. Returns ``(X, logit)``; ``logit`` has shape (None, 1)."""
    X = tf.placeholder(tf.float32, [None, sizes[0]], name="features")
    h = X
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        w = tf.Variable(rng.normal(0, np.sqrt(2 / fan_in), (fan_in, fan_out)).astype(np.float32))
        h = tf.matmul(h, w) + tf.Variable(tf.zeros(fan_out))
        if i < len(sizes) - 2:
            h = tf.nn.relu(h)
    return X, h


def main(argv=None):
    """Train the MLP, explain the test tumours with DeepSHAP, save per-sample and global bar charts.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out", help="output folder")
    parser.add_argument("--smoke", action="store_true", help="fewer training steps and references: a smoke test")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x_train, y_train, x_test, y_test, names = load_data()

    graph = tf.Graph()
    with graph.as_default():
        X, logit = build_mlp(rng)
        labels = tf.placeholder(tf.float32, [None, 1])
        loss = tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logit))
        train_step = tf.train.AdamOptimizer(3e-3).minimize(loss)
        sess = tf.Session(graph=graph)
        sess.run(tf.global_variables_initializer())
    for _ in range(150 if args.smoke else 500):
        batch = rng.integers(len(x_train), size=32)
        sess.run(train_step, {X: x_train[batch], labels: y_train[batch, None].astype(np.float32)})
    scores = sess.run(logit, {X: x_test})[:, 0]
    predicted = (scores > 0).astype(int)
    print(f"test accuracy: {np.mean(predicted == y_test):.1%}")

    # T has a single unit, so ys can be left out: the explained output is the "benign" logit itself.
    references = x_train[rng.choice(len(x_train), 20 if args.smoke else 100, replace=False)]
    with DeepExplain(session=sess) as de:
        explainer = de.get_explainer("deepshap", logit, X, baselines=references)
        attributions = explainer.run(x_test)
        errors = explainer.completeness_error(x_test, attributions=attributions)
    sess.close()
    print(f"deepshap: max |sum(attributions) - (f(x) - mean f(references))| = {np.abs(errors).max():.1e}")
    top = np.argsort(-np.abs(attributions).mean(axis=0))[:5]
    print("most important on average:", ", ".join(names[i] for i in top))

    args.out.mkdir(parents=True, exist_ok=True)
    written = []
    # a benign tumour, a malignant one and the closest call (the logit nearest to 0)
    shown = [int(np.flatnonzero(y_test == 1)[0]), int(np.flatnonzero(y_test == 0)[0]), int(np.argmin(np.abs(scores)))]
    for k, i in enumerate(shown):
        path = args.out / f"tabular_sample_{k}.png"
        ax = plot.bars(attributions[i], feature_names=names, top=10)
        verdict = "benign" if y_test[i] else "malignant"
        ax.set_title(f"test tumour {i}: {verdict}, logit {scores[i]:+.1f}", fontsize=9)
        ax.set_xlabel("attribution (> 0: towards benign)")
        ax.figure.savefig(path, dpi=150)
        written.append(path)
    path = args.out / "tabular_global.png"
    ax = plot.bars(attributions, feature_names=names, top=15)
    ax.set_title(f"DeepSHAP over {len(x_test)} test tumours, features by mean |attribution|", fontsize=9)
    ax.figure.savefig(path, dpi=150)
    written.append(path)
    print("wrote", ", ".join(str(p) for p in written))


if __name__ == "__main__":
    main()
