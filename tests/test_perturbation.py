"""Oracles for the framework-free perturbation engine (``deepexplain.perturbation``).

Every expected value comes from something independent of the engine: DeepExplain's hand-computed toy network, a
closed form (linear models, functions additive over the players), a direct enumeration written here, or a peer
implementation (Captum, skipped when it is not installed).
"""

import itertools
import math
import warnings

import numpy as np
import pytest

from deepexplain.perturbation import feature_ablation, occlusion, shapley_exact, shapley_sampling

METHODS = {
    "occlusion": occlusion,
    "feature_ablation": feature_ablation,
    "shapley_exact": shapley_exact,
    "shapley_sampling": shapley_sampling,
}


def forward_of(fn):
    """The engine's ``forward(rows, owners)`` for a model ``fn(*inputs) -> (k,)`` that ignores the owners."""
    return lambda rows, owners: fn(*rows)


class Recorder:
    """A forward that records every call: its row count, owners and rows."""

    def __init__(self, fn):
        self.fn = fn
        self.calls = []

    def __call__(self, rows, owners):
        self.calls.append(([r.copy() for r in rows], owners.copy()))
        return self.fn(*rows)

    @property
    def sizes(self):
        return [len(owners) for _, owners in self.calls]


def relu(v):
    return np.maximum(v, 0)


# DeepExplain's toy network: relu(relu(x1 - 1) - relu(x2)), and its two samples.
toy = forward_of(lambda x: relu(relu(x[:, 0] - 1) - relu(x[:, 1])))
TOY_XS = [np.array([[-10.0, -5.0], [3.0, 1.0]])]
minimum = forward_of(lambda x: np.minimum(x[:, 0], x[:, 1]))


def nonlinear(x):
    """A small function with interactions of every order among its 5 features."""
    return np.tanh(x[:, 0] * x[:, 1] - x[:, 2]) + x[:, 3] ** 2 * np.sin(x[:, 4]) + np.prod(x, axis=1)


def shapley_by_permutations(fn, x, baseline):
    """Shapley values of one sample as the mean marginal contribution over all orders of its features."""
    p = len(x)
    phi = np.zeros(p)
    orders = list(itertools.permutations(range(p)))
    for order in orders:
        current = baseline.astype(float).copy()
        before = fn(current[None])[0]
        for i in order:
            current[i] = x[i]
            after = fn(current[None])[0]
            phi[i] += after - before
            before = after
    return phi / len(orders)


# -----------------------------------------------------------------------------
# Occlusion: DeepExplain's toy network and a brute-force implementation of its formula
# -----------------------------------------------------------------------------


def test_occlusion_toy_network_window_1():
    np.testing.assert_allclose(occlusion(toy, TOY_XS)[0], [[0, 0], [1, -1]])


def test_occlusion_toy_network_window_2_shares_the_drop():
    np.testing.assert_allclose(occlusion(toy, TOY_XS, window_shape=(2,))[0], [[0, 0], [0.5, 0.5]])


def test_occlusion_toy_network_step_2_leaves_nans_and_warns():
    with pytest.warns(UserWarning, match="nans"):
        result = occlusion(toy, TOY_XS, step=2)[0]
    np.testing.assert_allclose(result, [[0, np.nan], [1, np.nan]])


def test_occlusion_covering_windows_do_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        occlusion(toy, TOY_XS, window_shape=2, step=1)


def occlusion_by_loops(fn, x, window, step, baseline):
    """DeepExplain's formula, one window at a time: sum of covering drops / sum of covering window sizes."""
    total, size = np.zeros(x.shape), np.zeros(x.shape)
    f0 = fn(x[None])[0]
    ranges = [range(0, n - w + 1, s) for n, w, s in zip(x.shape, window, step, strict=True)]
    for corner in itertools.product(*ranges):
        region = tuple(slice(c, c + w) for c, w in zip(corner, window, strict=True))
        occluded = x.copy()
        occluded[region] = baseline[region]
        total[region] += f0 - fn(occluded[None])[0]
        size[region] += math.prod(window)
    with np.errstate(invalid="ignore"):
        return total / size


@pytest.mark.parametrize(("window", "step"), [((2, 3), (1, 1)), ((2, 2), (2, 1)), ((1, 3), 2), (3, (1, 2))])
def test_occlusion_matches_window_by_window_loops(window, step):
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(3, 5, 6))
    baseline = rng.normal(size=(5, 6))

    def fn(x):
        return np.tanh(x.reshape(len(x), -1) @ np.linspace(-1, 1, 30)) + x[:, 0, 0] * x[:, 4, 5]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = occlusion(forward_of(fn), [xs], window_shape=window, step=step, baseline=baseline)[0]
    window_t = window if isinstance(window, tuple) else (window, window)
    step_t = step if isinstance(step, tuple) else (step, step)
    expected = np.stack([occlusion_by_loops(fn, x, window_t, step_t, baseline) for x in xs])
    np.testing.assert_allclose(result, expected, rtol=1e-10, atol=1e-12)


# -----------------------------------------------------------------------------
# Shapley values: min(x1, x2), enumeration, convergence, completeness
# -----------------------------------------------------------------------------

MIN_XS = [np.array([[2.0, -2.0], [4.0, 2.0]])]
MIN_SHAPLEY = [[0.0, -2.0], [1.0, 1.0]]


def test_shapley_exact_of_min():
    np.testing.assert_allclose(shapley_exact(minimum, MIN_XS)[0], MIN_SHAPLEY)


def test_shapley_sampling_of_min():
    np.testing.assert_allclose(shapley_sampling(minimum, MIN_XS, samples=2000, seed=0)[0], MIN_SHAPLEY, atol=0.1)


def test_antithetic_pair_is_exact_for_two_players():
    """With two players a permutation and its reverse are all the orders there are."""
    result = shapley_sampling(minimum, MIN_XS, samples=2, antithetic=True, seed=3)[0]
    np.testing.assert_allclose(result, MIN_SHAPLEY)


def test_shapley_exact_matches_enumeration_over_permutations():
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(3, 5))
    baseline = rng.normal(size=5)
    result = shapley_exact(forward_of(nonlinear), [xs], baseline=baseline)[0]
    expected = np.stack([shapley_by_permutations(nonlinear, x, baseline) for x in xs])
    np.testing.assert_allclose(result, expected, rtol=1e-10, atol=1e-12)


def test_shapley_sampling_converges_to_exact():
    rng = np.random.default_rng(2)
    xs = rng.normal(size=(2, 5))
    exact = shapley_exact(forward_of(nonlinear), [xs])[0]
    sampled = shapley_sampling(forward_of(nonlinear), [xs], samples=3000, seed=0)[0]
    scale = np.abs(exact).max(axis=1, keepdims=True)
    assert np.abs(sampled - exact).max() < 0.05 * scale.max()
    np.testing.assert_allclose(sampled, exact, atol=0.05 * scale.max())


@pytest.mark.parametrize(
    "players",
    [{}, {"sampling_dims": [2]}, {"sampling_dims": [1, 2]}, {"feature_mask": np.array([[0, 0, 1], [2, 2, 1]])}],
)
def test_each_permutation_sums_to_the_output_difference(players):
    """samples=1: one permutation, whose values telescope to f(x) - f(baseline) exactly."""
    rng = np.random.default_rng(4)
    xs = rng.normal(size=(6, 2, 3))
    baseline = rng.normal(size=(2, 3))

    def fn(x):
        return nonlinear(x.reshape(len(x), 6)[:, :5]) * x[:, 1, 2]

    result = shapley_sampling(forward_of(fn), [xs], samples=1, baseline=baseline, seed=0, **players)[0]
    if "feature_mask" in players:  # every element holds its player's value: count each player once
        _, first = np.unique(players["feature_mask"], return_index=True)
        totals = result.reshape(len(xs), -1)[:, first].sum(axis=1)
    else:
        totals = result.reshape(len(xs), -1).sum(axis=1)
    np.testing.assert_allclose(totals, fn(xs) - fn(baseline[None])[0], rtol=1e-10, atol=1e-12)


def test_exact_values_sum_to_the_output_difference():
    rng = np.random.default_rng(5)
    xs = rng.normal(size=(4, 5))
    result = shapley_exact(forward_of(nonlinear), [xs], baseline=0.5)[0]
    np.testing.assert_allclose(result.sum(axis=1), nonlinear(xs) - nonlinear(np.full((1, 5), 0.5)), rtol=1e-10)


# -----------------------------------------------------------------------------
# A linear model: every method gives w * (x - baseline)
# -----------------------------------------------------------------------------

W = np.arange(1.0, 13.0).reshape(3, 4) * np.array([1, -1, 0.5, 2])
linear = forward_of(lambda x: (x * W).sum(axis=(1, 2)) + 7.0)


@pytest.mark.parametrize("name", list(METHODS))
def test_linear_model_attributions_are_w_times_x(name):
    xs = np.random.default_rng(6).normal(size=(3, 3, 4))
    np.testing.assert_allclose(METHODS[name](linear, [xs])[0], xs * W, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(METHODS))
@pytest.mark.parametrize("baseline", ["array", "scalar"])
def test_linear_model_attributions_are_w_times_x_minus_baseline(name, baseline):
    rng = np.random.default_rng(7)
    xs = rng.normal(size=(3, 3, 4))
    base = rng.normal(size=(3, 4)) if baseline == "array" else 0.25
    result = METHODS[name](linear, [xs], baseline=base)[0]
    np.testing.assert_allclose(result, (xs - base) * W, rtol=1e-10, atol=1e-12)


# -----------------------------------------------------------------------------
# Players: sampling_dims (trailing dims included) and feature masks
# -----------------------------------------------------------------------------

CHANNEL_GAIN = np.array([1.0, -2.0, 0.5])


def per_channel(x):
    """NHWC -> (k,): a sum over channels of a nonlinear function of that channel's pixels only."""
    return (CHANNEL_GAIN * (x.max(axis=(1, 2)) ** 2 + np.prod(x, axis=(1, 2)))).sum(axis=1)


def test_trailing_sampling_dims_give_each_channel_its_effect():
    """f is additive over channels, so a channel's Shapley value is its own term: exact for every permutation."""
    rng = np.random.default_rng(9)
    xs = rng.normal(size=(4, 3, 5, 3))
    result = shapley_sampling(forward_of(per_channel), [xs], samples=3, sampling_dims=[3], seed=0)[0]
    assert result.shape == (4, 3)
    expected = CHANNEL_GAIN * (xs.max(axis=(1, 2)) ** 2 + np.prod(xs, axis=(1, 2)))  # baseline 0 gives 0
    np.testing.assert_allclose(result, expected, rtol=1e-10)


def per_pixel(x):
    """NHWC -> (k,): a sum over pixels of a nonlinear function of that pixel's channels only."""
    gain = np.arange(1.0, 1.0 + x.shape[1] * x.shape[2]).reshape(x.shape[1], x.shape[2])
    return (gain * np.tanh(x.prod(axis=3) + x.sum(axis=3))).sum(axis=(1, 2))


def test_pixel_sampling_dims_give_each_pixel_its_effect():
    rng = np.random.default_rng(10)
    xs = rng.normal(size=(2, 3, 4, 2))
    result = shapley_sampling(forward_of(per_pixel), [xs], samples=2, sampling_dims=[1, 2], seed=0)[0]
    assert result.shape == (2, 3, 4)
    gain = np.arange(1.0, 13.0).reshape(3, 4)
    np.testing.assert_allclose(result, gain * np.tanh(xs.prod(axis=3) + xs.sum(axis=3)), rtol=1e-10)


def test_sampling_dims_order_sets_the_result_axes():
    xs = np.random.default_rng(11).normal(size=(2, 3, 4, 2))
    hw = shapley_sampling(forward_of(per_pixel), [xs], samples=1, sampling_dims=[1, 2], seed=0)[0]
    wh = shapley_sampling(forward_of(per_pixel), [xs], samples=1, sampling_dims=[2, 1], seed=0)[0]
    assert wh.shape == (2, 4, 3)
    np.testing.assert_allclose(wh, hw.transpose(0, 2, 1), rtol=1e-10)


SUPERPIXELS = np.array([[10, 10, 20, 20], [10, 10, 20, 20], [30, 30, 40, 40], [30, 30, 40, 40]])[..., None]


def per_superpixel(x):
    """(k, 4, 4, 2) -> (k,): additive over the 2x2 superpixels, nonlinear inside each."""
    blocks = x.reshape(len(x), 2, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4, 5).reshape(len(x), 4, 8)
    return (np.array([1.0, 2.0, -1.0, 0.5]) * np.sin(blocks.sum(axis=2)) * blocks.max(axis=2)).sum(axis=1)


@pytest.mark.parametrize("name", ["shapley_exact", "shapley_sampling", "feature_ablation"])
def test_feature_mask_superpixels_each_hold_their_own_term(name):
    rng = np.random.default_rng(12)
    xs = rng.normal(size=(3, 4, 4, 2))
    kwargs = {"samples": 2, "seed": 0} if name == "shapley_sampling" else {}
    result = METHODS[name](forward_of(per_superpixel), [xs], feature_mask=SUPERPIXELS, **kwargs)[0]
    assert result.shape == xs.shape
    blocks = xs.reshape(3, 2, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4, 5).reshape(3, 4, 8)
    terms = np.array([1.0, 2.0, -1.0, 0.5]) * np.sin(blocks.sum(axis=2)) * blocks.max(axis=2)  # (3, 4 superpixels)
    expected = terms[:, np.searchsorted([10, 20, 30, 40], SUPERPIXELS[..., 0])][..., None].repeat(2, axis=-1)
    np.testing.assert_allclose(result, expected, rtol=1e-10, atol=1e-12)


def test_shapley_exact_with_mask_matches_enumeration_over_players():
    """The game over players: z_p = 1 keeps the elements of player p, z_p = 0 sets them to the baseline 0."""
    rng = np.random.default_rng(13)
    xs = rng.normal(size=(2, 2, 3))
    mask = np.array([[0, 1, 1], [2, 2, 3]])

    def fn(x):
        return np.tanh(x[:, 0, 0] * x[:, 1, 2] + x[:, 0, 1]) * x[:, 1, 0] + x[:, 0, 2] ** 2

    result = shapley_exact(forward_of(fn), [xs], feature_mask=mask)[0]
    for n in range(2):

        def game(z, n=n):
            return fn(np.where(z[:, mask].astype(bool), xs[n], 0.0))

        expected = shapley_by_permutations(game, np.ones(4), np.zeros(4))
        np.testing.assert_allclose(result[n], expected[mask], rtol=1e-10, atol=1e-12)


# -----------------------------------------------------------------------------
# Several model inputs
# -----------------------------------------------------------------------------

WA, WB = np.array([1.0, -2.0, 3.0]), np.array([[0.5, 4.0], [-1.0, 2.0]])
two_linear = forward_of(lambda a, b: a @ WA + (b * WB).sum(axis=(1, 2)))


@pytest.mark.parametrize("name", list(METHODS))
def test_two_inputs_linear_model(name):
    rng = np.random.default_rng(14)
    a, b = rng.normal(size=(3, 3)), rng.normal(size=(3, 2, 2))
    base = [0.5, np.ones((2, 2))]
    ra, rb = METHODS[name](two_linear, [a, b], baseline=base)
    np.testing.assert_allclose(ra, (a - 0.5) * WA, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(rb, (b - 1.0) * WB, rtol=1e-10, atol=1e-12)


def test_two_inputs_exact_matches_enumeration_with_interaction():
    rng = np.random.default_rng(15)
    a, b = rng.normal(size=(2, 2)), rng.normal(size=(2, 3))

    def fn(a, b):
        return np.minimum(a[:, 0], b[:, 2]) + a[:, 1] * b[:, 0] * b[:, 1]

    ra, rb = shapley_exact(forward_of(fn), [a, b])
    for n in range(2):
        expected = shapley_by_permutations(lambda v: fn(v[:, :2], v[:, 2:]), np.r_[a[n], b[n]], np.zeros(5))
        np.testing.assert_allclose(np.r_[ra[n], rb[n]], expected, rtol=1e-10, atol=1e-12)


def test_two_inputs_occlusion_with_one_window_per_input():
    rng = np.random.default_rng(16)
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(2, 2, 2))
    recorder = Recorder(lambda a, b: a @ WA + (b * WB).sum(axis=(1, 2)))
    ra, rb = occlusion(recorder, [a, b], window_shape=[3, (1, 2)])
    # one window over a's 3 features, two windows over b's rows: the drop shared by each window's elements
    np.testing.assert_allclose(ra, np.repeat((a @ WA)[:, None] / 3, 3, axis=1), rtol=1e-10)
    np.testing.assert_allclose(rb, np.repeat((b * WB).sum(axis=2, keepdims=True) / 2, 2, axis=2), rtol=1e-10)
    assert sum(recorder.sizes) == 2 * (1 + 1 + 2)


def test_two_inputs_sampling_dims_per_input():
    rng = np.random.default_rng(17)
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(2, 2, 2))
    ra, rb = shapley_sampling(two_linear, [a, b], samples=2, sampling_dims=[None, [2]], seed=0)
    assert ra.shape == (2, 3) and rb.shape == (2, 2)
    np.testing.assert_allclose(ra, a * WA, rtol=1e-10)
    np.testing.assert_allclose(rb, (b * WB).sum(axis=1), rtol=1e-10)


def test_feature_mask_ids_are_shared_across_inputs():
    rng = np.random.default_rng(18)
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(2, 2, 2))
    ra, rb = feature_ablation(two_linear, [a, b], feature_mask=[np.array([0, 1, 2]), np.array([[2, 3], [3, 3]])])
    shared = a[:, 2] * WA[2] + b[:, 0, 0] * WB[0, 0]  # player 2 is a[2] and b[0, 0] together
    np.testing.assert_allclose(ra[:, 2], shared, rtol=1e-10)
    np.testing.assert_allclose(rb[:, 0, 0], shared, rtol=1e-10)
    np.testing.assert_allclose(ra[:, :2], a[:, :2] * WA[:2], rtol=1e-10)


# -----------------------------------------------------------------------------
# Randomness
# -----------------------------------------------------------------------------


def test_seed_makes_sampling_reproducible_and_no_seed_does_not():
    xs = [np.random.default_rng(19).normal(size=(3, 5))]
    first = shapley_sampling(forward_of(nonlinear), xs, samples=3, seed=42)[0]
    again = shapley_sampling(forward_of(nonlinear), xs, samples=3, seed=42)[0]
    np.testing.assert_array_equal(first, again)
    unseeded = [shapley_sampling(forward_of(nonlinear), xs, samples=3)[0] for _ in range(3)]
    assert not all(np.array_equal(unseeded[0], u) for u in unseeded[1:])


def test_each_sample_draws_its_own_permutations():
    """20 copies of [4, 2]: with one permutation each, min gives [2, 0] or [0, 2]: not all the same."""
    xs = [np.tile([4.0, 2.0], (20, 1))]
    result = shapley_sampling(minimum, xs, samples=1, seed=0)[0]
    assert {tuple(r) for r in result} == {(2.0, 0.0), (0.0, 2.0)}


def test_antithetic_pairs_each_permutation_with_its_reverse():
    """The rows show the order in which players are switched off: the second walk of a pair reverses the first."""
    recorder = Recorder(nonlinear)
    x = np.random.default_rng(20).normal(size=(1, 5))
    shapley_sampling(recorder, [x], samples=4, antithetic=True, seed=1, batch_size=1000)
    rows = recorder.calls[0][0][0]
    walks = rows.reshape(4, 6, 5)
    for first, second in [(walks[0], walks[1]), (walks[2], walks[3])]:
        removed_first = [int(np.flatnonzero(first[t] != first[t + 1])[0]) for t in range(5)]
        removed_second = [int(np.flatnonzero(second[t] != second[t + 1])[0]) for t in range(5)]
        assert removed_second == removed_first[::-1]


def test_antithetic_sampling_is_complete_and_converges():
    xs = [np.random.default_rng(21).normal(size=(2, 5))]
    exact = shapley_exact(forward_of(nonlinear), xs)[0]
    sampled = shapley_sampling(forward_of(nonlinear), xs, samples=2000, antithetic=True, seed=0)[0]
    np.testing.assert_allclose(sampled.sum(axis=1), exact.sum(axis=1), rtol=1e-10)
    assert np.abs(sampled - exact).max() < 0.05 * np.abs(exact).max()


# -----------------------------------------------------------------------------
# Execution: batching, row counts, owners, dtypes, progress
# -----------------------------------------------------------------------------

JOBS = {
    "occlusion": lambda f, xs, **kw: occlusion(f, xs, window_shape=(2, 1), **kw),
    "feature_ablation": lambda f, xs, **kw: feature_ablation(f, xs, **kw),
    "shapley_exact": lambda f, xs, **kw: shapley_exact(f, xs, feature_mask=np.array([[0, 1], [2, 2], [3, 0]]), **kw),
    "shapley_sampling": lambda f, xs, **kw: shapley_sampling(f, xs, samples=3, seed=5, **kw),
    "shapley_sampling_dims": lambda f, xs, **kw: shapley_sampling(f, xs, samples=3, sampling_dims=[2], seed=5, **kw),
    "antithetic": lambda f, xs, **kw: shapley_sampling(f, xs, samples=4, antithetic=True, seed=5, **kw),
}


def three_by_two(x):
    return np.tanh(x[:, 0, 0] * x[:, 2, 1] + x[:, 1].sum(axis=1)) + x[:, 0, 1] ** 2


@pytest.mark.parametrize("name", list(JOBS))
def test_results_do_not_depend_on_batch_size(name):
    xs = [np.random.default_rng(22).normal(size=(5, 3, 2))]
    reference = JOBS[name](forward_of(three_by_two), xs)[0]
    for batch_size in [1, 2, 7, 13, 10_000]:
        recorder = Recorder(three_by_two)
        result = JOBS[name](recorder, xs, batch_size=batch_size)[0]
        assert max(recorder.sizes) <= batch_size
        np.testing.assert_allclose(result, reference, rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize(
    ("run", "rows_per_sample"),
    [
        (lambda f, xs: shapley_sampling(f, xs, samples=4, seed=0), 4 * (12 + 1)),
        (lambda f, xs: shapley_sampling(f, xs, samples=4, sampling_dims=[1], seed=0), 4 * (3 + 1)),
        (lambda f, xs: shapley_exact(f, xs, feature_mask=np.arange(12).reshape(3, 4) // 3), 2**4),
        (lambda f, xs: feature_ablation(f, xs), 1 + 12),
        (lambda f, xs: occlusion(f, xs, window_shape=(2, 2)), 1 + 2 * 3),
    ],
)
def test_row_count(run, rows_per_sample):
    """P + 1 rows per permutation, 2**P per exact game, P + 1 per ablation, 1 + windows per occlusion."""
    recorder = Recorder(lambda x: x.sum(axis=(1, 2)))
    run(recorder, [np.ones((2, 3, 4))])
    assert sum(recorder.sizes) == 2 * rows_per_sample


def test_forward_gets_the_owner_of_every_row():
    """Each sample has its own weights (its own target): the forward picks them by owner."""
    rng = np.random.default_rng(23)
    xs, weights = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))

    def forward(rows, owners):
        return (rows[0] * weights[owners]).sum(axis=1)

    for method in METHODS.values():
        np.testing.assert_allclose(method(forward, [xs], batch_size=5)[0], xs * weights, rtol=1e-10, atol=1e-12)


def test_default_batch_size_keeps_a_call_near_the_library_budget():
    """The engine's default is deepexplain.batching's (16 MiB of input per call), as for every method."""
    recorder = Recorder(lambda x: x.reshape(len(x), -1)[:, 0])
    big = np.ones((1, 1024, 1024), dtype=np.float32)  # 4 MiB per row: 4 rows per call
    occlusion(recorder, [big], window_shape=(256, 256), step=256)  # 1 + 16 rows
    assert recorder.sizes == [4, 4, 4, 4, 1]


def test_integer_inputs_give_float_results_and_float32_stays_float32():
    xs = np.arange(12).reshape(2, 6)
    result = feature_ablation(forward_of(lambda x: (x * x).sum(axis=1)), [xs])[0]
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result, xs * xs)
    result32 = feature_ablation(forward_of(lambda x: (x * x).sum(axis=1)), [xs.astype(np.float32)])[0]
    assert result32.dtype == np.float32


def test_non_finite_inputs_are_replaced_not_multiplied():
    """inf * 0 is nan: rows of inputs with infinities must still carry the baseline where ablated."""
    recorder = Recorder(lambda x: np.nan_to_num(x, posinf=100.0).sum(axis=1))
    result = feature_ablation(recorder, [np.array([[np.inf, 1.0]])], baseline=2.0)[0]
    rows = recorder.calls[0][0][0]
    np.testing.assert_array_equal(rows, [[np.inf, 1.0], [2.0, 1.0], [np.inf, 2.0]])
    np.testing.assert_allclose(result, [[98.0, -1.0]])


def test_no_progress_bar_for_a_fast_job(capsys):
    occlusion(toy, TOY_XS)
    shapley_sampling(toy, TOY_XS, progress=False)
    assert capsys.readouterr().err == ""


def test_forward_returning_the_wrong_shape_is_reported():
    with pytest.raises(ValueError, match=r"forward must return one scalar output per row, shape \(3,\)"):
        feature_ablation(lambda rows, owners: np.zeros((len(owners), 2)), [np.ones((1, 2))])


def test_no_samples_gives_empty_results_without_calls():
    recorder = Recorder(lambda x: x.sum(axis=1))
    for method in METHODS.values():
        assert method(recorder, [np.ones((0, 3))])[0].shape == (0, 3)
    assert recorder.calls == []


# -----------------------------------------------------------------------------
# Misuse fails before the first forward call, naming the argument
# -----------------------------------------------------------------------------

X = [np.ones((2, 3, 4))]
BAD = [
    ("window_shape length", lambda f: occlusion(f, X, window_shape=(2,)), ValueError, "window_shape.*2 for a sample"),
    ("window too large", lambda f: occlusion(f, X, window_shape=(4, 1)), ValueError, "window_shape.*larger"),
    ("window zero", lambda f: occlusion(f, X, window_shape=0), ValueError, "window_shape.*positive"),
    ("window float", lambda f: occlusion(f, X, window_shape=1.5), TypeError, "window_shape.*int"),
    ("step zero", lambda f: occlusion(f, X, step=0), ValueError, "step.*positive"),
    ("step negative", lambda f: occlusion(f, X, step=(1, -1)), ValueError, "step.*positive"),
    ("step length", lambda f: occlusion(f, X, step=(1, 1, 1)), ValueError, "step.*got \\(1, 1, 1\\)"),
    ("sampling dim 0", lambda f: shapley_sampling(f, X, sampling_dims=[0, 1]), ValueError, "batch dimension 0"),
    ("sampling dim range", lambda f: shapley_sampling(f, X, sampling_dims=[3]), ValueError, "sampling_dims.*1..2"),
    ("sampling dims empty", lambda f: shapley_sampling(f, X, sampling_dims=[]), ValueError, "sampling_dims"),
    ("sampling dims repeat", lambda f: shapley_sampling(f, X, sampling_dims=[1, 1]), ValueError, "repeat"),
    ("sampling dims type", lambda f: shapley_sampling(f, X, sampling_dims=1), TypeError, "sampling_dims"),
    ("mask shape", lambda f: feature_ablation(f, X, feature_mask=np.zeros((2, 4), int)), ValueError, r"\(3, 4\)"),
    ("mask float", lambda f: shapley_exact(f, X, feature_mask=np.zeros((3, 4))), TypeError, "feature_mask.*integer"),
    (
        "mask and dims",
        lambda f: shapley_sampling(f, X, sampling_dims=[1], feature_mask=np.zeros((3, 4), int)),
        ValueError,
        "not both",
    ),
    ("baseline shape", lambda f: feature_ablation(f, X, baseline=np.zeros(4)), ValueError, r"baseline.*\(3, 4\)"),
    ("baseline type", lambda f: occlusion(f, X, baseline="zero"), TypeError, "baseline"),
    ("samples zero", lambda f: shapley_sampling(f, X, samples=0), ValueError, "samples must be at least 1"),
    ("samples float", lambda f: shapley_sampling(f, X, samples=2.0), TypeError, "samples must be an int"),
    ("antithetic odd", lambda f: shapley_sampling(f, X, samples=3, antithetic=True), ValueError, "even"),
    (
        "sample counts",
        lambda f: feature_ablation(f, [np.ones((2, 3)), np.ones((3, 3))]),
        ValueError,
        r"same number of samples.*\[2, 3\]",
    ),
    ("xs type", lambda f: feature_ablation(f, "xs"), TypeError, "xs must be"),
    ("xs no features", lambda f: feature_ablation(f, [np.ones(3)]), ValueError, r"xs\[0\].*shape \(3,\)"),
    ("batch_size zero", lambda f: occlusion(f, X, batch_size=0), ValueError, "batch_size"),
    ("batch_size float", lambda f: occlusion(f, X, batch_size=2.5), TypeError, "batch_size"),
    ("too many players", lambda f: shapley_exact(f, [np.ones((1, 17))]), ValueError, "17.*feature_mask.*sampling"),
    ("mask not per input", lambda f: feature_ablation(f, X * 2, feature_mask=np.zeros(3, int)), TypeError, "list"),
]


@pytest.mark.parametrize(("run", "error", "match"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_misuse_raises_before_any_forward_call(run, error, match):
    recorder = Recorder(lambda *inputs: np.zeros(len(inputs[0])))
    with pytest.raises(error, match=match):
        run(recorder)
    assert recorder.calls == []


def test_forward_must_be_callable():
    with pytest.raises(TypeError, match="forward must be callable"):
        occlusion(None, X)


# -----------------------------------------------------------------------------
# Peer implementation: Captum on the same function (skipped when not installed)
# -----------------------------------------------------------------------------


def test_matches_captum_feature_ablation_and_shapley_values():
    torch = pytest.importorskip("torch")
    captum_attr = pytest.importorskip("captum.attr")
    rng = np.random.default_rng(24)
    xs = rng.normal(size=(3, 2, 4))
    mask = np.array([[0, 0, 1, 2], [3, 3, 1, 2]])
    baseline = 0.3

    def fn_torch(x):
        flat = x.reshape(len(x), -1)
        return torch.tanh(flat[:, 0] * flat[:, 5] + flat[:, 2]) * flat[:, 3] + flat.prod(dim=1)

    def fn_numpy(x):
        return fn_torch(torch.from_numpy(x)).numpy()

    inputs, tmask = torch.from_numpy(xs), torch.from_numpy(mask)[None]
    expected_ablation = captum_attr.FeatureAblation(fn_torch).attribute(inputs, baselines=baseline, feature_mask=tmask)
    expected_shapley = captum_attr.ShapleyValues(fn_torch).attribute(inputs, baselines=baseline, feature_mask=tmask)
    ablation = feature_ablation(forward_of(fn_numpy), [xs], feature_mask=mask, baseline=baseline)[0]
    shapley = shapley_exact(forward_of(fn_numpy), [xs], feature_mask=mask, baseline=baseline)[0]
    np.testing.assert_allclose(ablation, expected_ablation.numpy(), rtol=1e-8, atol=1e-10)
    # Captum sums its permutations in float32
    np.testing.assert_allclose(shapley, expected_shapley.numpy(), rtol=1e-5, atol=1e-7)
