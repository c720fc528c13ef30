"""Compare every attribution method on the digits CNN: a methods × samples grid, timings, completeness, agreement.

Reuses :mod:`deepexplain.demo` (the CNN, trained once and cached under ``$XDG_CACHE_HOME/deepexplain``, and the
arguments of each method), then adds what the demo does not show: how much the methods agree. For every pair of
methods, the Spearman rank correlation of their attributions over the 64 pixels, averaged over the samples:
gradient×input, integrated gradients, ε-LRP and DeepLIFT, all measured from a black image, rank pixels almost alike
on this ReLU network (ε-LRP equals gradient×input there); DeepSHAP and expected gradients, measured from training
digits, agree with each other rather than with them; saliency (|gradient|, no sign) agrees with nobody.

Run::

    python examples/compare_methods.py [--out DIR] [--samples N] [--smoke]

Writes ``compare_methods.png`` and ``compare_agreement.png`` to ``--out`` (default ``examples/out``) and prints the
table of seconds and completeness errors.
"""

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from scipy.stats import rankdata  # noqa: E402

from deepexplain import plot  # noqa: E402
from deepexplain.demo import (  # noqa: E402
    digits_cnn,
    explain_all,
    format_table,
    load_digits_data,
    method_arguments,
    pick_samples,
)


def rank_agreement(attributions):
    """Mean Spearman correlation between the methods' attributions of each sample.

    Parameters
    ----------
    attributions : dict of str to numpy.ndarray
        Method name -> attributions ``(N, ...)``. Methods whose attributions are constant for some sample (the
        ``zero`` control) have no ranking and are left out.

    Returns
    -------
    names : list of str
        The methods compared.
    matrix : numpy.ndarray, shape (len(names), len(names))
        ``matrix[i, j]``: the correlation of methods i and j, averaged over the samples.
    """
    flat = {name: a.reshape(len(a), -1) for name, a in attributions.items()}
    names = [name for name, a in flat.items() if np.all(a.std(axis=1) > 0)]
    # Spearman = Pearson on ranks; ties share their mean rank.
    ranks = np.stack([rankdata(flat[name], axis=1) for name in names])  # (methods, N, features)
    ranks = (ranks - ranks.mean(axis=2, keepdims=True)) / ranks.std(axis=2, keepdims=True)
    matrix = np.einsum("ans,bns->abn", ranks, ranks).mean(axis=2) / ranks.shape[2]
    return names, matrix


def agreement_figure(names, matrix):
    """The agreement matrix as a figure (not registered with pyplot), values written in the cells."""
    figure = Figure(figsize=(1.0 + 0.55 * len(names), 0.6 + 0.5 * len(names)), layout="constrained")
    FigureCanvasAgg(figure)
    ax = figure.add_subplot()
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), labels=names, rotation=60, ha="right")
    ax.set_yticks(range(len(names)), labels=names)
    for i in range(len(names)):
        for j in range(len(names)):
            colour = "white" if abs(matrix[i, j]) > 0.6 else "black"
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7, color=colour)
    figure.colorbar(image, ax=ax, shrink=0.8, label="Spearman correlation (mean over samples)")
    return figure


def main(argv=None):
    """Explain test digits with every method, save the grid and the agreement matrix, print the table.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (default: ``sys.argv[1:]``).
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out", help="output folder")
    parser.add_argument("--samples", type=int, default=8, help="test digits to explain (default: 8)")
    parser.add_argument("--smoke", action="store_true", help="fewer samples and steps: a smoke test of a few seconds")
    args = parser.parse_args(argv)
    samples = min(args.samples, 2) if args.smoke else args.samples

    data = load_digits_data()
    model = digits_cnn(data)
    chosen = pick_samples(data.y_test, samples)
    xs = data.x_test[chosen]
    predicted = model.predict(xs).argmax(axis=1)
    ys = np.eye(10, dtype=np.float32)[predicted]
    baselines = data.x_train[np.random.default_rng(0).choice(len(data.x_train), 32, replace=False)]
    patterns = model.fit_patterns(data.x_train)
    arguments = method_arguments(baselines, quick=args.smoke, patterns=patterns, layer=model.features)
    attributions, reports = explain_all(model, xs, ys, arguments)
    model.close()
    print(format_table(reports))

    args.out.mkdir(parents=True, exist_ok=True)
    titles = [f"label {label}, predicted {guess}" for label, guess in zip(data.y_test[chosen], predicted, strict=True)]
    plot.grid(attributions, xs, titles=titles, edges=False, alpha=1.0, save=args.out / "compare_methods.png")
    names, matrix = rank_agreement(attributions)
    agreement_figure(names, matrix).savefig(args.out / "compare_agreement.png", dpi=120)
    print(f"wrote {args.out / 'compare_methods.png'} and {args.out / 'compare_agreement.png'}")


if __name__ == "__main__":
    main()
