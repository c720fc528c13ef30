"""The dataset workloads of ``BENCHMARK.md``: ``explain_dataset`` saliency over 20,000 bench-cnn samples (Keras 3).

- ``dataset_local``: the local engine streaming to ``--out`` (a temporary directory: ``attributions.npy`` written
  shard by shard, fsynced, with its manifest) against ``Explainer.run`` of the same 20,000 rows in memory; throughput
  target >= 0.9, i.e. a time ratio <= 1.11. The time is the job's own (``DatasetExplanation.seconds``: after the
  checks and the first compilation, as the explainer of ``Explainer.run`` is compiled before it is timed).
- ``dataset_ray2``: the Ray engine with 2 workers (a local cluster of 2 CPUs started here) against the same
  ``Explainer.run`` (which uses both cores in one process); throughput target >= 0.7, a time ratio <= 1.43. Timed
  from the first finished shard to the last (each worker loads the model and compiles once, a fixed cost of a few
  seconds that a long job amortises); the end-to-end time with that start-up is printed too.
- ``ray1`` / ``ray2`` lines: Ray's throughput with 1 and 2 workers (samples/s, steady and end to end).

The driver holds one compiled explainer and two shards (1,024 samples, 3 MB of input each): its memory does not grow
with N (``tests/test_dataset.py``). Each Ray worker holds its own copy of the model.

Example::

    python benchmarks/bench_dataset.py --repeats 3 [--json out.json] [--no-ray]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_cnn import DATA_SEED, make_data, model_weights  # noqa: E402
from bench_keras import build_keras_model  # noqa: E402

import deepexplain  # noqa: E402

SAMPLES = 20_000
TARGETS = {"dataset_local": 1 / 0.9, "dataset_ray2": 1 / 0.7}


def _job(model, xs, ys, **kwargs):
    with tempfile.TemporaryDirectory(prefix="bench-dataset-") as out:
        return deepexplain.explain_dataset("saliency", model, xs, target=ys, out=out, progress=False, **kwargs)


def _steady_seconds(result) -> float:
    """Seconds from the first finished shard to the last, scaled to all rows (the first shard's rows excluded)."""
    first_rows = min(result.n, 1024)
    return (result.seconds - result.startup_seconds) * result.n / (result.n - first_rows)


def measure(repeats: int, ray: bool) -> dict:
    model = build_keras_model(model_weights())
    xs, ys = make_data(SAMPLES, DATA_SEED)
    explainer = deepexplain.Explainer("saliency", model, progress=False)
    explainer.run(xs[:64], ys=ys[:64])

    def run_s():
        start = time.perf_counter()
        explainer.run(xs, ys=ys)
        return time.perf_counter() - start

    run_s()
    runs, local = [], []
    for _ in range(repeats):  # in turns, so that both see the same machine load
        runs.append(run_s())
        local.append(_job(model, xs, ys).seconds)
    bound = statistics.median(runs)
    results = {"dataset_local": {"median_s": statistics.median(local), "bound_s": bound}}
    if ray:
        import ray as ray_module

        ray_module.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        try:
            for workers in (1, 2):
                jobs = [_job(model, xs, ys, engine="ray", num_workers=workers) for _ in range(repeats)]
                steady = statistics.median(_steady_seconds(r) for r in jobs)
                total = statistics.median(r.seconds for r in jobs)
                results[f"ray{workers}"] = {
                    "steady_samples_s": SAMPLES / steady,
                    "end_to_end_samples_s": SAMPLES / total,
                    "end_to_end_s": total,
                }
                if workers == 2:
                    results["dataset_ray2"] = {"median_s": steady, "bound_s": bound}
        finally:
            ray_module.shutdown()
    for name in TARGETS:
        if name in results:
            results[name]["ratio"] = results[name]["median_s"] / results[name]["bound_s"]
    results["explainer_run_samples_s"] = SAMPLES / bound
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-ray", action="store_true", help="only the local engine")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    results = measure(args.repeats, ray=not args.no_ray)
    print(f"Explainer.run: {results['explainer_run_samples_s']:.0f} samples/s over {SAMPLES} samples")
    print(f"{'workload':<16}{'median s':>10}{'bound s':>10}{'ratio':>8}{'target':>8}{'throughput':>12}")
    for name, target in TARGETS.items():
        if name in results:
            r = results[name]
            flag = " !" if r["ratio"] > target else ""
            print(f"{name:<16}{r['median_s']:>10.3f}{r['bound_s']:>10.3f}{r['ratio']:>8.2f}{target:>8.2f}"
                  f"{1 / r['ratio']:>11.2f}x{flag}")  # fmt: skip
    for workers in (1, 2):
        if f"ray{workers}" in results:
            r = results[f"ray{workers}"]
            print(f"ray, {workers} worker(s): {r['steady_samples_s']:.0f} samples/s steady, "
                  f"{r['end_to_end_samples_s']:.0f} end to end ({r['end_to_end_s']:.1f} s with start-up)")  # fmt: skip
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
