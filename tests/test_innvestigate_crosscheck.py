"""deepexplain against iNNvestigate 2.1.2 on the same tf_keras models (optional: skips without innvestigate).

Oracle: iNNvestigate (``pip install --no-deps innvestigate==2.1.2 "future<0.19"``; it needs tf_keras, graph mode
and TF_USE_LEGACY_KERAS=1, so it runs in one subprocess, tests/programs/innvestigate_reference.py, which explains
each model with both libraries and saves both results). Models: an MLP on inputs with negative values, a CNN with
max pooling, a CNN with average and global average pooling, an MLP with batch normalisation; all with non-zero
biases, plus bias-free twins of the MLP and the max-pool CNN. One output index per sample.

Every (model, label) pair is its own test: equal to rtol=1e-4, atol=1e-5 * max|iNNvestigate| (float32 on both
sides), or, for a pair in KNOWN_DIFFERENCES, clearly different (more than 1e-3 * scale), with the reason. Labels
with '~' are diagnostics: deepexplain's computation of what iNNvestigate does instead (another seed, another rule),
which must agree and so prove the stated reason. Three more tests compute iNNvestigate's alpha-beta, batch-norm
and Deep-Taylor-through-batch-norm results (and, for the first two, ours) by hand in numpy from the saved weights.

By default a subset of the pairs runs (every method at least once, every known difference and every diagnostic;
~20 iNNvestigate analyses, each needs a fresh graph); DEEPEXPLAIN_INNVESTIGATE_FULL=1 runs every model with every
label. Pairs whose deepexplain method does not exist yet are skipped.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROGRAM = Path(__file__).parent / "programs" / "innvestigate_reference.py"
_spec = importlib.util.spec_from_file_location("innvestigate_reference", PROGRAM)
reference_program = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(reference_program)  # its top level is plain Python: model and label tables only

RTOL, ATOL_SCALE, DIFFER_SCALE = 1e-4, 1e-5, 1e-3

_SEED = (
    "iNNvestigate seeds the backward pass with the selected output's value f, not 1: "
    "ReverseAnalyzerBase._head_mapping returns its input (analyzer/reverse_base.py:220-228) and only Gradient "
    "overrides it with ones (analyzer/gradient_based.py:107-108), not GuidedBackprop (:227) or Deconvnet (:188); "
    "its ReLU filters then see f*signal, i.e. f*ours where f > 0 and a sign-flipped filter where f < 0. "
    "deepexplain seeds with 1 as the papers do; '~seed_f' (ours with ys = f one_hot) agrees exactly"
)
_ALPHA_BETA_BIAS = (
    "bias in the alpha-beta denominators: iNNvestigate's AlphaBetaRule builds its positive/negative layer copies from "
    "[w * (w > 0)] / [w * (w < 0)] over ALL weights including the bias (analyzer/relevance_based/relevance_rule.py:"
    "210-227), and apply() sums positive_copy(x+) + negative_copy(x-) for the activator and negative_copy(x+) + "
    "positive_copy(x-) for the inhibitor (:253-255, :272-280), so both denominators get b+ + b- = b; deepexplain "
    "puts b+ in the positive and b- in the negative denominator (zennit). Equal on the bias-free twins; "
    "test_alpha_beta_bias_by_hand reproduces both"
)
_PRESET_BIAS = (
    "sequential presets give convolutions Alpha1Beta0Rule / Alpha2Beta1Rule with bias=True (analyzer/"
    "relevance_based/relevance_analyzer.py:751-754, 788-791), so the alpha-beta bias difference applies: "
    + _ALPHA_BETA_BIAS
)
_DEEP_TAYLOR_AVG = (
    "iNNvestigate's DeepTaylor passes average pooling by its gradient (R/n to each input, analyzer/deeptaylor.py:"
    "81-85), deepexplain by the z-rule (conserving relevance); '~z_plus' (ours: z+ at every layer, seeded with "
    "relu(f)) shows the rest is the same. (Both give z+ to every kernel layer: iNNvestigate means w**2 for kernel "
    "layers without activation, analyzer/deeptaylor.py:43-54, but checks.contains_activation(layer) is "
    "hasattr(layer, 'activation'), backend/checks.py:68-69, 111, true for every Dense/Conv.)"
)
_DEEP_TAYLOR_BN = (
    "iNNvestigate's DeepTaylor passes BatchNormalization by its gradient (relevance times gamma / sqrt(var + eps), "
    "sign flips included): its ReLU mapping, condition 'not contains_kernel and only_relu_activation' (analyzer/"
    "deeptaylor.py:56-63), also matches BatchNormalization (no 'activation' attribute, backend/checks.py:128-134) "
    "and is registered before the batch-norm mapping (deeptaylor.py:66-74; first match wins, analyzer/"
    "reverse_base.py:191-201), so that w**2 mapping is dead code; deepexplain folds batch norm into the dense layer "
    "before it (z+ on W s). test_deep_taylor_batch_norm_by_hand reproduces iNNvestigate's"
)
_BN_RULE = (
    "at batch norm iNNvestigate applies the method's bn_layer_rule to its fused surrogate (analyzer/relevance_based/"
    "relevance_analyzer.py:456-468): ZPlusFast for lrp.z_plus_fast (keeps the positive part of the scale, so "
    "channels with gamma < 0 lose their relevance; relevance_analyzer.py:731), AlphaBetaX2m100Rule for the presets "
    "(:744, :781), alpha-beta for the alpha-beta methods, each on the mis-fused layer described next; deepexplain "
    "folds the batch norm into the dense layer before it (zennit's SequentialMergeBatchNorm) and applies the "
    "layer's rule to W s and s b + t"
)
_BATCH_NORM = (
    "iNNvestigate's fused batch norm (backend/graph.py:512-515, apply_mapping_to_fused_bn_layer, 'one_linear') "
    "computes the scale as gamma / sqrt(variance**2 + eps) (the variance squared) and the shift as beta - mean / "
    "sqrt(variance**2 + eps) (gamma missing from the mean term), so its z-rule at batch norm uses a different "
    "linear function from the layer's; test_batch_norm_by_hand reproduces both"
)

KNOWN_DIFFERENCES = {
    **{(m, "guided_backprop"): _SEED for m in reference_program.MODELS},
    **{(m, "deconvnet"): _SEED for m in reference_program.MODELS},
    **{(m, label): _ALPHA_BETA_BIAS for m in ("mlp", "cnn_max", "cnn_avg")
       for label in ("lrp.alpha_beta", "lrp.alpha_2_beta_1", "lrp.alpha_1_beta_0")},
    **{("cnn_avg", label): _DEEP_TAYLOR_AVG for label in ("deep_taylor", "deep_taylor.bounded",
                                                          "deep_taylor~z_plus", "deep_taylor.bounded~z_plus")},
    **{(m, label): _PRESET_BIAS for m in ("cnn_max", "cnn_avg")
       for label in ("lrp.sequential_preset_a", "lrp.sequential_preset_b", "lrp.sequential_preset_a_flat",
                     "lrp.sequential_preset_b_flat")},
    **{("mlp_bn", label): _BATCH_NORM for label in ("lrp.z", "lrp.epsilon", "lrp.epsilon_0.1",
                                                      "lrp.epsilon_0.1~z_at_pooling")},
    **{("mlp_bn", label): _BN_RULE + "; " + _BATCH_NORM
       for label in ("lrp.z_plus_fast", "lrp.sequential_preset_a", "lrp.sequential_preset_b",
                     "lrp.sequential_preset_a_flat", "lrp.sequential_preset_b_flat")},
    **{("mlp_bn", label): _ALPHA_BETA_BIAS + "; and " + _BN_RULE + "; " + _BATCH_NORM
       for label in ("lrp.alpha_beta", "lrp.alpha_2_beta_1", "lrp.alpha_1_beta_0")},
    **{("mlp_bn", label): _DEEP_TAYLOR_BN for label in ("deep_taylor~z_plus", "deep_taylor.bounded~z_plus")},
    **{("mlp_bn", label): _DEEP_TAYLOR_BN for label in ("deep_taylor", "deep_taylor.bounded")},
}  # fmt: skip

DEFAULT_PAIRS = {
    "mlp": [
        "integrated_gradients", "guided_backprop", "guided_backprop~seed_f", "lrp.epsilon_0.1", "lrp.w_square",
        "lrp.flat", "lrp.alpha_beta", "lrp.z_plus_fast", "deep_taylor.bounded",
    ],
    "mlp_nobias": ["lrp.alpha_beta"],
    "cnn_max": ["input_t_gradient", "lrp.z", "lrp.z_plus", "deep_taylor"],
    "cnn_max_nobias": ["lrp.alpha_2_beta_1", "lrp.sequential_preset_b_flat"],
    "cnn_avg": ["lrp.epsilon_0.1", "deep_taylor"],
    "mlp_bn": ["lrp.z", "deep_taylor"],
}  # fmt: skip

if os.environ.get("DEEPEXPLAIN_INNVESTIGATE_FULL") == "1":
    PAIRS = [(m, label) for m in reference_program.MODELS for label in reference_program.LABELS]
else:
    PAIRS = [(m, label) for m, labels in DEFAULT_PAIRS.items() for label in labels]


class Reference:
    def __init__(self, path):
        data = np.load(path)
        self.arrays = {k: data[k] for k in data.files if not k.startswith("__")}
        self.index = json.loads(str(data["__index__"]))
        self.models = json.loads(str(data["__models__"]))
        self.unavailable = str(data["__unavailable__"]) if "__unavailable__" in data.files else None


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    if importlib.util.find_spec("innvestigate") is None:
        pytest.skip('innvestigate is not installed (pip install --no-deps innvestigate==2.1.2 "future<0.19")')
    if importlib.util.find_spec("tf_keras") is None:
        pytest.skip("tf_keras is not installed (iNNvestigate needs it)")
    path = tmp_path_factory.mktemp("innvestigate") / "reference.npz"
    completed = subprocess.run(
        [sys.executable, str(PROGRAM), str(path), *[f"{m}/{label}" for m, label in PAIRS]],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    result = Reference(path)
    if result.unavailable:
        pytest.skip(f"innvestigate is installed but does not import: {result.unavailable}")
    return result


def _pair(reference, model, label):
    entry = reference.index[f"{model}/{label}"]
    if entry["ours"] == "not available":
        pytest.skip(f"deepexplain has no method {reference_program.LABELS[label][2]!r} yet")
    assert entry["inn"] == "ok", f"iNNvestigate failed on {model}/{label}: {entry['inn']}"
    assert entry["ours"] == "ok", f"deepexplain failed on {model}/{label}: {entry['ours']}"
    inn, ours = reference.arrays[f"{model}/{label}/inn"], reference.arrays[f"{model}/{label}/ours"]
    return inn.astype(np.float64), ours.astype(np.float64), max(float(np.abs(inn).max()), 1e-12)


@pytest.mark.parametrize(("model", "label"), PAIRS, ids=[f"{m}-{label}" for m, label in PAIRS])
def test_same_as_innvestigate(reference, model, label):
    inn, ours, scale = _pair(reference, model, label)
    reason = KNOWN_DIFFERENCES.get((model, label))
    if reason is None:
        np.testing.assert_allclose(ours, inn, rtol=RTOL, atol=ATOL_SCALE * scale, err_msg=f"{model}/{label}")
    else:
        difference = np.abs(ours - inn).max()
        assert difference > DIFFER_SCALE * scale, (
            f"{model}/{label} is listed as a known difference ({reason}) but now agrees with iNNvestigate "
            f"(max difference {difference:.3g}, scale {scale:.3g}): remove it from KNOWN_DIFFERENCES"
        )


# ----------------------------------------------------------------------------------------------------------------
# The differences by hand (numpy, float64, from the saved weights and inputs)
# ----------------------------------------------------------------------------------------------------------------


def _model_data(reference, model):
    meta = reference.models[model]
    x = np.asarray(meta["x"], dtype=np.float64)
    idx = np.asarray(meta["idx"])
    weights = [np.asarray(w, dtype=np.float64) for w in meta["weights"]]
    return x, idx, weights


def _divide(a, b, innvestigate):
    """iNNvestigate's safe_divide adds K.epsilon() = 1e-7 where b == 0 (backend/__init__.py:98-101); ours gives 0."""
    if innvestigate:
        return a / (b + 1e-7 * (b == 0))
    return np.divide(a, b, out=np.zeros_like(a), where=b != 0)


def _alpha_beta(x, w, b, relevance, alpha, beta, whole_bias):
    """One dense layer of the alpha-beta rule: ``whole_bias`` puts b in both denominators (iNNvestigate), else b+ in
    the positive and b- in the negative one."""
    xp, xn, wp, wn = np.maximum(x, 0), np.minimum(x, 0), np.maximum(w, 0), np.minimum(w, 0)
    bp, bn = (b, b) if whole_bias else (np.maximum(b, 0), np.minimum(b, 0))
    s_act = _divide(relevance, xp @ wp + xn @ wn + bp, whole_bias)
    s_inh = _divide(relevance, xp @ wn + xn @ wp + bn, whole_bias)
    activator = xp * (s_act @ wp.T) + xn * (s_act @ wn.T)
    inhibitor = xp * (s_inh @ wn.T) + xn * (s_inh @ wp.T)
    return alpha * activator - beta * inhibitor


def _z(x, w, b, relevance, innvestigate):
    return x * (_divide(relevance, x @ w + b, innvestigate) @ w.T)


def test_alpha_beta_bias_by_hand(reference):
    if ("mlp", "lrp.alpha_beta") not in PAIRS:
        pytest.skip("mlp/lrp.alpha_beta was not run")
    inn, ours, scale = _pair(reference, "mlp", "lrp.alpha_beta")
    x, idx, (w1, b1, w2, b2, w3, b3) = _model_data(reference, "mlp")
    h1 = np.maximum(x @ w1 + b1, 0)
    h2 = np.maximum(h1 @ w2 + b2, 0)
    out = h2 @ w3 + b3
    seed = np.eye(out.shape[1])[idx] * out

    def by_hand(whole_bias):
        r = _alpha_beta(h2, w3, b3, seed, 2.0, 1.0, whole_bias)
        r = _alpha_beta(h1, w2, b2, r, 2.0, 1.0, whole_bias)
        return _alpha_beta(x, w1, b1, r, 2.0, 1.0, whole_bias)

    innvestigate_rule, zennit_rule = by_hand(True), by_hand(False)
    assert np.abs(innvestigate_rule - zennit_rule).max() > DIFFER_SCALE * scale
    np.testing.assert_allclose(inn, innvestigate_rule, rtol=RTOL, atol=ATOL_SCALE * scale)
    np.testing.assert_allclose(ours, zennit_rule, rtol=RTOL, atol=ATOL_SCALE * scale)


def test_batch_norm_by_hand(reference):
    if ("mlp_bn", "lrp.z") not in PAIRS:
        pytest.skip("mlp_bn/lrp.z was not run")
    inn, ours, scale = _pair(reference, "mlp_bn", "lrp.z")
    x, idx, (w1, b1, gamma, beta, mean, variance, w2, b2) = _model_data(reference, "mlp_bn")
    eps = 1e-3  # BatchNormalization's default
    z1 = x @ w1 + b1
    bn_scale = gamma / np.sqrt(variance + eps)
    y = bn_scale * z1 + beta - bn_scale * mean
    h = np.maximum(y, 0)
    out = h @ w2 + b2
    seed = np.eye(out.shape[1])[idx] * out

    def by_hand(innvestigate):
        r = _z(h, w2, b2, seed, innvestigate)  # the ReLU passes relevance unchanged
        if innvestigate:
            wrong = np.sqrt(variance**2 + eps)
            k, t = gamma / wrong, beta - mean / wrong
        else:
            k, t = bn_scale, beta - bn_scale * mean
        r = z1 * k * _divide(r, z1 * k + t, innvestigate)  # z-rule through the batch norm as k x + t
        return _z(x, w1, b1, r, innvestigate)

    assert np.abs(by_hand(True) - by_hand(False)).max() > DIFFER_SCALE * scale
    np.testing.assert_allclose(inn, by_hand(True), rtol=RTOL, atol=ATOL_SCALE * scale)
    np.testing.assert_allclose(ours, by_hand(False), rtol=RTOL, atol=ATOL_SCALE * scale)


def test_deep_taylor_batch_norm_by_hand(reference):
    if ("mlp_bn", "deep_taylor") not in PAIRS:
        pytest.skip("mlp_bn/deep_taylor was not run")
    inn, _, scale = _pair(reference, "mlp_bn", "deep_taylor")
    x, idx, (w1, b1, gamma, beta, mean, variance, w2, b2) = _model_data(reference, "mlp_bn")
    bn_scale = gamma / np.sqrt(variance + 1e-3)
    y = bn_scale * (x @ w1 + b1 - mean) + beta
    h = np.maximum(y, 0)
    out = h @ w2 + b2
    seed = np.eye(out.shape[1])[idx] * np.maximum(out, 0)  # iNNvestigate puts a ReLU on the output

    def z_plus(a, w, relevance):  # Alpha1Beta0IgnoreBiasRule
        ap, an, wp, wn = np.maximum(a, 0), np.minimum(a, 0), np.maximum(w, 0), np.minimum(w, 0)
        s = _divide(relevance, ap @ wp + an @ wn, innvestigate=True)
        return ap * (s @ wp.T) + an * (s @ wn.T)

    r = z_plus(h, w2, seed) * (y > 0)  # the ReLU by its gradient
    r = r * bn_scale  # batch norm by its gradient
    np.testing.assert_allclose(inn, z_plus(x, w1, r), rtol=RTOL, atol=ATOL_SCALE * scale)
    assert np.abs(inn - z_plus(x, w1, np.where(y > 0, z_plus(h, w2, seed), 0.0))).max() > DIFFER_SCALE * scale
