"""The command line: ``python -m deepexplain demo``, ``... explain``, ``... explain-dataset`` and ``... report`` (also
``deepexplain``).

Parsing ``--help`` imports neither TensorFlow nor matplotlib; each subcommand imports what it needs when it runs,
TensorFlow without its start-up log lines (:func:`import_tensorflow_quietly`; ``TF_CPP_MIN_LOG_LEVEL=0`` shows them).

``explain`` loads a saved model (:func:`deepexplain.load_model`; a Keras model ending in a softmax is explained on its
logits through :func:`deepexplain.strip_softmax`), compiles one :class:`deepexplain.Explainer` for all inputs, reads
the inputs (images through scikit-image, resized to the model's input, or ``.npy`` arrays) and writes
``OUT/<name>.png`` (a heatmap over the input) and ``OUT/<name>.npy`` (the raw attributions) per input. The file
handling is :func:`explain_files`, which takes the model as one function; :func:`load_keras_model` makes that
function from a saved model. ``report`` explains the same inputs with several methods and writes one interactive
HTML page (:func:`deepexplain.report`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from deepexplain._version import __version__
from deepexplain.files import IMAGE_SUFFIXES, UnreadableInputError, model_sample_shape, read_input

__all__ = [
    "BASELINES_METHODS",
    "BOUNDED_METHODS",
    "IMAGE_SUFFIXES",
    "build_parser",
    "explain_files",
    "import_tensorflow_quietly",
    "load_keras_model",
    "main",
    "model_sample_shape",
    "read_input",
]

# The methods that take `baselines` (M reference samples) and have no default for them.
BASELINES_METHODS = ("deepshap", "expected_gradients")
# methods whose rule needs the range of the inputs (images are read into [0, 1])
BOUNDED_METHODS = ("lrp.bounded", "lrp.epsilon_gamma_box", "deep_taylor.bounded")
# the methods that read one layer's feature maps and give one map per input (kept in step with METHODS by a test)
CAM_METHODS = ("gradcam", "gradcam++", "layercam", "scorecam", "guided_gradcam")
# what `report` runs without --methods: one of each family that works on any differentiable model, quickly
REPORT_METHODS = ("saliency", "grad*input", "intgrad", "smoothgrad", "deeplift")

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


def _dataset_target(value: str) -> str | int:
    return value if value.lower().endswith(".npy") else _target(value)


def _method_list(value: str) -> list[str]:
    methods = [name.strip() for name in value.split(",") if name.strip()]
    if not methods or len(set(methods)) < len(methods):
        raise argparse.ArgumentTypeError(f"expected distinct method names separated by commas, got {value!r}")
    return methods


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """The ``deepexplain`` argument parser with its ``demo``, ``explain``, ``explain-dataset`` and ``report``
    subcommands.

    Returns
    -------
    argparse.ArgumentParser
        ``parse_args`` sets ``command`` (``'demo'``, ``'explain'``, ...) and the subcommand's options.
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
            "method, write OUT/overview.png (eight methods), OUT/methods.png (methods x samples) and OUT/report.html "
            "(every method, interactive) and print a table: per method, the seconds it took "
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
        help="explain a saved Keras model (or SavedModel) on image or .npy inputs",
        description=(
            "Explain a saved Keras model's output for each INPUT: an image (read with scikit-image, scaled to [0, 1] "
            "and resized to the model's input; RGB and grey converted to the model's channels) or a .npy array "
            "shaped like one model input. The model is loaded with deepexplain.load_model (Keras 3 .keras, .h5 "
            "through Keras 3 or tf_keras, SavedModel folder) and explained in eager mode by one "
            "deepexplain.Explainer, compiled once for all inputs. A Keras model that ends in a softmax is "
            "explained on its logits (deepexplain.strip_softmax; said on stderr). Writes OUT/<name>.png (heatmap "
            "over the input, or bars for a feature vector) and OUT/<name>.npy (the attributions, shaped like the "
            "input; one (H, W) map for the CAM methods) per INPUT."
        ),
        epilog=(
            "Methods run with their defaults (see the README's table): intgrad 100 steps from a black (all-zeros) "
            "input, deeplift from all zeros, smoothgrad 50 samples, occlusion 1-pixel windows. deepshap and "
            "expected_gradients take their reference samples from --baselines; without it they use one all-zeros "
            "sample (deepshap then equals deeplift). The box rules (lrp.bounded, lrp.epsilon_gamma_box, "
            "deep_taylor.bounded) take the input range from --bounds (default 0 1). shapley_exact accepts inputs "
            "of at most 16 features; "
            "perturbation methods evaluate the model once or more per feature, which is slow on large images. "
            "The CAM methods (gradcam, gradcam++, layercam, scorecam, guided_gradcam) read the feature maps of "
            "--layer (default: the last layer with feature maps, found inside nested models too). "
            "Exit status: 0 on success, 1 when the model cannot be loaded or explained on these inputs, 2 on usage "
            "errors and input files that do not read or fit the model (one line naming the file). For TF1-style "
            "graphs use the Python API (DeepExplain(session=...))."
        ),
    )
    _add_model_and_inputs(explain)
    _add_method_options(explain)
    _add_target(explain)
    explain.add_argument("--out", default="deepexplain-out", metavar="DIR", help="output folder (default: %(default)s)")
    explain.set_defaults(command_parser=explain)
    dataset = commands.add_parser(
        "explain-dataset",
        help="explain every sample of a dataset (.npy or images), streaming to DIR, resumable, optionally on Ray",
        description=(
            "Explain every sample of DATA with one method (deepexplain.explain_dataset): a .npy array of samples "
            "(memory-mapped, read a shard at a time), a folder of images or image files (read as by `explain`). "
            "Writes DIR/attributions.npy, shaped (N, *input shape), shard by shard, and DIR/manifest.json; "
            "running the same command again resumes an interrupted job (finished shards are not redone) and refuses "
            "other arguments. --engine ray runs one explainer per Ray worker, on the cluster ray.init() finds or a "
            "local one (pip install 'deepexplain[ray]')."
        ),
        epilog=(
            "Methods run with the defaults `explain` lists. Exit status: 0 on success, 1 when the model or data "
            "cannot be explained, 2 on usage errors."
        ),
    )
    dataset.add_argument("model", metavar="MODEL", help="saved model: a .keras or .h5 file, or a SavedModel folder")
    dataset.add_argument(
        "data", nargs="+", metavar="DATA", help="a .npy array of samples, a folder of images, or image files"
    )
    _add_method_options(dataset)
    dataset.add_argument(
        "--target",
        type=_dataset_target,
        default="max",
        help="'max', a class index, or a .npy file of one class index per sample (default: %(default)s)",
    )
    dataset.add_argument("--out", required=True, metavar="DIR", help="folder of the results (made if missing)")
    dataset.add_argument("--engine", choices=("local", "ray"), default="local", help="(default: %(default)s)")
    dataset.add_argument("--num-workers", type=_positive, metavar="N", help="Ray workers (default: the cluster's CPUs)")
    dataset.add_argument("--batch-size", type=_positive, metavar="N", help="rows per model call (default: 16 MB)")
    dataset.add_argument("--no-progress", action="store_true", help="no progress bar")
    dataset.set_defaults(command_parser=dataset)
    _add_report_command(commands)
    return parser


def _add_report_command(commands) -> None:
    report = commands.add_parser(
        "report",
        help="explain inputs with several methods and write one interactive HTML page (offline, plotly inline)",
        description=(
            "Explain a saved Keras model's output for each INPUT (read as by `explain`) with each method of "
            "--methods and write OUT, one self-contained HTML page (deepexplain.report; plotly.js inline, no network "
            "needed): per input, a heatmap per method with the attribution under the cursor (bars for feature "
            "vectors), captioned with the explained and the predicted class; the mean |attribution| over the "
            "inputs. Open it in a browser. Needs plotly (pip install 'deepexplain[report]')."
        ),
        epilog=(
            "Methods run with the defaults `explain` lists; --baselines, --bounds and --layer go to the methods that "
            "take them. Exit status: 0 on success, 1 when the model cannot be loaded or explained on these inputs, "
            "2 on usage errors and input files that do not read or fit the model."
        ),
    )
    _add_model_and_inputs(report)
    report.add_argument(
        "--methods",
        type=_method_list,
        default=list(REPORT_METHODS),
        metavar="M1,M2,...",
        help=f"attribution methods, names of deepexplain.METHODS separated by commas (default: "
        f"{','.join(REPORT_METHODS)})",
    )
    _add_method_options(report, method=False)
    _add_target(report)
    report.add_argument("--class-names", metavar="TXT", help="a text file of class names, one per line, in order")
    report.add_argument(
        "--scale",
        choices=("sample", "method", "shared"),
        default="sample",
        help="colour scales: one per panel, per method or one for all (default: %(default)s)",
    )
    report.add_argument(
        "--overlay",
        action="store_true",
        help="open the page with each heatmap drawn over its input in grey (images; a switch on the page toggles it)",
    )
    report.add_argument(
        "--max-samples", type=_positive, default=16, metavar="N", help="inputs drawn (default: %(default)s)"
    )
    report.add_argument(
        "--out", default="deepexplain-report.html", metavar="HTML", help="the page to write (default: %(default)s)"
    )
    report.set_defaults(command_parser=report)


def _add_model_and_inputs(command: argparse.ArgumentParser) -> None:
    """MODEL and INPUT..., of ``explain`` and ``report``."""
    command.add_argument(
        "model", metavar="MODEL", help="saved model: a .keras or .h5 file (Keras 3 or tf_keras), or a SavedModel folder"
    )
    command.add_argument(
        "inputs", nargs="+", metavar="INPUT", help=f"image ({', '.join(IMAGE_SUFFIXES)}) or .npy array"
    )


def _add_target(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--target",
        type=_target,
        default="max",
        help="output unit to explain: 'max' (each input's largest output) or a class index (default: %(default)s)",
    )


def _add_method_options(command: argparse.ArgumentParser, method: bool = True) -> None:
    """--method (with ``method``) and the options of some methods, shared by ``explain``, ``explain-dataset`` and
    ``report``."""
    if method:
        _add_method_option(command)
    command.add_argument(
        "--baselines",
        metavar="NPY",
        help="reference samples for deepshap and expected_gradients: a .npy array shaped (M, *input_shape), or "
        "one sample shaped like a model input (default: one all-zeros sample)",
    )
    command.add_argument(
        "--bounds",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        help=f"smallest and largest input value for {', '.join(BOUNDED_METHODS)} (default: 0 1, the range images "
        "are read into)",
    )
    command.add_argument(
        "--layer",
        metavar="NAME",
        help=f"the layer whose feature maps {', '.join(CAM_METHODS)} read: a layer name, or a path through nested "
        "models such as 'resnet50/conv5_block3_out' (default: the last layer with feature maps)",
    )


def _add_method_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--method",
        default="deeplift",
        help="attribution method, any name of deepexplain.METHODS: saliency, 'grad*input', intgrad, elrp, deeplift, "
        "smoothgrad, expected_gradients, deepshap, occlusion, shapley_sampling, shapley_exact, feature_ablation, "
        "guided_backprop, deconvnet, lrp.epsilon, lrp.alpha_2_beta_1, lrp.epsilon_plus, deep_taylor, ... "
        "(default: %(default)s)",
    )


# ---------------------------------------------------------------------------------------------------------------------
# explain: the pieces that do not depend on how the model is loaded


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


def _read_inputs(inputs: Sequence[str | Path], sample_shape: Sequence[int | None]) -> tuple[list[Path], np.ndarray]:
    """The input files as paths and as one batch ``(N, *sample_shape)``; ValueError when they differ in shape."""
    paths = [Path(p) for p in inputs]
    arrays = [read_input(p, sample_shape) for p in paths]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise ValueError(
            f"the inputs differ in shape ({', '.join(map(str, sorted(shapes)))}): the model takes "
            f"{tuple(sample_shape)}, so explain inputs of different sizes in separate runs"
        )
    return paths, np.stack(arrays)


def explain_files(
    inputs: Sequence[str | Path],
    sample_shape: Sequence[int | None],
    attribute: Callable[[np.ndarray, str | int], np.ndarray],
    target: str | int = "max",
    out: str | Path = "deepexplain-out",
    captions: Callable[[np.ndarray, str | int], list] | None = None,
) -> list[Path]:
    """Read ``inputs``, explain them in one call and write ``out/<name>.png`` (heatmap) and ``out/<name>.npy``.

    Parameters
    ----------
    inputs : sequence of str or path-like
        Images or ``.npy`` arrays, read by :func:`read_input`.
    sample_shape : sequence of int or None
        The model's input shape without the batch dimension.
    attribute : callable
        ``attribute(xs, target) -> attributions`` shaped like ``xs`` ``(N, *sample_shape)``, e.g.
        ``lambda xs, target: explainer.run(xs, target=target)`` with a :class:`deepexplain.Explainer`.
    target : 'max' or int, default 'max'
        The unit to explain, passed to ``attribute``: each input's largest output, or that class for every input.
    out : str or path-like
        Output folder, created if missing.
    captions : callable, optional
        ``captions(xs, target) -> one title per input`` (what is explained, what the model predicts), drawn above
        each heatmap with a colour bar under it. Default: ``attribute.captions`` if it has one
        (:func:`load_keras_model`'s does), else the method-free file name.

    Returns
    -------
    list of pathlib.Path
        The files written: per input, its ``.png`` (a heatmap for an (H, W) or (H, W, C) input, bars for a feature
        vector, none for other ranks) then its ``.npy``.

    Raises
    ------
    ValueError
        As :func:`read_input`, or when the inputs differ in shape (a model with free dimensions, images of different
        sizes), before anything is written; and whatever ``attribute`` raises (deepexplain's errors are
        ``ValueError`` or ``TypeError``).
    """
    from deepexplain import plot

    paths, xs = _read_inputs(inputs, sample_shape)
    attributions = np.asarray(attribute(xs, target))
    captions = captions or getattr(attribute, "captions", None)
    names = _output_names(paths)
    titles = list(captions(xs, target)) if captions is not None else names
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, title, x, a in zip(names, titles, xs, attributions, strict=True):
        picture = folder / f"{name}.png"
        if a.ndim == 1:  # a feature vector (a .npy input of a tabular model)
            plot.bars(a, top=20, title=title, save=picture)
            written.append(picture)
        elif a.ndim in (2, 3):
            cam = a.ndim == x.ndim - 1 and a.min() >= 0  # a class activation map over the image
            plot.heatmap(a, image=x, save=picture, scale="positive" if cam else "symmetric", title=title,
                         colorbar=True)  # fmt: skip
            written.append(picture)
        np.save(folder / f"{name}.npy", a)
        written.append(folder / f"{name}.npy")
    return written


# ---------------------------------------------------------------------------------------------------------------------
# explain: the model


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_keras_model(
    path: str | Path,
    method: str,
    baselines: np.ndarray | None = None,
    log: Callable[[str], None] | None = _stderr,
    **method_kwargs,
):
    """A saved model as what :func:`explain_files` needs: its input shape and an attribution function.

    The model is loaded with :func:`deepexplain.load_model`. A Keras model that ends in a softmax is replaced by its
    logits (:func:`deepexplain.strip_softmax`), and ``log`` says so. One :class:`deepexplain.Explainer` is compiled
    for all the inputs of ``attribute``.

    Parameters
    ----------
    path : str or path-like
        A ``.keras`` or ``.h5`` file or a SavedModel folder.
    method : str
        The attribution method, a name in :data:`deepexplain.tensorflow.METHODS`.
    baselines : numpy.ndarray, optional
        Reference samples of ``deepshap`` and ``expected_gradients``, shaped ``(M, *input_shape)`` or like one input
        (then M = 1). Default: one all-zeros sample. Ignored by the other methods.
    log : callable, optional
        Receives one-line notes (default: printed to stderr); None is silent.
    **method_kwargs
        The method's other arguments.

    Returns
    -------
    sample_shape : tuple
        The model's input shape without the batch dimension.
    attribute : callable
        ``attribute(xs, target) -> attributions`` shaped like ``xs``; ``target`` is 'max' or a class index.

    Raises
    ------
    ValueError
        When the model does not load; as :func:`model_sample_shape`; for ``baselines`` that fit neither
        ``(M, *input_shape)`` nor one input, or none for a model with free input dimensions; deepexplain's
        ``InvalidInputError`` for the method's arguments.
    TypeError
        deepexplain's ``InvalidTypeError``.
    """
    model, shape = _loaded_model(path, log)
    return shape, _attributor(model, shape, method, baselines, method_kwargs)


def _attributor(model, shape: tuple, method: str, baselines: np.ndarray | None, method_kwargs: dict) -> _Attributor:
    """One compiled explainer of ``model`` as ``attribute(xs, target)``; ``baselines`` as :func:`load_keras_model`."""
    import deepexplain

    if method in BASELINES_METHODS:
        method_kwargs = {**method_kwargs, "baselines": _reference_samples(baselines, shape, method)}
    return _Attributor(deepexplain.Explainer(method, model, **method_kwargs), model, method)


class _Attributor:
    """``attribute(xs, target)`` of :func:`load_keras_model`, and ``captions(xs, target)``: per input, the method,
    the explained class and the predicted one (from the explained outputs, the logits of a softmax model)."""

    def __init__(self, explainer, model, method: str):
        self.explainer, self.model, self.method = explainer, model, method

    def __call__(self, xs: np.ndarray, target: str | int) -> np.ndarray:
        return self.explainer.run(xs, target=target)

    def outputs(self, xs: np.ndarray) -> np.ndarray:
        """The explained outputs of ``xs`` (the logits of a softmax model)."""
        return np.asarray(self.model(xs, training=False) if hasattr(self.model, "layers") else self.model(xs))

    def captions(self, xs: np.ndarray, target: str | int) -> list[str]:
        outputs = self.outputs(xs)
        if outputs.ndim != 2:
            return [f"{self.method}, target {target}"] * len(xs)
        predicted = outputs.argmax(axis=1)
        explained = predicted if target == "max" else np.full(len(xs), int(target))
        return [f"{self.method}: class {e} ({outputs[i, e]:.3g}), predicted {p}"
                for i, (e, p) in enumerate(zip(explained, predicted, strict=True))]  # fmt: skip


def _loaded_model(path, log):
    """The model saved at ``path`` (its logits if it ends in a softmax, which ``log`` is told) and its input shape."""
    import deepexplain
    from deepexplain.errors import InvalidInputError, InvalidTypeError

    try:
        model = deepexplain.load_model(path)
    except Exception as error:  # Keras and h5py raise many types for a file that is no model
        raise ValueError(f"MODEL {path}: cannot load it ({type(error).__name__}: {error})") from error
    shape = model_sample_shape(model)
    try:
        model = deepexplain.strip_softmax(model)
    except (InvalidInputError, InvalidTypeError):
        pass  # no trailing softmax (or not a Keras model): explain the output as it is
    else:
        if log:
            log("the model ends in a softmax: explaining its logits instead (deepexplain.strip_softmax)")
    return model, shape


def _reference_samples(baselines: np.ndarray | None, shape: tuple, method: str) -> np.ndarray:
    """``baselines`` as ``(M, *shape)`` float32: one all-zeros sample when None, a batch of 1 for one sample."""
    if baselines is None:
        if None in shape:
            raise ValueError(f"{method} needs baselines for a model whose input shape {shape} has free dimensions")
        return np.zeros((1, *shape), np.float32)
    array = np.asarray(baselines)

    def fits(dims) -> bool:
        return len(dims) == len(shape) and all(d is None or d == a for d, a in zip(shape, dims, strict=True))

    if fits(array.shape):
        array = array[None]
    elif array.ndim == 0 or len(array) == 0 or not fits(array.shape[1:]):
        raise ValueError(
            f"baselines of {method}: expected reference samples shaped (M, *{shape}) or one sample shaped {shape}, "
            f"got {array.shape}"
        )
    return array.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Commands


def _demo(args: argparse.Namespace) -> int:
    from deepexplain.demo import REPORT, format_table, run_demo

    try:
        reports = run_demo(args.out, samples=args.samples, cache=not args.no_cache)
    except ValueError as error:  # e.g. more samples than test digits
        args.command_parser.error(str(error))
    print(format_table(reports), flush=True)
    print(f"wrote {Path(args.out) / 'overview.png'} and {Path(args.out) / 'methods.png'}", file=sys.stderr)
    print(f"wrote {Path(args.out) / REPORT} (every method, interactive): open it in a browser", file=sys.stderr)
    return 0


def _method_arguments(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict:
    """``--method`` and the options that belong to some methods only, checked; the method's arguments from them."""
    return _methods_arguments(args, parser, [args.method], "--method")[args.method]


def _methods_arguments(args, parser, methods: Sequence[str], option: str) -> dict[str, dict]:
    """Each method's arguments from the options that belong to some methods only (``--baselines``, ``--bounds``,
    ``--layer``), checked: each must belong to one of ``methods`` at least, each method to ``METHODS``."""
    given = ", ".join(map(repr, methods))
    if args.baselines is not None:
        if not set(methods) & set(BASELINES_METHODS):
            parser.error(f"--baselines: only {' and '.join(BASELINES_METHODS)} take baselines, not {given}")
        if Path(args.baselines).suffix.lower() != ".npy" or not Path(args.baselines).is_file():
            parser.error(f"--baselines {args.baselines}: expected an existing .npy file")
    if args.bounds is not None and not set(methods) & set(BOUNDED_METHODS):
        parser.error(f"--bounds: only {', '.join(BOUNDED_METHODS)} take bounds, not {given}")
    from deepexplain.tensorflow import METHODS  # imports TensorFlow: only once the files are known to be there

    for method in methods:
        if method not in METHODS:
            parser.error(f"{option} {method!r}: expected one of {', '.join(METHODS)}")
    if args.layer is not None and not set(methods) & set(CAM_METHODS):
        parser.error(f"--layer: only {', '.join(CAM_METHODS)} take a layer, not {given}")
    arguments = {}
    for method in methods:
        kwargs = {"layer": args.layer} if args.layer is not None and method in CAM_METHODS else {}
        if method in BOUNDED_METHODS:
            kwargs["low"], kwargs["high"] = args.bounds or (0.0, 1.0)
        arguments[method] = kwargs
    return arguments


def _check_model_and_inputs(args: argparse.Namespace) -> None:
    """MODEL and each INPUT exist, the inputs are images or .npy files; else a usage error (exit status 2)."""
    parser = args.command_parser  # usage errors read better with the subcommand's own usage line
    if not Path(args.model).exists():
        parser.error(f"MODEL {args.model}: no such file or folder")
    for path in map(Path, args.inputs):
        if not path.is_file():
            parser.error(f"INPUT {path}: no such file")
        if path.suffix.lower() not in (*IMAGE_SUFFIXES, ".npy"):
            parser.error(f"INPUT {path}: expected an image ({', '.join(IMAGE_SUFFIXES)}) or a .npy array")


def _exit_status(command: str, work: Callable[[], int]) -> int:
    """``work()``, with what it cannot do as one line on stderr: status 2 for an input file that does not read or fit
    the model (a usage error, naming the file), 1 for a model that does not load or explain these inputs."""
    try:
        return work()
    except UnreadableInputError as error:
        _stderr(f"deepexplain {command}: INPUT {error}")
        return 2
    except (OSError, ValueError, TypeError) as error:
        _stderr(f"deepexplain {command}: {error}")
        return 1


def _baselines(args: argparse.Namespace) -> np.ndarray | None:
    return None if args.baselines is None else np.load(args.baselines)


def _explain(args: argparse.Namespace) -> int:
    _check_model_and_inputs(args)
    method_kwargs = _method_arguments(args, args.command_parser)

    def work() -> int:
        shape, attribute = load_keras_model(args.model, args.method, baselines=_baselines(args), **method_kwargs)
        _say_written(explain_files(args.inputs, shape, attribute, target=args.target, out=args.out), args.out)
        return 0

    return _exit_status("explain", work)


def _say_written(written: Sequence[Path], out: str) -> None:
    for path in written:
        if path.suffix == ".png":
            _stderr(f"wrote {path} (heatmap) and {path.with_suffix('.npy')} (attributions)")
    _stderr(f"wrote {len(written)} files to {out}")


def _report(args: argparse.Namespace) -> int:
    _check_model_and_inputs(args)
    parser = args.command_parser
    class_names = None
    if args.class_names is not None:
        if not Path(args.class_names).is_file():
            parser.error(f"--class-names {args.class_names}: no such file")
        lines = Path(args.class_names).read_text(encoding="utf-8").splitlines()
        class_names = [line.strip() for line in lines if line.strip()]
    method_kwargs = _methods_arguments(args, parser, args.methods, "--methods")
    import deepexplain

    def work() -> int:
        baselines = _baselines(args)
        model, shape = _loaded_model(args.model, _stderr)
        paths, xs = _read_inputs(args.inputs, shape)
        attributions = {}
        for method in args.methods:
            attribute = _attributor(model, shape, method, baselines, method_kwargs[method])
            attributions[method] = attribute(xs, args.target)
        outputs = attribute.outputs(xs)
        path = deepexplain.report(
            attributions, xs, args.out, predictions=outputs if outputs.ndim == 2 else None,
            targets=None if args.target == "max" else args.target, titles=_output_names(paths),
            class_names=class_names, scale=args.scale, max_samples=args.max_samples,
            overlay=args.overlay and xs.ndim == 4,
            title=f"deepexplain report: {Path(args.model).name}",
        )  # fmt: skip
        _stderr(f"wrote {path} ({len(xs)} inputs x {len(attributions)} methods): open it in a browser")
        return 0

    return _exit_status("report", work)


def _dataset_files(parser: argparse.ArgumentParser, data: Sequence[str]):
    """DATA as explain_dataset takes it: one .npy path, or the image files (a folder's, sorted by name)."""
    if len(data) == 1 and data[0].lower().endswith(".npy"):
        if not Path(data[0]).is_file():
            parser.error(f"DATA {data[0]}: no such file")
        return data[0]
    images = []
    for item in map(Path, data):
        if item.is_dir():
            images += sorted(p for p in item.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        elif not item.is_file():
            parser.error(f"DATA {item}: no such file or folder")
        elif item.suffix.lower() not in IMAGE_SUFFIXES:
            parser.error(f"DATA {item}: expected images ({', '.join(IMAGE_SUFFIXES)}) or one .npy array")
        else:
            images.append(item)
    if not images:
        parser.error(f"DATA {' '.join(data)}: no images found")
    return [str(p) for p in images]


def _explain_dataset(args: argparse.Namespace) -> int:
    parser = args.command_parser
    if not Path(args.model).exists():
        parser.error(f"MODEL {args.model}: no such file or folder")
    data = _dataset_files(parser, args.data)
    if isinstance(args.target, str) and args.target != "max" and not Path(args.target).is_file():
        parser.error(f"--target {args.target}: no such file")
    if Path(args.out).exists() and not Path(args.out).is_dir():
        parser.error(f"--out {args.out}: is a file, expected a folder")
    method_kwargs = _method_arguments(args, parser)
    import deepexplain

    try:
        model, shape = _loaded_model(args.model, _stderr)
        if args.method in BASELINES_METHODS:
            baselines = None if args.baselines is None else np.load(args.baselines)
            method_kwargs["baselines"] = _reference_samples(baselines, shape, args.method)
        target = np.load(args.target) if isinstance(args.target, str) and args.target != "max" else args.target
        result = deepexplain.explain_dataset(
            args.method, model, data, target=target, out=args.out, engine=args.engine, batch_size=args.batch_size,
            num_workers=args.num_workers, progress=not args.no_progress, **method_kwargs,
        )  # fmt: skip
    except (OSError, ValueError, TypeError) as error:
        _stderr(f"deepexplain explain-dataset: {error}")
        return 1
    resumed = result.shards_total - result.shards_run
    _stderr(
        f"explained {result.n} samples with {args.method} ({result.shards_run} shards run"
        + (f", {resumed} finished before" if resumed else "")
        + f", {result.throughput:.0f} samples/s): {Path(args.out) / 'attributions.npy'}"
    )
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
        The exit status: 0 on success, 1 when a command cannot load the model or explain these inputs with it (the
        reason on stderr). Usage errors exit through argparse with status 2, as does an input file that does not read
        or does not fit the model (one line on stderr naming it).
    """
    args = build_parser().parse_args(argv)
    commands = {"demo": _demo, "explain": _explain, "explain-dataset": _explain_dataset, "report": _report}
    import_tensorflow_quietly()
    return commands[args.command](args)


def import_tensorflow_quietly() -> None:
    """Import TensorFlow (and start its devices) without the start-up lines it writes to stderr.

    TensorFlow's C++ libraries log 4-10 lines when they load and first run (oneDNN, CUDA probes, CPU features, MLIR),
    some before ``TF_CPP_MIN_LOG_LEVEL`` is read, so the level alone does not quiet them: stderr's file descriptor
    points to a temporary file meanwhile, replayed if the import fails. Set ``TF_CPP_MIN_LOG_LEVEL`` to 0, 1 or 2
    to see them (then nothing is hidden).
    """
    import os
    import tempfile

    if os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3") != "3" or "tensorflow" in sys.modules:
        import tensorflow  # noqa: F401 (the user asked for TensorFlow's log lines)

        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as log:
        os.dup2(log.fileno(), 2)
        try:
            import tensorflow as tf

            tf.function(lambda x: x * 2)(tf.constant(1.0))  # devices and the graph optimiser start (and log) here
        except BaseException:
            os.dup2(saved, 2)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
