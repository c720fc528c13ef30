"""Every gradient-family method against values computed by hand on toy networks."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import constant, simpler_model, tf1

from deepexplain.tensorflow import DeepExplain

XS = np.array([[-10.0, -5.0], [3.0, 1.0]])


def explain(session, method, T, X, xs, **kwargs):
    with DeepExplain(session=session) as de:
        return de.explain(method, T, X, xs, **kwargs)


# relu(relu(x1 - 1) - relu(x2)) at (3, 1): layer-1 pre-activations (2, 1), output 1; at (-10, -5) everything is 0.
@pytest.mark.parametrize(
    "method, kwargs, expected",
    [
        ("zero", {}, [[0, 0], [0, 0]]),
        ("saliency", {}, [[0, 0], [1, 1]]),
        ("grad*input", {}, [[0, 0], [3, -1]]),
        # the path alpha*(3, 1) switches the output on at alpha = 1/2: IG = x * (1/2) * (1, -1)
        ("intgrad", {}, [[0, 0], [1.5, -0.5]]),
        ("intgrad", {"steps": 10, "integration": "riemann_middle"}, [[0, 0], [1.5, -0.5]]),
        # left sum: alpha = 0.6 .. 0.9 are past the switch, 4 of 10 steps
        ("intgrad", {"steps": 10, "integration": "riemann_left"}, [[0, 0], [1.2, -0.4]]),
        # ratios y/(z + eps) = 2/(2 + eps), 1/(1 + eps) in layer 1 and 1/(1 + eps) in layer 2
        ("elrp", {"epsilon": 0.1}, [[0, 0], [3 * 2 / 2.1 / 1.1, -1 / 1.1**2]]),
        ("gradient", {}, [[0, 0], [1, -1]]),
        ("input_t_gradient", {}, [[0, 0], [3, -1]]),
        ("input", {}, XS),
        # guided: at (3, 1) the layer-1 signal (1, -1) loses its negative part; at (-10, -5) the output ReLU is off
        ("guided_backprop", {}, [[0, 0], [1, 0]]),
        # deconvnet ignores the forward pass: the signal (1, -1) -> relu -> (1, 0) for both samples
        ("deconvnet", {}, [[1, 0], [1, 0]]),
        ("integrated_gradients", {}, [[0, 0], [3 * 31 / 64, -31 / 64]]),  # 64-step left sum: alphas 33/64..63/64
        # reference 0: layer-1 pre-activations (-1, 0) -> multipliers 2/3 and 1; layer 2: 1
        ("deeplift", {}, [[0, 0], [2, -1]]),
        ("deepshap", {"baselines": np.zeros((3, 2))}, [[0, 0], [2, -1]]),
        # reference (3, 1): to (-10, -5) the output goes 1 -> 0, layer 1 (2, 1) -> (0, 0) with multipliers 2/13, 1/6
        ("deeplift", {"baseline": np.array([3.0, 1.0])}, [[-13 * 2 / 13, 6 * 1 / 6], [0, 0]]),
    ],
)
def test_toy_network_values(session, method, kwargs, expected):
    X, T = simpler_model()
    result = explain(session, method, T, X, XS, **kwargs)
    np.testing.assert_allclose(result, expected, atol=1e-6)


def test_random_baseline_is_seeded_gaussian_noise(session):
    X, T = simpler_model()
    first = explain(session, "random", T, X, np.zeros((500, 2)), stddev=2.0, seed=3)
    np.testing.assert_array_equal(first, explain(session, "random", T, X, np.zeros((500, 2)), stddev=2.0, seed=3))
    assert abs(first.std() - 2.0) < 0.15 and abs(first.mean()) < 0.2


def test_intgrad_with_baseline_equal_to_input_is_zero(session):
    X, T = simpler_model()
    result = explain(session, "intgrad", T, X, XS[1:], baseline=XS[1])
    np.testing.assert_allclose(result, [[0, 0]], atol=1e-6)


def test_elrp_tends_to_grad_times_input_on_relu_net(session):
    X, T = simpler_model()
    np.testing.assert_allclose(explain(session, "elrp", T, X, XS, epsilon=1e-9), [[0, 0], [3, -1]], atol=1e-7)


def linear_model():
    X = tf1.placeholder(tf.float32, [None, 3])
    return X, tf.matmul(X, constant([[2.0], [-1.0], [0.5]])) + 4.0


@pytest.mark.parametrize("times_input", [False, True])
def test_smoothgrad_of_linear_model_is_its_weights(session, times_input):
    X, T = linear_model()
    xs = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 5.0]])
    result = explain(session, "smoothgrad", T, X, xs, samples=7, noise_level=0.5, times_input=times_input, seed=1)
    expected = np.array([2.0, -1.0, 0.5]) * (xs if times_input else 1)
    np.testing.assert_allclose(result, np.broadcast_to(expected, xs.shape), rtol=1e-6)


def test_expected_gradients_of_linear_model_with_one_baseline(session):
    X, T = linear_model()
    xs, baseline = np.array([[1.0, 2.0, 3.0]]), np.array([[0.5, 0.5, 0.5]])
    result = explain(session, "expected_gradients", T, X, xs, baselines=baseline, samples=5, seed=0)
    np.testing.assert_allclose(result, [2.0, -1.0, 0.5] * (xs - baseline), rtol=1e-6)


def max_pool_model():
    X = tf1.placeholder(tf.float32, [None, 2, 2, 1])
    return X, tf.reshape(tf.nn.max_pool2d(X, 2, 2, "VALID"), [-1, 1])


@pytest.mark.parametrize(
    "x, reference, expected",
    [
        # max 3 (at b) vs reference max 2: the whole difference +1 goes to b, the argmax of x
        ([[1, 3], [2, 0]], [[2, 0], [0, 1]], [[0, 1], [0, 0]]),
        # max 2 (at c) vs reference max 4 (at a): the difference -2 goes to a, the argmax of the reference
        ([[1, 0], [2, 0]], [[4, 0], [0, 1]], [[-2, 0], [0, 0]]),
    ],
)
def test_deeplift_max_pool_cross_maximum_rule(session, x, reference, expected):
    X, T = max_pool_model()
    xs, baseline = np.array(x, float)[None, ..., None], np.array(reference, float)[..., None]
    result = explain(session, "deeplift", T, X, xs, baseline=baseline)
    np.testing.assert_allclose(result[0, ..., 0], expected, atol=1e-6)


def test_deeplift_sigmoid_secant_multiplier(session):
    """One sigmoid unit: DeepLIFT's multiplier is the secant (s(x) - s(r)) / (x - r)."""
    X = tf1.placeholder(tf.float32, [None, 1])
    T = tf.nn.sigmoid(3.0 * X)
    xs, reference = np.array([[0.7]]), np.array([-0.4])
    result = explain(session, "deeplift", T, X, xs, baseline=reference)

    def sigmoid(v):
        return 1 / (1 + np.exp(-v))

    np.testing.assert_allclose(result, sigmoid(2.1) - sigmoid(-1.2), rtol=1e-5)


def test_ys_selects_and_weights_outputs(session):
    X = tf1.placeholder(tf.float32, [None, 2])
    T = tf.stack([X[:, 0] * 2.0, X[:, 1] * 3.0], axis=1)
    xs = np.array([[1.0, 1.0], [2.0, 2.0]])
    result = explain(session, "grad*input", T, X, xs, ys=np.array([[1.0, 0.0], [0.5, 1.0]]))
    np.testing.assert_allclose(result, [[2.0, 0.0], [2.0, 6.0]])
    np.testing.assert_allclose(explain(session, "grad*input", T, X, xs), [[2.0, 3.0], [4.0, 6.0]])
