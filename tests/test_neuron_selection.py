"""iNNvestigate's neuron_selection ('max_activation', int, per-sample ints, 'all') as an alternative to ys."""

import numpy as np
import pytest
from conftest import mlp, one_hot

from deepexplain.errors import InvalidInputError
from deepexplain.tensorflow import DeepExplain


@pytest.fixture
def net(session):
    rng = np.random.default_rng(0)
    X, T = mlp(rng, [4, 6, 3])
    xs = rng.normal(size=(5, 4))
    return session, X, T, xs


@pytest.mark.parametrize("method", ["grad*input", "lrp.epsilon", "lrp.alpha_2_beta_1"])
def test_selections_equal_the_matching_ys(net, method):
    session, X, T, xs = net
    outputs = session.run(T, {X: xs})
    with DeepExplain(session=session) as de:
        explainer = de.get_explainer(method, T, X)
        expected = {
            "max_activation": explainer.run(xs, one_hot(outputs.argmax(axis=1), 3)),
            2: explainer.run(xs, one_hot([2] * 5, 3)),
            "all": explainer.run(xs, np.ones((5, 3))),
        }
        per_sample = [0, 2, 1, 1, 0]
        expected[tuple(per_sample)] = explainer.run(xs, one_hot(per_sample, 3))
        for selection, attributions in expected.items():
            selection = list(selection) if isinstance(selection, tuple) else selection
            np.testing.assert_allclose(explainer.run(xs, neuron_selection=selection), attributions, rtol=1e-6)
        # through de.explain, with a batch size smaller than the batch
        np.testing.assert_allclose(
            de.explain(method, T, X, xs, neuron_selection="max_activation", batch_size=2),
            expected["max_activation"],
            rtol=1e-6,
        )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"neuron_selection": "min"}, r"neuron_selection must be 'max' \(alias 'max_activation'\), 'all', an int"),
        ({"neuron_selection": 3}, r"units must be in \[0, 3\); got \[3\]"),
        ({"neuron_selection": [0, 1]}, "has 2 entries for 5 samples"),
        ({"neuron_selection": 0, "ys": np.ones((5, 3))}, "either ys or neuron_selection"),
    ],
)
def test_bad_selections_are_refused(net, kwargs, message):
    session, X, T, xs = net
    with DeepExplain(session=session) as de, pytest.raises(InvalidInputError, match=message):
        de.explain("lrp.z", T, X, xs, **kwargs)
