"""The model-agnostic workloads of ``BENCHMARK.md`` on bench-cnn as a live Keras 3 model.

- ``kernel_shap256_b1``: ``Explainer('kernel_shap', model, feature_mask=<7×7 grid>, samples=256).run`` of one
  image (258 rows: the coalitions, x and the baseline) against a forward pass of 256 rows (target <= 1.2).
- ``lime256_b1``: the same with ``lime`` and 256 coalitions (x included).

Timed in turns with the bound (median of ``--repeats``, after a warm-up). A run holds its rows (258 × 28 × 28
floats, 0.8 MB) and the coalitions (258 × 49 booleans).

Example::

    python benchmarks/bench_agnostic.py --repeats 7 [--json out.json]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_cnn import BOUND_SEED, DATA_SEED, interleaved_medians, make_data, model_weights  # noqa: E402
from bench_keras import bound_functions, build_keras_model  # noqa: E402
from bench_patterns import ratio_main  # noqa: E402

import deepexplain  # noqa: E402

TARGETS = {"kernel_shap256_b1": 1.2, "lime256_b1": 1.2}


def measure(repeats: int) -> dict:
    model = build_keras_model(model_weights())
    bounds = bound_functions(model)
    grid = deepexplain.segments(make_data(1, DATA_SEED)[0], "grid", cells=(7, 7))[0]
    xs, ys = make_data(1, DATA_SEED)
    bound_xs, _ = make_data(256, BOUND_SEED)
    results = {}
    for name, method in (("kernel_shap256_b1", "kernel_shap"), ("lime256_b1", "lime")):
        explainer = deepexplain.Explainer(method, model, feature_mask=grid, samples=256, seed=0, progress=False)
        run_s, bound_s = interleaved_medians(
            [lambda e=explainer: e.run(xs, ys=ys), lambda: bounds["forward"](bound_xs).numpy()], repeats
        )
        results[name] = {"median_s": run_s, "bound_s": bound_s, "ratio": run_s / bound_s}
    return results


def main(argv=None) -> int:
    return ratio_main(argv, __doc__.splitlines()[0], measure, TARGETS)


if __name__ == "__main__":
    sys.exit(main())
