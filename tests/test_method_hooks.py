"""The lifecycle hooks methods build on (PatternNet's fit, CRP's per-row masks, results of another shape), checked
with small declarations written here, on both runners.

Oracles: hand-computed gradients of a one-hidden-layer ReLU network (the gradient with the ReLU's mask), the
dataset mean computed by numpy, and the TF1 API on the same weights.
"""

from dataclasses import dataclass

import numpy as np
import pytest
import tensorflow as tf

import deepexplain
from deepexplain.errors import InvalidInputError
from deepexplain.explainer import Explainer
from deepexplain.tensorflow.methods.base import Expansion, GradientMethod, Settings

keras = pytest.importorskip("keras")


class MeanCentred(GradientMethod):
    """Gradient times (x - mean of the fitting data): a method that must learn a statistic first."""

    needs_fit = True

    def __init__(self, sample_shapes):
        super().__init__(sample_shapes)
        self.total, self.count, self.mean = 0.0, 0, None

    def fit_tensors(self, path, valid):
        x = path.inputs[0]
        return [tf.reduce_sum(x * valid[:, None], axis=0), tf.reduce_sum(valid)]

    def fit_batch(self, values):
        self.total = self.total + values[0].astype(np.float64)
        self.count += int(values[1])

    def fit_end(self):
        self.mean = (self.total / self.count).astype(np.float32)
        super().fit_end()

    def expand(self, xs, rng):
        return Expansion(points=xs, weights=np.ones(1), factors=[(xs[0] - self.mean)[None]])


@dataclass(frozen=True)
class _RowWeight(Settings):
    pass


def _scaled_relu(op, grads, settings):
    """The ReLU's gradient, times each row's weight (the extra per-row input)."""
    (weight,) = settings.path.row_inputs
    mask = tf.cast(op.outputs[0] > 0, grads[0].dtype)
    return [grads[0] * mask * weight]


class RowWeighted(GradientMethod):
    """The gradient with each row's signal scaled at the ReLU by a per-row weight: an extra row input."""

    rules = {"Relu": _scaled_relu}
    row_input_specs = (tf.TensorSpec((None, 1), tf.float32, name="row_weight"),)

    def expand(self, xs, rng):
        return Expansion(points=xs, weights=np.ones(1), factors=[None], row_values=[row_weights(xs[0])])


def row_weights(xs):
    return 1 + np.abs(xs[:, :1]).astype(np.float32)


class Summed(GradientMethod):
    """The gradient summed over the features: a result not shaped like xs."""

    def finalize(self, attribution):
        return attribution.reshape(len(attribution), -1).sum(axis=1, keepdims=True)


def relu_net(seed=0):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(6, activation="relu"), keras.layers.Dense(2)])
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def hand_gradient(model, xs, unit):
    w1, b1, w2, _ = model.get_weights()
    active = (xs @ w1 + b1 > 0).astype(np.float32)
    return (active * w2[:, unit]) @ w1.T


@pytest.mark.parametrize("data_kind", ["array", "dataset", "generator"])
def test_fit_streams_the_data_once_then_explains(data_kind):
    model = relu_net()
    rng = np.random.default_rng(1)
    data = rng.normal(size=(37, 4)).astype(np.float32)
    xs = rng.normal(size=(5, 4)).astype(np.float32)
    explainer = Explainer(MeanCentred, model)
    with pytest.raises(InvalidInputError, match="call explainer.fit"):
        explainer.run(xs, target=1)
    source = {
        "array": data,
        "dataset": tf.data.Dataset.from_tensor_slices(data).batch(10),
        "generator": (data[i : i + 8] for i in range(0, 37, 8)),
    }[data_kind]
    assert explainer.fit(source, batch_size=6 if data_kind == "array" else None) is explainer
    np.testing.assert_allclose(explainer.method.mean, data.mean(axis=0), rtol=1e-6)  # every row, last batch too
    expected = hand_gradient(model, xs, 1) * (xs - data.mean(axis=0))
    np.testing.assert_allclose(explainer.run(xs, target=1), expected, rtol=1e-4, atol=1e-5)


def test_fit_is_refused_by_methods_that_learn_nothing():
    with pytest.raises(InvalidInputError, match="learns nothing from data"):
        deepexplain.Explainer("saliency", relu_net()).fit(np.zeros((2, 4), np.float32))


@pytest.mark.parametrize("batch_size", [None, 2])
def test_extra_row_inputs_reach_the_rules(batch_size):
    model = relu_net(2)
    xs = np.random.default_rng(3).normal(size=(5, 4)).astype(np.float32)
    result = Explainer(RowWeighted, model).run(xs, target=0, batch_size=batch_size)
    np.testing.assert_allclose(result, row_weights(xs) * hand_gradient(model, xs, 0), rtol=1e-5, atol=1e-6)


def test_extra_row_inputs_on_the_graph_runner_with_a_fixed_batch():
    """A TF1 input with a fixed batch of 4: three samples are padded (the padding rows feed zero weights)."""
    from deepexplain.tensorflow import DeepExplain

    model = relu_net(4)
    w1, b1, w2, b2 = model.get_weights()
    graph = tf.Graph()
    with graph.as_default():
        X = tf.compat.v1.placeholder(tf.float32, [4, 4])
        T = tf.matmul(tf.nn.relu(tf.matmul(X, w1) + b1), w2) + b2
        session = tf.compat.v1.Session(graph=graph)
        xs = np.random.default_rng(5).normal(size=(3, 4)).astype(np.float32)
        with DeepExplain(session=session) as de:
            result = de.explain(RowWeighted, T, X, xs, ys=np.eye(2, dtype=np.float32)[[1, 1, 1]])
    np.testing.assert_allclose(result, row_weights(xs) * hand_gradient(model, xs, 1), rtol=1e-5, atol=1e-6)


def test_results_need_not_be_shaped_like_xs():
    model = relu_net(6)
    xs = np.random.default_rng(7).normal(size=(5, 4)).astype(np.float32)
    result = Explainer(Summed, model).run(xs, target=1, batch_size=2)
    np.testing.assert_allclose(result, hand_gradient(model, xs, 1).sum(axis=1, keepdims=True), rtol=1e-5)
