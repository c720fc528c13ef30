"""PatternNet and PatternAttribution on the digits CNN: why patterns beat the gradient.

Kindermans et al. 2018 ("Learning how to explain neural networks", ICLR): a layer's kernel is a *filter* that
cancels the distractor in its input, so the gradient shows the filter; the *pattern* of each unit, learned from data,
is the direction of the signal. This script

1. trains the Keras digits CNN of ``keras_eager.py`` (seconds);
2. fits its patterns on the training digits in one streaming pass: ``deepexplain.fit_patterns(model, x_train)``;
3. prints, per layer, the paper's signal-estimator quality ``rho`` (Eq. 3; 1 is best) on the test digits of the
   gradient's estimator and of the 'linear' and two-component ('relu') patterns: ``deepexplain.signal_quality``;
4. draws the gradient, PatternNet and PatternAttribution of a few test digits side by side.

Run::

    python examples/patterns_digits.py [--out DIR] [--smoke]

Writes ``patterns_digits.png`` to ``--out`` (default ``examples/out``).
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from keras_eager import build_cnn, load_data, train  # noqa: E402

import deepexplain  # noqa: E402
from deepexplain import plot  # noqa: E402


def main(argv=None):
    """Train, fit the patterns, rate the estimators, draw the explanations.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out", help="output folder")
    parser.add_argument("--smoke", action="store_true", help="fewer epochs and samples: a smoke test")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = load_data()
    model = train(build_cnn(), x_train, y_train, epochs=2 if args.smoke else 10)
    print(f"test accuracy {model.evaluate(x_test, y_test, verbose=0)[1]:.1%}")

    # 2. One pass over the training digits (the softmax is left out by itself: patterns describe the logits).
    patterns = {kind: deepexplain.fit_patterns(model, x_train, pattern_type=kind, progress=False)
                for kind in ("linear", "relu")}  # fmt: skip

    # 3. rho per layer on the test digits: how little of the output the distractor estimate x - S(x) of an estimator
    # fitted on the training digits still reveals (on its own fitting data the linear estimator scores 1 by design).
    # The dense layer has 256 inputs for 360 test digits: a regression with almost as many inputs as samples finds
    # correlation anywhere, so every estimator scores low there; rate on more data for a fair number.
    quality = {"gradient": deepexplain.signal_quality(model, x_test, progress=False)}
    quality.update({kind: deepexplain.signal_quality(model, x_test, p, progress=False) for kind, p in patterns.items()})
    print(f"{'layer':<12}" + "".join(f"{name:>10}" for name in quality))
    for layer in quality["gradient"]:
        print(f"{layer:<12}" + "".join(f"{rho[layer]:>10.3f}" for rho in quality.values()))

    # 4. The explanations of each digit's predicted class.
    chosen = np.array([np.flatnonzero(y_test == digit)[0] for digit in range(2 if args.smoke else 6)])
    xs = x_test[chosen]
    attributions = {
        "gradient": deepexplain.Explainer("saliency", deepexplain.strip_softmax(model), progress=False).run(xs),
        "pattern.net": deepexplain.Explainer("pattern.net", model, patterns=patterns["relu"]).run(xs),
        "pattern.attribution": deepexplain.Explainer("pattern.attribution", model, patterns=patterns["relu"]).run(xs),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    predicted = model.predict(xs, verbose=0).argmax(axis=1)
    titles = [f"label {label}, predicted {guess}" for label, guess in zip(y_test[chosen], predicted, strict=True)]
    path = args.out / "patterns_digits.png"
    plot.grid(attributions, xs, titles=titles, edges=False, alpha=1.0, save=path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
