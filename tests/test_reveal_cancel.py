"""DeepLIFT RevealCancel (Shrikumar et al. 2017, Sec. 3.5.3): hand values where it differs from Rescale, exact
summation-to-delta on random networks, agreement with Rescale where every unit's contributions have one sign."""

import warnings

import numpy as np
import pytest
import tensorflow as tf
from conftest import cnn, constant, mlp, one_hot, simpler_model, tf1

from deepexplain.errors import InvalidInputError
from deepexplain.tensorflow import DeepExplain

ACTIVATIONS = {"Relu": tf.nn.relu, "Sigmoid": tf.nn.sigmoid, "Tanh": tf.nn.tanh, "Elu": tf.nn.elu}


def explain(session, T, X, xs, ys=None, **kwargs):
    with DeepExplain(session=session) as de:
        return de.explain("deeplift", T, X, xs, ys=ys, **kwargs)


def summation_error(session, T, X, xs, ys, baseline):
    """RevealCancel attributions and, per sample, sum(attributions) - (f(x) - f(baseline))."""
    with DeepExplain(session=session) as de:
        explainer = de.get_explainer("deeplift", T, X, baseline=baseline, rule="reveal_cancel")
        attributions = explainer.run(xs, ys)
        return attributions, explainer.completeness_error(xs, ys, attributions=attributions)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_min_network_of_the_paper_fig3(session):
    """o = i1 - relu(i1 - i2) = min(i1, i2), reference (0, 0). At (3, 1): h = relu(2), o = 1.

    Rescale: the ReLU multiplier is 2/2 = 1, so i1 gets 3 - 1*3 = 0 and i2 gets 1: all of min(3, 1) goes to i2.
    RevealCancel: dh+ = 3 (from i1), dh- = -1 (from i2);
    dy+ = 1/2 (relu(3) - relu(0)) + 1/2 (relu(2) - relu(-1)) = 2.5, m+ = 2.5/3;
    dy- = 1/2 (relu(-1) - relu(0)) + 1/2 (relu(2) - relu(3)) = -0.5, m- = 1/2;
    i1: 3 - (2.5/3) * 3 = 0.5, i2: -1 * (1/2) * (-1) = 0.5 (the paper's point: both inputs matter equally).
    """
    X = tf1.placeholder(tf.float32, [None, 2])
    h = tf.nn.relu(tf.matmul(X, constant([[1.0], [-1.0]])))
    T = tf.matmul(tf.concat([X, h], axis=1), constant([[1.0], [0.0], [-1.0]]))
    xs = np.array([[3.0, 1.0], [1.0, 3.0]])
    np.testing.assert_allclose(explain(session, T, X, xs), [[0, 1], [1, 0]], atol=1e-6)
    np.testing.assert_allclose(explain(session, T, X, xs, rule="reveal_cancel"), [[0.5, 0.5], [0.5, 0.5]], atol=1e-6)


def test_cancelling_inputs_of_the_deepexplain_toy_net(session):
    """relu(relu(x1 - 1) - relu(x2)) at (2, 1), reference (0, 0): layer 1 goes (-1, 0) -> (1, 1), one input per
    unit, multipliers 1/2 and 1 under both rules. The output unit's input is 1 - 1 = 0 = its reference: Rescale
    gives (0, 0). RevealCancel: dz+ = 1, dz- = -1, dy+ = 1/2 (relu(1) - 0) + 1/2 (relu(0) - relu(-1)) = 1/2,
    dy- = -1/2, m+ = m- = 1/2: x1 gets 2 * (1/2) * (1/2) = 1/2, x2 gets 1 * 1 * (-1) * (1/2) = -1/2."""
    X, T = simpler_model()
    xs = np.array([[2.0, 1.0]])
    np.testing.assert_allclose(explain(session, T, X, xs), [[0, 0]], atol=1e-6)
    np.testing.assert_allclose(explain(session, T, X, xs, rule="reveal_cancel"), [[0.5, -0.5]], atol=1e-6)


def test_sigmoid_unit_hand_values(session):
    """sigmoid(2 x1 - x2) at (1, 1), reference (0, 0): dz+ = 2, dz- = -1 and the attributions are dy+ and dy-."""
    X = tf1.placeholder(tf.float32, [None, 2])
    T = tf.nn.sigmoid(tf.matmul(X, constant([[2.0], [-1.0]])))
    dy_pos = 0.5 * (sigmoid(2) - sigmoid(0)) + 0.5 * (sigmoid(1) - sigmoid(-1))
    dy_neg = 0.5 * (sigmoid(-1) - sigmoid(0)) + 0.5 * (sigmoid(1) - sigmoid(2))
    result = explain(session, T, X, np.array([[1.0, 1.0]]), rule="reveal_cancel")
    np.testing.assert_allclose(result, [[dy_pos, dy_neg]], rtol=1e-5)
    rescale = explain(session, T, X, np.array([[1.0, 1.0]]))  # (sigmoid(1) - sigmoid(0)) split 2 : -1
    np.testing.assert_allclose(rescale, np.array([[2, -1]]) * (sigmoid(1) - sigmoid(0)), rtol=1e-5)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_summation_to_delta_on_mlp(session, activation):
    rng = np.random.default_rng(0)
    X, T = mlp(rng, [5, 9, 7, 3], activation=ACTIVATIONS[activation])
    xs, ys, baseline = rng.normal(size=(4, 5)) * 2, one_hot([0, 1, 2, 1], 3), rng.normal(size=5)
    attributions, error = summation_error(session, T, X, xs, ys, baseline)
    np.testing.assert_allclose(error, 0, atol=1e-5)
    rescale = explain(session, T, X, xs, ys, baseline=baseline)
    assert np.abs(attributions - rescale).max() > 1e-2  # the rules do differ on this network


@pytest.mark.parametrize("pool, activation", [("max", "Relu"), ("avg", "Tanh")])
def test_summation_to_delta_on_cnn(session, pool, activation):
    rng = np.random.default_rng(1)
    X, T = cnn(rng, pool=pool, activation=ACTIVATIONS[activation])
    xs, ys = rng.normal(size=(3, 8, 8, 2)), one_hot([0, 1, 2], 3)
    baseline = rng.normal(size=(8, 8, 2)) * 0.5
    _, error = summation_error(session, T, X, xs, ys, baseline)
    np.testing.assert_allclose(error, 0, atol=1e-4)


def test_summation_to_delta_when_a_linear_output_has_other_consumers(session):
    """z = x W1 + b feeds a ReLU, a tanh and (linearly) the output: each share reaches W1 by its own rule."""
    rng = np.random.default_rng(2)
    X = tf1.placeholder(tf.float32, [None, 4])
    z = tf.matmul(X, constant(rng.normal(size=(4, 6)))) + constant(rng.normal(size=6))
    hidden = tf.concat([tf.nn.relu(z), tf.nn.tanh(z), z], axis=1)
    T = tf.matmul(hidden, constant(rng.normal(size=(18, 2))))
    xs, ys, baseline = rng.normal(size=(5, 4)), one_hot([0, 1, 0, 1, 1], 2), rng.normal(size=4)
    _, error = summation_error(session, T, X, xs, ys, baseline)
    np.testing.assert_allclose(error, 0, atol=1e-5)


def test_results_do_not_depend_on_batch_size_or_on_compiling_twice(session):
    rng = np.random.default_rng(3)
    X, T = cnn(rng, activation=tf.nn.relu)
    xs, ys, baseline = rng.normal(size=(5, 8, 8, 2)), one_hot([0, 1, 2, 0, 1], 3), rng.normal(size=(8, 8, 2))
    with DeepExplain(session=session) as de:
        explainer = de.get_explainer("deeplift", T, X, baseline=baseline, rule="reveal_cancel")
        whole = explainer.run(xs, ys)
        np.testing.assert_allclose(explainer.run(xs, ys, batch_size=2), whole, rtol=1e-5, atol=1e-6)
        again = de.explain("deeplift", T, X, xs, ys=ys, baseline=baseline, rule="reveal_cancel", batch_size=3)
    np.testing.assert_allclose(again, whole, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["Relu", "Sigmoid"])
def test_equals_rescale_when_every_unit_has_one_input(session, activation):
    """x (one feature) -> f -> linear: each hidden unit's difference is a single contribution, dz+ or dz-."""
    rng = np.random.default_rng(4)
    X, T = mlp(rng, [1, 8, 3], activation=ACTIVATIONS[activation])
    xs, ys, baseline = rng.normal(size=(6, 1)) * 2, one_hot([0, 1, 2, 0, 1, 2], 3), np.array([0.3])
    reveal = explain(session, T, X, xs, ys, baseline=baseline, rule="reveal_cancel")
    np.testing.assert_allclose(reveal, explain(session, T, X, xs, ys, baseline=baseline), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("activation", ["Tanh", "Elu"])
def test_equals_rescale_when_all_contributions_are_positive(session, activation):
    """Non-negative weights, inputs above the baseline, increasing activations: every w * da >= 0, so dz- = 0 and
    m+ = dy / dz is the Rescale multiplier."""
    rng = np.random.default_rng(5)
    X = tf1.placeholder(tf.float32, [None, 4])
    h = X
    for fan_in, fan_out in [(4, 6), (6, 5)]:
        h = ACTIVATIONS[activation](tf.matmul(h, constant(np.abs(rng.normal(size=(fan_in, fan_out))))) - 0.5)
    T = tf.matmul(h, constant(rng.normal(size=(5, 2))))
    baseline = rng.normal(size=4)
    xs, ys = baseline + np.abs(rng.normal(size=(4, 4))), one_hot([0, 1, 0, 1], 2)
    reveal = explain(session, T, X, xs, ys, baseline=baseline, rule="reveal_cancel")
    np.testing.assert_allclose(reveal, explain(session, T, X, xs, ys, baseline=baseline), rtol=1e-4, atol=1e-6)


def test_unsupported_input_of_a_nonlinearity_falls_back_to_rescale_with_a_warning(session):
    """relu(2 * (x W1)): the ReLU's input is a scaling, not a weighted linear op (plus bias)."""
    rng = np.random.default_rng(6)
    X = tf1.placeholder(tf.float32, [None, 3])
    h = tf.nn.relu(2.0 * tf.matmul(X, constant(rng.normal(size=(3, 4)))))
    T = tf.matmul(h, constant(rng.normal(size=(4, 2))))
    xs, ys, baseline = rng.normal(size=(3, 3)), one_hot([0, 1, 0], 2), rng.normal(size=3)
    with pytest.warns(UserWarning, match="Rescale rule is used"):
        reveal = explain(session, T, X, xs, ys, baseline=baseline, rule="reveal_cancel")
    np.testing.assert_allclose(reveal, explain(session, T, X, xs, ys, baseline=baseline), rtol=1e-5, atol=1e-6)


def test_no_warning_for_supported_networks(session):
    X, T = cnn(np.random.default_rng(7))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        explain(session, T, X, np.ones((1, 8, 8, 2)), rule="reveal_cancel")


@pytest.mark.parametrize("rule", ["revealcancel", "Rescale", None, 1])
def test_bad_rule_names_the_argument_and_the_choices(session, rule):
    X, T = simpler_model()
    with pytest.raises(InvalidInputError) as error:
        explain(session, T, X, np.ones((1, 2)), rule=rule)
    message = str(error.value)
    assert "rule" in message and "'rescale'" in message and "'reveal_cancel'" in message and repr(rule) in message


def test_keras_model_through_the_eager_path():
    """A Keras 3 model traced into a graph: Dense/Conv2D layers (MatMul/Conv2D + bias + activation) are recognised
    (no fallback warning) and summation-to-delta holds."""
    keras = pytest.importorskip("keras")
    import deepexplain

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(3, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(5, activation="tanh"),
            keras.layers.Dense(2),
        ]
    )
    rng = np.random.default_rng(8)
    xs, baseline = rng.normal(size=(3, 6, 6, 1)).astype(np.float32), rng.normal(size=(6, 6, 1)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = deepexplain.explain("deeplift", model, xs, target=1, baseline=baseline, rule="reveal_cancel")
    outputs = model.predict(np.concatenate([xs, baseline[None]]), verbose=0)[:, 1]
    np.testing.assert_allclose(result.reshape(3, -1).sum(axis=1), outputs[:-1] - outputs[-1], atol=1e-5)
