"""Property-based misuse test (hypothesis): over input shapes, dtypes, batch sizes and targets, a few methods give
either the right result (shaped like xs, finite, the same for every batch size) or one of deepexplain's errors, never
anything else (no TensorFlow or numpy error, no NaN)."""

import functools

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
keras = pytest.importorskip("keras")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import deepexplain  # noqa: E402
from deepexplain.errors import InvalidEpsilonError, InvalidInputError, InvalidTypeError  # noqa: E402

OUR_ERRORS = (InvalidInputError, InvalidTypeError, InvalidEpsilonError)
FEATURES, CLASSES = 4, 3
METHODS = {"saliency": {}, "intgrad": {"steps": 5}, "deeplift": {}, "occlusion": {}, "lrp.epsilon": {}}


@functools.cache
def explainer(method):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((FEATURES,)),
        keras.layers.Dense(5, activation="relu"),
        keras.layers.Dense(CLASSES),
    ])  # fmt: skip
    return deepexplain.Explainer(method, model, progress=False, **METHODS[method])


# mostly valid draws (one_of picks a branch uniformly), so that most examples reach the model
dtypes = st.one_of(st.sampled_from([np.float32, np.float64]), st.sampled_from([np.float32, np.float64]),
                   st.sampled_from([np.float16, np.int32, np.uint8, bool, object, str]))  # fmt: skip
right_shape = st.tuples(st.integers(1, 5), st.just(FEATURES))
shapes = st.one_of(
    right_shape,
    right_shape,
    right_shape,
    st.tuples(st.integers(0, 5), st.just(FEATURES)),  # the right feature shape, any batch (0 included)
    st.tuples(st.integers(1, 3), st.integers(1, 6)),  # a wrong feature count, mostly
    st.tuples(st.integers(1, 3), st.just(FEATURES), st.integers(1, 2)),  # one axis too many
    st.tuples(st.integers(1, 4)),  # one axis too few
)
batch_sizes = st.one_of(st.none(), st.integers(1, 6), st.integers(1, 6), st.integers(-2, 0),
                        st.sampled_from([0.5, 2.0, "4", True]))  # fmt: skip
targets = st.one_of(
    st.none(),
    st.integers(0, CLASSES - 1),
    st.lists(st.integers(0, CLASSES - 1), min_size=1, max_size=5),
    st.sampled_from(["max", "all", "max_activation", "min", "", 1.5, -1, CLASSES, [0.5]]),
    st.integers(0, CLASSES - 1),
    st.lists(st.integers(-1, CLASSES), min_size=0, max_size=6),
)


def _inputs(shape, dtype, data):
    if dtype is str:
        return np.full(shape, "a")
    values = np.asarray(data.draw(st.lists(st.floats(-3, 3, allow_nan=False, width=32), min_size=int(np.prod(shape)),
                                           max_size=int(np.prod(shape)))), np.float64).reshape(shape)  # fmt: skip
    if dtype is object:
        return values.astype(object)
    return values.astype(dtype)


@pytest.mark.parametrize("method", sorted(METHODS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(shape=shapes, dtype=dtypes, batch_size=batch_sizes, target=targets, data=st.data())
def test_a_result_or_one_of_our_errors(method, shape, dtype, batch_size, target, data):
    xs = _inputs(shape, dtype, data)
    ex = explainer(method)
    try:
        result = ex.run(xs, target=target, batch_size=batch_size)
    except OUR_ERRORS as error:
        hypothesis.event(f"refused: {type(error).__name__}")
        return
    hypothesis.event("explained")
    assert result.shape == xs.shape and np.all(np.isfinite(result))
    again = ex.run(xs, target=target)  # the default batch size: the same numbers
    np.testing.assert_allclose(result, again, rtol=1e-5, atol=1e-6)
    if np.issubdtype(xs.dtype, np.floating) and xs.dtype != np.float16 and len(xs):
        # an ordinary call: the explanation of each sample alone is the same as in the batch
        alone = np.concatenate([ex.run(xs[i : i + 1], target=_row(target, i, len(xs))) for i in range(len(xs))])
        np.testing.assert_allclose(result, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("method", sorted(METHODS))
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 5), dtype=st.sampled_from([np.float32, np.float64]), batch_size=st.one_of(st.none(),
       st.integers(2, 7)), kind=st.sampled_from(["max", "all", "unit", "per sample"]), data=st.data())  # fmt: skip
def test_valid_calls_explain_the_same_for_every_batch_size(method, n, dtype, batch_size, kind, data):
    xs = _inputs((n, FEATURES), dtype, data)
    target = {"max": "max", "all": "all", "unit": data.draw(st.integers(0, CLASSES - 1)),
              "per sample": data.draw(st.lists(st.integers(0, CLASSES - 1), min_size=n, max_size=n))}[kind]  # fmt: skip
    ex = explainer(method)
    result = ex.run(xs, target=target, batch_size=batch_size)
    assert result.shape == xs.shape and np.all(np.isfinite(result))
    np.testing.assert_allclose(result, ex.run(xs, target=target), rtol=1e-5, atol=1e-6)
    alone = np.concatenate([ex.run(xs[i : i + 1], target=_row(target, i, n)) for i in range(n)])
    np.testing.assert_allclose(result, alone, rtol=1e-4, atol=1e-5)


def _row(target, i, n):
    if isinstance(target, list) and len(target) == n:
        return [target[i]]
    return target
