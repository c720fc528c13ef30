"""The bench-cnn benchmark: each attribution method's time as a ratio to the least model evaluation it needs.

The workloads, the model and the bound are defined in ``BENCHMARK.md`` (see ``benchmarks/README.md``). For each
workload this script

1. compiles the explainer once with ``DeepExplain.get_explainer`` and times ``explainer.run(xs, ys)``
   (median of ``--repeats`` runs after one warm-up run);
2. times the bound the same way: one plain ``session.run`` of as many rows as the method needs at the least, on the
   same graph and session -- the forward pass ``T``, or forward+backward ``tf.gradients(sum(T * Y), X)``. The run and
   the bound are timed in turns, so that load from other processes on a shared machine slows both alike;
3. times the first call -- ``get_explainer`` plus the first ``run`` -- in a fresh graph and session, so that nothing
   compiled before is reused.

Examples
--------
::

    python benchmarks/bench_cnn.py                      # every workload, 5 repeats
    python benchmarks/bench_cnn.py --quick              # smoke run, 3 repeats
    python benchmarks/bench_cnn.py --only saliency_b32,intgrad50_b1 --json results.json
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

from deepexplain.tensorflow import DeepExplain  # noqa: E402

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
WEIGHT_SEED = 0
DATA_SEED = 1
BOUND_SEED = 2
TARGET_RATIO = 1.25
TARGET_FIRST_CALL_S = 0.3


@dataclass(frozen=True)
class Workload:
    """One row of the benchmark table.

    Attributes
    ----------
    name : str
        Workload name, as in ``BENCHMARK.md``.
    method : str
        DeepExplain method name.
    batch : int
        Number of samples given to ``run``.
    kwargs : dict
        The method's arguments, passed to ``get_explainer``.
    bound_rows : int
        Rows of the bound's single ``session.run``.
    bound_kind : str
        ``'forward'`` (``T``) or ``'backward'`` (forward+backward, ``tf.gradients(sum(T * Y), X)``).
    target_ratio : float
        The ratio this workload should stay under (``BENCHMARK.md``: 1.25; relevance rules that re-apply layers
        with modified weights, issue 4: 2).
    """

    name: str
    method: str
    batch: int
    kwargs: dict = field(default_factory=dict)
    bound_rows: int = 0
    bound_kind: str = "backward"
    target_ratio: float = TARGET_RATIO


WORKLOADS = [
    Workload("saliency_b32", "saliency", 32, {}, 32, "backward"),
    Workload("gradxinput_b32", "grad*input", 32, {}, 32, "backward"),
    Workload("elrp_b32", "elrp", 32, {}, 32, "backward"),
    Workload("deeplift_b32", "deeplift", 32, {}, 33, "backward"),
    Workload("intgrad50_b1", "intgrad", 1, {"steps": 50}, 50, "backward"),
    Workload("intgrad50_b32", "intgrad", 32, {"steps": 50}, 1600, "backward"),
    Workload("occlusion4x4s4_b1", "occlusion", 1, {"window_shape": (4, 4, 1), "step": 4}, 50, "forward"),
    Workload("occlusion4x4s4_b32", "occlusion", 32, {"window_shape": (4, 4, 1), "step": 4}, 1600, "forward"),
    Workload("occlusion3x3s1_b4", "occlusion", 4, {"window_shape": (3, 3, 1), "step": 1}, 2708, "forward"),
    Workload("shapley2_b4", "shapley_sampling", 4, {"samples": 2, "sampling_dims": [1, 2]}, 6280, "forward"),
    # DeepSHAP with 8 reference samples: each sample explained against each reference, references in the batch
    Workload(
        "deepshap8_b32",
        "deepshap",
        32,
        {"baselines": np.random.default_rng(7).random((8, 28, 28, 1), dtype=np.float32)},
        32 * 8 + 8,
        "backward",
    ),  # fmt: skip
]
# The relevance family (issue 4): each method at batch 32 against the forward+backward bound, target ratio 2.
TARGET_RATIO_RELEVANCE = 2.0
RELEVANCE_METHODS = {
    "guided_backprop": {},
    "deconvnet": {},
    "lrp.z": {},
    "lrp.epsilon": {},
    "lrp.w_square": {},
    "lrp.flat": {},
    "lrp.alpha_2_beta_1": {},
    "lrp.alpha_1_beta_0": {},
    "lrp.z_plus": {},
    "lrp.z_plus_fast": {},
    "lrp.gamma": {},
    "lrp.bounded": {"low": 0.0, "high": 1.0},
    "lrp.sequential_preset_a": {},
    "lrp.sequential_preset_b_flat": {},
    "lrp.epsilon_plus": {},
    "lrp.epsilon_gamma_box": {"low": 0.0, "high": 1.0},
    "deep_taylor": {},
    "deep_taylor.bounded": {"low": 0.0, "high": 1.0},
}
WORKLOADS += [
    Workload(f"{name}_b32", name, 32, kwargs, 32, "backward", TARGET_RATIO_RELEVANCE)
    for name, kwargs in RELEVANCE_METHODS.items()
]


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------


def model_weights(seed=WEIGHT_SEED):
    """The bench-cnn weights: He-normal kernels and N(0, 0.01) biases from a fixed-seed numpy generator.

    Parameters
    ----------
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    dict of str to ndarray
        Kernels ``conv1``, ``conv2``, ``dense1``, ``dense2`` and their biases ``*_b`` (float32).
    """
    rng = np.random.default_rng(seed)
    shapes = {
        "conv1": (3, 3, 1, 32),
        "conv2": (3, 3, 32, 64),
        "dense1": (7 * 7 * 64, 128),
        "dense2": (128, NUM_CLASSES),
    }
    weights = {}
    for name, shape in shapes.items():
        fan_in = int(np.prod(shape[:-1]))
        weights[name] = rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape).astype(np.float32)
        weights[name + "_b"] = rng.normal(0.0, 0.01, size=shape[-1]).astype(np.float32)
    return weights


def build_model(weights):
    """Build bench-cnn in a new graph and open a 2-thread session with its variables initialised.

    Parameters
    ----------
    weights : dict of str to ndarray
        As returned by :func:`model_weights`.

    Returns
    -------
    sess : tf.Session
        Session on the new graph (``intra_op_parallelism_threads=2, inter_op_parallelism_threads=2``).
    X : tf.Tensor
        Input placeholder, shape ``(None, 28, 28, 1)``.
    T : tf.Tensor
        Logits, shape ``(None, 10)``.
    """
    graph = tf.Graph()
    with graph.as_default():
        variables = {name: tf.Variable(value, name=name) for name, value in weights.items()}
        X = tf.placeholder(tf.float32, shape=(None, *INPUT_SHAPE), name="X")
        h = tf.nn.relu(tf.nn.conv2d(X, variables["conv1"], strides=1, padding="SAME") + variables["conv1_b"])
        h = tf.nn.max_pool2d(h, ksize=2, strides=2, padding="VALID")
        h = tf.nn.relu(tf.nn.conv2d(h, variables["conv2"], strides=1, padding="SAME") + variables["conv2_b"])
        h = tf.nn.max_pool2d(h, ksize=2, strides=2, padding="VALID")
        h = tf.reshape(h, (-1, 7 * 7 * 64))
        h = tf.nn.relu(tf.matmul(h, variables["dense1"]) + variables["dense1_b"])
        T = tf.add(tf.matmul(h, variables["dense2"]), variables["dense2_b"], name="logits")
        init = tf.global_variables_initializer()
    config = tf.ConfigProto(intra_op_parallelism_threads=2, inter_op_parallelism_threads=2)
    sess = tf.Session(graph=graph, config=config)
    sess.run(init)
    return sess, X, T


def make_data(rows, seed):
    """Inputs uniform in [0, 1) and one-hot targets.

    Parameters
    ----------
    rows : int
        Number of samples.
    seed : int
        Seed of ``numpy.random.default_rng``.

    Returns
    -------
    xs : ndarray
        ``(rows, 28, 28, 1)`` float32.
    ys : ndarray
        ``(rows, 10)`` float32 one-hot.
    """
    rng = np.random.default_rng(seed)
    xs = rng.random((rows, *INPUT_SHAPE), dtype=np.float32)
    ys = np.eye(NUM_CLASSES, dtype=np.float32)[rng.integers(0, NUM_CLASSES, size=rows)]
    return xs, ys


# --------------------------------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------------------------------


def interleaved_medians(fns, repeats):
    """Median wall time of each function, timed in turns so that all of them see the same machine load.

    Each function is called once untimed (warm-up); then, ``repeats`` times, each function is called once in turn.
    On a shared machine, load from other processes then slows all of them alike and their ratio holds.

    Parameters
    ----------
    fns : list of callable
        Called without arguments.
    repeats : int
        Number of timed calls of each function.

    Returns
    -------
    list of float
        Median seconds of each function, in the order of ``fns``.
    """
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, samples in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
    return [statistics.median(samples) for samples in times]


class BenchBase:
    """What :func:`run_benchmark` needs of a benchmark: its timings, its targets and what it adds to the report.

    Subclasses define ``steady(workload)``, the median seconds of the run and of each bound (see ``bound_variants``)
    timed in turns, and ``first_call(workload)``, the seconds of the first call with nothing compiled before reused;
    they may change the class attributes and the hooks :meth:`notes` and :meth:`report`.

    Parameters
    ----------
    weights : dict of str to ndarray
        The model's weights.
    repeats : int
        Timed calls per measurement.

    Attributes
    ----------
    first_call_target : float
        Seconds above which the table marks a first call with ``!``.
    bound_variants : tuple of str
        Suffixes of the bounds that :meth:`steady` times after the run, in its order: ``''`` gives the result keys
        ``bound_s`` and ``ratio``, ``'_tensor'`` gives ``bound_tensor_s`` and ``ratio_tensor``.
    bound_note : str
        Appended to the note under the table.
    """

    first_call_target = TARGET_FIRST_CALL_S
    bound_variants = ("",)
    bound_note = ""

    def __init__(self, weights, repeats):
        self.weights = weights
        self.repeats = repeats

    def notes(self, results):
        """Lines printed after the note under the table.

        Parameters
        ----------
        results : list of dict
            As returned by :func:`run_workload`.

        Returns
        -------
        list of str
        """
        return []

    def report(self):
        """What the JSON file holds besides the results.

        Returns
        -------
        dict
            ``environment`` (see :func:`environment`) and ``repeats``.
        """
        return {"environment": environment(), "repeats": self.repeats}


class Bench(BenchBase):
    """The main graph and session, with the bound tensors created once, shared by the steady-state timings.

    Built with the parameters of :class:`BenchBase`.
    """

    def __init__(self, weights, repeats):
        super().__init__(weights, repeats)
        self.sess, self.X, self.T = build_model(weights)
        with self.sess.graph.as_default():
            self.Y = tf.placeholder(tf.float32, shape=(None, NUM_CLASSES), name="bound_Y")
            self.gradient = tf.gradients(tf.reduce_sum(self.T * self.Y), self.X)[0]

    def bound_fn(self, rows, kind):
        """A function doing the bound: one plain ``session.run`` of ``rows`` rows.

        Parameters
        ----------
        rows : int
            Batch size of the run.
        kind : {'forward', 'backward'}
            ``T`` alone, or the input gradient of ``sum(T * Y)``.

        Returns
        -------
        callable
        """
        xs, ys = make_data(rows, BOUND_SEED)
        if kind == "forward":
            fetch, feed = self.T, {self.X: xs}
        else:
            fetch, feed = self.gradient, {self.X: xs, self.Y: ys}
        return lambda: self.sess.run(fetch, feed)

    def steady(self, workload):
        """Median times of ``explainer.run(xs, ys)`` (compiled once on the main graph) and of the bound.

        The two are timed in turns (:func:`interleaved_medians`).

        Parameters
        ----------
        workload : Workload

        Returns
        -------
        run_s, bound_s : float
            Median seconds.
        """
        xs, ys = make_data(workload.batch, DATA_SEED)
        with DeepExplain(session=self.sess) as de:
            explainer = de.get_explainer(workload.method, self.T, self.X, **workload.kwargs)
        bound = self.bound_fn(workload.bound_rows, workload.bound_kind)
        run_s, bound_s = interleaved_medians([lambda: explainer.run(xs, ys, progress=False), bound], self.repeats)
        return run_s, bound_s

    def first_call(self, workload):
        """Time of ``get_explainer`` plus the first ``run``, in a fresh graph and session.

        Parameters
        ----------
        workload : Workload

        Returns
        -------
        float
            Seconds.
        """
        xs, ys = make_data(workload.batch, DATA_SEED)
        sess, X, T = build_model(self.weights)
        try:
            start = time.perf_counter()
            with DeepExplain(session=sess) as de:
                explainer = de.get_explainer(workload.method, T, X, **workload.kwargs)
                explainer.run(xs, ys, progress=False)
            return time.perf_counter() - start
        finally:
            sess.close()


def run_workload(bench, workload):
    """Measure one workload; an exception is reported in the result instead of raised.

    Parameters
    ----------
    bench : BenchBase
    workload : Workload

    Returns
    -------
    dict
        ``name``, ``median_s``, ``bound_s``, ``ratio``, ``first_call_s``, ``warnings`` and ``error`` (None or text);
        for each further suffix ``v`` of ``bench.bound_variants`` also ``bound{v}_s`` and ``ratio{v}``.
    """
    variants = bench.bound_variants
    result = {
        "name": workload.name,
        "method": workload.method,
        "batch": workload.batch,
        "bound_rows": workload.bound_rows,
        "bound_kind": workload.bound_kind,
        "target_ratio": workload.target_ratio,
        "median_s": None,
        **{f"bound{v}_s": None for v in variants},
        **{f"ratio{v}": None for v in variants},
        "first_call_s": None,
        "warnings": [],
        "error": None,
    }
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result["median_s"], *bounds = bench.steady(workload)
            result.update({f"bound{v}_s": bound for v, bound in zip(variants, bounds, strict=True)})
            result.update({f"ratio{v}": result["median_s"] / result[f"bound{v}_s"] for v in variants})
            result["first_call_s"] = bench.first_call(workload)
        result["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    except Exception as error:  # one failing workload must not stop the others
        result["error"] = f"{type(error).__name__}: {error}"
        traceback.print_exc(file=sys.stderr)
    return result


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------


def markdown_table(results, first_call_target=TARGET_FIRST_CALL_S):
    """The results as a markdown table: workload, median s, bound s, ratio, first call s.

    Parameters
    ----------
    results : list of dict
        As returned by :func:`run_workload`.
    first_call_target : float
        Seconds above which a first call is marked with ``!`` (a ratio: above its workload's ``target_ratio``).

    Returns
    -------
    str
    """
    lines = ["| workload | median s | bound s | ratio | first call s |", "|---|---:|---:|---:|---:|"]
    for r in results:
        if r["error"] is not None:
            lines.append(f"| {r['name']} | unavailable: {r['error'].splitlines()[0][:100]} | | | |")
            continue
        ratio = f"{r['ratio']:.2f}" + (" !" if r["ratio"] > r["target_ratio"] else "")
        first = f"{r['first_call_s']:.3f}" + (" !" if r["first_call_s"] > first_call_target else "")
        lines.append(f"| {r['name']} | {r['median_s']:.4f} | {r['bound_s']:.4f} | {ratio} | {first} |")
    return "\n".join(lines)


def environment():
    """Versions and machine facts recorded with the results."""
    import deepexplain

    return {
        "deepexplain": getattr(deepexplain, "__version__", "?"),
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": load_average(),
    }


def load_average():
    """The 1, 5 and 15 minute load averages (None where the platform has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def parse_args(argv=None, description=__doc__):
    """Command-line options (see ``--help``); ``--help`` shows the first line of ``description``."""
    parser = argparse.ArgumentParser(description=description.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per measurement (default 5)")
    parser.add_argument("--only", default=None, help="comma-separated workload names to run (default: all)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 repeats unless --repeats is given")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    if args.repeats is None:
        args.repeats = 3 if args.quick else 5
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    names = [w.name for w in WORKLOADS]
    if args.only:
        wanted = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in wanted if n not in names]
        if unknown:
            parser.error(f"unknown workload(s) {unknown}; choose from {names}")
        args.workloads = [w for w in WORKLOADS if w.name in wanted]
    else:
        args.workloads = list(WORKLOADS)
    return args


def run_benchmark(argv, bench_class, description):
    """Run the selected workloads, print the markdown table, optionally write JSON.

    Parameters
    ----------
    argv : list of str or None
        Command-line arguments (None: ``sys.argv[1:]``).
    bench_class : type
        A :class:`BenchBase` subclass, built with the model's weights and the number of repeats.
    description : str
        The calling script's docstring, for ``--help``.

    Returns
    -------
    int
        The exit status.
    """
    args = parse_args(argv, description)
    load_before = load_average()
    bench = bench_class(model_weights(), args.repeats)
    results = []
    for workload in args.workloads:
        print(f"running {workload.name} ...", file=sys.stderr, flush=True)
        results.append(run_workload(bench, workload))
    print(markdown_table(results, bench.first_call_target))
    print(
        f"\n(repeats={args.repeats}; load average before/after: {load_before} / {load_average()}; "
        f"'!' marks a ratio above its target ({TARGET_RATIO}; relevance family {TARGET_RATIO_RELEVANCE}) or a first "
        f"call above {bench.first_call_target} s{bench.bound_note})"
    )
    for line in bench.notes(results):
        print(line)
    notes = [(r["name"], w) for r in results for w in r["warnings"]]
    if notes:
        print("\nWarnings raised by deepexplain:")
        for name, message in notes:
            print(f"- {name}: {message}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({**bench.report(), "results": results}, handle, indent=2)
    return 0


def main(argv=None):
    """Run bench-cnn on the TF1 graph (see :func:`run_benchmark`); returns the exit status."""
    return run_benchmark(argv, Bench, __doc__)


if __name__ == "__main__":
    sys.exit(main())
