"""Mathematical identities on random networks: completeness, summation-to-delta, known equivalences."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import ACTIVATIONS, cnn, mlp, one_hot, tf1

from deepexplain.tensorflow import DeepExplain


def run(session, method, T, X, xs, ys=None, **kwargs):
    with DeepExplain(session=session) as de:
        explainer = de.get_explainer(method, T, X, **kwargs)
        return explainer.run(xs, ys), explainer


def test_elrp_tends_to_grad_times_input_on_relu_nets(session):
    rng = np.random.default_rng(0)
    X, T = mlp(rng, [6, 10, 8, 3])
    xs, ys = rng.normal(size=(5, 6)), one_hot([0, 1, 2, 0, 1], 3)
    elrp, _ = run(session, "elrp", T, X, xs, ys, epsilon=1e-9)
    gxi, _ = run(session, "grad*input", T, X, xs, ys)
    np.testing.assert_allclose(elrp, gxi, atol=1e-5)


def test_bias_free_relu_net_grad_times_input_sums_to_output_and_equals_deeplift(session):
    """ReLU nets without biases are positively homogeneous: sum(x * grad) == f(x), DeepLIFT(0) == grad*input."""
    rng = np.random.default_rng(1)
    X, T = mlp(rng, [6, 12, 7, 4], bias=False)
    xs, ys = rng.normal(size=(6, 6)), one_hot([0, 1, 2, 3, 0, 1], 4)
    gxi, _ = run(session, "grad*input", T, X, xs, ys)
    deeplift, _ = run(session, "deeplift", T, X, xs, ys)
    outputs = (session.run(T, {X: xs}) * ys).sum(axis=1)
    np.testing.assert_allclose(gxi.sum(axis=1), outputs, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(deeplift, gxi, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_deeplift_summation_to_delta_for_every_activation(session, activation):
    rng = np.random.default_rng(2)
    X, T = mlp(rng, [5, 9, 6, 3], activation=ACTIVATIONS[activation])
    xs, ys = rng.normal(size=(4, 5)) * 2, one_hot([0, 1, 2, 1], 3)
    baseline = rng.normal(size=5)
    attributions, explainer = run(session, "deeplift", T, X, xs, ys, baseline=baseline)
    f = session.run(T, {X: np.vstack([xs, baseline[None]])})
    expected = (f[:-1] * ys).sum(1) - (f[-1:] * ys).sum(1)
    np.testing.assert_allclose(attributions.sum(axis=1), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(explainer.completeness_error(xs, ys, attributions=attributions), 0, atol=1e-5)


@pytest.mark.parametrize("pool", ["max", "avg"])
@pytest.mark.parametrize("activation", ["Relu", "Tanh"])
def test_deeplift_summation_to_delta_on_cnn(session, pool, activation):
    rng = np.random.default_rng(3)
    X, T = cnn(rng, pool=pool, activation=ACTIVATIONS[activation])
    xs, ys = rng.normal(size=(4, 8, 8, 2)), one_hot([0, 1, 2, 0], 3)
    baseline = rng.normal(size=(8, 8, 2)) * 0.5
    attributions, explainer = run(session, "deeplift", T, X, xs, ys, baseline=baseline)
    error = explainer.completeness_error(xs, ys, attributions=attributions)
    np.testing.assert_allclose(error, 0, atol=1e-4)
    assert np.abs(attributions).sum() > 0


def test_intgrad_completeness_with_many_steps(session):
    rng = np.random.default_rng(4)
    X, T = mlp(rng, [5, 16, 8, 3], activation=tf.nn.softplus)
    xs, ys = rng.normal(size=(3, 5)), one_hot([0, 1, 2], 3)
    _, explainer = run(session, "intgrad", T, X, xs[:1], ys[:1], steps=64, integration="gausslegendre")
    np.testing.assert_allclose(explainer.completeness_error(xs, ys), 0, atol=1e-5)


@pytest.mark.parametrize("activation", ["Relu", "Tanh", "Sigmoid", "Softplus"])
def test_deeplift_equals_intgrad_with_one_nonlinear_layer(session, activation):
    """Linear -> f -> linear: along the straight path each pre-activation moves linearly, so IG's averaged
    derivative of each unit is the secant (f(z) - f(z0)) / (z - z0), DeepLIFT's Rescale multiplier."""
    rng = np.random.default_rng(5)
    X, T = mlp(rng, [4, 10, 3], activation=ACTIVATIONS[activation])
    xs, ys, baseline = rng.normal(size=(5, 4)), one_hot([0, 1, 2, 0, 1], 3), rng.normal(size=4)
    deeplift, _ = run(session, "deeplift", T, X, xs, ys, baseline=baseline)
    # Gauss-Legendre is exact to float precision for smooth integrands; ReLU's kink needs a fine Riemann sum
    smooth = activation != "Relu"
    quadrature = (
        {"steps": 64, "integration": "gausslegendre"} if smooth else {"steps": 2000, "integration": "riemann_middle"}
    )
    intgrad, _ = run(session, "intgrad", T, X, xs, ys, baseline=baseline, **quadrature)
    np.testing.assert_allclose(deeplift, intgrad, atol=1e-5 if smooth else 1e-3)


def test_deepshap_with_one_baseline_equals_deeplift(session):
    rng = np.random.default_rng(6)
    X, T = cnn(rng)
    xs, ys, baseline = rng.normal(size=(3, 8, 8, 2)), one_hot([2, 1, 0], 3), rng.normal(size=(8, 8, 2))
    deepshap, _ = run(session, "deepshap", T, X, xs, ys, baselines=baseline[None])
    deeplift, _ = run(session, "deeplift", T, X, xs, ys, baseline=baseline)
    np.testing.assert_allclose(deepshap, deeplift, rtol=1e-5, atol=1e-6)


def test_deepshap_is_the_mean_of_deeplift_over_baselines(session):
    rng = np.random.default_rng(7)
    X, T = mlp(rng, [4, 8, 3], activation=tf.nn.tanh)
    xs, ys, baselines = rng.normal(size=(3, 4)), one_hot([0, 1, 2], 3), rng.normal(size=(5, 4))
    deepshap, explainer = run(session, "deepshap", T, X, xs, ys, baselines=baselines)
    each = [run(session, "deeplift", T, X, xs, ys, baseline=b)[0] for b in baselines]
    np.testing.assert_allclose(deepshap, np.mean(each, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(explainer.completeness_error(xs, ys, attributions=deepshap), 0, atol=1e-5)


def test_expected_gradients_completeness_in_expectation(session):
    rng = np.random.default_rng(8)
    X, T = mlp(rng, [4, 8, 2], activation=tf.nn.tanh)
    xs, ys, baselines = rng.normal(size=(2, 4)), one_hot([0, 1], 2), rng.normal(size=(3, 4))
    _, explainer = run(session, "expected_gradients", T, X, xs[:1], ys[:1], baselines=baselines, samples=4000, seed=0)
    scale = np.abs(session.run(T, {X: xs})).max()
    np.testing.assert_allclose(explainer.completeness_error(xs, ys), 0, atol=0.03 * scale)


def test_multiple_inputs_deeplift_summation_to_delta(session):
    rng = np.random.default_rng(9)
    A = tf1.placeholder(tf.float32, [None, 3])
    B = tf1.placeholder(tf.float32, [None, 2, 2])
    joined = tf.concat([A, tf.reshape(B, [-1, 4])], axis=1)
    _, T = mlp(rng, [7, 6, 2], activation=tf.nn.sigmoid, X=joined)
    xs = [rng.normal(size=(4, 3)), rng.normal(size=(4, 2, 2))]
    baseline = [rng.normal(size=3), rng.normal(size=(2, 2))]
    attributions, explainer = run(session, "deeplift", T, [A, B], xs, baseline=baseline)
    assert isinstance(attributions, list) and [a.shape for a in attributions] == [(4, 3), (4, 2, 2)]
    np.testing.assert_allclose(explainer.completeness_error(xs, attributions=attributions), 0, atol=1e-5)


@pytest.mark.parametrize("method", ["deeplift", "deepshap"])
@pytest.mark.parametrize("pool", [(3, 1, "SAME"), (3, 2, "VALID"), (2, 2, "SAME")])
def test_deeplift_summation_to_delta_through_any_max_pool(session, method, pool):
    """Overlapping, strided and padded windows (the general routing) and tiling ones (the mask routing)."""
    ksize, stride, padding = pool
    rng = np.random.default_rng(10)
    X = tf1.placeholder(tf.float32, [None, 7, 7, 2])
    h = tf.nn.relu(tf.nn.conv2d(X, tf.constant(rng.normal(0, 0.5, (3, 3, 2, 3)), tf.float32), 1, "SAME"))
    h = tf.nn.max_pool2d(h, ksize, stride, padding)
    _, T = mlp(rng, [int(np.prod(h.shape[1:])), 4, 2], X=tf.reshape(h, [-1, int(np.prod(h.shape[1:]))]))
    xs, baselines = rng.normal(size=(3, 7, 7, 2)), rng.normal(size=(2, 7, 7, 2))
    kwargs = {"baselines": baselines} if method == "deepshap" else {"baseline": baselines[0]}
    attributions, explainer = run(session, method, T, X, xs, one_hot([0, 1, 0], 2), **kwargs)
    np.testing.assert_allclose(
        explainer.completeness_error(xs, one_hot([0, 1, 0], 2), attributions=attributions), 0, atol=1e-5
    )
