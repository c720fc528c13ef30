"""Engine behaviours: batching, target weighting, compile-once, graph hygiene, threads, fixed batch sizes."""

import threading
import warnings

import numpy as np
import pytest
import tensorflow as tf
from conftest import cnn, constant, mlp, one_hot, tf1

from deepexplain.tensorflow import DeepExplain

RNG_SEED = 11


def cases(rng):
    baselines = rng.normal(size=(3, 8, 8, 2)).astype(np.float32)
    return {
        "zero": {},
        "saliency": {},
        "grad*input": {},
        "intgrad": {"steps": 7},
        "elrp": {},
        "deeplift": {"baseline": baselines[0]},
        "smoothgrad": {"samples": 5, "seed": 3},
        "expected_gradients": {"baselines": baselines, "samples": 6, "seed": 4},
        "deepshap": {"baselines": baselines},
        "occlusion": {"window_shape": (2, 2, 1), "step": (2, 2, 1)},
        "shapley_sampling": {"samples": 2, "sampling_dims": [1, 2], "seed": 5},
        "feature_ablation": {},
        "guided_backprop": {},
        "deconvnet": {},
        "lrp.z": {},
        "lrp.epsilon": {"epsilon": 1e-3},
        "lrp.alpha_2_beta_1": {},
        "lrp.gamma": {},
        "lrp.epsilon_gamma_box": {"low": -3.0, "high": 3.0},
        "lrp.composite": {"rules": {"conv": "z_plus", "dense": "epsilon"}, "first_layer": "flat", "maxpool": "avg"},
        "deep_taylor": {},
        "deeplift_reveal_cancel": {"rule": "reveal_cancel"},
        "connection_weights": {"times_input": True},
        "gradient": {},
        "integrated_gradients": {"steps": 5},
        "input": {},
        "random": {"seed": 6},
        # 4x4-pixel quadrants, shared by both channels: 4 players, 16 coalitions
        "shapley_exact": {"feature_mask": (np.arange(8)[:, None] // 4 * 2 + np.arange(8)[None, :] // 4)[..., None]},
    }


def perturbation_engine_available():
    try:
        import deepexplain.perturbation  # noqa: F401
    except ImportError:
        return False
    return True


PERTURBATION = {"occlusion", "shapley_sampling", "feature_ablation", "shapley_exact"}
CASE_METHOD = {"deeplift_reveal_cancel": "deeplift"}  # cases that are a method with other arguments
METHOD_NAMES = list(cases(np.random.default_rng(0)))


def skip_unavailable(method):
    if method in PERTURBATION and not perturbation_engine_available():
        pytest.skip("perturbation engine not available")


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_results_do_not_depend_on_batch_size(session, method):
    skip_unavailable(method)
    rng = np.random.default_rng(RNG_SEED)
    X, T = cnn(rng)
    xs, ys = rng.normal(size=(5, 8, 8, 2)), one_hot([0, 1, 2, 0, 1], 3)
    with DeepExplain(session=session) as de:
        explainer = de.get_explainer(CASE_METHOD.get(method, method), T, X, **cases(rng)[method])
        reference = explainer.run(xs, ys)
        for batch_size in (2, 3, 17):
            np.testing.assert_allclose(explainer.run(xs, ys, batch_size=batch_size), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_attributions_are_linear_in_ys(session, method):
    skip_unavailable(method)
    rng = np.random.default_rng(RNG_SEED)
    X, T = cnn(rng)
    xs = rng.normal(size=(3, 8, 8, 2))
    ys1, ys2 = rng.normal(size=(3, 3)), rng.normal(size=(3, 3))
    with DeepExplain(session=session) as de:
        explainer = de.get_explainer(CASE_METHOD.get(method, method), T, X, **cases(rng)[method])
        combined = explainer.run(xs, 2 * ys1 - ys2)
        separate = 2 * explainer.run(xs, ys1) - explainer.run(xs, ys2)
    if method in ("saliency", "guided_backprop", "deconvnet"):  # |g| and ReLU-filtered signals are only homogeneous
        np.testing.assert_allclose(explainer.run(xs, 3 * ys1), 3 * explainer.run(xs, ys1), rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_allclose(combined, separate, rtol=1e-4, atol=1e-5)


def test_run_adds_no_ops_after_compilation(session):
    rng = np.random.default_rng(0)
    X, T = cnn(rng)
    xs = rng.normal(size=(4, 8, 8, 2))
    with DeepExplain(session=session) as de:
        explainer = de.get_explainer("deeplift", T, X)
        count = len(session.graph.get_operations())
        for batch_size in (None, 2, 3):
            explainer.run(xs, batch_size=batch_size)
            explainer.completeness_error(xs, batch_size=batch_size)
        assert len(session.graph.get_operations()) == count


def test_graph_built_before_context_gets_the_rules_and_keeps_its_gradients(session):
    """The rules apply to a model built outside the context; afterwards the ops carry no override and plain
    tf.gradients in the context are TensorFlow's own."""
    rng = np.random.default_rng(1)
    X, T = mlp(rng, [3, 5, 2], activation=tf.nn.sigmoid)
    xs = rng.normal(size=(2, 3))
    plain = session.run(tf.gradients(T, X)[0], {X: xs})
    with DeepExplain(session=session) as de:
        deeplift = de.explain("deeplift", T, X, xs)
        gxi = de.explain("grad*input", T, X, xs)
        assert not np.allclose(deeplift, gxi)  # the rescale rule was used
        for op in session.graph.get_operations():
            with pytest.raises(ValueError):
                op.get_attr("_gradient_op_type")
            assert op._gradient_function is None
        np.testing.assert_allclose(session.run(tf.gradients(T, X)[0], {X: xs}), plain, rtol=1e-6)
    np.testing.assert_allclose(gxi, plain * xs, rtol=1e-6)


def test_user_gradient_override_survives_an_explanation(session):
    X = tf1.placeholder(tf.float32, [None, 2])

    @tf.RegisterGradient("TestDoubledRelu")
    def _doubled(op, grad):
        return 2 * grad * tf.cast(op.outputs[0] > 0, grad.dtype)

    with session.graph.gradient_override_map({"Relu": "TestDoubledRelu"}):
        T = tf.nn.relu(X)
    with DeepExplain(session=session) as de:
        de.explain("elrp", T, X, np.ones((1, 2)))
    assert T.op.get_attr("_gradient_op_type") == b"TestDoubledRelu"


def test_training_step_inside_context_uses_true_gradients(session):
    """Original DeepExplain's test: a model trained inside the context (after an explanation) converges the same."""
    X = tf1.placeholder(tf.float32, [None, 2])
    Y = tf1.placeholder(tf.float32, [None, 1])
    with DeepExplain(session=session) as de:
        w1 = tf1.Variable([[0.10711301, -0.0987727], [-1.57625198, 1.34942603]])
        w2 = tf1.Variable([[0.69259691], [-0.16255915]])
        out = tf.matmul(tf.nn.relu(tf.matmul(X, w1) + [-0.30955192, -0.14483099]), w2) + 1.53952825
        session.run(tf1.global_variables_initializer())
        de.explain("deeplift", out, X, np.ones((1, 2)))
        loss = tf.reduce_mean((out - Y) ** 2)
        gradient = tf.gradients(loss, w1)[0]
        x = np.array([[0, 1], [1, 0], [1, 1], [0, 0]], np.float32)
        y = np.array([[1], [1], [1], [0]], np.float32)
        # finite differences of the loss agree with the gradient TensorFlow builds inside the context
        analytic = session.run(gradient, {X: x, Y: y})
        w = session.run(w1)
        numeric = np.zeros_like(w)
        for index in np.ndindex(w.shape):
            for sign in (1, -1):
                shifted = w.copy()
                shifted[index] += sign * 1e-3
                w1.load(shifted, session)
                numeric[index] += sign * session.run(loss, {X: x, Y: y}) / 2e-3
        w1.load(w, session)
    np.testing.assert_allclose(analytic, numeric, atol=1e-3)


def test_unrelated_placeholder_branch_does_not_break_deeplift(session):
    """The original evaluated every activation of the graph to get DeepLIFT references, so a branch fed by another
    placeholder made it fail."""
    rng = np.random.default_rng(2)
    X, T = mlp(rng, [3, 4, 2])
    other = tf1.placeholder(tf.float32, [None, 3])
    tf.nn.relu(tf.matmul(other, constant(rng.normal(size=(3, 3)))))
    with DeepExplain(session=session) as de:
        result = de.explain("deeplift", T, X, rng.normal(size=(2, 3)))
    assert np.isfinite(result).all()


def test_two_threads_explaining_two_graphs_get_what_each_gets_alone():
    def build(seed):
        graph = tf.Graph()
        with graph.as_default():
            rng = np.random.default_rng(seed)
            X, T = cnn(rng, activation=tf.nn.tanh)
            sess = tf1.Session(graph=graph)
        return sess, X, T, rng.normal(size=(4, 8, 8, 2))

    jobs = [build(1), build(2)]
    methods = ["deeplift", "elrp"]

    def explain(job, method):
        sess, X, T, xs = job
        with DeepExplain(session=sess) as de:
            return [de.explain(method, T, X, xs) for _ in range(3)]

    alone = [explain(job, method) for job, method in zip(jobs, methods, strict=True)]
    together = [None, None]
    barrier = threading.Barrier(2)

    def worker(i):
        barrier.wait()
        together[i] = explain(jobs[i], methods[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for a, b in zip(alone, together, strict=True):
        np.testing.assert_allclose(np.array(a), np.array(b), rtol=1e-6)


@pytest.mark.parametrize("method", ["grad*input", "intgrad", "deeplift", "deepshap"])
def test_fixed_batch_dimension_is_padded(method):
    """X built with a fixed batch size (the original then required batch_size == that size)."""
    rng = np.random.default_rng(3)
    xs = rng.normal(size=(5, 4))
    kwargs = {"baselines": rng.normal(size=(2, 4))} if method == "deepshap" else {}
    results = []
    for batch in (None, 3):
        graph = tf.Graph()
        with graph.as_default(), tf1.Session(graph=graph) as sess:
            X = tf1.placeholder(tf.float32, [batch, 4])
            _, T = mlp(np.random.default_rng(4), [4, 6, 2], activation=tf.nn.tanh, X=X)
            with DeepExplain(session=sess) as de:
                results.append(de.explain(method, T, X, xs, **kwargs))
    np.testing.assert_allclose(results[0], results[1], rtol=1e-5, atol=1e-6)


def test_keras_learning_phase_is_fed_as_inference(session):
    phase = tf1.placeholder_with_default(True, shape=[], name="keras_learning_phase")
    X = tf1.placeholder(tf.float32, [None, 2])
    T = tf.cond(phase, lambda: X * 0.0, lambda: X * 3.0)
    with DeepExplain(session=session) as de:
        np.testing.assert_allclose(de.explain("grad*input", T, X, np.ones((1, 2))), [[3.0, 3.0]])


def test_warns_once_about_nonlinear_ops_without_rule(session):
    """One warning per explainer, at the caller's line, listing each uncovered op type with its count and names;
    a softmax target gets the 'explain the logits' hint."""
    X = tf1.placeholder(tf.float32, [None, 3])
    outer = tf.reshape(tf.matmul(X[:, :, None], X[:, None, :]), [-1, 9])  # a matrix product of two inputs
    h = tf.concat([outer, tf.reduce_max(X, axis=1, keepdims=True), tf.math.cumprod(X, axis=1)], axis=1)
    T = tf.nn.softmax(
        tf.matmul(h + tf.nn.relu(tf.math.cos(tf.reduce_sum(h, 1, keepdims=True))), constant(np.ones((13, 2))))
    )
    with DeepExplain(session=session) as de, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        de.get_explainer("deeplift", T, X)
    assert len(caught) == 1 and caught[0].filename == __file__
    message = str(caught[0].message)
    assert "comes out of a softmax" in message and "explain the logits" in message
    assert "Max ×1" in message and "Cumprod ×1" in message
    assert "Relu" not in message and "Cos" not in message  # unary nonlinearities have the Rescale rule
    # products of two inputs (the midpoint rule) and the softmax (its own rule) are covered
    assert "BatchMatMulV2" not in message and "Softmax ×" not in message


def test_no_warning_for_gradient_methods_or_covered_ops(session):
    rng = np.random.default_rng(5)
    X, T = cnn(rng)
    with DeepExplain(session=session) as de, warnings.catch_warnings():
        warnings.simplefilter("error")
        de.get_explainer("deeplift", T, X)
        de.get_explainer("saliency", T, X)  # (a softmax T warns: explain the logits; tests/test_errors.py)


def test_progress_bar_can_be_silenced(session, capsys):
    rng = np.random.default_rng(6)
    X, T = mlp(rng, [3, 4, 2])
    with DeepExplain(session=session) as de:
        de.explain("intgrad", T, X, rng.normal(size=(2, 3)), batch_size=2, progress=False)
    assert capsys.readouterr().err == ""


def test_threads_compiling_on_one_graph_at_once_get_what_each_gets_alone(session):
    """The lock covers everything an explainer adds to a shared graph, not only tf.gradients."""
    rng = np.random.default_rng(11)
    X, T = cnn(rng)
    xs = rng.normal(size=(3, 8, 8, 2))
    ys = one_hot([0, 1, 2], 3)
    methods = ["deeplift", "lrp.alpha_2_beta_1", "elrp", "intgrad", "lrp.epsilon_plus", "occlusion"] * 2
    with DeepExplain(session=session) as de:
        expected = {m: de.explain(m, T, X, xs, ys=ys) for m in set(methods)}
        results, errors = {}, []
        barrier = threading.Barrier(len(methods))

        def worker(i):
            try:
                barrier.wait()
                results[i] = de.get_explainer(methods[i], T, X).run(xs, ys)
            except Exception as error:  # noqa: BLE001 (reported below)
                errors.append(error)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(methods))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert not errors, errors
    for i, method in enumerate(methods):
        np.testing.assert_allclose(results[i], expected[method], rtol=1e-5, atol=1e-6, err_msg=method)
