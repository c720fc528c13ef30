"""Model-agnostic methods: KernelSHAP (exact with all coalitions; shap's KernelExplainer), LIME (recovers a linear
model), per-sample feature masks from segmentations, bad input."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import deepexplain  # noqa: E402
from deepexplain import perturbation  # noqa: E402
from deepexplain.errors import InvalidInputError  # noqa: E402

RNG = np.random.default_rng(0)
W = RNG.normal(size=6)


def nonlinear(rows, owners):
    x = rows[0].reshape(len(rows[0]), -1)
    return np.tanh(x @ W) + 0.3 * x[:, 0] * x[:, 1] - 0.2 * x[:, 2] ** 2


def linear(rows, owners):
    return rows[0].reshape(len(rows[0]), -1) @ W


XS = [RNG.normal(size=(4, 6))]


# ---------------------------------------------------------------------------------------------------------------------
# KernelSHAP


@pytest.mark.parametrize("mask", [None, np.array([0, 0, 1, 2, 2, 3])])
def test_kernel_shap_with_all_coalitions_is_exact(mask):
    exact = perturbation.shapley_exact(nonlinear, XS, feature_mask=mask, baseline=0.5)[0]
    kernel = perturbation.kernel_shap(nonlinear, XS, feature_mask=mask, baseline=0.5)[0]
    np.testing.assert_allclose(kernel, exact, atol=1e-10)


def test_kernel_shap_sampled_is_efficient_close_seeded_and_batch_invariant():
    exact = perturbation.shapley_exact(nonlinear, XS)[0]
    sampled = perturbation.kernel_shap(nonlinear, XS, samples=40, seed=3)[0]
    full = nonlinear(XS, None) - nonlinear([np.zeros_like(XS[0])], None)
    np.testing.assert_allclose(sampled.sum(axis=1), full, atol=1e-10)  # efficiency holds exactly
    assert np.abs(sampled - exact).max() < 0.05
    again = perturbation.kernel_shap(nonlinear, XS, samples=40, seed=3, batch_size=7)[0]
    np.testing.assert_array_equal(again, sampled)
    other = perturbation.kernel_shap(nonlinear, XS, samples=40, seed=4)[0]
    assert not np.array_equal(other, sampled)


def test_kernel_shap_equals_shap_kernel_explainer():
    shap = pytest.importorskip("shap")
    background = np.full((1, 6), 0.25)
    explainer = shap.KernelExplainer(lambda x: nonlinear([x], None), background)
    theirs = explainer.shap_values(XS[0], nsamples=2**6, silent=True)
    ours = perturbation.kernel_shap(nonlinear, XS, baseline=0.25)[0]
    np.testing.assert_allclose(ours, np.asarray(theirs).reshape(ours.shape), atol=1e-6)


def test_kernel_shap_groups_across_inputs_of_a_keras_model():
    a, b = keras.Input((3,)), keras.Input((2,))
    joined = keras.layers.Concatenate()([a, b])
    model = keras.Model([a, b], keras.layers.Dense(1)(keras.layers.Dense(4, activation="tanh")(joined)))
    xs = [RNG.normal(size=(3, 3)).astype(np.float32), RNG.normal(size=(3, 2)).astype(np.float32)]
    masks = [np.array([0, 1, 2]), np.array([2, 3])]  # player 2 spans both inputs
    ours = deepexplain.explain("kernel_shap", model, xs, target=0, feature_mask=masks)
    exact = deepexplain.explain("shapley_exact", model, xs, target=0, feature_mask=masks)
    for got, expected in zip(ours, exact, strict=True):
        np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose(ours[0][:, 2], ours[1][:, 0])  # one player, one value


def test_kernel_shap_warns_when_samples_barely_determine_the_regression():
    with pytest.warns(UserWarning, match=r"10 coalitions for 36 players .* give samples >= 72"):
        perturbation.kernel_shap(lambda rows, owners: rows[0].sum(axis=1), [RNG.normal(size=(1, 36))], samples=10)


# ---------------------------------------------------------------------------------------------------------------------
# LIME


def test_lime_recovers_the_group_contributions_of_a_linear_model():
    mask = np.array([0, 0, 1, 1, 2, 3])
    xs = XS[0]
    lime = perturbation.lime(linear, [xs], feature_mask=mask, alpha=0.0, samples=200, seed=0)[0]
    contributions = xs * W
    groups = np.stack([contributions[:, mask == g].sum(axis=1) for g in range(4)], axis=1)
    np.testing.assert_allclose(lime, groups[:, mask], atol=1e-10)
    ridge = perturbation.lime(linear, [xs], feature_mask=mask, samples=200, seed=0)[0]
    assert 0 < np.abs(ridge).sum() < np.abs(lime).sum()  # the ridge penalty shrinks the coefficients


def test_lime_matches_a_weighted_ridge_fit_by_hand():
    sklearn = pytest.importorskip("sklearn.linear_model")
    x = XS[0][:1]
    samples, width = 50, 0.25
    ours = perturbation.lime(nonlinear, [x], samples=samples, kernel_width=width, seed=5)[0][0]
    present = np.random.default_rng(5).integers(0, 2, size=(samples, 6)).astype(bool)
    present[0] = True
    outputs = nonlinear([np.where(present, x, 0.0)], None)
    distance = 1 - np.sqrt(present.sum(1) / 6)
    weights = np.sqrt(np.exp(-(distance**2) / width**2))
    reference = sklearn.Ridge(alpha=1.0).fit(present.astype(float), outputs, sample_weight=weights)
    np.testing.assert_allclose(ours, reference.coef_, atol=1e-10)


def test_lime_seeds_reproduce_and_arguments_are_checked():
    first = perturbation.lime(nonlinear, XS, samples=30, seed=1)[0]
    np.testing.assert_array_equal(perturbation.lime(nonlinear, XS, samples=30, seed=1, batch_size=11)[0], first)
    with pytest.raises(ValueError, match="kernel_width must be > 0"):
        perturbation.lime(nonlinear, XS, kernel_width=0)
    with pytest.raises(ValueError, match="alpha must be >= 0"):
        perturbation.lime(nonlinear, XS, alpha=-1.0)
    with pytest.warns(UserWarning, match=r"lime: 5 coalitions for 6 players .* samples >= 7"):
        perturbation.lime(nonlinear, XS, samples=5, seed=0)


# ---------------------------------------------------------------------------------------------------------------------
# Segments, per-sample masks


def test_segments_equal_scikit_image_labels():
    from skimage import data, segmentation, transform

    image = transform.resize(data.astronaut(), (64, 64), anti_aliasing=True)
    images = np.stack([image, image[::-1]])
    labels = deepexplain.segments(images, "slic", n_segments=20, compactness=10, start_label=0)
    assert labels.shape == (2, 64, 64, 1) and labels.dtype == np.int64
    for got, picture in zip(labels, images, strict=True):
        expected = segmentation.slic(picture, n_segments=20, compactness=10, start_label=0, channel_axis=-1)
        np.testing.assert_array_equal(got[..., 0], np.unique(expected, return_inverse=True)[1].reshape(64, 64))
    quick = deepexplain.segments(images[:1], "quickshift", kernel_size=3, max_dist=6)
    expected = segmentation.quickshift(images[0], kernel_size=3, max_dist=6)
    np.testing.assert_array_equal(quick[0, ..., 0], np.unique(expected, return_inverse=True)[1].reshape(64, 64))
    grid = deepexplain.segments(images, "grid", cells=(2, 4))
    assert np.unique(grid).tolist() == list(range(8)) and grid[0, 0, 63, 0] == 3 and grid[0, 63, 0, 0] == 4


def test_per_sample_masks_give_each_sample_its_players():
    xs = RNG.uniform(size=(3, 8, 8, 1))
    weights = RNG.normal(size=64)

    def forward(rows, owners):
        return rows[0].reshape(len(rows[0]), -1) @ weights

    masks = deepexplain.segments(xs, "felzenszwalb", scale=2)
    together = perturbation.kernel_shap(forward, [xs], feature_mask=masks, samples=300, seed=0)[0]
    for k in range(3):
        alone = perturbation.shapley_sampling(forward, [xs[k : k + 1]], feature_mask=masks[k], samples=1)[0]
        np.testing.assert_allclose(together[k : k + 1], alone, atol=1e-8)  # a linear model: exact either way
    with pytest.raises(ValueError, match="expected 3 masks .* got 2"):
        perturbation.kernel_shap(forward, [xs], feature_mask=masks[:2])


def test_bad_masks_and_segmentations():
    with pytest.raises(ValueError, match=r"feature_mask of input 0 must be broadcastable to one sample of shape "):
        perturbation.kernel_shap(linear, XS, feature_mask=np.zeros(5, int))
    with pytest.raises(InvalidInputError, match=r"kind must be one of .* \(did you mean 'slic'\?\)"):
        deepexplain.segments(np.zeros((1, 8, 8, 3)), "slik")
    with pytest.raises(InvalidInputError, match="xs must be images"):
        deepexplain.segments(np.zeros((8, 8)), "grid")
    with pytest.raises(InvalidInputError, match="cells"):
        deepexplain.segments(np.zeros((1, 8, 8, 1)), "grid", cells=(9, 2))


# ---------------------------------------------------------------------------------------------------------------------
# RISE


def test_rise_of_a_linear_model_is_its_contributions_through_the_masks_second_moment():
    """For f(x) = sum w * x and a zero baseline, RISE = (1/p) * contributions @ E[M M^T] over the masks drawn."""
    xs = RNG.uniform(size=(2, 10, 10, 2))
    w = RNG.normal(size=(10, 10, 2))

    def forward(rows, owners):
        return (rows[0] * w).reshape(len(rows[0]), -1).sum(axis=1)

    result = perturbation.rise(forward, [xs], masks=300, p=0.4, seed=1)[0]
    masks = perturbation.rise_masks((10, 10), 300, p=0.4, seed=1).reshape(300, -1).astype(np.float64)
    expected = (xs * w).sum(-1).reshape(2, -1) @ (masks.T @ masks / 300) / 0.4
    assert result.shape == (2, 10, 10)
    np.testing.assert_allclose(result.reshape(2, -1), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(perturbation.rise(forward, [xs], masks=300, p=0.4, seed=1, batch_size=77)[0],
                                  result)  # fmt: skip


def test_rise_masks_are_shifted_smooth_grids():
    masks = perturbation.rise_masks((28, 28), 2000, grid=7, p=0.5, seed=0)
    assert masks.shape == (2000, 28, 28) and masks.min() >= 0 and masks.max() <= 1
    assert abs(masks.mean() - 0.5) < 0.01
    assert np.abs(np.diff(masks, axis=1)).max() <= 0.25 + 1e-6  # bilinear over 4-pixel cells: steps of 1/4
    assert len({m.tobytes() for m in masks[:50]}) == 50
    sequence = perturbation.rise_masks((30,), 10, grid=5, seed=0)
    assert sequence.shape == (10, 30)


def test_rise_on_a_keras_model_finds_the_region_the_output_reads():
    inputs = keras.Input((12, 12, 1))
    region = keras.layers.Lambda(lambda x: x[:, 2:5, 7:10, :])(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, kernel_initializer="ones")(keras.layers.Flatten()(region)))
    xs = np.ones((1, 12, 12, 1), np.float32)
    saliency = deepexplain.explain("rise", model, xs, target=0, masks=1000, grid=4, seed=0)
    assert saliency.shape == (1, 12, 12)
    row, column = np.unravel_index(saliency[0].argmax(), (12, 12))
    assert 1 <= row <= 5 and 6 <= column <= 10


def test_rise_bad_input():
    with pytest.raises(ValueError, match="p must be a probability in"):
        perturbation.rise(linear, [RNG.normal(size=(1, 4, 4, 1))], p=0.0)
    with pytest.raises(ValueError, match="rise masks the positions of one input"):
        perturbation.rise(linear, [RNG.normal(size=(1, 6))])
    with pytest.raises(ValueError, match="grid must be a positive int"):
        perturbation.rise(linear, [RNG.normal(size=(1, 4, 4, 1))], grid=0)


@pytest.mark.parametrize(
    ("method", "kwargs"),
    [
        ("kernel_shap", {"feature_mask": np.arange(16).reshape(4, 4, 1) // 4, "samples": 20, "seed": 0}),
        ("lime", {"feature_mask": np.arange(16).reshape(4, 4, 1) // 2, "samples": 40, "seed": 1}),
        ("rise", {"masks": 50, "grid": 2, "seed": 2}),
        ("xrai", {"steps": 4, "min_pixel_diff": 1, "segments": np.arange(16).reshape(1, 4, 4) // 8}),
    ],
)
def test_tf1_context_equals_keras(method, kwargs):
    import tensorflow as tf

    from deepexplain.tensorflow import DeepExplain

    rng = np.random.default_rng(3)
    kernel = rng.normal(size=(16, 2)).astype(np.float32)
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(2, use_bias=False)])
    model.set_weights([kernel])
    xs = rng.uniform(size=(3, 4, 4, 1)).astype(np.float32)
    expected = deepexplain.explain(method, model, xs, target=1, **kwargs)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        X = tf.compat.v1.placeholder(tf.float32, (None, 4, 4, 1))
        T = tf.matmul(tf.reshape(X, (-1, 16)), kernel)
        with DeepExplain(session=session) as de:
            got = de.explain(method, T, X, xs, ys=np.eye(2, dtype=np.float32)[[1, 1, 1]], **kwargs)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
