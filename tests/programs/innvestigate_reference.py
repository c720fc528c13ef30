"""iNNvestigate 2.1.2 and deepexplain on the same tf_keras models, in one process (run by
tests/test_innvestigate_crosscheck.py).

Usage: python innvestigate_reference.py OUT.npz [MODEL/LABEL | MODEL | LABEL ...]

The arguments select pairs (none: every model with every label). iNNvestigate runs on TF 2.21 only with tf_keras in
graph mode, so main() sets TF_USE_LEGACY_KERAS=1 and disables eager execution before anything is built; the module
top level is plain Python (importing this file has no TensorFlow side effects).

Each model is built with fixed weights and non-zero biases drawn from a numpy generator (kernels ~ N(0, 1/fan_in),
biases ~ N(0, 0.3), batch-norm statistics away from 0 and 1) and explained by both libraries with the same inputs
and one output index per sample:
- iNNvestigate: ``create_analyzer(name, model, neuron_selection_mode='index', **kwargs).analyze(x, idx)``. Every
  analyzer gets a fresh, weight-identical copy of the model in a fresh graph: iNNvestigate analyzers leave nodes
  behind in the model's layers (PathIntegrator calls the model on its interpolated inputs), after which
  ``checks.is_input_layer`` (checks.py:288-325 looks at every inbound node) is False for the first layer and later
  analyzers silently drop their input-layer rule (``*_flat`` presets, ``deep_taylor.bounded``); and it slows down
  with the size of the graph.
- deepexplain: ``deepexplain.explain(name, model, x, target=idx, **kwargs)`` on the tf_keras model with eager
  execution off (the model's own graph and session), or with ``ys`` (output weights per sample) where a label asks
  for another seed of the backward pass (the diagnostic labels below).

Labels are iNNvestigate method names (deepexplain's name is the same), plus variants:
- 'lrp.epsilon_0.1': lrp.epsilon with epsilon=0.1 on both sides.
- '<method>~seed_f': deepexplain's method seeded with the explained output's value f (ys = f * one_hot) instead of
  1, as iNNvestigate's ReverseAnalyzerBase seeds guided backprop and deconvnet.
- 'deep_taylor~z_plus' / 'deep_taylor.bounded~z_plus': deepexplain's lrp.z_plus (resp. lrp.composite with the
  bounded rule at the first layer and z+ elsewhere) seeded with relu(f), which is what iNNvestigate's deep_taylor
  computes on these models.
- 'lrp.epsilon_0.1~z_at_pooling': deepexplain's lrp.composite with Epsilon(0.1) at dense/conv layers and the plain
  z-rule (epsilon=0) at average pooling, which is what iNNvestigate's lrp.epsilon does.

OUT.npz: '<model>/<label>/inn' and '<model>/<label>/ours' (float32, shaped like x) for each side that succeeded;
'__index__' (JSON): pair -> {'inn': 'ok' | error, 'ours': 'ok' | 'not available' | error, 'scale': max |inn|,
seconds}; '__models__' (JSON): model -> {'x', 'idx', 'outputs', 'weights' (list of arrays as nested lists)}.
"""

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

CLASSES = 3
SAMPLES = 4

# label -> (iNNvestigate name, iNNvestigate kwargs, deepexplain name, deepexplain kwargs, seed of ours)
# 'LOW'/'HIGH' stand for the model's input bounds; seed: None (target=idx), 'f' (ys = f one_hot) or 'relu_f'
# (ys = [f > 0] one_hot, so that relevance-seeded methods start from relu(f)).
_SAME = [
    "input", "gradient", "input_t_gradient", "integrated_gradients", "guided_backprop", "deconvnet", "lrp.z",
    "lrp.epsilon", "lrp.w_square", "lrp.flat", "lrp.alpha_2_beta_1", "lrp.alpha_1_beta_0", "lrp.z_plus",
    "lrp.z_plus_fast", "lrp.sequential_preset_a", "lrp.sequential_preset_b", "lrp.sequential_preset_a_flat",
    "lrp.sequential_preset_b_flat", "deep_taylor",
]  # fmt: skip
BOUNDS = {"low": "LOW", "high": "HIGH"}
LABELS = {name: (name, {}, name, {}, None) for name in _SAME}
LABELS.update(
    {
        "lrp.epsilon_0.1": ("lrp.epsilon", {"epsilon": 0.1}, "lrp.epsilon", {"epsilon": 0.1}, None),
        "lrp.alpha_beta": ("lrp.alpha_beta", {"alpha": 2, "beta": 1}, "lrp.alpha_beta", {"alpha": 2, "beta": 1}, None),
        "deep_taylor.bounded": ("deep_taylor.bounded", BOUNDS, "deep_taylor.bounded", BOUNDS, None),
        "guided_backprop~seed_f": ("guided_backprop", {}, "guided_backprop", {}, "f"),
        "deconvnet~seed_f": ("deconvnet", {}, "deconvnet", {}, "f"),
        "deep_taylor~z_plus": ("deep_taylor", {}, "lrp.z_plus", {}, "relu_f"),
        "deep_taylor.bounded~z_plus": ("deep_taylor.bounded", BOUNDS, "lrp.composite", "BOUNDED_Z_PLUS", "relu_f"),
        "lrp.epsilon_0.1~z_at_pooling": ("lrp.epsilon", {"epsilon": 0.1}, "lrp.composite", "EPSILON_0.1_Z_POOL", None),
    }
)


# ----------------------------------------------------------------------------------------------------------------
# Models (K is tf_keras; every builder returns the model and the input shape of one sample)
# ----------------------------------------------------------------------------------------------------------------


def mlp(K, bias):
    x = K.Input((10,))
    h = K.layers.Dense(12, activation="relu", use_bias=bias)(x)
    h = K.layers.Dense(8, activation="relu", use_bias=bias)(h)
    return K.Model(x, K.layers.Dense(CLASSES, use_bias=bias)(h)), (10,)


def cnn_max(K, bias):
    x = K.Input((8, 8, 2))
    h = K.layers.Conv2D(4, 3, padding="same", activation="relu", use_bias=bias)(x)
    h = K.layers.MaxPooling2D(2)(h)
    h = K.layers.Conv2D(5, 3, activation="relu", use_bias=bias)(h)
    h = K.layers.Flatten()(h)
    h = K.layers.Dense(8, activation="relu", use_bias=bias)(h)
    return K.Model(x, K.layers.Dense(CLASSES, use_bias=bias)(h)), (8, 8, 2)


def cnn_avg(K, bias):
    x = K.Input((8, 8, 2))
    h = K.layers.Conv2D(4, 3, padding="same", activation="relu", use_bias=bias)(x)
    h = K.layers.AveragePooling2D(2)(h)
    h = K.layers.Conv2D(6, 3, padding="same", activation="relu", use_bias=bias)(h)
    h = K.layers.GlobalAveragePooling2D()(h)
    return K.Model(x, K.layers.Dense(CLASSES, use_bias=bias)(h)), (8, 8, 2)


def mlp_bn(K, bias):
    # training=False: inference mode fixed at build time (without it tf_keras puts the learning-phase switch, an
    # 'If' op, between the layers, which LRP rules cannot see into).
    x = K.Input((10,))
    h = K.layers.Dense(12, use_bias=bias)(x)
    h = K.layers.BatchNormalization()(h, training=False)
    h = K.layers.Activation("relu")(h)
    return K.Model(x, K.layers.Dense(CLASSES, use_bias=bias)(h)), (10,)


# name -> (builder, bias, (low, high) bounds of the inputs, which deep_taylor.bounded also gets)
MODELS = {
    "mlp": (mlp, True, (-3.0, 3.0)),
    "mlp_nobias": (mlp, False, (-3.0, 3.0)),
    "cnn_max": (cnn_max, True, (-1.0, 1.0)),
    "cnn_max_nobias": (cnn_max, False, (-1.0, 1.0)),
    "cnn_avg": (cnn_avg, True, (-1.0, 1.0)),
    "mlp_bn": (mlp_bn, True, (-3.0, 3.0)),
}


def weights_for(model, rng) -> list:
    """Fixed weights in the order of ``model.get_weights()``."""
    values = []
    for weight in model.weights:
        name = weight.name.split("/")[-1].split(":")[0]
        shape = tuple(weight.shape)
        if name == "kernel":
            value = rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
        elif name == "bias":
            value = rng.normal(0, 0.3, shape)
        elif name == "gamma":
            value = rng.uniform(0.5, 1.5, shape) * rng.choice([-1.0, 1.0], shape)
        elif name in ("beta", "moving_mean"):
            value = rng.normal(0, 0.3, shape)
        elif name == "moving_variance":
            value = rng.uniform(0.3, 3.0, shape)
        else:
            raise ValueError(f"unexpected weight {weight.name}")
        values.append(np.asarray(value, dtype=np.float32))
    return values


def _error(exc) -> str:
    return f"{type(exc).__name__}: {exc}".strip()[:400]


# ----------------------------------------------------------------------------------------------------------------
# Running both libraries
# ----------------------------------------------------------------------------------------------------------------


def run_model(K, model_name, labels, out, index, meta):
    import innvestigate

    import deepexplain
    from deepexplain.tensorflow.methods import METHODS as OURS

    builder, bias, (low, high) = MODELS[model_name]
    rng = np.random.default_rng(100 + sorted(MODELS).index(model_name))

    def build():
        K.backend.clear_session()  # a fresh graph (see the module docstring)
        model, _ = builder(K, bias)
        model.set_weights(weights)
        return model

    K.backend.clear_session()
    model, shape = builder(K, bias)
    weights = weights_for(model, rng)
    if model_name.startswith("mlp"):
        x = np.clip(rng.normal(0, 1.2, (SAMPLES, *shape)), low, high).astype(np.float32)
    else:
        x = rng.uniform(low, high, (SAMPLES, *shape)).astype(np.float32)
    idx = np.arange(SAMPLES) % CLASSES
    model.set_weights(weights)
    outputs = np.asarray(model.predict_on_batch(x), dtype=np.float64)
    f = outputs[np.arange(SAMPLES), idx]
    one_hot = np.eye(CLASSES, dtype=np.float32)[idx]
    meta[model_name] = {
        "x": x.tolist(),
        "idx": idx.tolist(),
        "outputs": outputs.tolist(),
        "weights": [w.tolist() for w in weights],
        "bounds": [low, high],
    }

    def resolve(kwargs):
        if kwargs == "BOUNDED_Z_PLUS":
            from deepexplain.tensorflow.rules.lrp import Bounded, z_plus

            return {"first_layer": Bounded(low, high), "default": z_plus()}
        if kwargs == "EPSILON_0.1_Z_POOL":
            from deepexplain.tensorflow.rules.lrp import Epsilon

            return {"default": Epsilon(0.1), "epsilon": 0.0}
        return {k: (low if v == "LOW" else high if v == "HIGH" else v) for k, v in kwargs.items()}

    # iNNvestigate, once per distinct analysis (diagnostic labels share it).
    analyses: dict = {}
    for label in labels:
        inn_name, inn_kwargs, *_ = LABELS[label]
        key = (inn_name, json.dumps(inn_kwargs, sort_keys=True))
        if key not in analyses:
            start = time.perf_counter()
            try:
                analyzer = innvestigate.create_analyzer(
                    inn_name, build(), neuron_selection_mode="index", **resolve(inn_kwargs)
                )
                result = np.asarray(analyzer.analyze(x, neuron_selection=idx), dtype=np.float32)
                analyses[key] = ("ok", result, time.perf_counter() - start)
            except Exception as exc:  # recorded, not fatal
                analyses[key] = (_error(exc), None, time.perf_counter() - start)
        status, result, seconds = analyses[key]
        entry = index.setdefault(f"{model_name}/{label}", {})
        entry.update(inn=status, inn_s=round(seconds, 2))
        if result is not None:
            out[f"{model_name}/{label}/inn"] = result
            entry["scale"] = float(np.max(np.abs(result)))

    # deepexplain, after iNNvestigate, on one more fresh copy.
    model = build()
    for label in labels:
        _, _, our_name, our_kwargs, seed = LABELS[label]
        entry = index[f"{model_name}/{label}"]
        if our_name not in OURS:
            entry["ours"] = "not available"
            continue
        start = time.perf_counter()
        try:
            if seed is None:
                target = {"target": idx.tolist()}
            elif seed == "f":
                target = {"ys": (one_hot * f[:, None]).astype(np.float32)}
            else:
                target = {"ys": (one_hot * (f > 0)[:, None]).astype(np.float32)}
            result = deepexplain.explain(our_name, model, x, progress=False, **target, **resolve(our_kwargs))
            out[f"{model_name}/{label}/ours"] = np.asarray(result, dtype=np.float32)
            entry["ours"] = "ok"
        except Exception as exc:
            entry["ours"] = _error(exc)
        entry["ours_s"] = round(time.perf_counter() - start, 2)


def select(filters) -> dict:
    """model -> labels to run, in LABELS order."""
    chosen: dict = {}
    for model_name in MODELS:
        for label in LABELS:
            pair = f"{model_name}/{label}"
            if not filters or pair in filters or model_name in filters or label in filters:
                chosen.setdefault(model_name, []).append(label)
    pairs = {f"{m}/{label}" for m in MODELS for label in LABELS}
    unknown = sorted(f for f in filters if f not in MODELS and f not in LABELS and f not in pairs)
    if unknown:
        raise SystemExit(f"unknown model/label selection(s): {unknown}; models {list(MODELS)}, labels {list(LABELS)}")
    return chosen


def main(argv) -> int:
    path, filters = argv[1], set(argv[2:])
    chosen = select(filters)
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # this checkout's deepexplain

    import warnings

    import tensorflow as tf

    tf.compat.v1.disable_eager_execution()
    import tf_keras as K

    warnings.filterwarnings("ignore")
    tf.get_logger().setLevel("ERROR")
    try:
        import innvestigate  # noqa: F401
    except Exception as exc:
        np.savez(path, __index__="{}", __models__="{}", __unavailable__=_error(exc))
        print(f"innvestigate not importable: {_error(exc)}")
        return 0
    out, index, meta = {}, {}, {}
    start = time.perf_counter()
    for model_name, labels in chosen.items():
        run_model(K, model_name, labels, out, index, meta)
    np.savez(path, __index__=json.dumps(index), __models__=json.dumps(meta), **out)
    print(f"{len(index)} pairs in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
