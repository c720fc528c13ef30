"""The command line: ``python -m deepexplain demo`` and ``python -m deepexplain explain`` (also ``deepexplain ...``).

Parsing ``--help`` imports neither TensorFlow nor matplotlib; each subcommand imports what it needs when it runs.

``explain`` reads its inputs (images through scikit-image, resized to the model's input, or ``.npy`` arrays), picks
a target per input, attributes and writes ``OUT/<name>.png`` (a heatmap over the input) and ``OUT/<name>.npy`` (the
raw attributions). All of it is written and tested around :func:`explain_files`, which takes the model as two
functions; only loading a saved Keras model (:func:`load_keras_model`) waits for deepexplain's Keras/eager path.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from deepexplain._version import __version__

__all__ = [
    "IMAGE_SUFFIXES",
    "KerasPathUnavailable",
    "build_parser",
    "explain_files",
    "load_keras_model",
    "main",
    "read_input",
    "target_weights",
]

# What scikit-image's default plugin (imageio) reads; anything else must be a .npy array.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

_KERAS_MESSAGE = (
    "explaining saved Keras models arrives with deepexplain's Keras/eager path, which is not there yet. "
    "Meanwhile, build the model as a TF1-style graph and use DeepExplain(session=...) (see the README's "
    "quickstart), or run `python -m deepexplain demo` to see every method at work."
)


class KerasPathUnavailable(NotImplementedError):
    """Explaining a saved Keras model needs the Keras/eager path, which deepexplain does not have yet."""


# ---------------------------------------------------------------------------------------------------------------------
# Parsing


def _target(value: str) -> str | int:
    if value == "max":
        return value
    try:
        index = int(value)
    except ValueError:
        index = -1
    if index < 0:
        raise argparse.ArgumentTypeError(f"expected 'max' or a non-negative class index, got {value!r}")
    return index


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The ``deepexplain`` argument parser with its ``demo`` and ``explain`` subcommands.

    Returns
    -------
    argparse.ArgumentParser
        ``parse_args`` sets ``command`` (``'demo'`` or ``'explain'``) and the subcommand's options.
    """
    parser = argparse.ArgumentParser(
        prog="deepexplain",
        description="Attribution methods for TensorFlow models: which input features made the model decide?",
        epilog="Run `deepexplain COMMAND --help` for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo",
        help="train a small CNN on scikit-learn's digits and explain it with every method (offline, < 1 min)",
        description=(
            "Train a small CNN on scikit-learn's 8x8 digits (seconds; the weights are cached under "
            "$XDG_CACHE_HOME/deepexplain, default ~/.cache/deepexplain), explain a few test digits with every "
            "method, write OUT/methods.png (methods x samples) and print a table: per method, the seconds it took "
            "and, where it promises completeness, the largest |sum(attributions) - (f(x) - f(baseline))|."
        ),
    )
    demo.add_argument("--out", default="deepexplain-demo", metavar="DIR", help="output folder (default: %(default)s)")
    demo.add_argument(
        "--samples", type=_positive, default=6, metavar="N", help="test digits to explain (default: %(default)s)"
    )
    demo.add_argument("--no-cache", action="store_true", help="retrain the network instead of loading cached weights")
    demo.set_defaults(command_parser=demo)

    explain = commands.add_parser(
        "explain",
        help="explain a saved Keras model on image or .npy inputs (arrives with the Keras path)",
        description=(
            "Explain a saved Keras model's output for each INPUT: an image (read with scikit-image, scaled to [0, 1] "
            "and resized to the model's input; RGB and grey converted to the model's channels) or a .npy array "
            "shaped like one model input. Writes OUT/<name>.png (heatmap over the input) and OUT/<name>.npy (the "
            "attributions, shaped like the input) per INPUT."
        ),
        epilog=(
            "Status: explaining saved Keras models arrives with deepexplain's Keras/eager path; until then this "
            "command checks its arguments and exits with status 1. For TF1-style graphs use the Python API "
            "(DeepExplain(session=...))."
        ),
    )
    explain.add_argument("model", metavar="MODEL", help="saved Keras model (.keras or .h5 file, or SavedModel folder)")
    explain.add_argument(
        "inputs", nargs="+", metavar="INPUT", help=f"image ({', '.join(IMAGE_SUFFIXES)}) or .npy array"
    )
    explain.add_argument(
        "--method",
        default="deeplift",
        help="attribution method, a name in deepexplain.tensorflow.METHODS, e.g. saliency, 'grad*input', intgrad, "
        "elrp, deeplift, smoothgrad, occlusion (default: %(default)s)",
    )
    explain.add_argument(
        "--target",
        type=_target,
        default="max",
        help="output unit to explain: 'max' (the largest output per input) or a class index (default: %(default)s)",
    )
    explain.add_argument("--out", default="deepexplain-out", metavar="DIR", help="output folder (default: %(default)s)")
    explain.set_defaults(command_parser=explain)
    return parser


# ---------------------------------------------------------------------------------------------------------------------
# explain: the pieces that do not depend on how the model is loaded


def read_input(path: str | Path, sample_shape: Sequence[int | None]) -> np.ndarray:
    """One model input from an image or a ``.npy`` file.

    Parameters
    ----------
    path : str or path-like
        An image (any of :data:`IMAGE_SUFFIXES`) or a ``.npy`` array.
    sample_shape : sequence of int or None
        The model's input shape without the batch dimension, e.g. ``(28, 28, 1)``; None for a free dimension.

    Returns
    -------
    numpy.ndarray, float32
        An image is scaled to [0, 1], its alpha channel dropped, converted to the model's channels (RGB → grey
        when the model takes one channel, grey → RGB when it takes three) and resized (anti-aliased) to the model's
        height and width. An array is returned as stored (a leading batch dimension of 1 is dropped).

    Raises
    ------
    ValueError
        If the suffix is neither an image's nor ``.npy``, the array's shape does not fit ``sample_shape``, or an
        image cannot be fitted to a model input that is not (H, W, C) with C in (1, 3).
    """
    path = Path(path)
    shape = tuple(sample_shape)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path)
        if array.ndim == len(shape) + 1 and array.shape[0] == 1:
            array = array[0]
        if array.ndim != len(shape) or any(d is not None and d != a for d, a in zip(shape, array.shape, strict=True)):
            raise ValueError(f"{path}: expected an array of shape {shape} (one model input), got {array.shape}")
        return array.astype(np.float32)
    if suffix not in IMAGE_SUFFIXES:
        raise ValueError(f"{path}: expected an image ({', '.join(IMAGE_SUFFIXES)}) or a .npy array")
    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise ValueError(f"{path}: an image fits a model input (H, W, 1) or (H, W, 3), but the model takes {shape}")

    from skimage import io
    from skimage.color import gray2rgb, rgb2gray
    from skimage.transform import resize
    from skimage.util import img_as_float

    image = img_as_float(io.imread(path))
    if image.ndim == 3 and image.shape[-1] == 4:
        image = image[..., :3]
    if shape[-1] == 1:
        image = (rgb2gray(image) if image.ndim == 3 else image)[..., None]
    elif image.ndim == 2:
        image = gray2rgb(image)
    height = shape[0] if shape[0] is not None else image.shape[0]
    width = shape[1] if shape[1] is not None else image.shape[1]
    if (height, width) != image.shape[:2]:
        image = resize(image, (height, width), anti_aliasing=True)
    return np.clip(image, 0, 1).astype(np.float32)


def target_weights(outputs: np.ndarray, target: str | int) -> np.ndarray:
    """One-hot weights ``ys`` selecting the output unit to explain for each input.

    Parameters
    ----------
    outputs : numpy.ndarray, shape (N, K)
        The model's outputs (logits) for the N inputs.
    target : 'max' or int
        ``'max'``: each input's largest output; an int: that unit for every input.

    Returns
    -------
    numpy.ndarray, shape (N, K), float32

    Raises
    ------
    ValueError
        If ``outputs`` is not (N, K), or ``target`` is neither 'max' nor an index in ``0..K-1``.
    """
    outputs = np.asarray(outputs)
    if outputs.ndim != 2:
        raise ValueError(f"outputs: expected shape (N, K) (one output vector per input), got {outputs.shape}")
    n, k = outputs.shape
    if isinstance(target, str):
        if target != "max":
            raise ValueError(f"target: expected 'max' or a class index, got {target!r}")
        index = outputs.argmax(axis=1)
    elif isinstance(target, int | np.integer) and 0 <= target < k:
        index = np.full(n, int(target))
    else:
        raise ValueError(f"target: expected 'max' or a class index in 0..{k - 1}, got {target!r}")
    return np.eye(k, dtype=np.float32)[index]


def _output_names(inputs: Sequence[Path]) -> list[str]:
    """File stems, numbered where two inputs share one (a/x.png and b/x.png)."""
    names, used = [], set()
    for path in inputs:
        name, count = path.stem, 1
        while name in used:
            count += 1
            name = f"{path.stem}-{count}"
        used.add(name)
        names.append(name)
    return names


def explain_files(
    inputs: Sequence[str | Path],
    sample_shape: Sequence[int | None],
    predict: Callable[[np.ndarray], np.ndarray],
    attribute: Callable[[np.ndarray, np.ndarray], np.ndarray],
    target: str | int = "max",
    out: str | Path = "deepexplain-out",
) -> list[Path]:
    """Read ``inputs``, explain each and write ``out/<name>.png`` (heatmap) and ``out/<name>.npy`` (attributions).

    Parameters
    ----------
    inputs : sequence of str or path-like
        Images or ``.npy`` arrays, read by :func:`read_input`.
    sample_shape : sequence of int or None
        The model's input shape without the batch dimension.
    predict : callable
        ``predict(xs) -> outputs``, ``(N, *sample_shape) -> (N, K)``: the model's outputs (logits).
    attribute : callable
        ``attribute(xs, ys) -> attributions`` shaped like ``xs``, ``ys`` the one-hot targets ``(N, K)``.
    target : 'max' or int, default 'max'
        The unit to explain, see :func:`target_weights`.
    out : str or path-like
        Output folder, created if missing.

    Returns
    -------
    list of pathlib.Path
        The files written: per input, its ``.png`` then its ``.npy``.

    Raises
    ------
    ValueError
        As :func:`read_input` and :func:`target_weights`, before anything is written.
    """
    from deepexplain import plot

    paths = [Path(p) for p in inputs]
    xs = np.stack([read_input(p, sample_shape) for p in paths])
    ys = target_weights(predict(xs), target)
    attributions = np.asarray(attribute(xs, ys))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, x, a in zip(_output_names(paths), xs, attributions, strict=True):
        picture = folder / f"{name}.png"
        plot.heatmap(a, image=x if x.ndim in (2, 3) else None, save=picture)
        np.save(folder / f"{name}.npy", a)
        written += [picture, folder / f"{name}.npy"]
    return written


def load_keras_model(path: str | Path, method: str, **method_kwargs):
    """A saved Keras model as the three things :func:`explain_files` needs.

    Parameters
    ----------
    path : str or path-like
        A ``.keras`` or ``.h5`` file or a SavedModel folder.
    method : str
        The attribution method, a name in :data:`deepexplain.tensorflow.METHODS`.
    **method_kwargs
        The method's arguments.

    Returns
    -------
    sample_shape : tuple
        The model's input shape without the batch dimension.
    predict : callable
        ``predict(xs) -> outputs (N, K)``.
    attribute : callable
        ``attribute(xs, ys) -> attributions`` shaped like ``xs``.

    Raises
    ------
    KerasPathUnavailable
        Always, for now: explaining Keras models arrives with deepexplain's Keras/eager path.
    """
    raise KerasPathUnavailable(_KERAS_MESSAGE)


# ---------------------------------------------------------------------------------------------------------------------
# Commands


def _demo(args: argparse.Namespace) -> int:
    from deepexplain.demo import format_table, run_demo

    try:
        reports = run_demo(args.out, samples=args.samples, cache=not args.no_cache)
    except ValueError as error:  # e.g. more samples than test digits
        args.command_parser.error(str(error))
    print(format_table(reports), flush=True)
    print(f"wrote {Path(args.out) / 'methods.png'}", file=sys.stderr)
    return 0


def _explain(args: argparse.Namespace) -> int:
    parser = args.command_parser  # usage errors read better with the subcommand's own usage line
    if not Path(args.model).exists():
        parser.error(f"MODEL {args.model}: no such file or folder")
    for path in map(Path, args.inputs):
        if not path.is_file():
            parser.error(f"INPUT {path}: no such file")
        if path.suffix.lower() not in (*IMAGE_SUFFIXES, ".npy"):
            parser.error(f"INPUT {path}: expected an image ({', '.join(IMAGE_SUFFIXES)}) or a .npy array")
    from deepexplain.tensorflow import METHODS  # imports TensorFlow: only once the files are known to be there

    if args.method not in METHODS:
        parser.error(f"--method {args.method!r}: expected one of {', '.join(METHODS)}")
    try:
        sample_shape, predict, attribute = load_keras_model(args.model, args.method)
    except KerasPathUnavailable as error:
        print(f"deepexplain explain: {error}", file=sys.stderr)
        return 1
    written = explain_files(args.inputs, sample_shape, predict, attribute, target=args.target, out=args.out)
    print(f"wrote {len(written)} files to {args.out}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``deepexplain`` command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 1 when ``explain`` meets a model it cannot explain yet. Usage errors exit
        through argparse with status 2.
    """
    args = build_parser().parse_args(argv)
    return _demo(args) if args.command == "demo" else _explain(args)
