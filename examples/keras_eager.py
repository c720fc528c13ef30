"""Keras 3 in eager mode: train a CNN with ``model.fit``, explain it with ``deepexplain.Explainer``, no session.

The model is an ordinary Keras 3 ``Sequential`` CNN on scikit-learn's 8×8 digits (conv 3×3 (8) → ReLU → max-pool →
conv 3×3 (16) → ReLU → dense (10) → softmax), trained for a few epochs (seconds on a laptop CPU). Then:

1. ``deepexplain.strip_softmax(model)``: explain the logits, not the probabilities (the softmax couples the classes
   and saturates, and DeepLIFT and ε-LRP have no rule for it);
2. ``deepexplain.Explainer(method, logits_model, **arguments)`` per method: the live model is traced once into the
   method's ``tf.function`` (its weights read, not copied); ``explainer.run(xs, target='max')`` explains each digit's
   predicted class;
3. ``explainer.completeness_error(xs, target='max')``: DeepLIFT's attributions add up to ``f(x) - f(0)``, the
   predicted logit of the digit minus that of a black image;
4. methods × samples with :func:`deepexplain.plot.grid`.

Run::

    python examples/keras_eager.py [--out DIR] [--smoke]

Writes ``keras_eager.png`` to ``--out`` (default ``examples/out``).
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

import deepexplain  # noqa: E402
from deepexplain import plot  # noqa: E402


def load_data(seed=0):
    """scikit-learn's 8×8 digits as NHWC images in [0, 1], shuffled and split 80/20 into train and test."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    order = np.random.default_rng(seed).permutation(len(images))
    split = int(0.8 * len(images))
    train, test = order[:split], order[split:]
    return images[train], digits.target[train], images[test], digits.target[test]


def build_cnn(seed=0):
    """The digits CNN as a Keras 3 ``Sequential``, ending in a softmax as Keras classifiers usually do."""

    def he(offset):
        return keras.initializers.HeNormal(seed=seed + offset)

    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", kernel_initializer=he(0)),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", kernel_initializer=he(1)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax", kernel_initializer=he(2)),
        ]
    )


def train(model, x_train, y_train, epochs):
    """Fit ``model`` on the digits with Adam and cross-entropy, as an ordinary Keras user would; returns it."""
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
    return model


def main(argv=None):
    """Train the Keras CNN, explain a few test digits with seven methods, check DeepLIFT, save the grid.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out", help="output folder")
    parser.add_argument("--smoke", action="store_true", help="fewer epochs, samples and steps: a smoke test")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)  # the order of the training batches
    x_train, y_train, x_test, y_test = load_data()

    # 1. An ordinary Keras model, trained eagerly with fit().
    start = time.perf_counter()
    model = train(build_cnn(), x_train, y_train, epochs=2 if args.smoke else 10)
    _, accuracy = model.evaluate(x_test, y_test, verbose=0)
    print(f"trained in {time.perf_counter() - start:.1f} s, test accuracy {accuracy:.1%}")

    # 2. Explain the logits: a copy of the model without the final softmax (same weights).
    logits_model = deepexplain.strip_softmax(model)
    chosen = np.array([np.flatnonzero(y_test == digit)[0] for digit in range(2 if args.smoke else 6)])
    xs = x_test[chosen]
    references = x_train[np.random.default_rng(0).choice(len(x_train), 8 if args.smoke else 32, replace=False)]
    methods = {
        "saliency": {},
        "grad*input": {},
        "intgrad": {"steps": 16 if args.smoke else 64},
        "smoothgrad": {"samples": 10 if args.smoke else 50, "seed": 0},
        "deeplift": {},
        "deepshap": {"baselines": references},  # DeepLIFT averaged over real digits instead of a black image
        "occlusion": {"window_shape": (2, 2, 1)},
    }
    attributions, explainers = {}, {}
    for name, arguments in methods.items():
        start = time.perf_counter()
        explainers[name] = deepexplain.Explainer(name, logits_model, progress=False, **arguments)  # compiled once
        attributions[name] = explainers[name].run(xs, target="max")  # ... run on any number of batches
        print(f"{name:<11} {time.perf_counter() - start:6.2f} s (compile and run)")

    # 3. Completeness: DeepLIFT's attributions of each digit sum to its explained logit minus the black image's.
    errors = explainers["deeplift"].completeness_error(xs, target="max")
    print(f"deeplift: max |sum(attributions) - (f(x) - f(0))| = {np.abs(errors).max():.1e}")
    errors = explainers["deepshap"].completeness_error(xs, target="max")
    print(f"deepshap: max |sum(attributions) - (f(x) - mean f(references))| = {np.abs(errors).max():.1e}")

    # 4. Methods × samples: red pixels speak for the predicted class, blue ones against it.
    args.out.mkdir(parents=True, exist_ok=True)
    predicted = logits_model.predict(xs, verbose=0).argmax(axis=1)
    titles = [f"label {label}, predicted {guess}" for label, guess in zip(y_test[chosen], predicted, strict=True)]
    path = args.out / "keras_eager.png"
    plot.grid(attributions, xs, titles=titles, edges=False, alpha=1.0, save=path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
