"""Quickstart: six attribution methods on a small digits CNN, with the original DeepExplain API (a TF1-style graph).

The network is built and trained right here (a few seconds on a laptop CPU) from ``tf.Variable``, ``tf.nn.conv2d``
and ``tf.matmul`` in an explicit graph and session, so the whole workflow is on one page:

1. build the model as a graph: an input placeholder ``X`` and the logits ``T``;
2. open ``DeepExplain(session=sess)`` and call ``de.explain(method, T, X, xs, ys=ys)``;
3. draw methods × samples with :func:`deepexplain.plot.grid`.

Explain the logits, not the softmax: the softmax couples the classes, and DeepLIFT and ε-LRP have no rule for it.

Run::

    python examples/quickstart.py [--out DIR] [--smoke]

Writes ``quickstart.png`` to ``--out`` (default ``examples/out``).
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from deepexplain import plot  # noqa: E402
from deepexplain.tensorflow import DeepExplain  # noqa: E402

# method -> its arguments (see the README's table of methods)
SHOWN_METHODS = {
    "saliency": {},
    "grad*input": {},
    "intgrad": {"steps": 50},
    "elrp": {"epsilon": 1e-4},
    "deeplift": {},
    "occlusion": {"window_shape": (2, 2, 1)},
}


def load_data(seed=0):
    """scikit-learn's 8×8 digits as NHWC images in [0, 1], shuffled and split 80/20 into train and test."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    order = np.random.default_rng(seed).permutation(len(images))
    split = int(0.8 * len(images))
    train, test = order[:split], order[split:]
    return images[train], digits.target[train], images[test], digits.target[test]


def build_cnn(rng):
    """conv 3×3 (8) → ReLU → max-pool → conv 3×3 (16) → ReLU → dense (10 logits). Returns ``(X, logits)``."""

    def weight(*shape):
        return tf.Variable(rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape).astype(np.float32))

    X = tf.placeholder(tf.float32, [None, 8, 8, 1], name="images")
    h = tf.nn.relu(tf.nn.conv2d(X, weight(3, 3, 1, 8), 1, "SAME") + tf.Variable(tf.zeros(8)))
    h = tf.nn.max_pool2d(h, 2, 2, "VALID")
    h = tf.nn.relu(tf.nn.conv2d(h, weight(3, 3, 8, 16), 1, "SAME") + tf.Variable(tf.zeros(16)))
    logits = tf.matmul(tf.reshape(h, [-1, 4 * 4 * 16]), weight(256, 10)) + tf.Variable(tf.zeros(10))
    return X, logits


def main(argv=None):
    """Train the CNN, explain six test digits with six methods, save the grid.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out", help="output folder")
    parser.add_argument("--smoke", action="store_true", help="fewer steps and samples: a smoke test of a few seconds")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x_train, y_train, x_test, y_test = load_data()

    # 1. The model: an explicit graph and its session. Training uses TensorFlow's own gradients, as usual.
    graph = tf.Graph()
    with graph.as_default():
        X, logits = build_cnn(rng)
        labels = tf.placeholder(tf.int64, [None])
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        train_step = tf.train.AdamOptimizer(3e-3).minimize(loss)
        sess = tf.Session(graph=graph)
        sess.run(tf.global_variables_initializer())
    for _ in range(200 if args.smoke else 600):
        batch = rng.integers(len(x_train), size=64)
        sess.run(train_step, {X: x_train[batch], labels: y_train[batch]})
    predicted = sess.run(logits, {X: x_test}).argmax(axis=1)
    print(f"test accuracy: {np.mean(predicted == y_test):.1%}")

    # 2. Explain the predicted class of one test digit per class 0, 1, ...: ys is one-hot over the logits.
    chosen = np.array([np.flatnonzero(y_test == digit)[0] for digit in range(3 if args.smoke else 6)])
    xs, ys = x_test[chosen], np.eye(10, dtype=np.float32)[predicted[chosen]]
    methods = dict(SHOWN_METHODS, intgrad={"steps": 10 if args.smoke else 50})
    with DeepExplain(session=sess) as de:
        attributions = {name: de.explain(name, logits, X, xs, ys=ys, **kwargs) for name, kwargs in methods.items()}
        # DeepLIFT's attributions add up to f(x) - f(baseline), here the logit of x minus that of a black image.
        explainer = de.get_explainer("deeplift", logits, X)
        errors = explainer.completeness_error(xs, ys, attributions=attributions["deeplift"])
    print(f"deeplift: max |sum(attributions) - (f(x) - f(0))| = {np.abs(errors).max():.1e}")

    # 3. Methods × samples: red pixels speak for the explained class, blue ones against it.
    args.out.mkdir(parents=True, exist_ok=True)
    pairs = zip(y_test[chosen], predicted[chosen], strict=True)
    titles = [f"label {label}, predicted {guess}" for label, guess in pairs]
    plot.grid(attributions, xs, titles=titles, edges=False, alpha=1.0, save=args.out / "quickstart.png")
    print(f"wrote {args.out / 'quickstart.png'}")
    sess.close()


if __name__ == "__main__":
    main()
