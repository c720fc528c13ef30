"""LRP z/epsilon rules against hand values and identities (conservation, LRP-0 == grad*input on ReLU nets)."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import cnn, constant, mlp, one_hot, simpler_model, tf1

from deepexplain.tensorflow import DeepExplain


def explain(session, method, T, X, xs, ys=None, **kwargs):
    with DeepExplain(session=session) as de:
        return de.explain(method, T, X, xs, ys=ys, **kwargs)


def test_toy_network_relevances_by_hand(session):
    """relu(relu(x1 - 1) - relu(x2)) at (3, 1): output 1 -> layer 1 (2, 1) gets (2*1/1, 1*(-1)/1) = (2, -1); the
    first MatMul with its bias (-1, 0) in the denominators: x1: 3*1*2/2 = 3, x2: 1*1*(-1)/1 = -1."""
    X, T = simpler_model()
    xs = np.array([[-10.0, -5.0], [3.0, 1.0]])
    np.testing.assert_allclose(explain(session, "lrp.z", T, X, xs), [[0, 0], [3, -1]], atol=1e-6)
    eps = 0.5
    # epsilon at the output layer: 1 * 1/(1 + eps); layer 1: R = (2, -1)/(1 + eps); inputs: 3*R1/(2+eps), R2/(1+eps)
    r1, r2 = 2 / (1 + eps), -1 / (1 + eps)
    expected = [[0, 0], [3 * r1 / (2 + eps), r2 / (1 + eps)]]
    np.testing.assert_allclose(explain(session, "lrp.epsilon", T, X, xs, epsilon=eps), expected, atol=1e-6)
    # without the bias in the denominator, layer 1's first unit has z = 3: x1 gets 3*2/3 = 2 (relevance is conserved)
    np.testing.assert_allclose(explain(session, "lrp.z", T, X, xs, bias=False), [[0, 0], [2, -1]], atol=1e-6)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_lrp_z_equals_grad_times_input_on_relu_networks_with_biases(session, pool):
    rng = np.random.default_rng(0)
    X, T = cnn(rng, pool=pool)
    xs, ys = rng.normal(size=(4, 8, 8, 2)), one_hot([0, 1, 2, 1], 3)
    lrp = explain(session, "lrp.z", T, X, xs, ys)
    gxi = explain(session, "grad*input", T, X, xs, ys)
    np.testing.assert_allclose(lrp, gxi, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("pool", ["max", "avg"])
def test_without_bias_relevance_is_conserved_exactly(session, pool):
    rng = np.random.default_rng(1)
    X, T = cnn(rng, pool=pool)
    xs, ys = rng.normal(size=(3, 8, 8, 2)), one_hot([2, 0, 1], 3)
    relevance = explain(session, "lrp.epsilon", T, X, xs, ys, epsilon=1e-9, bias=False)
    outputs = (session.run(T, {X: xs}) * ys).sum(axis=1)
    np.testing.assert_allclose(relevance.reshape(3, -1).sum(axis=1), outputs, rtol=1e-4, atol=1e-5)


def test_residual_add_splits_relevance_in_proportion(session):
    """y = a + b with a = 2x1, b = 3x2 (bias-free): R(x1) = a/(a+b) y, R(x2) = b/(a+b) y, i.e. exactly 2x1 and 3x2."""
    X = tf1.placeholder(tf.float32, [None, 2])
    a = tf.matmul(X, constant([[2.0], [0.0]]))
    b = tf.matmul(X, constant([[0.0], [3.0]]))
    T = tf.nn.relu(a + b)
    np.testing.assert_allclose(explain(session, "lrp.z", T, X, np.array([[1.0, 2.0]])), [[2.0, 6.0]], rtol=1e-6)


def test_lrp_epsilon_is_close_to_deepexplains_elrp_on_relu_nets(session):
    """Both stabilise ReLU-layer denominators by epsilon; they differ only at the linear output layer (O(eps))."""
    rng = np.random.default_rng(2)
    X, T = mlp(rng, [5, 8, 6, 3])
    xs, ys = rng.normal(size=(4, 5)), one_hot([0, 1, 2, 0], 3)
    lrp = explain(session, "lrp.epsilon", T, X, xs, ys, epsilon=1e-3)
    elrp = explain(session, "elrp", T, X, xs, ys, epsilon=1e-3)
    np.testing.assert_allclose(lrp, elrp, rtol=5e-2, atol=5e-3)
    assert np.abs(lrp).max() > 0.05


def test_negative_epsilon_is_refused(session):
    X, T = simpler_model()
    with DeepExplain(session=session) as de, pytest.raises(ValueError, match="epsilon of lrp.epsilon"):
        de.get_explainer("lrp.epsilon", T, X, epsilon=-1)
