"""Connection weights (Olden et al. 2004; innsight's ConnectionWeights) against hand values and the gradient of the
same network with every activation replaced by the identity."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import cnn, constant, one_hot, tf1

from deepexplain.errors import InvalidInputError
from deepexplain.tensorflow import DeepExplain

W1 = np.array([[1.0, -2.0], [0.0, 3.0], [2.0, 1.0]])
W2 = np.array([[1.0, 0.0], [2.0, -1.0]])
# W1 @ W2 = [[1 - 4, 0 + 2], [0 + 6, 0 - 3], [2 + 2, 0 - 1]]: column k is the importance of each input for output k
PRODUCT = np.array([[-3.0, 2.0], [6.0, -3.0], [4.0, -1.0]])


def explain(session, T, X, xs, ys=None, method="connection_weights", **kwargs):
    with DeepExplain(session=session) as de:
        return de.explain(method, T, X, xs, ys=ys, **kwargs)


def two_layer_mlp(activation):
    X = tf1.placeholder(tf.float32, [None, 3])
    hidden = activation(tf.matmul(X, constant(W1)) + constant([0.5, -1.0]))
    return X, tf.matmul(hidden, constant(W2)) + constant([0.3, 0.2])


@pytest.mark.parametrize("activation", [tf.nn.relu, tf.nn.sigmoid, tf.nn.tanh])
def test_two_layer_mlp_is_the_product_of_the_weight_matrices(session, activation):
    X, T = two_layer_mlp(activation)
    xs = np.random.default_rng(0).normal(size=(4, 3)) * 3
    np.testing.assert_allclose(explain(session, T, X, xs, one_hot([0, 0, 1, 1], 2)), PRODUCT.T[[0, 0, 1, 1]])
    np.testing.assert_allclose(explain(session, T, X, xs), np.tile(PRODUCT.sum(axis=1), (4, 1)))  # both outputs


def test_times_input_multiplies_by_the_input(session):
    X, T = two_layer_mlp(tf.nn.relu)
    xs = np.random.default_rng(1).normal(size=(3, 3))
    ys = one_hot([0, 1, 0], 2)
    result = explain(session, T, X, xs, ys, times_input=True)
    np.testing.assert_allclose(result, xs * PRODUCT.T[[0, 1, 0]], rtol=1e-6)


def test_a_softmax_output_is_ignored_like_any_activation(session):
    X, T = two_layer_mlp(tf.nn.relu)
    xs = np.random.default_rng(2).normal(size=(2, 3))
    np.testing.assert_allclose(explain(session, tf.nn.softmax(T), X, xs, one_hot([1, 0], 2)), PRODUCT.T[[1, 0]])


def gradient_of_linearised(session, build, xs, ys):
    """The plain gradient of ``build(identity)``: the network with every activation replaced by the identity."""
    X, T = build(lambda z: z)
    return explain(session, T, X, xs, ys, method="gradient")


@pytest.mark.parametrize("activation", [tf.nn.relu, tf.nn.elu])
def test_cnn_with_average_pooling_equals_gradient_of_the_linearised_network(session, activation):
    def build(act):
        return cnn(np.random.default_rng(3), pool="avg", activation=act)  # same seed: same weights

    rng = np.random.default_rng(4)
    xs, ys = rng.normal(size=(3, 8, 8, 2)), one_hot([0, 1, 2], 3)
    X, T = build(activation)
    result = explain(session, T, X, xs, ys)
    np.testing.assert_allclose(result, gradient_of_linearised(session, build, xs, ys), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(explain(session, T, X, xs[::-1], ys), result, rtol=1e-6)  # independent of the input


@pytest.mark.parametrize("window, padding", [(2, "VALID"), (3, "SAME")])
def test_max_pooling_passes_each_window_to_its_first_element(session, window, padding):
    """innsight takes the max-pool gradient at a constant input: the first element of each window. With stride 2 on
    8x8 (windows starting at 0, 2, 4, 6 for both paddings) that is the linear map ``h[:, ::2, ::2]``."""
    rng = np.random.default_rng(5)
    filters1, filters2 = rng.normal(size=(3, 3, 2, 4)), rng.normal(size=(2, 2, 4, 3))
    dense = rng.normal(size=(27, 2))

    def build(activation, pool):
        X = tf1.placeholder(tf.float32, [None, 8, 8, 2])
        h = activation(tf.nn.conv2d(X, constant(filters1), 1, "SAME") + 0.1)
        h = pool(h)
        h = activation(tf.nn.conv2d(h, constant(filters2), 1, "VALID") - 0.2)
        return X, tf.matmul(tf.reshape(h, [-1, 27]), constant(dense))

    xs, ys = rng.normal(size=(2, 8, 8, 2)), one_hot([0, 1], 2)
    X, T = build(tf.nn.relu, lambda h: tf.nn.max_pool2d(h, window, 2, padding))
    result = explain(session, T, X, xs, ys)
    X_lin, T_lin = build(lambda z: z, lambda h: h[:, ::2, ::2, :])
    np.testing.assert_allclose(result, explain(session, T_lin, X_lin, xs, ys, method="gradient"), rtol=1e-5, atol=1e-6)


def test_bad_times_input(session):
    X, T = two_layer_mlp(tf.nn.relu)
    with pytest.raises(InvalidInputError, match="times_input of connection_weights must be True or False; got 'yes'"):
        explain(session, T, X, np.ones((1, 3)), times_input="yes")


def test_keras_model_through_the_eager_path():
    keras = pytest.importorskip("keras")
    import deepexplain

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(5, activation="relu"),
            keras.layers.Dense(3, activation="tanh"),
            keras.layers.Dense(2),
        ]
    )
    kernels = [layer.get_weights()[0] for layer in model.layers]
    xs = np.random.default_rng(6).normal(size=(3, 4)).astype(np.float32)
    result = deepexplain.explain("connection_weights", model, xs, target=1)
    expected = (kernels[0] @ kernels[1] @ kernels[2])[:, 1]
    np.testing.assert_allclose(result, np.tile(expected, (3, 1)), rtol=1e-5, atol=1e-6)
