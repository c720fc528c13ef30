"""CRP's workload of ``BENCHMARK.md`` on bench-cnn as a live Keras 3 model.

- ``crp_8x16``: ``CondAttribution(model, 'lrp.epsilon_plus')`` on 8 samples x 16 conditions ``{'y': [0], conv2:
  [c]}`` (one per channel c of the second convolution), 128 rows in one call, against the bound:
  ``Explainer('lrp.epsilon_plus').run`` of the same 128 rows for class 0 (target ratio <= 1.5).

The conditional pass feeds, besides the rows, one mask per row (64 floats) and the target weights, and returns the
input relevance and the prediction; nothing is recorded (``record_layer=()``: each recorded layer would add its
activation and relevance per row, 2 x 128 x 14 x 14 x 64 float32 = 12.8 MB here, ~40% more time).

Example::

    python benchmarks/bench_crp.py --repeats 7 [--json out.json]
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from bench_cnn import DATA_SEED, interleaved_medians, make_data, model_weights  # noqa: E402
from bench_keras import build_keras_model  # noqa: E402
from bench_patterns import ratio_main  # noqa: E402

import deepexplain  # noqa: E402
from deepexplain.crp import CondAttribution  # noqa: E402

TARGETS = {"crp_8x16": 1.5}


def measure(repeats: int) -> dict:
    model = build_keras_model(model_weights())
    layer = [layer.name for layer in model.layers if "conv" in layer.name][1]
    xs, _ = make_data(8, DATA_SEED)
    conditions = [{"y": [0], layer: [c]} for c in range(16)]
    attribution = CondAttribution(model, "lrp.epsilon_plus", progress=False)
    explainer = deepexplain.Explainer("lrp.epsilon_plus", model, progress=False)
    rows = np.repeat(xs, 16, axis=0)
    row_targets = np.zeros(len(rows), np.int64)

    def crp():
        return attribution(xs, conditions, batch_size=128).heatmap

    def plain():
        return explainer.run(rows, target=row_targets, batch_size=128)

    crp_s, bound_s = interleaved_medians([crp, plain], repeats)
    return {"crp_8x16": {"median_s": crp_s, "bound_s": bound_s, "ratio": crp_s / bound_s}}


def main(argv=None) -> int:
    return ratio_main(argv, __doc__.splitlines()[0], measure, TARGETS)


if __name__ == "__main__":
    sys.exit(main())
