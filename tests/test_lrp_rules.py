"""Every LRP rule against a literal numpy implementation of its definition (per-connection contributions z_ij),
conservation on bias-free networks through pooling, residual sums and batch norm, composites, and bad input."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import constant, one_hot, tf1

from deepexplain.errors import InvalidInputError, UnsupportedOpError
from deepexplain.tensorflow import DeepExplain
from deepexplain.tensorflow.rules.lrp import AlphaBeta, Bounded, Epsilon, Flat, Gamma

SIZES = [5, 7, 6, 3]


# ----------------------------------------------------------------------------------------------------------------
# Literal definitions, one dense layer at a time: x (n_in,), W (n_in, n_out), b (n_out,), R (n_out,) -> (n_in,)
# ----------------------------------------------------------------------------------------------------------------


def share(contributions, denominator, relevance):
    """sum_j contributions_ij / denominator_j * R_j, 0 where the denominator is 0."""
    ratio = np.divide(relevance, denominator, out=np.zeros_like(relevance), where=denominator != 0)
    return contributions @ ratio


def epsilon_rule(x, w, b, r, eps=0.0, bias=True):
    z = x @ w + (b if bias else 0)
    return share(x[:, None] * w, z + eps * np.where(z >= 0, 1, -1), r)


def alpha_beta_rule(x, w, b, r, alpha=2.0, beta=1.0, bias=True):
    zij = x[:, None] * w
    pos, neg = np.maximum(zij, 0), np.minimum(zij, 0)
    bpos, bneg = (np.maximum(b, 0), np.minimum(b, 0)) if bias else (0, 0)
    return alpha * share(pos, pos.sum(0) + bpos, r) - beta * share(neg, neg.sum(0) + bneg, r)


def gamma_rule(x, w, b, r, gamma=0.25, bias=True):
    zij = x[:, None] * w
    b = b if bias else np.zeros_like(b)
    z = zij.sum(0) + b
    up, down = zij + gamma * np.maximum(zij, 0), zij + gamma * np.minimum(zij, 0)
    r_up, r_down = np.where(z > 0, r, 0), np.where(z < 0, r, 0)
    return share(up, up.sum(0) + b + gamma * np.maximum(b, 0), r_up) + share(
        down, down.sum(0) + b + gamma * np.minimum(b, 0), r_down
    )


def z_plus_fast_rule(x, w, b, r):
    zij = x[:, None] * np.maximum(w, 0)
    return share(zij, zij.sum(0), r)


def w_square_rule(x, w, b, r):
    return share(w**2, (w**2).sum(0), r)


def flat_rule(x, w, b, r):
    return share(np.ones_like(w), np.full(w.shape[1], w.shape[0]), r)


def bounded_rule(x, w, b, r, low=-1.0, high=1.0):
    zij = x[:, None] * w - low * np.maximum(w, 0) - high * np.minimum(w, 0)
    return share(zij, zij.sum(0), r)


def numpy_lrp(weights, biases, x, target, layer_rule, relu_output=False):
    """LRP of a ReLU MLP (last layer linear) for one sample, ``layer_rule(index, x, W, b, R)`` per layer."""
    activations = [x]
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        z = activations[-1] @ w + b
        activations.append(np.maximum(z, 0) if i < len(weights) - 1 else z)
    output = activations[-1][target]
    relevance = np.zeros_like(activations[-1])
    relevance[target] = max(output, 0) if relu_output else output
    for i in reversed(range(len(weights))):
        relevance = layer_rule(i, activations[i], weights[i], biases[i], relevance)
    return relevance


def random_mlp(rng, sizes=SIZES):
    weights = [rng.normal(0, 1 / np.sqrt(m), (m, n)) for m, n in zip(sizes[:-1], sizes[1:], strict=True)]
    biases = [rng.normal(0, 0.3, n) for n in sizes[1:]]
    return weights, biases


def tf_mlp(weights, biases):
    X = tf1.placeholder(tf.float64, [None, weights[0].shape[0]])
    h = X
    for i, (w, b) in enumerate(zip(weights, biases, strict=True)):
        h = tf.matmul(h, tf.constant(w)) + tf.constant(b)
        if i < len(weights) - 1:
            h = tf.nn.relu(h)
    return X, h


def explain(session, method, T, X, xs, ys=None, **kwargs):
    with DeepExplain(session=session) as de:
        return de.explain(method, T, X, xs, ys=ys, **kwargs)


def every_layer(rule, **kwargs):
    return lambda i, x, w, b, r: rule(x, w, b, r, **kwargs)


CASES = {
    "lrp.z": ({}, every_layer(epsilon_rule)),
    "lrp.epsilon": ({"epsilon": 0.05}, every_layer(epsilon_rule, eps=0.05)),
    "lrp.alpha_beta": ({"alpha": 3}, every_layer(alpha_beta_rule, alpha=3.0, beta=2.0)),
    "lrp.alpha_2_beta_1": ({}, every_layer(alpha_beta_rule)),
    "lrp.alpha_1_beta_0": ({}, every_layer(alpha_beta_rule, alpha=1.0, beta=0.0)),
    "lrp.z_plus": ({}, every_layer(alpha_beta_rule, alpha=1.0, beta=0.0, bias=False)),
    "lrp.z_plus_fast": ({}, every_layer(z_plus_fast_rule)),
    "lrp.gamma": ({"gamma": 0.5}, every_layer(gamma_rule, gamma=0.5)),
    "lrp.w_square": ({}, every_layer(w_square_rule)),
    "lrp.flat": ({}, every_layer(flat_rule)),
    "lrp.bounded": ({"low": -2.0, "high": 3.0}, every_layer(bounded_rule, low=-2.0, high=3.0)),
    # dense-only network: the presets use the epsilon rule everywhere (flat at the first layer)
    "lrp.sequential_preset_a": ({}, every_layer(epsilon_rule, eps=0.1)),
    "lrp.sequential_preset_b_flat": (
        {},
        lambda i, x, w, b, r: flat_rule(x, w, b, r) if i == 0 else epsilon_rule(x, w, b, r, eps=0.1),
    ),
    # zennit's box rule is for a first convolution: a dense first layer gets the epsilon rule
    "lrp.epsilon_gamma_box": ({"low": -3.0, "high": 3.0, "epsilon": 0.01}, every_layer(epsilon_rule, eps=0.01)),
    "lrp.composite": (
        {"rules": {"dense": Gamma(0.5)}, "first_layer": Bounded(-3.0, 3.0)},
        lambda i, x, w, b, r: bounded_rule(x, w, b, r, -3.0, 3.0) if i == 0 else gamma_rule(x, w, b, r, 0.5),
    ),
    "deep_taylor": ({}, every_layer(alpha_beta_rule, alpha=1.0, beta=0.0, bias=False)),
    "deep_taylor.bounded": (
        {"low": -3, "high": 3},
        lambda i, x, w, b, r: (
            bounded_rule(x, w, b, r, -3.0, 3.0) if i == 0 else alpha_beta_rule(x, w, b, r, 1.0, 0.0, False)
        ),
    ),
}


@pytest.mark.parametrize("inputs", ["signed", "nonnegative"])
@pytest.mark.parametrize("method", sorted(CASES))
def test_rule_matches_its_literal_definition_on_an_mlp_with_biases(session, method, inputs):
    """Signed inputs exercise the x+/x- terms of the first layer; a non-negative batch takes the branch without
    them (chosen at run time)."""
    kwargs, layer_rule = CASES[method]
    rng = np.random.default_rng(sorted(CASES).index(method))
    weights, biases = random_mlp(rng)
    X, T = tf_mlp(weights, biases)
    xs = rng.normal(size=(4, SIZES[0]))
    if inputs == "nonnegative":
        xs = np.abs(xs)
    targets = [0, 1, 2, 1]
    result = explain(session, method, T, X, xs, one_hot(targets, 3).astype(np.float64), **kwargs)
    relu_output = method.startswith("deep_taylor")
    expected = [numpy_lrp(weights, biases, x, t, layer_rule, relu_output) for x, t in zip(xs, targets, strict=True)]
    np.testing.assert_allclose(result, expected, rtol=1e-7, atol=1e-9)
    assert np.abs(result).max() > 1e-3


def test_composite_picks_rules_by_group_name_pattern_and_first_layer(session):
    rng = np.random.default_rng(7)
    weights, biases = random_mlp(rng, [4, 6, 5, 6, 2])
    X, T = tf_mlp(weights, biases)
    xs = rng.normal(size=(3, 4))
    ys = one_hot([0, 1, 1], 2).astype(np.float64)
    names = sorted(op.name for op in session.graph.get_operations() if op.type == "MatMul")
    rules = {names[2]: AlphaBeta(1, 0), "dense": Gamma(0.1)}  # first key wins for the third layer

    def layer_rule(i, x, w, b, r):
        if i == 0:
            return flat_rule(x, w, b, r)
        if i == 2:
            return alpha_beta_rule(x, w, b, r, 1.0, 0.0)
        return gamma_rule(x, w, b, r, 0.1)

    result = explain(session, "lrp.composite", T, X, xs, ys, rules=rules, first_layer=Flat())
    expected = [numpy_lrp(weights, biases, x, t, layer_rule) for x, t in zip(xs, [0, 1, 1], strict=True)]
    np.testing.assert_allclose(result, expected, rtol=1e-7, atol=1e-9)
    # rules by name; ops no key matches get the default
    result = explain(session, "lrp.composite", T, X, xs, ys, rules={"Conv2D": "flat"}, default="epsilon")
    epsilon_everywhere = every_layer(epsilon_rule, eps=1e-7)
    expected = [numpy_lrp(weights, biases, x, t, epsilon_everywhere) for x, t in zip(xs, [0, 1, 1], strict=True)]
    np.testing.assert_allclose(result, expected, rtol=1e-7, atol=1e-9)


# ----------------------------------------------------------------------------------------------------------------
# Conservation on bias-free networks: conv, max/avg pooling, residual sum, fused batch norm, global average pooling
# ----------------------------------------------------------------------------------------------------------------


def bias_free_resnet(rng, pool):
    X = tf1.placeholder(tf.float32, [None, 8, 8, 2])
    h = tf.nn.relu(tf.nn.conv2d(X, constant(rng.normal(0, 0.5, (3, 3, 2, 6))), 1, "SAME"))
    pool_fn = tf.nn.max_pool2d if pool == "max" else tf.nn.avg_pool2d
    h = pool_fn(h, 2, 2, "VALID")
    branch = tf.nn.conv2d(h, constant(rng.normal(0, 0.5, (3, 3, 6, 6))), 1, "SAME")
    # batch norm with a non-zero shift (mean, beta): bias-free rules must still conserve through it
    branch, _, _ = tf1.nn.fused_batch_norm(
        branch,
        constant(rng.uniform(0.5, 1.5, 6)),
        constant(rng.normal(0, 0.2, 6)),
        mean=constant(rng.normal(0, 0.2, 6)),
        variance=constant(rng.uniform(0.5, 1.5, 6)),
        is_training=False,
    )
    h = tf.nn.relu(h + tf.nn.relu(branch))  # residual sum of two paths
    h = tf.reduce_mean(h, axis=[1, 2])
    return X, tf.matmul(h, constant(rng.normal(0, 0.5, (6, 3))))


BIAS_FREE_RULES = [
    ("lrp.z_plus", {}),
    ("lrp.alpha_1_beta_0", {"bias": False}),
    ("lrp.epsilon", {"epsilon": 0.0, "bias": False}),
    ("lrp.w_square", {}),
    ("lrp.flat", {}),
    ("lrp.z_plus", {"maxpool": "avg"}),
]


@pytest.mark.parametrize(
    "pool, method, kwargs",
    # w**2 and flat also spread relevance to all-zero pooling windows, whose average-pool z-rule share is 0
    [("max", m, k) for m, k in BIAS_FREE_RULES]
    + [("avg", m, k) for m, k in BIAS_FREE_RULES if m not in ("lrp.w_square", "lrp.flat")],
)
def test_bias_free_rules_conserve_relevance_through_pooling_residual_and_batch_norm(session, pool, method, kwargs):
    rng = np.random.default_rng(3)
    X, T = bias_free_resnet(rng, pool)
    xs = np.abs(rng.normal(size=(3, 8, 8, 2)))
    ys = one_hot([0, 1, 2], 3)
    relevance = explain(session, method, T, X, xs, ys, **kwargs)
    outputs = (session.run(T, {X: xs}) * ys).sum(axis=1)
    np.testing.assert_allclose(relevance.reshape(3, -1).sum(axis=1), outputs, rtol=1e-4, atol=1e-5)


def test_max_pool_avg_mode_spreads_relevance_in_proportion(session):
    """maxpool='avg': one 2x2 window with inputs (1, 2, 3, 4) and output relevance 4 gives (0.4, 0.8, 1.2, 1.6)."""
    X = tf1.placeholder(tf.float32, [None, 2, 2, 1])
    T = tf.reshape(tf.nn.max_pool2d(X, 2, 2, "VALID"), [-1, 1])
    xs = np.array([1.0, 2.0, 3.0, 4.0]).reshape(1, 2, 2, 1)
    np.testing.assert_allclose(explain(session, "lrp.z", T, X, xs, maxpool="avg").ravel(), [0.4, 0.8, 1.2, 1.6])
    np.testing.assert_allclose(explain(session, "lrp.z", T, X, xs).ravel(), [0, 0, 0, 4])


def test_conv_rules_agree_with_the_dense_definition_on_a_1x1_image(session):
    """A 1x1 convolution of a 1x1 image is a dense layer: conv and MatMul paths of every rule give the same."""
    rng = np.random.default_rng(11)
    w, b = rng.normal(size=(4, 3)), rng.normal(0, 0.3, 3)
    X = tf1.placeholder(tf.float64, [None, 1, 1, 4])
    T = tf.reshape(tf.nn.conv2d(X, tf.constant(w.reshape(1, 1, 4, 3)), 1, "VALID") + tf.constant(b), [-1, 3])
    xs = rng.normal(size=(2, 1, 1, 4))
    ys = one_hot([0, 2], 3).astype(np.float64)
    for method, kwargs, rule in [
        ("lrp.alpha_2_beta_1", {}, alpha_beta_rule),
        ("lrp.gamma", {}, gamma_rule),
        ("lrp.bounded", {}, bounded_rule),
        ("lrp.flat", {}, flat_rule),
    ]:
        result = explain(session, method, T, X, xs, ys, **kwargs).reshape(2, 4)
        outputs = xs.reshape(2, 4) @ w + b
        expected = [rule(x, w, b, o * y) for x, o, y in zip(xs.reshape(2, 4), outputs, ys, strict=True)]
        np.testing.assert_allclose(result, expected, rtol=1e-7, atol=1e-9, err_msg=method)


# ----------------------------------------------------------------------------------------------------------------
# Strictness and bad input
# ----------------------------------------------------------------------------------------------------------------


def test_uncovered_op_is_an_error_naming_it_and_a_warning_with_strict_false(session):
    X = tf1.placeholder(tf.float32, [None, 3])
    T = tf.nn.softmax(tf.matmul(X, constant(np.eye(3))))
    ops_before = len(session.graph.get_operations())
    with DeepExplain(session=session) as de:
        with pytest.raises(UnsupportedOpError, match=r"Softmax.*logits") as info:
            de.get_explainer("lrp.epsilon", T, X)
        assert "strict=False" not in str(info.value)  # the fix is to explain the logits, not to ignore the softmax
        assert len(session.graph.get_operations()) == ops_before  # nothing added before the error
        with pytest.warns(UserWarning, match="Softmax"):
            result = de.explain("lrp.z", T, X, np.ones((1, 3)), strict=False)
    assert np.isfinite(result).all()


@pytest.mark.parametrize(
    "method, kwargs, message",
    [
        ("lrp.alpha_beta", {"alpha": 2, "beta": 2}, "alpha - beta = 1"),
        ("lrp.alpha_beta", {"alpha": 0.5}, "alpha of lrp.alpha_beta must be >= 1"),
        ("lrp.epsilon", {"epsilon": -1}, "epsilon of lrp.epsilon must be >= 0"),
        ("lrp.gamma", {"gamma": "a"}, "gamma of lrp.gamma must be a finite number"),
        ("lrp.epsilon_gamma_box", {}, "needs low and high"),
        ("deep_taylor.bounded", {"low": 1, "high": 0}, "low <= high"),
        ("lrp.z", {"maxpool": "min"}, r"maxpool must be one of \['max', 'avg'\]; got 'min'"),
        ("lrp.composite", {"rules": {"dense": "nonsense"}}, r"rules\['dense'\] of lrp.composite must be"),
        ("lrp.composite", {"rules": [("dense", "z")]}, "must be a mapping"),
        ("lrp.composite", {"first_layer": Epsilon}, "first_layer must be a rule object"),
    ],
)
def test_bad_arguments_are_refused_before_compiling(session, method, kwargs, message):
    X = tf1.placeholder(tf.float32, [None, 2])
    T = tf.matmul(X, constant([[1.0], [2.0]]))
    ops_before = len(session.graph.get_operations())
    with DeepExplain(session=session) as de, pytest.raises(InvalidInputError, match=message):
        de.get_explainer(method, T, X, **kwargs)
    assert len(session.graph.get_operations()) == ops_before


def test_bounded_accepts_per_channel_bounds(session):
    rng = np.random.default_rng(2)
    X = tf1.placeholder(tf.float64, [None, 2])
    w = rng.normal(size=(2, 2))
    T = tf.matmul(X, tf.constant(w))
    xs = rng.normal(size=(1, 2))
    low, high = np.array([-1.0, -2.0]), np.array([1.0, 0.5])
    result = explain(session, "lrp.composite", T, X, xs, one_hot([1], 2), rules={"dense": Bounded(low, high)})
    zij = xs[0][:, None] * w - low[:, None] * np.maximum(w, 0) - high[:, None] * np.minimum(w, 0)
    expected = zij[:, 1] / zij[:, 1].sum() * (xs[0] @ w)[1]
    np.testing.assert_allclose(result[0], expected, rtol=1e-7)


# ----------------------------------------------------------------------------------------------------------------
# Every kind of linear op against its dense equivalent: the matrix M of the op (read off by applying it to the
# basis vectors) with the literal definitions above
# ----------------------------------------------------------------------------------------------------------------


def linear_ops(rng):
    """name -> (input sample shape, function of X) for one linear op each, with random weights."""
    w = lambda *shape: tf.constant(rng.normal(size=shape))  # noqa: E731
    return {
        "matmul_transpose_b": ((5,), lambda X: tf.matmul(X, w(4, 5), transpose_b=True)),
        "conv1d": ((7, 2), lambda X: tf.nn.conv1d(X, w(3, 2, 3), 2, "SAME")),
        "conv2d_strided_same": ((5, 5, 2), lambda X: tf.nn.conv2d(X, w(3, 3, 2, 3), 2, "SAME")),
        "depthwise": ((4, 4, 2), lambda X: tf.nn.depthwise_conv2d(X, w(2, 2, 2, 2), [1, 1, 1, 1], "VALID")),
        "conv3d": ((3, 3, 3, 1), lambda X: tf.nn.conv3d(X, w(2, 2, 2, 1, 2), [1, 1, 1, 1, 1], "VALID")),
        "conv2d_transpose": (
            (2, 2, 3),
            lambda X: tf.nn.conv2d_transpose(X, w(2, 2, 2, 3), [tf.shape(X)[0], 4, 4, 2], 2, "VALID"),
        ),
    }


OP_RULES = {
    "lrp.epsilon": ({"epsilon": 0.1}, lambda x, m, b, r: epsilon_rule(x, m, b, r, eps=0.1)),
    "lrp.alpha_2_beta_1": ({}, alpha_beta_rule),
    "lrp.gamma": ({}, gamma_rule),
    "lrp.z_plus_fast": ({}, z_plus_fast_rule),
    "lrp.w_square": ({}, w_square_rule),
    "lrp.flat": ({}, lambda x, m, b, r: share((m != 0).astype(float), (m != 0).sum(0), r)),
    "lrp.bounded": ({"low": -2.0, "high": 2.0}, lambda x, m, b, r: bounded_rule(x, m, b, r, -2.0, 2.0)),
}


@pytest.mark.parametrize("op_name", sorted(linear_ops(np.random.default_rng(0))))
def test_every_linear_op_type_matches_the_rules_on_its_dense_equivalent(session, op_name):
    rng = np.random.default_rng(sorted(linear_ops(np.random.default_rng(0))).index(op_name))
    shape, apply = linear_ops(rng)[op_name]
    X = tf1.placeholder(tf.float64, [None, *shape])
    Z = apply(X)
    flat = tf.reshape(Z, [tf.shape(Z)[0], -1])
    size = int(np.prod(shape))
    matrix = session.run(flat, {X: np.eye(size).reshape(size, *shape)})  # (inputs, outputs): z = x @ matrix
    bias = rng.normal(0, 0.3, matrix.shape[1])
    T = flat + tf.constant(bias)
    xs = rng.normal(size=(2, *shape))
    ys = np.zeros((2, matrix.shape[1]))
    ys[0, 1], ys[1, -1] = 1.0, 1.0
    outputs = xs.reshape(2, -1) @ matrix + bias
    for method, (kwargs, rule) in OP_RULES.items():
        result = explain(session, method, T, X, xs, ys, **kwargs).reshape(2, -1)
        expected = [rule(x, matrix, bias, o * y) for x, o, y in zip(xs.reshape(2, -1), outputs, ys, strict=True)]
        np.testing.assert_allclose(result, expected, rtol=1e-7, atol=1e-10, err_msg=method)
