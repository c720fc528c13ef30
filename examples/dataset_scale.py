"""Explain a whole dataset from disk, resume it, and score the explanations over every sample.

``deepexplain.explain_dataset`` streams a dataset through one compiled explainer (or one per Ray worker with
``engine='ray'``) and writes the attributions shard by shard to ``OUT/job/attributions.npy`` with a manifest: run
the same call again and it resumes where it stopped (here: the second call finds every shard done and returns at
once); call it with other arguments and it refuses, naming what changed. ``deepexplain.evaluate_dataset`` streams
the deletion curve the same way.

The data: scikit-learn's digits test split repeated to ``--samples`` (each copy with its own noise), saved as a
``.npy`` file that is memory-mapped one shard at a time. The model: the Keras digits CNN of ``keras_eager.py``,
trained for a few epochs; its softmax is stripped (integrated gradients of the logits).

Run::

    python examples/dataset_scale.py [--out DIR] [--samples N] [--smoke]

Writes ``dataset_class_means.png`` (the mean attribution per class) to ``--out`` (default ``examples/out``).
"""

import argparse
import os
import shutil
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from keras_eager import build_cnn, load_data, train  # noqa: E402

import deepexplain  # noqa: E402
from deepexplain import plot  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "out"), help="output folder")
    parser.add_argument("--samples", type=int, default=20_000, help="samples to explain")
    parser.add_argument("--smoke", action="store_true", help="a quick run (fewer samples, one epoch)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    samples = 2_000 if args.smoke else args.samples

    x_train, y_train, x_test, y_test = load_data()
    model = deepexplain.strip_softmax(train(build_cnn(), x_train, y_train, epochs=1 if args.smoke else 8))
    repeats = -(-samples // len(x_test))
    rng = np.random.default_rng(0)
    xs = np.clip(np.tile(x_test, (repeats, 1, 1, 1))[:samples] + rng.normal(0, 0.03, (samples, 8, 8, 1)), 0, 1)
    labels = np.tile(y_test, repeats)[:samples]
    np.save(out / "dataset_inputs.npy", xs.astype(np.float32))

    job = out / "dataset_job"
    shutil.rmtree(job, ignore_errors=True)  # a fresh job each time the example runs (another --samples is refused)
    for attempt in ("first call", "second call (resumes)"):
        result = deepexplain.explain_dataset("intgrad", model, out / "dataset_inputs.npy", target=labels, out=job,
                                             steps=16, progress=False)  # fmt: skip
        print(f"{attempt}: {result.shards_run} of {result.shards_total} shards run, {result.n} samples in "
              f"{result.seconds:.1f} s")  # fmt: skip
    attributions = result.attributions  # a read-only memory map of job/attributions.npy

    curve = deepexplain.evaluate_dataset("deletion", model, out / "dataset_inputs.npy", job / "attributions.npy",
                                         target=labels, steps=8, progress=False)  # fmt: skip
    random = deepexplain.evaluate_dataset("deletion", model, xs, rng.random(xs.shape), target=labels, steps=8,
                                          progress=False)  # fmt: skip
    print(f"deletion AUC over {len(labels)} samples: intgrad {curve.auc.mean():.3f}, random order "
          f"{random.auc.mean():.3f} (lower: the explanation finds what the score depends on)")  # fmt: skip

    means = np.stack([np.asarray(attributions[labels == k]).mean(axis=0)[..., 0] for k in range(10)])
    images = np.stack([xs[labels == k].mean(axis=0)[..., 0] for k in range(10)])
    path = out / "dataset_class_means.png"
    plot.grid({"mean intgrad": means}, images, titles=[f"class {k}" for k in range(10)], edges=False, alpha=1.0,
              save=path)  # fmt: skip
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
