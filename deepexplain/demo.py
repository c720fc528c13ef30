"""The digits demo: a small CNN, trained in seconds on scikit-learn's 8×8 digits, explained with every method.

``python -m deepexplain demo --out DIR`` trains the network (or loads its cached weights), explains a handful of test
digits with every method of :data:`deepexplain.tensorflow.METHODS` (other libraries' aliases skipped), writes
``DIR/overview.png`` (eight methods) and ``DIR/methods.png`` (methods × samples, drawn by :func:`deepexplain.plot.grid`)
and ``DIR/report.html`` (:func:`deepexplain.report`: every method, interactive; the CRP concepts behind two
predictions, :func:`digit_concepts`; every method's deletion and insertion areas, :func:`faithfulness`), and prints,
per method, the seconds it took (compile and run) and, where the method promises completeness, the largest
``|sum(attributions) - (f(x) - E f(baseline))|`` over the samples. Progress and the seconds of each phase go to
stderr (explaining, about half the demo, is mostly compiling: 0.07-0.12 s a method in a fresh graph).

Everything runs offline: the digits ship with scikit-learn, and the trained weights are cached as ``.npz`` under
``$XDG_CACHE_HOME/deepexplain`` (default ``~/.cache/deepexplain``). The functions here are reused by
``examples/compare_methods.py`` and ``examples/explainer_loop.py``.

The model is a TF1-style graph (``tf.compat.v1``, an explicit ``tf.Graph`` and ``Session``) built from
``tf.Variable``, ``tf.nn.conv2d`` and ``tf.matmul``: conv 3×3 (8) → ReLU → max-pool 2 → conv 3×3 (16) → ReLU →
dense (10 logits). It is deliberately small, so that exact Shapley values over 16 superpixels (2**16 forward passes
per sample) take about a second per sample on two CPU cores.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import tensorflow as tf

from deepexplain.tensorflow import METHODS, DeepExplain
from deepexplain.tensorflow.methods import ALIASES
from deepexplain.tensorflow.methods import method_arguments as accepted_arguments

tf1 = tf.compat.v1

__all__ = [
    "COMPLETENESS_NOTE",
    "DigitsCNN",
    "DigitsData",
    "MethodReport",
    "cache_dir",
    "digit_concepts",
    "digits_cnn",
    "explain_all",
    "faithfulness",
    "format_table",
    "load_digits_data",
    "method_arguments",
    "pick_samples",
    "run_demo",
    "superpixels",
]

# Bump when the architecture or the training recipe changes: old cached weights are then ignored.
_CACHE_VERSION = 1
_CLASSES = 10
_SHAPES = {
    "conv1/kernel": (3, 3, 1, 8),
    "conv1/bias": (8,),
    "conv2/kernel": (3, 3, 8, 16),
    "conv2/bias": (16,),
    "dense/kernel": (4 * 4 * 16, _CLASSES),
    "dense/bias": (_CLASSES,),
}

Log = Callable[[str], None]

COMPLETENESS_NOTE = (
    "completeness: exact for deeplift and deepshap (to float precision); intgrad's error shrinks with more steps;\n"
    "for expected_gradients it holds only in expectation over the random baselines and points."
)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------------------
# Data


@dataclass(frozen=True)
class DigitsData:
    """scikit-learn's 8×8 digits as NHWC float32 images in [0, 1], split into training and test sets.

    Attributes
    ----------
    x_train, x_test : numpy.ndarray, shape (N, 8, 8, 1), float32
    y_train, y_test : numpy.ndarray, shape (N,), int64
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_digits_data(test_fraction: float = 0.2, seed: int = 0) -> DigitsData:
    """Load ``sklearn.datasets.load_digits`` (1,797 images, shipped with scikit-learn: no download).

    Parameters
    ----------
    test_fraction : float, default 0.2
        Share of the images held out for testing.
    seed : int, default 0
        Seed of the shuffle before the split.

    Returns
    -------
    DigitsData
        Pixel values (0..16 in the data set) divided by 16, shape ``(N, 8, 8, 1)``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[..., None]
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    n_test = int(round(test_fraction * len(labels)))
    test, train = order[:n_test], order[n_test:]
    return DigitsData(images[train], labels[train], images[test], labels[test])


def pick_samples(labels: np.ndarray, count: int) -> np.ndarray:
    """Indices of ``count`` samples cycling through the classes 0, 1, 2, ...: a varied handful for a figure.

    Parameters
    ----------
    labels : numpy.ndarray, shape (N,)
        Integer class labels.
    count : int
        How many indices to return.

    Returns
    -------
    numpy.ndarray of int, shape (count,)

    Raises
    ------
    ValueError
        If ``count`` is not in ``1..len(labels)``.
    """
    if not 1 <= count <= len(labels):
        raise ValueError(f"expected 1..{len(labels)} samples (as many as there are labels), got {count}")
    queues = {c: list(np.flatnonzero(labels == c)) for c in np.unique(labels)}
    chosen: list[int] = []
    while len(chosen) < count:
        for c in sorted(queues):
            if queues[c] and len(chosen) < count:
                chosen.append(int(queues[c].pop(0)))
    return np.asarray(chosen)


# ---------------------------------------------------------------------------------------------------------------------
# Model


@dataclass
class DigitsCNN:
    """The trained digits CNN in its own graph and session.

    Attributes
    ----------
    graph : tf.Graph
    session : tf.compat.v1.Session
    X : tf.Tensor
        Input placeholder, shape ``(None, 8, 8, 1)``.
    logits : tf.Tensor
        Shape ``(None, 10)``; explain these, not the softmax.
    weights : dict of str to numpy.ndarray
        The trained parameters, as cached.
    features : tf.Tensor
        The last feature maps (the second convolution's ReLU), shape ``(None, 4, 4, 16)``: the CAM methods' layer.
    """

    graph: tf.Graph
    session: tf1.Session
    X: tf.Tensor
    logits: tf.Tensor
    weights: dict
    features: tf.Tensor

    def predict(self, xs: np.ndarray) -> np.ndarray:
        """Logits of ``xs``, shape ``(N, 10)``."""
        return self.session.run(self.logits, {self.X: xs})

    def accuracy(self, xs: np.ndarray, labels: np.ndarray) -> float:
        """Share of ``xs`` whose largest logit is the label."""
        return float(np.mean(self.predict(xs).argmax(axis=1) == labels))

    def fit_patterns(self, xs: np.ndarray):
        """The PatternNet patterns ('relu') of every layer, fitted on ``xs`` (see :func:`deepexplain.fit_patterns`)."""
        with DeepExplain(session=self.session) as de:
            return de.fit_patterns(self.logits, self.X, xs, progress=False)

    def copy(self) -> DigitsCNN:
        """The same network (weights, tensor names) in a new graph and session; close it when done."""
        graph, session, X, logits, features, _ = _network(self.weights)
        return DigitsCNN(graph, session, X, logits, self.weights, features)

    def close(self) -> None:
        """Release the session."""
        self.session.close()


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/deepexplain``, or ``~/.cache/deepexplain`` when ``XDG_CACHE_HOME`` is not set."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "deepexplain"


def _forward(X: tf.Tensor, params: Mapping[str, tf.Variable]) -> tuple[tf.Tensor, tf.Tensor]:
    """``(logits, last feature maps)``."""
    h = tf.nn.relu(tf.nn.conv2d(X, params["conv1/kernel"], 1, "SAME") + params["conv1/bias"])
    h = tf.nn.max_pool2d(h, 2, 2, "VALID")
    # named: CRP's concepts are this layer's channels, captioned "conv2 #c" in the report
    features = tf.nn.relu(tf.nn.conv2d(h, params["conv2/kernel"], 1, "SAME") + params["conv2/bias"], name="conv2")
    flat = tf.reshape(features, [-1, _SHAPES["dense/kernel"][0]])
    return tf.matmul(flat, params["dense/kernel"]) + params["dense/bias"], features


def _network(weights: Mapping[str, np.ndarray]) -> tuple:
    """``(graph, session, X, logits, features, variables)``: the network in a new graph, its variables set to
    ``weights``."""
    graph = tf.Graph()
    with graph.as_default():
        X = tf1.placeholder(tf.float32, [None, 8, 8, 1], name="images")
        params = {name: tf.Variable(value, name=name.replace("/", "_")) for name, value in weights.items()}
        logits, features = _forward(X, params)
        session = tf1.Session(graph=graph)
        session.run(tf1.variables_initializer(list(params.values())))
    return graph, session, X, logits, features, params


def _initial_weights(seed: int) -> dict:
    # He initialisation for ReLU layers, zero biases.
    rng = np.random.default_rng(seed)
    weights = {}
    for name, shape in _SHAPES.items():
        if name.endswith("bias"):
            weights[name] = np.zeros(shape, np.float32)
        else:
            fan_in = int(np.prod(shape[:-1]))
            weights[name] = rng.normal(0, np.sqrt(2 / fan_in), shape).astype(np.float32)
    return weights


def _train(graph, session, X, logits, params, data: DigitsData, steps: int, seed: int) -> None:
    with graph.as_default():
        labels = tf1.placeholder(tf.int64, [None])
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
        optimizer = tf1.train.AdamOptimizer(3e-3)
        train_op = optimizer.minimize(loss, var_list=list(params.values()))
        session.run(tf1.variables_initializer(optimizer.variables()))
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        batch = rng.integers(len(data.y_train), size=64)
        session.run(train_op, {X: data.x_train[batch], labels: data.y_train[batch]})


def digits_cnn(
    data: DigitsData | None = None,
    cache: bool = True,
    seed: int = 0,
    steps: int = 600,
    log: Log | None = _stderr,
) -> DigitsCNN:
    """The digits CNN, trained with Adam (a few seconds on two cores) or loaded from the cache.

    Parameters
    ----------
    data : DigitsData, optional
        Training data; default :func:`load_digits_data`.
    cache : bool, default True
        Load the weights from ``cache_dir()/digits_cnn-v*-seed*.npz`` when present and write them there after
        training. False retrains and overwrites the cached file.
    seed : int, default 0
        Seed of the initial weights and of the minibatches.
    steps : int, default 600
        Training steps of 64 images.
    log : callable, optional
        Receives one-line progress messages (default: printed to stderr); None is silent.

    Returns
    -------
    DigitsCNN
        Its graph is separate from the default graph; close its session when done.
    """
    data = load_digits_data() if data is None else data
    path = cache_dir() / f"digits_cnn-v{_CACHE_VERSION}-seed{seed}-steps{steps}.npz"
    weights = None
    if cache and path.is_file():
        with np.load(path) as stored:
            weights = {name: stored[name] for name in _SHAPES}
        if log:
            log(f"digits CNN: weights loaded from {path}")
    graph, session, X, logits, features, params = _network(weights if weights is not None else _initial_weights(seed))
    if weights is None:
        start = time.perf_counter()
        _train(graph, session, X, logits, params, data, steps, seed)
        weights = dict(zip(params, session.run(list(params.values())), strict=True))
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a process reading the cache meanwhile sees the old file or the whole new one.
        partial = path.with_name(f"{path.stem}.{os.getpid()}.partial.npz")
        np.savez(partial, **weights)
        os.replace(partial, path)
        if log:
            log(f"digits CNN: trained in {time.perf_counter() - start:.1f} s, weights cached in {path}")
    model = DigitsCNN(graph, session, X, logits, weights, features)
    if log:
        log(f"digits CNN: test accuracy {model.accuracy(data.x_test, data.y_test):.1%}")
    return model


# ---------------------------------------------------------------------------------------------------------------------
# Explaining


def superpixels(size: int = 8, block: int = 2) -> np.ndarray:
    """Player ids of ``block``×``block`` superpixels of a ``size``×``size`` one-channel image, shape (size, size, 1).

    With the defaults, 16 players: few enough for exact Shapley values.
    """
    rows, cols = np.indices((size, size)) // block
    return (rows * (size // block) + cols)[..., None]


def method_arguments(baselines: np.ndarray, quick: bool = False, seed: int = 0, patterns=None, layer=None) -> dict:
    """Arguments for every method of ``METHODS`` on 8×8 one-channel images.

    Parameters
    ----------
    baselines : numpy.ndarray, shape (M, 8, 8, 1)
        Reference images for ``deepshap`` and ``expected_gradients``, e.g. a few training images.
    quick : bool, default False
        Fewer steps and samples, and 4×4 instead of 2×2 superpixels for exact Shapley values (for smoke tests).
    seed : int, default 0
        Seed of the sampling methods.
    patterns : deepexplain.Patterns, optional
        Fitted patterns (:meth:`DigitsCNN.fit_patterns`) for the PatternNet family, which is left out without them.
    layer : tf.Tensor, optional
        The feature maps of the CAM family (:attr:`DigitsCNN.features`), which is left out without them.

    Returns
    -------
    dict of str to dict
        Method name -> keyword arguments. Every method in ``METHODS`` but the aliases (and the PatternNet and CAM
        families without ``patterns`` and ``layer``) has an entry (``{}``: its defaults).
    """
    steps = 20 if quick else 100
    samples = 10 if quick else 50
    arguments = {
        "intgrad": {"steps": steps},
        "smoothgrad": {"samples": samples, "noise_level": 0.15, "seed": seed},
        "expected_gradients": {"baselines": baselines, "samples": 4 * samples, "seed": seed},
        "deepshap": {"baselines": baselines},
        # PAIR's path of 200 steps, halved as for intgrad
        "guided_ig": {"steps": steps},
        # PAIR's Felzenszwalb regions are made for 224×224 images (at least 150 pixels, dilated by 5): on 8×8 digits
        # every region covers nearly all of it and the map has two values, after 2 s of segmenting. The 16
        # superpixels of shapley_exact instead (one label map for every sample), each of its 4 pixels counted.
        "xrai": {"steps": steps, "segments": superpixels(block=2)[None], "min_pixel_diff": 1},
        "occlusion": {"window_shape": (2, 2, 1), "step": 1},
        # 8×8 images: a 4×4 grid of 2-pixel cells; 1,000 masks (the paper's 4,000 are for 224×224 images)
        "rise": {"masks": 200 if quick else 1000, "grid": 4, "seed": seed},
        "shapley_sampling": {"samples": 2 if quick else 10, "seed": seed},
        # 2×2 superpixels: 16 players, 2**16 model evaluations per sample; quick: 4×4, 4 players
        "shapley_exact": {"feature_mask": superpixels(block=4 if quick else 2)},
        # the digits are images in [0, 1]
        "lrp.bounded": {"low": 0.0, "high": 1.0},
        "lrp.epsilon_gamma_box": {"low": 0.0, "high": 1.0},
        "deep_taylor.bounded": {"low": 0.0, "high": 1.0},
        **{name: {"patterns": patterns} for name in METHODS if name.startswith("pattern.")},
        **{name: {"layer": layer} for name in METHODS if getattr(METHODS[name], "uses_layer", False)},
    }

    def left_out(name):
        return (
            (patterns is None and name.startswith("pattern."))
            or (layer is None and getattr(METHODS[name], "uses_layer", False))
            or getattr(METHODS[name], "reads_attention", False)  # a CNN has no attention
        )

    def with_seed(name):  # every sampling method seeded, so the pictures are the same on every run
        given = arguments.get(name, {})
        return {**given, "seed": seed} if "seed" in accepted_arguments(name) and "seed" not in given else given

    return {name: with_seed(name) for name in METHODS if name not in ALIASES and not left_out(name)}


@dataclass(frozen=True)
class MethodReport:
    """How one method did: its name, seconds (compile + run) and max |completeness error| (None: not promised)."""

    method: str
    seconds: float
    completeness: float | None


def explain_all(
    model: DigitsCNN,
    xs: np.ndarray,
    ys: np.ndarray,
    arguments: Mapping[str, Mapping],
    log: Log | None = None,
    methods_per_graph: int = 4,
) -> tuple[dict, list[MethodReport]]:
    """Explain ``xs`` with each method of ``arguments``, in order, timing each and checking completeness.

    The methods run in copies of the network (:meth:`DigitsCNN.copy`), ``methods_per_graph`` in each: a TF1 graph
    only grows, and an explainer takes longer to compile in a larger graph (on this network 0.07-0.12 s in the bare
    graph, 0.18-0.27 s once 50 methods have added their ops): every method in one graph takes 9.8 s, four per copy
    6.6 s (the attributions are the same).
    ``model``'s own graph is left as it was.

    Parameters
    ----------
    model : DigitsCNN
        The network; its logits are explained.
    xs : numpy.ndarray, shape (N, 8, 8, 1)
        The samples.
    ys : numpy.ndarray, shape (N, 10)
        One-hot weights of the logits to explain.
    arguments : mapping of str to mapping
        Method name -> keyword arguments, as :func:`method_arguments` returns; tensors of ``model``'s graph (the
        CAM family's ``layer``) are taken by name from each copy.
    log : callable, optional
        Receives one line per method once it is done.
    methods_per_graph : int, default 4
        Methods explained in one copy of the network.

    Returns
    -------
    attributions : dict of str to numpy.ndarray
        Method name -> attributions shaped like ``xs`` (the CAM family: maps ``(N, 8, 8)``).
    reports : list of MethodReport
        One per method, in order.
    """
    attributions, reports = {}, []
    names = list(arguments)
    for first in range(0, len(names), methods_per_graph):
        copy = model.copy()
        try:
            with DeepExplain(session=copy.session) as de:
                for name in names[first : first + methods_per_graph]:
                    kwargs = {key: copy.graph.get_tensor_by_name(value.name) if isinstance(value, tf.Tensor) else value
                              for key, value in arguments[name].items()}  # fmt: skip
                    start = time.perf_counter()
                    explainer = de.get_explainer(name, copy.logits, copy.X, progress=False, **kwargs)
                    result = explainer.run(xs, ys)
                    seconds = time.perf_counter() - start
                    error = None
                    if getattr(METHODS[name], "promises_completeness", False):
                        error = float(np.max(np.abs(explainer.completeness_error(xs, ys, attributions=result))))
                    attributions[name] = result
                    reports.append(MethodReport(name, seconds, error))
                    if log:
                        log(f"  {name}: {seconds:.2f} s")
        finally:
            copy.close()
    return attributions, reports


def format_table(reports: Sequence[MethodReport]) -> str:
    """The reports as a plain-text table: method, seconds, max |completeness error| ('-' where not promised).

    Seconds include compiling the explainer. The completeness error is ``sum(attributions) - (f(x) - E f(baseline))``
    with ``f`` the explained logit; :data:`COMPLETENESS_NOTE` follows the table when any method reports one.

    Parameters
    ----------
    reports : sequence of MethodReport

    Returns
    -------
    str
        A header line, a rule, one line per method and the note, without a trailing newline.
    """
    width = max([len("method")] + [len(r.method) for r in reports])
    lines = [f"{'method':<{width}}  {'seconds':>8}  max |completeness error|", "-" * (width + 36)]
    for r in reports:
        error = "-" if r.completeness is None else f"{r.completeness:.2e}"
        lines.append(f"{r.method:<{width}}  {r.seconds:>8.3f}  {error}")
    if any(r.completeness is not None for r in reports):
        lines += ["", COMPLETENESS_NOTE]
    return "\n".join(lines)


def digit_concepts(model: DigitsCNN, data: DigitsData, xs: np.ndarray, targets: np.ndarray, n_concepts: int = 4,
                   n_ref: int = 4) -> list:  # fmt: skip
    """The concepts behind each prediction (Concept Relevance Propagation, Achtibat et al. 2023): the channels of the
    second convolution (``'conv2'``) that carry most of the relevance, their conditional heatmaps and the training
    digits where each channel is most relevant (RelMax).

    :class:`deepexplain.crp.FeatureVisualization` collects reference sets for Keras models; for this TF1 graph the
    same statistic is computed here: each training digit explained for its label with ``lrp.epsilon_plus``, each
    channel scored by its share of the layer's absolute relevance (``ChannelConcept.reference_sampling``, 'sum').
    An 8×8 digit is one receptive field of a ``conv2`` unit, so the references are whole digits.

    Parameters
    ----------
    model : DigitsCNN
    data : DigitsData
        Its training digits are the reference candidates.
    xs : numpy.ndarray, shape (N, 8, 8, 1)
        The digits whose predictions are explained.
    targets : numpy.ndarray of int, shape (N,)
        The explained class of each.
    n_concepts : int, default 4
        Channels per prediction, largest |share| first.
    n_ref : int, default 4
        Reference digits per channel, most relevant first.

    Returns
    -------
    list of deepexplain.crp.Concepts
        One per sample, for :func:`deepexplain.report` (``concepts=``) or :func:`deepexplain.plot.concepts`.
    """
    from deepexplain.crp import ChannelConcept, top_concepts

    layer = model.features.op.name
    with DeepExplain(session=model.session) as de:
        attribution = de.cond_attribution(model.logits, model.X, progress=False)
        recorded = attribution(data.x_train, [{"y": [int(y)]} for y in data.y_train], record_layer=[layer],
                               exclude_parallel=False, pair=True)  # fmt: skip
        scores, _ = ChannelConcept.reference_sampling(recorded.relevances[layer], "sum", abs_norm=True)
        best = np.argsort(-scores, axis=0, kind="stable")[:n_ref]  # (n_ref, channels): RelMax, best first
        found = []
        for x, target in zip(xs, targets, strict=True):
            concepts = top_concepts(attribution, x, layer, target=int(target), n_concepts=n_concepts)
            references = {c: list(data.x_train[best[:, c]]) for c in concepts.ids}
            found.append(replace(concepts, references=references))
    return found


def faithfulness(model: DigitsCNN, xs: np.ndarray, ys: np.ndarray, attributions: Mapping[str, np.ndarray],
                 curves: Sequence[str] = (), steps: int = 16) -> dict:  # fmt: skip
    """Deletion and insertion (Petsiuk et al. 2018) of each method's attributions: the explained logit as the most
    relevant pixels are set to 0 (the digits' background), or revealed from an empty image, ``64 / steps`` pixels at
    a time (:func:`deepexplain.metrics.deletion`, :func:`~deepexplain.metrics.insertion`).

    Parameters
    ----------
    model : DigitsCNN
    xs : numpy.ndarray, shape (N, 8, 8, 1)
    ys : numpy.ndarray, shape (N, 10)
        One-hot weights of the explained logits, as the attributions were computed for.
    attributions : mapping of str to numpy.ndarray
        Method name -> attributions of ``xs`` (CAMs ``(N, 8, 8)`` too).
    curves : sequence of str
        The methods whose whole curves are kept (drawn by :func:`deepexplain.report`); the others get their
        per-sample areas under the curves only.
    steps : int, default 16
        Steps of each curve.

    Returns
    -------
    dict
        Method -> ``{'deletion': Curve, 'insertion': Curve}`` for ``curves``, ``{'deletion (AUC)': (N,),
        'insertion (AUC)': (N,)}`` for the others: the same columns of the report's metrics table (lower deletion,
        higher insertion is better).
    """
    from deepexplain import metrics

    results = {}
    with DeepExplain(session=model.session) as de:
        # the model's forward pass compiled once for every method and both metrics
        scorer = metrics.Scorer(de.get_explainer("zero", model.logits, model.X, progress=False))
        for name, values in attributions.items():
            measured = {
                metric: function(scorer, xs, values, ys=ys, steps=steps, progress=False)
                for metric, function in (("deletion", metrics.deletion), ("insertion", metrics.insertion))
            }
            results[name] = measured if name in curves else {f"{k} (AUC)": v.auc for k, v in measured.items()}
    return results


class _Clock:
    """Seconds per phase of the demo, logged as each ends and summed up at the end."""

    def __init__(self, log: Log | None):
        self.log, self.phases = log, {}
        self.start = self.last = time.perf_counter()

    def lap(self, phase: str, what: str = "") -> None:
        now = time.perf_counter()
        self.phases[phase] = now - self.last
        self.last = now
        if self.log:
            self.log(f"  {phase}{f' ({what})' if what else ''}: {self.phases[phase]:.1f} s")

    def summary(self) -> str:
        parts = ", ".join(f"{phase} {seconds:.1f}" for phase, seconds in self.phases.items())
        return f"demo: {time.perf_counter() - self.start:.1f} s ({parts})"


def run_demo(
    out: str | os.PathLike,
    samples: int = 6,
    cache: bool = True,
    quick: bool = False,
    seed: int = 0,
    log: Log | None = _stderr,
) -> list[MethodReport]:
    """Train (or load) the digits CNN, explain ``samples`` test digits with every method, save ``out/overview.png``,
    ``out/methods.png`` and ``out/report.html``.

    The report holds every method's heatmaps (hover a pixel for its value; it is marked in the sample's other
    panels), the concepts behind the first :data:`CONCEPT_SAMPLES` predictions (:func:`digit_concepts`) and a
    table per method of its seconds, completeness error, and deletion and insertion areas (:func:`faithfulness`;
    the curves of the overview's methods and of ``random``, the baseline a method should beat). ``log`` receives
    the seconds of each phase as it ends and their summary.

    Parameters
    ----------
    out : str or path-like
        Output folder, created if missing.
    samples : int, default 6
        How many test digits to explain (one per class, cycling through the classes).
    cache : bool, default True
        Use the cached trained weights (see :func:`digits_cnn`).
    quick : bool, default False
        Fewer integration steps and noise samples (see :func:`method_arguments`).
    seed : int, default 0
        Seed of the training and of the sampling methods.
    log : callable, optional
        Receives progress messages (default: stderr).

    Returns
    -------
    list of MethodReport
        One per method, in the order of ``METHODS``; print them with :func:`format_table`.
    """
    from deepexplain import plot
    from deepexplain.reporting import report

    clock = _Clock(log)
    data = load_digits_data(seed=seed)
    model = digits_cnn(data, cache=cache, seed=seed, log=log)
    try:
        chosen = pick_samples(data.y_test, samples)
        xs = data.x_test[chosen]
        logits = model.predict(xs)
        predicted = logits.argmax(axis=1)
        ys = np.eye(_CLASSES, dtype=np.float32)[predicted]
        baselines = data.x_train[np.random.default_rng(seed).choice(len(data.x_train), 32, replace=False)]
        patterns = model.fit_patterns(data.x_train)
        arguments = method_arguments(baselines, quick, seed, patterns, layer=model.features)
        clock.lap("model", "weights, patterns")
        if log:
            log(f"explaining {len(xs)} test digits with {len(arguments)} methods")
        attributions, reports = explain_all(model, xs, ys, arguments)
        clock.lap("explain", f"{len(attributions)} methods")
        concepts = digit_concepts(model, data, xs[:CONCEPT_SAMPLES], predicted[:CONCEPT_SAMPLES])
        clock.lap("concepts", f"CRP, {len(concepts)} predictions")
        curves = [*OVERVIEW_METHODS, "random"]
        measured = faithfulness(model, xs, ys, attributions, curves=[m for m in curves if m in attributions])
        clock.lap("metrics", f"deletion and insertion, {len(measured)} methods")
    finally:
        model.close()
    Path(out).mkdir(parents=True, exist_ok=True)
    # column titles: "label → predicted"
    titles = [f"{label} → {guess}" for label, guess in zip(data.y_test[chosen], predicted, strict=True)]
    # 8×8 digits are too small for edge overlays: the input row above each column gives the context instead.
    if log:
        log(f"drawing {Path(out) / OVERVIEW} ({len(OVERVIEW_METHODS)} methods, the README's picture)")
    chosen_methods = {label: attributions[name] for name, label in OVERVIEW_METHODS.items() if name in attributions}
    plot.grid(chosen_methods, xs, titles=titles, edges=False, alpha=1.0, colorbar=True, cell=1.0,
              save=Path(out) / OVERVIEW)  # fmt: skip
    clock.lap(OVERVIEW)
    if log:
        log(f"drawing {Path(out) / 'methods.png'} (all {len(attributions)} methods)")
    plot.grid(attributions, xs, titles=titles, edges=False, alpha=1.0, colorbar=True, cell=1.0,
              save=Path(out) / "methods.png")  # fmt: skip
    clock.lap("methods.png")
    if log:
        log(f"writing {Path(out) / REPORT} (all {len(attributions)} methods, concepts, metrics; interactive)")
    table = {r.method: measured[r.method] | {"seconds": r.seconds} | ({} if r.completeness is None else
                                                                      {"max |completeness error|": r.completeness})
             for r in reports}  # fmt: skip
    report(attributions, xs, Path(out) / REPORT, labels=data.y_test[chosen], predictions=logits, concepts=concepts,
           metrics=table, max_samples=None,
           title="deepexplain demo: a digits CNN explained by every method")  # fmt: skip
    clock.lap(REPORT)
    if log:
        log(clock.summary())
    return reports


REPORT = "report.html"
CONCEPT_SAMPLES = 2
"""How many of the demo's digits get their concepts in the report (the first ones)."""


OVERVIEW = "overview.png"
OVERVIEW_METHODS = {"saliency": "saliency", "smoothgrad": "SmoothGrad", "intgrad": "intgrad", "deeplift": "DeepLIFT",
                    "deepshap": "DeepSHAP", "lrp.epsilon_plus": "LRP ε+", "pattern.attribution": "PatternAttr.",
                    "occlusion": "occlusion"}  # fmt: skip
"""The methods of the README's picture (name -> row label): one or two of each family (gradients, reference-based,
relevance, learned signal, perturbation)."""
