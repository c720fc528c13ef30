"""An unchanged original-DeepExplain program runs after `import tensorflow.compat.v1 as tf; tf.disable_v2_behavior()`.

It runs in a subprocess (disabling TF2 behaviour is process-global); expected values are the original DeepExplain
test-suite's hand-computed ones for relu(relu(x1 - 1) - relu(x2)).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROGRAM = Path(__file__).parent / "programs" / "original_deepexplain_program.py"


@pytest.fixture(scope="module")
def results():
    completed = subprocess.run(
        [sys.executable, str(PROGRAM)],
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "method, expected",
    [
        ("zero", [[0, 0], [0, 0]]),
        ("saliency", [[0, 0], [1, 1]]),
        ("grad*input", [[0, 0], [3, -1]]),
        ("intgrad", [[0, 0], [1.5, -0.5]]),
        ("elrp", [[0, 0], [3, -1]]),
        ("deeplift", [[0, 0], [2, -1]]),
        ("occlusion", [[0, 0], [1, -1]]),
        ("occlusion_window", [[0, 0], [0.5, 0.5]]),
    ],
)
def test_original_values(results, method, expected):
    np.testing.assert_allclose(results[method], expected, atol=1e-3)


def test_occlusion_nans_and_warning(results):
    assert results["occlusion_nan"] == [[False, True], [False, True]]
    assert results["occlusion_nan_warning"]


def test_shapley_sampling_sums_to_output_difference(results):
    np.testing.assert_allclose(np.sum(results["shapley"], axis=1), [0, 1], atol=1e-6)


def test_misuse_raises_the_original_exception_types(results):
    assert results["elrp_zero_epsilon"] == "AssertionError"
    assert results["invalid_method"] is True


def test_explainer_with_ys_and_batch_size(results):
    # x = (3, 1): layer 1 (2, 1) with multipliers 2/3 and 1 from reference (-1, 0)/(0, 0); logits weights columns
    np.testing.assert_allclose(results["explainer_ys"], [[0, 0], [3 * 2 / 3 * 2.0, 1 * 0.5]], atol=1e-5)


def test_multiple_inputs_return_a_list(results):
    assert results["multiple_inputs"] == [[[4.0]], [[-1.0]]]
