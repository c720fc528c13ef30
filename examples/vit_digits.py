"""A small Vision Transformer built from Keras layers on the 8×8 digits: AttnLRP, CP-LRP and attention rollout per
pixel and per patch.

The model: 2×2 patches embedded by a strided ``Conv2D`` → 16 tokens + learned positions → two Transformer blocks
(``MultiHeadAttention``, residual, ``LayerNormalization``, a GELU feed-forward) → mean over tokens → 10 logits,
trained in seconds. Views of a few test digits, for the predicted class:

- ``lrp.attn`` (AttnLRP, Achtibat et al. 2024) and ``lrp.cp`` (CP-LRP, Ali et al. 2022) per pixel (the input);
- ``lrp.attn`` per patch: the relevance at the patch embedding (``layer='patches'``) summed over its channels;
- ``attention_rollout`` (Abnar & Zuidema 2020) per patch: how much each patch flows into the pooled tokens.

It also prints how much of the explained logit each method's relevances add up to: CP-LRP conserves it but for
what the biases and the learned positions absorb, AttnLRP's softmax rule absorbs part of it too.

Run::

    python examples/vit_digits.py [--out DIR] [--smoke]

Writes ``vit_digits.png`` to ``--out`` (default ``examples/out``).
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras_eager import load_data  # noqa: E402
from transformer_text import Positions  # noqa: E402

import deepexplain  # noqa: E402
from deepexplain import plot  # noqa: E402

PATCH, DIM, HEADS = 2, 32, 4


def build_vit(blocks=2, classes=10):
    """Patch embedding -> Transformer blocks -> mean over tokens -> logits (no softmax: LRP explains logits)."""
    images = keras.Input((8, 8, 1))
    patches = keras.layers.Conv2D(DIM, PATCH, strides=PATCH, name="patches")(images)  # (N, 4, 4, DIM)
    h = Positions(name="positions")(keras.layers.Reshape((-1, DIM))(patches))
    for b in range(blocks):
        attended = keras.layers.MultiHeadAttention(HEADS, DIM // HEADS, name=f"attention_{b}")(h, h)
        h = keras.layers.LayerNormalization(name=f"norm_{b}a")(h + attended)
        feed = keras.layers.Dense(2 * DIM, activation="gelu")(h)
        h = keras.layers.LayerNormalization(name=f"norm_{b}b")(h + keras.layers.Dense(DIM)(feed))
    return keras.Model(images, keras.layers.Dense(classes)(keras.layers.GlobalAveragePooling1D()(h)))


def per_pixel(patch_map):
    """A (N, 4, 4) per-patch map shown on the 8×8 pixel grid."""
    return np.kron(patch_map, np.ones((PATCH, PATCH)))


def main(argv=None):
    """Train the ViT, explain a few test digits per pixel and per patch, save the grid.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out", help="output folder")
    parser.add_argument("--smoke", action="store_true", help="fewer epochs: a smoke test")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = load_data()
    model = build_vit()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    model.fit(x_train, y_train, epochs=3 if args.smoke else 30, batch_size=64, verbose=0)
    print(f"test accuracy {model.evaluate(x_test, y_test, verbose=0)[1]:.1%}")

    shown = x_test[:6]
    logits = model(shown).numpy()
    predicted = logits.argmax(axis=1)
    maps = {
        "lrp.attn": deepexplain.explain("lrp.attn", model, shown, target=predicted),
        "lrp.cp": deepexplain.explain("lrp.cp", model, shown, target=predicted),
    }
    explained = logits[np.arange(len(shown)), predicted]
    for name, relevance in maps.items():
        share = relevance.reshape(len(shown), -1).sum(axis=1) / explained
        print(f"{name:>9}: sum of relevances / logit = {np.array2string(share, precision=2)}")
    patches = deepexplain.explain("lrp.attn", model, shown, target=predicted, layer="patches").sum(axis=-1)
    rollout = deepexplain.explain("attention_rollout", model, shown).reshape(-1, 4, 4)
    maps["lrp.attn per patch"] = per_pixel(patches)
    maps["rollout per patch"] = per_pixel(rollout - rollout.mean(axis=(1, 2), keepdims=True))
    args.out.mkdir(parents=True, exist_ok=True)
    titles = [f"{label} → {guess}" for label, guess in zip(y_test[:6], predicted, strict=True)]
    plot.grid(maps, shown, titles=titles, save=args.out / "vit_digits.png", colorbar=True)
    print(f"wrote {args.out / 'vit_digits.png'} (rollout shown relative to its mean per digit)")


if __name__ == "__main__":
    main()
