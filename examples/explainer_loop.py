"""Explain 10,000 samples with one compiled explainer, batch by batch, under a progress bar.

``de.explain(...)`` compiles the method every time it is called. To explain a data set, compile once with
``de.get_explainer(method, T, X, **arguments)`` and call ``explainer.run(xs, ys)`` on each batch: ``run`` adds no ops
to the graph, so the graph stays the same size and every batch costs only the session runs. ``run``'s
``batch_size`` bounds the rows per session run (integrated gradients puts its steps into the batch dimension, so a
batch of 500 samples at 32 steps is 16,000 rows); results do not depend on it.

The data: scikit-learn's 1,797 digits repeated to 10,000 samples, each copy with a little noise of its own.
The model: the digits CNN of :mod:`deepexplain.demo` (trained once, cached under ``$XDG_CACHE_HOME/deepexplain``).
The result: per class, the mean integrated-gradients map of the class's logit over the samples of that class.

Run::

    python examples/explainer_loop.py [--out DIR] [--samples N] [--smoke]

Writes ``explainer_loop_class_means.png`` to ``--out`` (default ``examples/out``).
"""

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from deepexplain import plot  # noqa: E402
from deepexplain.demo import digits_cnn, load_digits_data  # noqa: E402
from deepexplain.tensorflow import DeepExplain  # noqa: E402


def augmented_digits(count, seed=0):
    """``count`` digits (NHWC, [0, 1]) and their labels: the data set repeated, each copy with its own noise.

    Parameters
    ----------
    count : int
        How many samples to make.
    seed : int, default 0
        Seed of the choice of digits and of the noise.

    Returns
    -------
    images : numpy.ndarray, shape (count, 8, 8, 1), float32
    labels : numpy.ndarray, shape (count,), int
    """
    data = load_digits_data(test_fraction=0.0)
    rng = np.random.default_rng(seed)
    picked = rng.integers(len(data.x_train), size=count)
    source = data.x_train[picked]
    images = np.clip(source + rng.normal(0, 0.05, source.shape), 0, 1).astype(np.float32)
    return images, data.y_train[picked]


def main(argv=None):
    """Explain the augmented digits in batches with one integrated-gradients explainer; save the class means.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out", help="output folder")
    parser.add_argument("--samples", type=int, default=10_000, help="samples to explain (default: 10000)")
    parser.add_argument("--batch", type=int, default=500, help="samples per explainer.run call (default: 500)")
    parser.add_argument("--smoke", action="store_true", help="1,000 samples and fewer steps: a smoke test")
    args = parser.parse_args(argv)
    count, steps = (min(args.samples, 1_000), 8) if args.smoke else (args.samples, 32)

    model = digits_cnn()
    xs, labels = augmented_digits(count)
    hits = 0
    totals, image_totals, counts = np.zeros((10, 8, 8, 1)), np.zeros((10, 8, 8, 1)), np.zeros(10, dtype=int)
    worst_error = 0.0
    start = time.perf_counter()
    with DeepExplain(session=model.session) as de:
        # Compiled once; progress=False because the loop below has its own bar over batches.
        explainer = de.get_explainer("intgrad", model.logits, model.X, steps=steps, progress=False)
        for lo in tqdm(range(0, count, args.batch), desc="intgrad", unit="batch"):
            batch, classes = xs[lo : lo + args.batch], labels[lo : lo + args.batch]
            hits += int(np.sum(model.predict(batch).argmax(axis=1) == classes))
            ys = np.eye(10, dtype=np.float32)[classes]  # explain each digit's true class
            attributions = explainer.run(batch, ys, batch_size=8192)
            errors = explainer.completeness_error(batch, ys, attributions=attributions)
            worst_error = max(worst_error, float(np.abs(errors).max()))
            np.add.at(totals, classes, attributions)
            np.add.at(image_totals, classes, batch)
            counts += np.bincount(classes, minlength=10)
    seconds = time.perf_counter() - start
    model.close()
    print(f"{count} samples in {seconds:.1f} s ({count / seconds:.0f} samples/s, {steps} steps each)")
    print(f"accuracy on the noisy digits: {hits / count:.1%}")
    print(f"max |completeness error| over all samples: {worst_error:.3f}")

    # Column c: the mean digit of class c, and the mean attribution map of its logit over those digits.
    present = np.flatnonzero(counts)
    mean_images = image_totals[present] / counts[present, None, None, None]
    mean_maps = totals[present] / counts[present, None, None, None]
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "explainer_loop_class_means.png"
    titles = [f"{c} ({counts[c]} samples)" for c in present]
    plot.grid({"mean intgrad": mean_maps}, mean_images, titles=titles, edges=False, alpha=1.0, save=path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
