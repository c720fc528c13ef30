"""Misuse fails early, with the original DeepExplain's exception types and messages, and changes nothing."""

import numpy as np
import pytest
import tensorflow as tf
from conftest import mlp, simpler_model, tf1

from deepexplain.errors import InvalidInputError, InvalidTypeError, NotConnectedError, UnsupportedOpError
from deepexplain.tensorflow import DeepExplain


@pytest.fixture
def model(session):
    X, T = simpler_model()
    return session, X, T


def test_explain_outside_context(model):
    session, X, T = model
    with DeepExplain(session=session) as de:
        pass
    with pytest.raises(RuntimeError, match=r"^Explain can be called only within a DeepExplain context\.$"):
        de.explain("grad*input", T, X, np.ones((1, 2)))


def test_no_session():
    with pytest.raises(RuntimeError, match="could not retrieve a session"):
        DeepExplain()


def test_invalid_method_lists_the_methods(model):
    session, X, T = model
    with DeepExplain(session=session) as de, pytest.raises(RuntimeError, match="Method must be in") as info:
        de.explain("invalid", None, None, None)
    assert "'deeplift'" in str(info.value) and "'occlusion'" in str(info.value)


@pytest.mark.parametrize(
    "T_is_tensor, X, message",
    [
        (False, "tensor", "T must be a Tensorflow Tensor object"),
        (True, "array", "X must be a Tensorflow Tensor object or a list of them"),
        (True, "list", "If a list, X must contain only Tensorflow Tensor objects"),
    ],
)
def test_non_tensors_are_refused(model, T_is_tensor, X, message):
    session, X_tensor, T = model
    X_arg = {"tensor": X_tensor, "array": np.ones((1, 2)), "list": [X_tensor, np.ones(2)]}[X]
    with DeepExplain(session=session) as de, pytest.raises(RuntimeError, match=message):
        de.explain("saliency", T if T_is_tensor else np.ones(1), X_arg, np.ones((1, 2)))


def test_list_of_inputs_and_data_of_different_lengths(session):
    A, B = tf1.placeholder(tf.float32, [None, 2]), tf1.placeholder(tf.float32, [None, 2])
    with DeepExplain(session=session) as de:
        with pytest.raises(RuntimeError, match="List of input tensors and input data have different lengths"):
            de.explain("saliency", A + B, [A, B], [np.ones((1, 2))])


def test_inputs_with_different_numbers_of_samples(session):
    A, B = tf1.placeholder(tf.float32, [None, 2]), tf1.placeholder(tf.float32, [None, 2])
    with (
        DeepExplain(session=session) as de,
        pytest.raises(InvalidInputError, match=r"requires all inputs to have the same number of samples.*\[1, 3\]"),
    ):
        de.explain("saliency", A + B, [A, B], [np.ones((1, 2)), np.ones((3, 2))])


def test_ys_of_wrong_length(model):
    session, X, T = model
    with DeepExplain(session=session) as de:
        with pytest.raises(
            RuntimeError, match=r"ys must have the same batch size as xs \(xs has batch size 2 and ys 3"
        ):
            de.explain("saliency", T, X, np.ones((2, 2)), ys=np.ones((3, 1)))


def test_ys_of_wrong_shape(model):
    session, X, T = model
    with DeepExplain(session=session) as de, pytest.raises(ValueError, match=r"ys has shape \(2, 4\).*T"):
        de.explain("saliency", T, X, np.ones((2, 2)), ys=np.ones((2, 4)))


def test_xs_of_wrong_shape_names_both_shapes(model):
    session, X, T = model
    with DeepExplain(session=session) as de, pytest.raises(ValueError, match=r"shape \(2, 3\).*\(None, 2\)"):
        de.explain("saliency", T, X, np.ones((2, 3)))


def test_baseline_of_wrong_shape(model):
    session, X, T = model
    with DeepExplain(session=session) as de:
        for method in ("intgrad", "deeplift"):
            with pytest.raises(RuntimeError, match=r"Baseline shape \(3,\) does not match expected shape \(2,\)"):
                de.explain(method, T, X, np.ones((1, 2)), baseline=np.zeros(3))


def test_deepshap_baselines_need_a_sample_dimension(model):
    session, X, T = model
    with DeepExplain(session=session) as de:
        with pytest.raises(ValueError, match=r"\(M, 2\).*got \(2,\)"):
            de.explain("deepshap", T, X, np.ones((1, 2)), baselines=np.zeros(2))
        with pytest.raises(ValueError, match="deepshap needs baselines"):
            de.explain("deepshap", T, X, np.ones((1, 2)))


@pytest.mark.parametrize("epsilon", [0, -1e-3])
def test_elrp_epsilon_must_be_positive(model, epsilon):
    session, X, T = model
    with DeepExplain(session=session) as de:
        with pytest.raises(ValueError, match="epsilon must be greater than zero"):
            de.explain("elrp", T, X, np.ones((1, 2)), epsilon=epsilon)
        with pytest.raises(AssertionError):  # what the original DeepExplain raised
            de.explain("elrp", T, X, np.ones((1, 2)), epsilon=epsilon)


@pytest.mark.parametrize(
    "method, kwargs, message",
    [
        (
            "intgrad",
            {"step": 10},
            r"unexpected argument\(s\) \['step'\]; it takes \['steps', 'baseline', 'integration'\]",
        ),
        ("intgrad", {"steps": 0}, "steps of intgrad must be a positive integer"),
        ("intgrad", {"integration": "simpson"}, "integration must be one of"),
        ("smoothgrad", {"noise_level": -1}, "noise_level of smoothgrad"),
        ("saliency", {"steps": 3}, "takes no arguments"),
    ],
)
def test_bad_method_arguments(model, method, kwargs, message):
    session, X, T = model
    with DeepExplain(session=session) as de, pytest.raises(ValueError, match=message):
        de.get_explainer(method, T, X, **kwargs)


@pytest.mark.parametrize("batch_size", [0, -2, 1.5, "4"])
def test_bad_batch_size(model, batch_size):
    session, X, T = model
    with DeepExplain(session=session) as de, pytest.raises(ValueError, match="batch_size must be a positive integer"):
        de.explain("saliency", T, X, np.ones((2, 2)), batch_size=batch_size)


def test_deeplift_needs_room_for_its_reference(model):
    session, X, T = model
    with DeepExplain(session=session) as de, pytest.raises(ValueError, match="at least 2"):
        de.explain("deeplift", T, X, np.ones((2, 2)), batch_size=1)


def test_target_not_connected_to_input(session):
    X = tf1.placeholder(tf.float32, [None, 2])
    other = tf1.placeholder(tf.float32, [None, 2])
    with (
        DeepExplain(session=session) as de,
        pytest.raises(NotConnectedError, match="does not depend on X|no differentiable"),
    ):
        de.explain("saliency", other * 2.0, X, np.ones((1, 2)))


def test_token_ids_input_explains_to_use_the_embedding_output(session):
    ids = tf1.placeholder(tf.int32, [None, 4])
    table = tf.constant(np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32))
    T = tf.reduce_sum(tf.nn.embedding_lookup(table, ids), axis=[1, 2])[:, None]
    with DeepExplain(session=session) as de:
        with pytest.raises(ValueError, match="embedding output") as info:
            de.explain("intgrad", T, ids, np.zeros((1, 4), int))
    assert "None values not supported" not in str(info.value)


def test_failed_calls_leave_the_graph_unchanged(session):
    rng = np.random.default_rng(0)
    X, T = mlp(rng, [2, 3, 1])
    ids = tf1.placeholder(tf.int32, [None, 2])
    count = len(session.graph.get_operations())
    with DeepExplain(session=session) as de:
        for call in (
            lambda: de.get_explainer("deeplift", T, X, baseline=np.zeros(5)),
            lambda: de.get_explainer("elrp", T, X, epsilon=0),
            lambda: de.get_explainer("saliency", tf.cast(ids, tf.float32), ids),
            lambda: de.get_explainer("nope", T, X),
        ):
            with pytest.raises((ValueError, RuntimeError)):
                call()
        explainer = de.get_explainer("saliency", T, X)
        count = len(session.graph.get_operations())
        with pytest.raises(ValueError):
            explainer.run(np.ones((2, 5)))
    assert len(session.graph.get_operations()) == count


def test_completeness_check_only_for_methods_that_promise_it(model):
    session, X, T = model
    with DeepExplain(session=session) as de, pytest.raises(ValueError, match="does not promise completeness"):
        de.get_explainer("saliency", T, X).completeness_error(np.ones((1, 2)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_inputs_are_refused_naming_the_argument_and_the_count(model, bad):
    session, X, T = model
    xs = np.ones((3, 2))
    xs[1, 0] = bad
    with DeepExplain(session=session) as de:
        explainer = de.get_explainer("intgrad", T, X)
        with pytest.raises(InvalidInputError, match=r"xs holds 1 non-finite value"):
            explainer.run(xs)
        with pytest.raises(InvalidInputError, match=r"baseline holds 1 non-finite value"):
            de.get_explainer("deeplift", T, X, baseline=np.array([0.0, bad]))
        np.testing.assert_allclose(explainer.run(np.ones((3, 2))), de.explain("intgrad", T, X, np.ones((3, 2))))


@pytest.mark.parametrize(
    "target, error, message",
    [
        (1.5, TypeError, "must be an int; got the float 1.5"),
        (True, TypeError, "got the bool True"),
        ("maxx", ValueError, "did you mean 'max'"),
        ([0.0, 1.0], ValueError, "must hold ints, not floats"),
    ],
)
def test_targets_that_are_not_indices_are_refused(target, error, message):
    keras = pytest.importorskip("keras")
    import deepexplain

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(error, match=message):
        deepexplain.Explainer("saliency", model).run(np.ones((2, 3), np.float32), target=target)


def test_misspelt_method_and_argument_names_get_the_closest_suggested(model):
    session, X, T = model
    with DeepExplain(session=session) as de:
        with pytest.raises(ValueError, match=r"got 'deeplfit' \(did you mean 'deeplift'\?\)"):
            de.get_explainer("deeplfit", T, X)
        with pytest.raises(ValueError, match=r"did you mean 'steps'"):
            de.get_explainer("intgrad", T, X, step=3)
        with pytest.raises(TypeError, match="baseline must be a number or an array; got the string 'zeros'"):
            de.get_explainer("intgrad", T, X, baseline="zeros")


def test_integrated_gradients_of_a_linear_model_sum_in_float64(session):
    """The original DeepExplain's test: IG on a linear model is exactly the input times the weight."""
    X = tf1.placeholder(tf.float32, [None, 1])
    T = X * 3.0
    with DeepExplain(session=session) as de:
        np.testing.assert_array_equal(de.explain("intgrad", T, X, np.ones((1, 1)), steps=300), [[3.0]])


def test_integrated_gradients_higher_precision(model):
    """The original's test_int_grad_higher_precision: 250 of 500 steps count, each weighing 1/500 in float64 (a
    Python float times float32 gradients rounded each weight: 1.5000001)."""
    session, X, T = model
    xi = np.array([[-10, -5], [3, 1]])
    with DeepExplain(session=session) as de:
        attributions = de.explain("intgrad", T, X, xi, steps=500)
    np.testing.assert_array_equal(attributions, [[0.0, 0.0], [1.5, -0.5]])


@pytest.mark.parametrize(
    ("method", "kwargs", "message"),
    [
        ("occlusion", {"window_shape": 5}, r"occlusion: window_shape \(5,\) of input 0 is larger than one sample"),
        ("occlusion", {"window_shape": (1, 1)}, r"occlusion: window_shape of input 0 must be an int or have one"),
        ("occlusion", {"step": 0}, r"occlusion: step of input 0 must be positive"),
        ("shapley_sampling", {"samples": 0}, r"shapley_sampling: samples must be at least 1"),
        ("shapley_sampling", {"sampling_dims": [3]}, r"sampling_dims of input 0 must lie in 1..1"),
        ("feature_ablation", {"feature_mask": np.zeros(3, int)}, r"feature_mask of input 0 must be broadcastable"),
        ("kernel_shap", {"feature_mask": np.zeros(2)}, r"feature_mask of input 0 must hold integer player ids"),
        ("lime", {"kernel_width": 0}, r"lime: kernel_width must be > 0"),
        ("rise", {}, r"rise: rise masks the positions of one input of images"),
    ],
)
def test_perturbation_arguments_are_checked_at_construction(session, method, kwargs, message):
    """get_explainer refuses arguments that can never run, before adding anything to the graph (issue 11, group 3);
    the errors are deepexplain's, subclasses of ValueError/TypeError and RuntimeError."""
    X, T = simpler_model()
    count = len(session.graph.get_operations())
    with DeepExplain(session=session) as de:
        with pytest.raises((InvalidInputError, InvalidTypeError), match=message) as info:
            de.get_explainer(method, T, X, **kwargs)
        assert isinstance(info.value, RuntimeError)
        assert len(session.graph.get_operations()) == count
        ok = de.explain("occlusion", T, X, np.array([[3.0, 1.0]], np.float32), ys=np.ones((1, 1), np.float32))
    np.testing.assert_allclose(ok, [[1.0, -1.0]], atol=1e-6)  # relu(relu(x1 - 1) - relu(x2)) at (3, 1)


def test_the_context_can_be_entered_again_inside_itself(model):
    session, X, T = model
    de = DeepExplain(session=session)
    with de:
        with de:
            inner = de.explain("saliency", T, X, np.array([[3.0, 1.0]], np.float32))
        assert de.context_on  # the outer block is still open
        outer = de.explain("saliency", T, X, np.array([[3.0, 1.0]], np.float32))
    assert not de.context_on
    np.testing.assert_allclose(inner, outer)
    with pytest.raises(RuntimeError, match="only within a DeepExplain context"):
        de.explain("saliency", T, X, np.ones((1, 2), np.float32))


def test_a_closed_session_is_refused_before_any_op_is_added():
    graph = tf.Graph()
    with graph.as_default():
        session = tf1.Session(graph=graph)
        X, T = simpler_model()
        with DeepExplain(session=session) as de:
            explainer = de.get_explainer("saliency", T, X)
        session.close()
        count = len(graph.get_operations())
        with DeepExplain(session=session) as de:
            with pytest.raises(InvalidInputError, match="session of this DeepExplain context is closed"):
                de.get_explainer("intgrad", T, X)
        assert len(graph.get_operations()) == count
        with pytest.raises(InvalidInputError, match="the session this explainer runs in is closed"):
            explainer.run(np.ones((1, 2), np.float32))


@pytest.mark.parametrize("method,bad,first", [("saliency", 1, 1), ("intgrad", 3, 0), ("occlusion", 3, 0)])
def test_non_finite_attributions_of_finite_inputs_are_never_silent(method, bad, first):
    import warnings

    import deepexplain

    keras = pytest.importorskip("keras")
    inputs = keras.Input((3,))
    hidden = keras.layers.Dense(2, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Lambda(lambda h: tf.sqrt(h - 0.5))(hidden))  # NaN where h < 0.5
    model.layers[1].set_weights([np.eye(3, 2, dtype=np.float32), np.zeros(2, np.float32)])
    xs = np.array([[2.0, 3.0, 1.0], [0.1, 0.1, 0.1], [2.0, 2.0, 0.0]], np.float32)  # sample 1 gives NaN
    explainer = deepexplain.Explainer(method, model, progress=False)
    # intgrad's path from 0 and occlusion's removed features take every sample through h < 0.5
    with pytest.warns(RuntimeWarning, match=rf"{method} gave non-finite attributions .* for {bad} of 3 sample\(s\) "
                                            rf"\(first: sample {first}\) from finite inputs"):  # fmt: skip
        explainer.run(xs, target=0)
    if bad == 1:
        with warnings.catch_warnings():
            warnings.simplefilter("error", RuntimeWarning)  # finite samples: no warning
            result = explainer.run(xs[[0, 2]], target=0)
        assert np.isfinite(result).all()


def _softmax_graph(session, inner=False):
    X = tf1.placeholder(tf.float32, [None, 3])
    logits = tf.matmul(X, tf.constant(np.arange(12, dtype=np.float32).reshape(3, 4) / 10))
    if inner:  # a softmax inside the model (attention-like weights); T is a linear read-out, the logits
        return X, tf.matmul(tf.nn.softmax(logits) * logits, tf.ones((4, 2)))
    return X, tf.nn.softmax(logits)


@pytest.mark.parametrize("method", ["saliency", "intgrad", "grad*input", "deeplift", "elrp", "occlusion"])
def test_a_softmax_target_in_the_tf1_api_warns_once_to_explain_the_logits(session, method):
    import warnings

    X, T = _softmax_graph(session)
    xs = np.random.default_rng(0).random((2, 3)).astype(np.float32)
    with DeepExplain(session=session) as de, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        de.explain(method, T, X, xs)
    messages = [str(w.message) for w in caught if "softmax" in str(w.message)]
    assert len(messages) == 1 and "explain the logits (the softmax's input) instead" in messages[0], messages


def test_a_softmax_inside_the_model_is_not_called_the_target(session):
    X, T = _softmax_graph(session, inner=True)
    with DeepExplain(session=session) as de:
        with pytest.raises(UnsupportedOpError, match="Softmax") as error:
            de.explain("lrp.epsilon", T, X, np.ones((1, 3), np.float32))
    assert "T comes out of a softmax" not in str(error.value)
