"""The CAM workload of ``BENCHMARK.md`` on bench-cnn as a live Keras 3 model.

- ``gradcam_b32``: ``Explainer('gradcam', model, layer=<the last Conv2D>).run`` of 32 rows (maps upsampled to
  28×28) against the bound, forward+backward of 32 rows (``tf.GradientTape`` gradient with respect to the input;
  target <= 1.2). Grad-CAM needs less than the bound: its backward pass stops at the layer.

Timed in turns with the bound (median of ``--repeats``, after a warm-up), as ``bench_keras.py`` does. A run holds
the layer's maps and their gradients for its rows (32 × 14 × 14 × 64 floats each, 1.6 MB) inside the graph.

Example::

    python benchmarks/bench_cam.py --repeats 5 [--json out.json]
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

TARGETS = {"gradcam_b32": 1.2}


def measure(repeats: int) -> dict:
    model = build_keras_model(model_weights())
    bounds = bound_functions(model)
    last_conv = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"][-1]
    xs, ys = make_data(32, DATA_SEED)
    bound_xs, bound_ys = make_data(32, BOUND_SEED)
    explainer = deepexplain.Explainer("gradcam", model, layer=last_conv, progress=False)
    run_s, bound_s = interleaved_medians(
        [lambda: explainer.run(xs, ys=ys), lambda: bounds["backward"](bound_xs, bound_ys).numpy()], repeats
    )
    return {"gradcam_b32": {"median_s": run_s, "bound_s": bound_s, "ratio": run_s / bound_s}}


def main(argv=None) -> int:
    return ratio_main(argv, __doc__.splitlines()[0], measure, TARGETS)


if __name__ == "__main__":
    sys.exit(main())
