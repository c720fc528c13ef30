"""The metrics workload of ``BENCHMARK.md`` on bench-cnn as a live Keras 3 model.

- ``deletion20_b32``: ``deepexplain.metrics.deletion`` with 20 steps on 32 images (672 perturbed rows) through a
  :class:`deepexplain.metrics.Scorer` built once, against a forward pass of the same 32 × 21 rows (target <= 1.3).

Timed in turns with the bound (median of ``--repeats``, after a warm-up). A run builds its rows in calls of at most
the library's row budget (16 MB of input: all 672 rows of 28 × 28 here, 2.1 MB).

Example::

    python benchmarks/bench_metrics.py --repeats 7 [--json out.json]
"""

from __future__ import annotations

import os
import sys

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_cnn import BOUND_SEED, DATA_SEED, interleaved_medians, make_data, model_weights  # noqa: E402
from bench_keras import bound_functions, build_keras_model  # noqa: E402
from bench_patterns import ratio_main  # noqa: E402

from deepexplain import metrics  # noqa: E402

TARGETS = {"deletion20_b32": 1.3}


def measure(repeats: int) -> dict:
    model = build_keras_model(model_weights())
    bounds = bound_functions(model)
    xs, ys = make_data(32, DATA_SEED)
    attributions = np.random.default_rng(0).normal(size=xs.shape)
    bound_xs, _ = make_data(32 * 21, BOUND_SEED)
    scorer = metrics.Scorer(model)

    def run():
        return metrics.deletion(scorer, xs, attributions, ys=ys, steps=20, progress=False)

    run_s, bound_s = interleaved_medians([run, lambda: bounds["forward"](bound_xs).numpy()], repeats)
    return {"deletion20_b32": {"median_s": run_s, "bound_s": bound_s, "ratio": run_s / bound_s}}


def main(argv=None) -> int:
    return ratio_main(argv, __doc__.splitlines()[0], measure, TARGETS)


if __name__ == "__main__":
    sys.exit(main())
