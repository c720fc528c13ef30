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

import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from bench_cnn import (  # noqa: E402
    BOUND_SEED,
    DATA_SEED,
    INPUT_SHAPE,
    NUM_CLASSES,
    BenchBase,
    build_model,
    interleaved_medians,
    make_data,
    run_benchmark,
)

import deepexplain  # noqa: E402

TARGET_FIRST_CALL_S = 0.5
"""First-call target of the Keras path (BENCHMARK.md's keras_first_call): tracing the live model is part of it."""

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


class KerasBench(BenchBase):
    """One Keras model and its bound functions, shared by the steady-state timings.

    Checks on building that the model's logits are bench_cnn's and says so on stderr. Besides the bound fed with
    numpy arrays it times the bound fed with ``tf.Tensor`` s (``bound_tensor_s`` and ``ratio_tensor`` in the results,
    a line under the table). Built with the parameters of ``bench_cnn.BenchBase``.
    """

    first_call_target = TARGET_FIRST_CALL_S
    bound_variants = ("", "_tensor")
    bound_note = "; bound: a tf.function of the bare Keras model fed with numpy"

    def __init__(self, weights, repeats):
        super().__init__(weights, repeats)
        self.model = build_keras_model(weights)
        self.logits_diff = check_same_logits(self.model, weights)
        print(f"Keras and TF1 logits agree: max abs diff {self.logits_diff:.2e}", file=sys.stderr, flush=True)
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

    def notes(self, results):
        """The line of the bound fed with ``tf.Tensor`` inputs (see :func:`tensor_bound_line`), after a blank line.

        Parameters
        ----------
        results : list of dict
            As returned by ``bench_cnn.run_workload``.

        Returns
        -------
        list of str
        """
        return ["\n" + tensor_bound_line(results)]

    def report(self):
        """What the JSON file holds besides the results.

        Returns
        -------
        dict
            As ``bench_cnn.BenchBase.report``, with the Keras version and eager mode in ``environment``, and
            ``logits_max_abs_diff``.
        """
        report = super().report()
        report["environment"].update(keras=keras.__version__, executing_eagerly=tf.executing_eagerly())
        report["logits_max_abs_diff"] = self.logits_diff
        return report


# --------------------------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------------------------


def tensor_bound_line(results):
    """One line giving, per workload, the bound fed with ``tf.Tensor`` inputs and the ratio to it."""
    parts = [
        f"{r['name']} {r['bound_tensor_s']:.4f} s ({r['ratio_tensor']:.2f})" for r in results if r["error"] is None
    ]
    return "Bound with tf.Tensor inputs made beforehand (ratio to it): " + ", ".join(parts)


def main(argv=None):
    """Run bench-cnn on the Keras model (see ``bench_cnn.run_benchmark``); returns the exit status."""
    # as bench_cnn's session; deepexplain's private session inherits this configuration too
    tf.config.threading.set_intra_op_parallelism_threads(2)
    tf.config.threading.set_inter_op_parallelism_threads(2)
    return run_benchmark(argv, KerasBench, __doc__)


if __name__ == "__main__":
    sys.exit(main())
