"""PatternNet's workloads of ``BENCHMARK.md`` on bench-cnn as a live Keras 3 model.

- ``fit_patterns_4096``: ``deepexplain.fit_patterns(model, 4096 samples, batch_size=256)`` against the bound, a
  ``tf.function`` forward pass of the same 4096 rows in batches of 256 fed with numpy (target ratio <= 3). After
  the warm-up call, each call reuses the trace ``fit_patterns`` keeps with the model.
- ``fit_patterns_4096_reused``: the same fit with a ``deepexplain.patterns.PatternFitter`` constructed once (the
  model and statistics traced and compiled once; what repeated fits cost), against the same bound.
- ``fit_patterns_4096_first``: a ``PatternFitter`` constructed for every fit, as the first ``fit_patterns`` of a
  model is (tracing the model and the statistics, and their first-call optimisation), against the same bound (no
  target: what the kept trace saves).
- ``pattern_attribution_b32``: ``Explainer('pattern.attribution', ...).run`` of 32 rows against forward+backward
  of 32 rows (target <= 1.25).

Both are timed in turns with their bound (median of ``--repeats``, after a warm-up), as ``bench_keras.py`` does.
The fit holds six kernel-sized float64 sums per layer (for bench-cnn 6 x 0.44 M values, ~21 MB).

Example::

    python benchmarks/bench_patterns.py --repeats 5 [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_cnn import BOUND_SEED, DATA_SEED, interleaved_medians, make_data, model_weights  # noqa: E402
from bench_keras import bound_functions, build_keras_model  # noqa: E402

import deepexplain  # noqa: E402
from deepexplain.patterns import PatternFitter  # noqa: E402

TARGETS = {"fit_patterns_4096": 3.0, "fit_patterns_4096_reused": 3.0, "fit_patterns_4096_first": None,
           "pattern_attribution_b32": 1.25}  # fmt: skip


def measure(repeats: int) -> dict:
    model = build_keras_model(model_weights())
    bounds = bound_functions(model)
    data, _ = make_data(4096, DATA_SEED)
    results = {}

    def fit():
        return deepexplain.fit_patterns(model, data, batch_size=256, progress=False)

    def forward_4096():
        return [bounds["forward"](data[lo : lo + 256]).numpy() for lo in range(0, 4096, 256)]

    patterns = fit()
    fit_s, bound_s = interleaved_medians([fit, forward_4096], repeats)
    results["fit_patterns_4096"] = {"median_s": fit_s, "bound_s": bound_s, "ratio": fit_s / bound_s}
    fitter = PatternFitter(model, batch_size=256, progress=False)
    fit_s, bound_s = interleaved_medians([lambda: fitter.fit(data), forward_4096], repeats)
    results["fit_patterns_4096_reused"] = {"median_s": fit_s, "bound_s": bound_s, "ratio": fit_s / bound_s}
    fit_s, bound_s = interleaved_medians(
        [lambda: PatternFitter(model, batch_size=256, progress=False).fit(data), forward_4096], repeats
    )
    results["fit_patterns_4096_first"] = {"median_s": fit_s, "bound_s": bound_s, "ratio": fit_s / bound_s}

    xs, ys = make_data(32, DATA_SEED)
    bound_xs, bound_ys = make_data(32, BOUND_SEED)
    explainer = deepexplain.Explainer("pattern.attribution", model, patterns=patterns, progress=False)
    run_s, bound_s = interleaved_medians(
        [lambda: explainer.run(xs, ys=ys), lambda: bounds["backward"](bound_xs, bound_ys).numpy()], repeats
    )
    results["pattern_attribution_b32"] = {"median_s": run_s, "bound_s": bound_s, "ratio": run_s / bound_s}
    return results


def ratio_main(argv, description: str, measure, targets: dict) -> int:
    """``--repeats``/``--json`` options, then one table line per workload of ``measure(repeats)`` (median, bound,
    ratio, target; ``!`` where the target is missed, ``-`` for a workload without one); shared by the benchmarks of
    the new methods."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    results = measure(args.repeats)
    print(f"{'workload':<26}{'median s':>10}{'bound s':>10}{'ratio':>8}{'target':>8}")
    for name, r in results.items():
        target = targets[name]
        flag = " !" if target is not None and r["ratio"] > target else ""
        shown = "-" if target is None else f"{target:.2f}"
        print(f"{name:<26}{r['median_s']:>10.4f}{r['bound_s']:>10.4f}{r['ratio']:>8.2f}{shown:>8}{flag}")
    print(f"load average {os.getloadavg()[0]:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def main(argv=None) -> int:
    return ratio_main(argv, __doc__.splitlines()[0], measure, TARGETS)


if __name__ == "__main__":
    sys.exit(main())
