"""Which attribution method should I trust? Rank them with ``deepexplain.metrics`` where the answer is known.

A generated dataset with planted evidence: 24×24 grey images of noise, each with one shape drawn at a random
position — a square (class 0), a plus (class 1) or a ring (class 2). The class depends on the shape alone, so a
faithful explanation of the predicted class should point at the shape's pixels: the shapes are the ground-truth
masks of the localisation metrics. Then:

1. a small Keras CNN is trained on it (seconds);
2. every method below explains the test images' predicted classes (``deepexplain.Explainer``);
3. :func:`deepexplain.metrics.evaluate` tables deletion and insertion (Petsiuk et al. 2018), MuFidelity (Bhatt
   et al. 2020), sparseness, the pointing game and relevance mass/rank accuracy (Arras et al. 2022), with the
   ``random`` and ``input`` baselines as controls that no method should resemble;
4. :func:`deepexplain.plot.curves` draws the deletion curves;
5. then every method of the library (the demo's arguments) on the digits CNN of ``deepexplain demo``, a TF1 graph,
   through a :class:`deepexplain.metrics.Scorer` of its session: no ground truth there, so the faithfulness and
   complexity metrics only.

Run::

    python examples/evaluate_methods.py [--out DIR] [--smoke]

Writes ``evaluate_deletion.png`` to ``--out`` (default ``examples/out``) and prints the table.
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import deepexplain  # noqa: E402
from deepexplain import metrics, plot  # noqa: E402

SIZE = 24
SHAPE = 7  # side of the box a shape is drawn in


def shape_mask(kind: int) -> np.ndarray:
    """The SHAPE × SHAPE pixels of a square (0), a plus (1) or a ring (2)."""
    box = np.zeros((SHAPE, SHAPE), bool)
    centre = SHAPE // 2
    if kind == 0:
        box[1:-1, 1:-1] = True
    elif kind == 1:
        box[centre, :] = box[:, centre] = True
    else:
        rows, cols = np.indices((SHAPE, SHAPE)) - centre
        box[np.abs(np.hypot(rows, cols) - 2.6) < 0.8] = True
    return box


def planted_shapes(count: int, seed: int = 0):
    """``(images (count, 24, 24, 1), labels, masks (count, 24, 24))``: noise in [0, 0.5] with the class's shape of
    value 1 at a random place, and a distractor as bright (a diagonal bar, in another quadrant) that says nothing
    of the class; the mask marks the class shape's pixels. The distractor keeps brightness from being the answer:
    the input itself is no good explanation."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 0.5, (count, SIZE, SIZE, 1)).astype(np.float32)
    labels = rng.integers(0, 3, count)
    masks = np.zeros((count, SIZE, SIZE), bool)
    half = SIZE // 2
    bar = np.eye(SHAPE - 2, dtype=bool)
    for i, label in enumerate(labels):
        quadrant, other = rng.permutation(4)[:2]
        top, left = rng.integers(0, half - SHAPE + 1, 2) + half * np.array(divmod(quadrant, 2))
        masks[i, top : top + SHAPE, left : left + SHAPE] = shape_mask(label)
        top, left = rng.integers(0, half - len(bar) + 1, 2) + half * np.array(divmod(other, 2))
        images[i, top : top + len(bar), left : left + len(bar), 0][bar] = 1.0
    images[masks] = 1.0
    return images, labels, masks


def build_cnn(seed: int = 0):
    """conv 3×3 (16) → ReLU → max-pool → conv 3×3 (32) → ReLU → global average pooling → dense (3 logits)."""

    def he(offset):
        return keras.initializers.HeNormal(seed=seed + offset)

    return keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", kernel_initializer=he(0)),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=he(1), name="maps"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, kernel_initializer=he(2)),
        ]
    )


def main(argv=None):
    """Train on planted shapes, explain the test images with several methods, table the metrics, draw curves.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "out"), help="output folder")
    parser.add_argument("--smoke", action="store_true", help="a quick run: fewer images, epochs and steps")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    x_train, y_train, _ = planted_shapes(2000 if args.smoke else 6000, seed=0)
    x_test, y_test, masks = planted_shapes(12 if args.smoke else 64, seed=1)
    model = build_cnn()
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss=keras.losses.SparseCategoricalCrossentropy(True),
                  metrics=["accuracy"])  # fmt: skip
    model.fit(x_train, y_train, epochs=6 if args.smoke else 12, batch_size=64, verbose=0)
    predicted = model.predict(x_test, verbose=0).argmax(axis=1)
    print(f"test accuracy on planted shapes: {np.mean(predicted == y_test):.0%}")

    steps = 16 if args.smoke else 64
    methods = {
        "saliency": {},
        "grad*input": {},
        "intgrad": {"steps": steps},
        "smoothgrad": {"samples": 8 if args.smoke else 32, "seed": 0},
        "deeplift": {},
        "lrp.epsilon_plus": {},
        "gradcam": {"layer": "maps"},
        "occlusion": {"window_shape": (3, 3, 1), "step": 3},
        "random": {"seed": 0},
        "input": {},
    }
    chosen = ("deletion", "insertion", "mufidelity", "sparseness", "pointing_game", "relevance_mass_accuracy",
              "relevance_rank_accuracy")  # fmt: skip
    evaluation = metrics.evaluate(methods, model, x_test, target=predicted, metrics=chosen, masks=masks)
    print(evaluation)

    scorer = metrics.Scorer(model)
    curves = {}
    for name in ("intgrad", "gradcam", "random"):
        attributions = deepexplain.Explainer(name, model, progress=False, **methods[name]).run(x_test, predicted)
        curves[name] = metrics.deletion(scorer, x_test, attributions, target=predicted, steps=12)
    plot.curves(curves, title="deletion: the predicted logit as the top pixels go", save=out / "evaluate_deletion.png")
    print(f"wrote {out / 'evaluate_deletion.png'}")
    rank_every_method_on_digits(args.smoke)


def rank_every_method_on_digits(smoke: bool) -> None:
    """Every method of the library (the demo's arguments) on the demo's digits CNN (a TF1 graph and session)."""
    from deepexplain.demo import digits_cnn, explain_all, load_digits_data, method_arguments, pick_samples
    from deepexplain.tensorflow import DeepExplain

    data = load_digits_data()
    model = digits_cnn(data)
    try:
        xs = data.x_test[pick_samples(data.y_test, 4 if smoke else 20)]
        ys = np.eye(10, dtype=np.float32)[model.predict(xs).argmax(axis=1)]
        baselines = data.x_train[:32]
        arguments = method_arguments(baselines, quick=smoke, patterns=model.fit_patterns(data.x_train),
                                     layer=model.features)  # fmt: skip
        attributions, _ = explain_all(model, xs, ys, arguments)
        with DeepExplain(session=model.session) as de:
            scorer = metrics.Scorer(de.get_explainer("zero", model.logits, model.X, progress=False))
            chosen = ("deletion", "insertion", "sparseness", "complexity")
            evaluation = metrics.evaluate(attributions, scorer, xs, ys=ys, metrics=chosen, progress=False)
    finally:
        model.close()
    print(f"every method ({len(attributions)}) on {len(xs)} test digits of the digits CNN:")
    print(evaluation)


if __name__ == "__main__":
    main()
