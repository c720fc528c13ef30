"""First results on live Keras models: what a user waits for, and what an explainer holds in memory.

Workloads of ``BENCHMARK.md`` ("the same model as a live Keras 3 model") that the steady-state scripts do not
cover, each measured in a fresh Python process (so that nothing traced before is reused and resident memory is the
explainer's own):

- ``big_mlp_first_result``: ``Explainer('saliency', mlp)`` + the first ``run`` on 8 samples, for an MLP with 384 MB
  of float32 weights (4096 -> 8192 -> 8192 -> 10); the resident memory it adds, as a fraction of the weights'
  bytes. Targets: <= 3 s and <= 0.25x.
- ``resnet50_first_result``: ``Explainer('saliency', ResNet50(weights=None, input_shape=(64, 64, 3)))`` + the first
  ``run`` on 4 images, against the first call of a plain ``tf.function`` returning the ``GradientTape`` input
  gradient of the same score (its tracing included). Target: ratio <= 2.
- ``resnet50_first_result_deeplift``: the same with DeepLIFT (rules on every op of the model).

Examples
--------
::

    python benchmarks/bench_live.py                 # every workload (about a minute on 2 cores)
    python benchmarks/bench_live.py --only big_mlp_first_result --json live.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

TARGETS = {"big_mlp_first_result": 3.0, "resnet50_first_result": 2.0, "resnet50_first_result_deeplift": 2.0}
RSS_TARGET = 0.25

_CHILD = r"""
import json, os, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, psutil, tensorflow as tf, keras
tf.config.threading.set_intra_op_parallelism_threads(2)
tf.config.threading.set_inter_op_parallelism_threads(2)
kind, what = sys.argv[1], sys.argv[2]
if kind == "mlp":
    model = keras.Sequential([keras.Input((4096,)), keras.layers.Dense(8192, activation="relu"),
                              keras.layers.Dense(8192, activation="relu"), keras.layers.Dense(10)])
    xs = np.random.default_rng(0).random((8, 4096), dtype=np.float32)
else:
    model = keras.applications.ResNet50(weights=None, input_shape=(64, 64, 3), classifier_activation=None)
    xs = np.random.default_rng(0).random((4, 64, 64, 3), dtype=np.float32) * 255
weights = sum(int(np.prod(w.shape)) * np.dtype(w.dtype).itemsize for w in model.weights)
process = psutil.Process()
rss = process.memory_info().rss
start = time.perf_counter()
if what == "tape":
    @tf.function
    def gradient(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            score = model(x, training=False)[:, 3]
        return tape.gradient(score, x)
    result = gradient(tf.constant(xs)).numpy()
else:
    import deepexplain
    result = deepexplain.Explainer(what, model, progress=False).run(xs, target=3)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_added": process.memory_info().rss - rss, "weights": weights,
                  "finite": bool(np.isfinite(result).all())}))
"""


def child(kind: str, what: str) -> dict:
    """Run one measurement in a fresh process; its JSON line as a dict."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    completed = subprocess.run(
        [sys.executable, "-c", _CHILD, kind, what], capture_output=True, text=True, env=env, timeout=900
    )
    if completed.returncode != 0:
        raise RuntimeError(completed.stderr[-2000:])
    return json.loads(completed.stdout.strip().splitlines()[-1])


def big_mlp_first_result() -> dict:
    ours, tape = child("mlp", "saliency"), child("mlp", "tape")
    return {
        "name": "big_mlp_first_result",
        "first_result_s": ours["seconds"],
        "tape_first_call_s": tape["seconds"],
        "rss_added_fraction": ours["rss_added"] / ours["weights"],
        "weights_mb": ours["weights"] / 2**20,
        "target": f"<= {TARGETS['big_mlp_first_result']} s, RSS <= {RSS_TARGET}x",
        "met": ours["seconds"] <= TARGETS["big_mlp_first_result"] and ours["rss_added"] <= RSS_TARGET * ours["weights"],
    }


def resnet50_first_result(method: str = "saliency") -> dict:
    ours, tape = child("resnet", method), child("resnet", "tape")
    name = "resnet50_first_result" + ("" if method == "saliency" else f"_{method}")
    ratio = ours["seconds"] / tape["seconds"]
    return {
        "name": name,
        "first_result_s": ours["seconds"],
        "tape_first_call_s": tape["seconds"],
        "ratio": ratio,
        "finite": ours["finite"],
        "target": f"ratio <= {TARGETS[name]}",
        "met": ratio <= TARGETS[name],
    }


WORKLOADS = {
    "big_mlp_first_result": big_mlp_first_result,
    "resnet50_first_result": resnet50_first_result,
    "resnet50_first_result_deeplift": lambda: resnet50_first_result("deeplift"),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default=None, help="comma-separated workload names (default: all)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    results = []
    print("| workload | first result s | plain tf.function first call s | ratio / RSS added | target | met |")
    print("|---|---:|---:|---:|---|---|")
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        result = WORKLOADS[name]()
        results.append(result)
        extra = (
            f"{result['rss_added_fraction']:.3f}x of {result['weights_mb']:.0f} MB"
            if "rss_added_fraction" in result
            else f"{result['ratio']:.2f}"
        )
        print(
            f"| {name} | {result['first_result_s']:.2f} | {result['tape_first_call_s']:.2f} | {extra} | "
            f"{result['target']} | {'yes' if result['met'] else 'no'} |",
            flush=True,
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
