"""Concept Relevance Propagation on a small colour-image CNN: the concepts that tell a cat from coffee and a rocket.

A three-class model is trained (seconds) on 32x32 patches cut from scikit-image's ``chelsea`` (a cat), ``coffee``
and ``rocket`` photographs; then, as in Achtibat et al. 2023, Fig. 1:

1. the RelMax reference patches of every channel of the last convolution are collected over the training patches
   (``FeatureVisualization``; checkpointed in ``--out``/fv, so a second run resumes instead of redoing the pass);
2. a test patch of each class is explained by its four most relevant channels, each with its conditional heatmap
   and its reference crops (``top_concepts`` + ``plot.concepts``);
3. the share of each channel is printed, with the channels' completeness (their heatmaps sum to the heatmap).

Run::

    python examples/concepts_images.py [--out DIR] [--smoke]

Writes ``concepts_<class>.png`` to ``--out`` (default ``examples/out``).
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from skimage import data as images  # noqa: E402

from deepexplain import plot  # noqa: E402
from deepexplain.crp import ChannelConcept, CondAttribution, FeatureVisualization, top_concepts  # noqa: E402

CLASSES = ("chelsea", "coffee", "rocket")
SIZE = 32


def patches(count: int, seed: int):
    """``count`` random 32x32 patches of each photograph in [0, 1], with their class."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, name in enumerate(CLASSES):
        picture = getattr(images, name)().astype(np.float32) / 255.0
        for _ in range(count):
            row, col = rng.integers(0, picture.shape[0] - SIZE), rng.integers(0, picture.shape[1] - SIZE)
            xs.append(picture[row : row + SIZE, col : col + SIZE])
            ys.append(label)
    order = rng.permutation(len(xs))
    return np.stack(xs)[order], np.array(ys)[order]


def build_cnn():
    layers = keras.layers
    return keras.Sequential([
        keras.Input((SIZE, SIZE, 3)),
        layers.Conv2D(16, 3, activation="relu", name="conv1"),
        layers.MaxPooling2D(2),
        layers.Conv2D(24, 3, activation="relu", name="conv2"),
        layers.MaxPooling2D(2),
        layers.Conv2D(32, 3, activation="relu", name="conv3"),
        layers.GlobalAveragePooling2D(),
        layers.Dense(len(CLASSES), name="logits"),
    ])  # fmt: skip


def main(argv=None):
    """Train, collect the reference sets, draw the concepts of one patch per class.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out", help="output folder")
    parser.add_argument("--smoke", action="store_true", help="fewer patches and epochs: a smoke test")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    x_train, y_train = patches(100 if args.smoke else 600, seed=0)
    x_test, y_test = patches(20, seed=1)
    model = build_cnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    model.fit(x_train, y_train, epochs=3 if args.smoke else 8, batch_size=64, verbose=0)
    print(f"test accuracy {model.evaluate(x_test, y_test, verbose=0)[1]:.1%}")

    attribution = CondAttribution(model, "lrp.epsilon_plus", progress=False)
    fv = FeatureVisualization(attribution, x_train, {"conv3": ChannelConcept()}, targets=y_train, k=8)
    fv.run(batch_size=128, out=args.out / "fv", progress=False)  # resumable: a second run reads the sets back
    args.out.mkdir(parents=True, exist_ok=True)
    for label, name in enumerate(CLASSES):
        sample = x_test[np.flatnonzero(y_test == label)[0]]
        concepts = top_concepts(attribution, sample, "conv3", target=label, n_concepts=4, fv=fv, n_ref=5)
        parts = attribution(sample[None], [{"y": [label], "conv3": [c]} for c in range(32)]).heatmap
        error = np.abs(parts.sum(axis=0) - concepts.heatmap).max() / max(np.abs(concepts.heatmap).max(), 1e-12)
        shares = ", ".join(f"#{c} {100 * s:+.0f}%" for c, s in zip(concepts.ids, concepts.shares, strict=True))
        print(f"{name}: top channels of conv3 {shares} (32 channels sum to the heatmap to {error:.0e})")
        plot.concepts(concepts, save=args.out / f"concepts_{name}.png")
    print(f"wrote {', '.join(f'concepts_{name}.png' for name in CLASSES)} to {args.out}")


if __name__ == "__main__":
    main()
