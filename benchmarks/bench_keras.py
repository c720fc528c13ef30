"""The bench-cnn benchmark through ``deepexplain.Explainer`` on a Keras 3 model in eager mode.

The workloads are those of ``BENCHMARK.md`` and ``bench_cnn.py`` (imported from it); the model is bench-cnn rebuilt
as a Keras 3 ``Sequential`` with the same weights. Eager execution stays on. For each workload this script

1. builds ``deepexplain.Explainer(method, model, **kwargs)`` once and times ``explainer.run(xs, ys=ys)``
   (median of ``--repeats`` runs after one warm-up run);
2. times the bound in turns with it: one call of a ``tf.function`` of the bare model on as many rows as the method
   needs at the least -- the forward pass ``model(x, training=False)``, or forward+backward, the input gradient of
   ``sum(model(x) * y)`` by ``tf.GradientTape``. Like the explainer, the bound takes numpy arrays and returns a
   numpy array; the same function fed with ``tf.Tensor`` inputs made beforehand is timed too (``bound_tensor_s`` in
   the JSON, and a line under the table);
3. times the first call -- ``deepexplain.Explainer(...)`` plus the first ``run`` -- on a freshly built Keras model,
   so that nothing traced or compiled before is reused.

Examples
--------
::

    python benchmarks/bench_keras.py                      # every workload, 5 repeats
    python benchmarks/bench_keras.py --quick              # smoke run, 3 repeats
    python benchmarks/bench_keras.py --only saliency_b32,intgrad50_b1 --json results.json
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_cnn, also when imported from elsewhere

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
import warnings  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_cnn import (  # noqa: E402
    BOUND_SEED,
    DATA_SEED,
    INPUT_SHAPE,
    NUM_CLASSES,
    TARGET_RATIO,
    WORKLOADS,
    build_model,
    environment,
    interleaved_medians,
    load_average,
    make_data,
    model_weights,
)

import deepexplain  # noqa: E402

TARGET_FIRST_CALL_S = 1.0
"""First-call target of the Keras path: tracing and freezing the model is part of it."""

LOGITS_TOLERANCE = 1e-4
WEIGHT_ORDER = ("conv1", "conv1_b", "conv2", "conv2_b", "dense1", "dense1_b", "dense2", "dense2_b")


# --------------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------------


def build_keras_model(weights):
    """bench-cnn as a Keras 3 ``Sequential`` with the given weights.

    Parameters
    ----------
    weights : dict of str to ndarray
        As returned by ``bench_cnn.model_weights``.

    Returns
    -------
    keras.Sequential
        Input 28×28×1 → Conv2D 32 3×3 same ReLU → MaxPooling2D 2 → Conv2D 64 3×3 same ReLU → MaxPooling2D 2 →
        Flatten → Dense 128 ReLU → Dense 10 (logits).
    """
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input(shape=INPUT_SHAPE, dtype="float32"),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(2),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(NUM_CLASSES),
        ]
    )
    model.set_weights([weights[name] for name in WEIGHT_ORDER])
    return model


def check_same_logits(model, weights, rows=64):
    """Assert that the Keras model's logits equal those of bench_cnn's TF1 graph on a batch.

    Parameters
    ----------
    model : keras.Model
        As returned by :func:`build_keras_model`.
    weights : dict of str to ndarray
        The weights both models were built with.
    rows : int
        Batch size of the check.

    Returns
    -------
    float
        The largest absolute difference of the logits.

    Raises
    ------
    AssertionError
        When it is not below ``LOGITS_TOLERANCE``.
    """
    xs, _ = make_data(rows, DATA_SEED)
    sess, X, T = build_model(weights)
    try:
        expected = sess.run(T, {X: xs})
    finally:
        sess.close()
    actual = model(xs, training=False).numpy()
    diff = float(np.max(np.abs(actual - expected)))
    assert diff < LOGITS_TOLERANCE, f"Keras and TF1 logits differ by {diff:.3g} (tolerance {LOGITS_TOLERANCE})"
    return diff


# --------------------------------------------------------------------------------------------------------------------
# Bound
# --------------------------------------------------------------------------------------------------------------------


def bound_functions(model):
    """``tf.function`` s of the bare model: the forward pass and the input gradient of ``sum(model(x) * y)``.

    Parameters
    ----------
    model : keras.Model

    Returns
    -------
    dict
        ``'forward'``: ``f(x)``; ``'backward'``: ``f(x, y)``. Each is traced once per input shape (at the warm-up).
    """

    @tf.function
    def forward(x):
        return model(x, training=False)

    @tf.function
    def backward(x, y):
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = tf.reduce_sum(model(x, training=False) * y)
        return tape.gradient(score, x)

    return {"forward": forward, "backward": backward}


# --------------------------------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------------------------------


class KerasBench:
    """One Keras model and its bound functions, shared by the steady-state timings.

    Parameters
    ----------
    weights : dict of str to ndarray
        The model's weights.
    repeats : int
        Timed calls per measurement.
    """

    def __init__(self, weights, repeats):
        self.weights = weights
        self.repeats = repeats
        self.model = build_keras_model(weights)
        self.logits_diff = check_same_logits(self.model, weights)
        self.bounds = bound_functions(self.model)

    def bound_fns(self, rows, kind):
        """The bound on ``rows`` rows: fed with numpy arrays, and fed with ``tf.Tensor`` s made beforehand.

        Both return a numpy array, as the explainer does.

        Parameters
        ----------
        rows : int
            Batch size of the call.
        kind : {'forward', 'backward'}
            The forward pass alone, or the input gradient of ``sum(model(x) * y)``.

        Returns
        -------
        numpy_fn, tensor_fn : callable
        """
        xs, ys = make_data(rows, BOUND_SEED)
        fn = self.bounds[kind]
        arrays = (xs,) if kind == "forward" else (xs, ys)
        tensors = tuple(tf.constant(a) for a in arrays)
        return (lambda: fn(*arrays).numpy()), (lambda: fn(*tensors).numpy())

    def steady(self, workload):
        """Median times of ``explainer.run(xs, ys=ys)`` (explainer built once) and of the bound, timed in turns.

        Parameters
        ----------
        workload : bench_cnn.Workload

        Returns
        -------
        run_s, bound_s, bound_tensor_s : float
            Median seconds: the run, the bound with numpy inputs, the bound with ``tf.Tensor`` inputs.
        """
        xs, ys = make_data(workload.batch, DATA_SEED)
        explainer = deepexplain.Explainer(workload.method, self.model, progress=False, **workload.kwargs)
        bound_numpy, bound_tensor = self.bound_fns(workload.bound_rows, workload.bound_kind)
        return tuple(
            interleaved_medians(
                [lambda: explainer.run(xs, ys=ys, progress=False), bound_numpy, bound_tensor], self.repeats
            )
        )

    def first_call(self, workload):
        """Time of ``deepexplain.Explainer(...)`` plus the first ``run``, on a freshly built Keras model.

        Parameters
        ----------
        workload : bench_cnn.Workload

        Returns
        -------
        float
            Seconds.
        """
        xs, ys = make_data(workload.batch, DATA_SEED)
        model = build_keras_model(self.weights)  # a new model object: nothing traced before is reused
        start = time.perf_counter()
        explainer = deepexplain.Explainer(workload.method, model, progress=False, **workload.kwargs)
        explainer.run(xs, ys=ys, progress=False)
        return time.perf_counter() - start


def run_workload(bench, workload):
    """Measure one workload; an exception is reported in the result instead of raised.

    Parameters
    ----------
    bench : KerasBench
    workload : bench_cnn.Workload

    Returns
    -------
    dict
        ``name``, ``median_s``, ``bound_s`` (numpy inputs), ``bound_tensor_s``, ``ratio``, ``ratio_tensor``,
        ``first_call_s``, ``warnings`` and ``error`` (None or text).
    """
    result = {
        "name": workload.name,
        "method": workload.method,
        "batch": workload.batch,
        "bound_rows": workload.bound_rows,
        "bound_kind": workload.bound_kind,
        "median_s": None,
        "bound_s": None,
        "bound_tensor_s": None,
        "ratio": None,
        "ratio_tensor": None,
        "first_call_s": None,
        "warnings": [],
        "error": None,
    }
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result["median_s"], result["bound_s"], result["bound_tensor_s"] = bench.steady(workload)
            result["ratio"] = result["median_s"] / result["bound_s"]
            result["ratio_tensor"] = result["median_s"] / result["bound_tensor_s"]
            result["first_call_s"] = bench.first_call(workload)
        result["warnings"] = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    except Exception as error:  # one failing workload must not stop the others
        result["error"] = f"{type(error).__name__}: {error}"
        traceback.print_exc(file=sys.stderr)
    return result


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------


def markdown_table(results):
    """The results as a markdown table: workload, median s, bound s, ratio, first call s.

    As ``bench_cnn.markdown_table``, with this benchmark's first-call target.

    Parameters
    ----------
    results : list of dict
        As returned by :func:`run_workload`.

    Returns
    -------
    str
    """
    lines = ["| workload | median s | bound s | ratio | first call s |", "|---|---:|---:|---:|---:|"]
    for r in results:
        if r["error"] is not None:
            lines.append(f"| {r['name']} | unavailable: {r['error'].splitlines()[0][:100]} | | | |")
            continue
        ratio = f"{r['ratio']:.2f}" + (" !" if r["ratio"] > TARGET_RATIO else "")
        first = f"{r['first_call_s']:.3f}" + (" !" if r["first_call_s"] > TARGET_FIRST_CALL_S else "")
        lines.append(f"| {r['name']} | {r['median_s']:.4f} | {r['bound_s']:.4f} | {ratio} | {first} |")
    return "\n".join(lines)


def tensor_bound_line(results):
    """One line giving, per workload, the bound fed with ``tf.Tensor`` inputs and the ratio to it."""
    parts = [
        f"{r['name']} {r['bound_tensor_s']:.4f} s ({r['ratio_tensor']:.2f})" for r in results if r["error"] is None
    ]
    return "Bound with tf.Tensor inputs made beforehand (ratio to it): " + ", ".join(parts)


def parse_args(argv=None):
    """Command-line options (see ``--help``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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


def main(argv=None):
    """Run the selected workloads, print the markdown table, optionally write JSON; returns the exit status."""
    args = parse_args(argv)
    # as bench_cnn's session; deepexplain's private session inherits this configuration too
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    load_before = load_average()
    bench = KerasBench(model_weights(), args.repeats)
    print(f"Keras and TF1 logits agree: max abs diff {bench.logits_diff:.2e}", file=sys.stderr, flush=True)
    results = []
    for workload in args.workloads:
        print(f"running {workload.name} ...", file=sys.stderr, flush=True)
        results.append(run_workload(bench, workload))
    print(markdown_table(results))
    print(
        f"\n(repeats={args.repeats}; load average before/after: {load_before} / {load_average()}; "
        f"'!' marks a ratio above {TARGET_RATIO} or a first call above {TARGET_FIRST_CALL_S} s; "
        "bound: a tf.function of the bare Keras model fed with numpy)"
    )
    print("\n" + tensor_bound_line(results))
    notes = [(r["name"], w) for r in results for w in r["warnings"]]
    if notes:
        print("\nWarnings raised by deepexplain:")
        for name, message in notes:
            print(f"- {name}: {message}")
    if args.json:
        env = {**environment(), "keras": keras.__version__, "executing_eagerly": tf.executing_eagerly()}
        report = {"environment": env, "repeats": args.repeats, "logits_max_abs_diff": bench.logits_diff}
        with open(args.json, "w") as handle:
            json.dump({**report, "results": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
