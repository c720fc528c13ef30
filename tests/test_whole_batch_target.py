"""A TF1 target whose rows are not the samples' (its first dimension fixed while X's batch is free: it broadcasts or
sums over the batch) is explained as a function of the whole batch, as the original DeepExplain does: all samples fed
together, one run per step of a method, and DeepLIFT's references run apart, in a copy of the forward pass
(issue 11, group 14)."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import cnn, constant, mlp, tf1

from deepexplain.errors import InvalidInputError
from deepexplain.tensorflow import DeepExplain


def broadcast_two_inputs():
    """The original DeepExplain test model: relu(concat([X1 * w1, X2 * w2], 1)) with w of shape (2, 2), so one sample
    gives an output of two rows."""
    X1, X2 = tf1.placeholder(tf.float32, [None, 2]), tf1.placeholder(tf.float32, [None, 2])
    out = tf.nn.relu(tf.concat([X1 * constant([[3.0, 0.0], [0.0, 3.0]]), X2 * constant([[2.0, 0.0], [0.0, 2.0]])], 1))
    return X1, X2, out


@pytest.mark.parametrize(
    "method, kwargs, expected",
    [
        ("saliency", {}, [2.0, 2.0]),
        ("grad*input", {}, [6.0, 2.0]),
        ("intgrad", {}, [6.0, 2.0]),
        ("elrp", {"epsilon": 1e-9}, [6.0, 2.0]),
        ("deeplift", {}, [6.0, 2.0]),  # [6, 0] while the reference rode in the batch (it met w's second row)
    ],
)
def test_the_original_deepexplain_multiple_input_tests(session, method, kwargs, expected):
    """The original's test_multiple_inputs of each method class, on its broadcasting model."""
    X1, X2, out = broadcast_two_inputs()
    assert out.shape.as_list() == [2, 4]
    xi = [np.array([[-10.0, -5.0]]), np.array([[3.0, 1.0]])]
    with DeepExplain(session=session) as de:
        first, second = de.explain(method, out, [X1, X2], xi, **kwargs)
        explainer = de.get_explainer(method, out, [X1, X2], **kwargs)
        again = explainer.run(xi)
    np.testing.assert_allclose(first, [[0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(second, [expected], rtol=1e-6)
    np.testing.assert_allclose(again[1], second, rtol=1e-6)


def test_deeplift_of_a_broadcasting_output_equals_the_exact_secants(session):
    """T = tanh(x * W + B) with W, B of shape (4, 3): one sample gives 4 rows; each T entry is one nonlinearity of one
    input, so DeepLIFT's attribution of x_j is exactly sum_i tanh(x_j W_ij + B_ij) - tanh(r_j W_ij + B_ij)."""
    rng = np.random.default_rng(0)
    W, B = rng.normal(0, 1, (4, 3)), rng.normal(0, 0.5, (4, 3))
    X = tf1.placeholder(tf.float32, [None, 3])
    T = tf.tanh(X * constant(W) + constant(B))
    x, r = rng.normal(0, 1, (1, 3)), rng.normal(0, 1, 3)
    exact = (np.tanh(x * W + B) - np.tanh(r * W + B)).sum(axis=0, keepdims=True)
    with DeepExplain(session=session) as de:
        deeplift = de.explain("deeplift", T, X, x, baseline=r)
        deepshap = de.explain("deepshap", T, X, x, baselines=np.stack([r, np.zeros(3), -r]))
        each = [de.explain("deeplift", T, X, x, baseline=b) for b in (r, np.zeros(3), -r)]
    np.testing.assert_allclose(deeplift, exact, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(deepshap, np.mean(each, axis=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "method, kwargs",
    [
        ("saliency", {}),
        ("intgrad", {"steps": 20}),
        ("deeplift", {}),
        ("deeplift", {"rule": "reveal_cancel"}),
        ("deepshap", {"baselines": "three"}),
        ("elrp", {}),
        ("lrp.epsilon", {}),
        ("expected_gradients", {"baselines": "three", "samples": 6, "seed": 3}),
        ("smoothgrad", {"samples": 4, "seed": 5}),
        ("guided_ig", {"steps": 8}),
    ],
)
@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_an_output_summed_over_the_batch_is_explained_like_its_rows(session, method, kwargs, net):
    """sum over the batch of F(x_i) is the sum of every row's outputs: its explanation equals that of F with the
    samples as rows (the default target, the sum of T), for every method — DeepLIFT's references run apart on one
    side and ride in the batch on the other."""
    rng = np.random.default_rng(1)
    if net == "mlp":
        X, F = mlp(rng, [5, 6, 4, 3], activation=tf.nn.softplus if "lrp" in method else tf.nn.relu)
        xs, shape = rng.normal(0, 1, (4, 5)), (5,)
    else:
        X, F = cnn(rng, pool="max", size=6, channels=2, classes=3)
        xs, shape = rng.normal(0, 1, (4, 6, 6, 2)), (6, 6, 2)
    if kwargs.get("baselines") == "three":
        kwargs = {**kwargs, "baselines": rng.normal(0, 0.5, (3, *shape))}
    summed = tf.reduce_sum(F, axis=0)
    assert summed.shape.as_list() == [3]
    with DeepExplain(session=session) as de:
        whole = de.explain(method, summed, X, xs, **kwargs)
        rows = de.explain(method, F, X, xs, **kwargs)
    np.testing.assert_allclose(whole, rows, rtol=1e-4, atol=1e-5 * np.abs(rows).max())


def test_batch_size_equal_to_the_targets_rows_runs_in_batches_of_it(session):
    """The original's rule: with batch_size, the first dimension of T must be it. T = F(x) * i for the i-th row of a
    run of 50: rows 0 and 50 are scaled alike."""
    rng = np.random.default_rng(2)
    X, F = mlp(rng, [3, 4, 1])
    T = F * constant(np.arange(50.0)[:, None])
    xs = rng.normal(0, 1, (100, 3))
    with DeepExplain(session=session) as de:
        scaled = de.explain("saliency", T, X, xs, batch_size=50)
        plain = de.explain("saliency", F, X, xs)
    np.testing.assert_allclose(scaled, plain * (np.arange(100) % 50)[:, None], rtol=1e-5, atol=1e-6)


def test_what_a_whole_batch_output_cannot_do_is_refused_early(session):
    """The original's test_T_has_compatible_batch_dim, and what needs one output per sample: clear errors before any
    op is added (construction) or before the model runs (run); a correct call after them gives the right numbers."""
    rng = np.random.default_rng(3)
    X, F = mlp(rng, [2, 3, 1])
    T = F * constant(np.arange(50.0)[:, None])
    xi = np.array([[-10.0, -5.0]]).repeat(50, 0)
    with DeepExplain(session=session) as de:
        count = len(session.graph.get_operations())
        for method in ("occlusion", "shapley_sampling", "vargrad"):
            with pytest.raises(InvalidInputError, match=f"its first dimension is fixed.*{method} needs one output"):
                de.get_explainer(method, T, X)
        assert len(session.graph.get_operations()) == count
        explainer = de.get_explainer("deeplift", T, X)
        count = len(session.graph.get_operations())
        with pytest.raises(RuntimeError, match="the first dimension of the target tensor must be compatible with the "
                                               "batch size. Found 50 instead"):  # fmt: skip
            explainer.run(xi, batch_size=10)
        with pytest.raises(InvalidInputError, match="target: .*only the sum of T"):
            explainer.run(xi, target="max")
        with pytest.raises(InvalidInputError, match="no output per sample"):
            explainer.completeness_error(xi)
        assert len(session.graph.get_operations()) == count
        with pytest.raises(InvalidInputError, match="fed together, the 7 samples do not fit it: .*Incompatible"):
            explainer.run(xi[:7])
        ok = explainer.run(xi)
        with_reference = de.explain("deeplift", F, X, xi)
    np.testing.assert_allclose(ok, with_reference * np.arange(50)[:, None], rtol=1e-5, atol=1e-6)
