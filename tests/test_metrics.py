"""Metrics: hand computations on linear models, xplique's Deletion/Insertion and Captum's infidelity on the same
weights, localisation and complexity by hand, bad input."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

import deepexplain  # noqa: E402
from deepexplain import metrics  # noqa: E402
from deepexplain.errors import InvalidInputError  # noqa: E402

RNG = np.random.default_rng(0)
W = RNG.normal(size=(4, 4, 2)).astype(np.float32)
XS = RNG.uniform(size=(3, 4, 4, 2)).astype(np.float32)


def linear_model():
    model = keras.Sequential([keras.Input((4, 4, 2)), keras.layers.Flatten(), keras.layers.Dense(1, use_bias=False)])
    model.set_weights([W.reshape(32, 1)])
    return model


def small_cnn():
    rng = np.random.default_rng(1)
    inputs = keras.Input((10, 10, 3))
    h = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(h)))
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model


def test_deletion_and_insertion_of_a_linear_model_by_hand():
    model = linear_model()
    attributions = RNG.normal(size=XS.shape)
    curve = metrics.deletion(model, XS, attributions, target=0, steps=4)
    contributions = (XS * W).sum(-1).reshape(3, -1)  # per pixel, channels together
    order = np.argsort(-attributions.mean(-1).reshape(3, -1), axis=1)
    for n in range(3):
        for k, count in enumerate([0, 4, 8, 12, 16]):
            kept = np.ones(16, bool)
            kept[order[n, :count]] = False
            assert curve.scores[n, k] == pytest.approx(contributions[n][kept].sum(), abs=1e-5)
    np.testing.assert_allclose(curve.fractions, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(curve.auc, ((curve.scores[:, 1:] + curve.scores[:, :-1]) / 2).mean(1))
    inserted = metrics.insertion(model, XS, attributions, target=0, steps=4)
    # revealing the top k pixels gives what deleting them takes away
    np.testing.assert_allclose(inserted.scores + curve.scores, np.stack([contributions.sum(1)] * 5, 1), atol=1e-5)


def test_pixel_flipping_aopc_of_a_linear_model_by_hand():
    model = linear_model()
    attributions = RNG.normal(size=XS.shape)
    curve = metrics.pixel_flipping(model, XS, attributions, target=0, steps=4, region=2)
    contributions = (XS * W).sum(-1)  # (3, 4, 4)
    regions = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    for n in range(3):
        relevance = np.array([attributions[n][regions == r].sum() for r in range(4)])
        value = np.array([contributions[n][regions == r].sum() for r in range(4)])
        drops = np.concatenate([[0], np.cumsum(value[np.argsort(-relevance)])])
        assert curve.aopc[n] == pytest.approx(drops.mean(), abs=1e-5)
    lerf = metrics.pixel_flipping(model, XS, attributions, target=0, steps=4, region=2, order="lerf")
    random = metrics.pixel_flipping(model, XS, attributions, target=0, steps=4, region=2, order="random", seed=0)
    assert lerf.scores.shape == random.scores.shape == (3, 5)
    np.testing.assert_allclose(lerf.scores[:, [0, -1]], curve.scores[:, [0, -1]], atol=1e-5)


def test_deletion_and_insertion_equal_xplique():
    xplique_metrics = pytest.importorskip("xplique.metrics")
    model = small_cnn()
    xs = RNG.uniform(size=(4, 10, 10, 3)).astype(np.float32)
    attributions = RNG.normal(size=xs.shape)  # continuous: no ties, whose order the two libraries break differently
    ys = np.eye(3, dtype=np.float32)[[2, 0, 1, 2]]
    scorer = metrics.Scorer(model)
    theirs = xplique_metrics.Deletion(model, xs, ys, steps=6).evaluate(attributions)
    ours = metrics.deletion(scorer, xs, attributions, ys=ys, steps=6)
    assert ours.auc.mean() == pytest.approx(theirs, rel=1e-5)
    theirs = xplique_metrics.Insertion(model, xs, ys, steps=5, baseline_mode=0.5, max_percentage_perturbed=0.6)
    ours = metrics.insertion(scorer, xs, attributions, ys=ys, steps=5, baseline=0.5, max_percentage_perturbed=0.6)
    assert ours.auc.mean() == pytest.approx(theirs.evaluate(attributions), rel=1e-5)
    theirs = xplique_metrics.Sparseness().detailed_evaluate(attributions)
    np.testing.assert_allclose(metrics.sparseness(attributions), theirs, rtol=1e-4)
    theirs = xplique_metrics.Complexity().detailed_evaluate(attributions)
    np.testing.assert_allclose(metrics.complexity(attributions), theirs, rtol=1e-4)


def test_infidelity_is_zero_for_the_gradient_of_a_linear_model_and_equals_captum():
    model = linear_model()
    gradient = deepexplain.explain("gradient", model, XS, target=0)
    assert np.abs(metrics.infidelity(model, XS, gradient, target=0, samples=20, seed=0)).max() < 1e-8
    torch = pytest.importorskip("torch")
    captum_metrics = pytest.importorskip("captum.metrics")
    attributions = RNG.normal(size=XS.shape).astype(np.float32)
    noise = np.random.default_rng(5).normal(size=(6, *XS.shape))
    ours = metrics.infidelity(model, XS, attributions, target=0, perturbations=noise)
    weights = torch.from_numpy(W.reshape(-1).astype(np.float64))
    drawn = iter(noise.transpose(1, 0, 2, 3, 4))  # Captum asks one sample's perturbations at a time
    theirs = []
    for n in range(len(XS)):
        sample = torch.from_numpy(np.repeat(XS[n : n + 1], 6, 0).astype(np.float64))
        own = torch.from_numpy(next(drawn))

        def perturb(inputs, own=own):
            return own, inputs - own

        theirs.append(captum_metrics.infidelity(lambda x: (x.reshape(len(x), -1) @ weights)[:, None],
                                                perturb, sample[:1], torch.from_numpy(attributions[n : n + 1]
                                                .astype(np.float64)), target=0, n_perturb_samples=6,
                                                max_examples_per_batch=6).item())  # fmt: skip
    np.testing.assert_allclose(ours, theirs, rtol=1e-4)


def test_sensitivity_max_of_grad_times_input_on_a_linear_model_by_hand():
    model = linear_model()
    explainer = deepexplain.Explainer("grad*input", model)
    noise = np.random.default_rng(2).uniform(-0.1, 0.1, size=(5, *XS.shape)).astype(np.float32)
    got = metrics.sensitivity_max(explainer, XS, target=0, perturbations=noise)
    base = (XS * W).reshape(3, -1)
    expected = np.max([np.linalg.norm((d * W).reshape(3, -1), axis=1) / np.linalg.norm(base, axis=1) for d in noise],
                      axis=0)  # fmt: skip
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert np.allclose(metrics.sensitivity_max(deepexplain.Explainer("gradient", model), XS, target=0, seed=0), 0)


def test_localisation_and_complexity_by_hand():
    maps = np.array([[[0.0, 3.0], [1.0, -2.0]], [[2.0, 0.0], [0.0, 1.0]]])
    masks = np.array([[[True, True], [False, False]], [[False, True], [True, True]]])
    np.testing.assert_array_equal(metrics.pointing_game(maps, masks), [True, False])
    np.testing.assert_allclose(metrics.relevance_mass_accuracy(maps, masks), [3 / 4, 1 / 3])
    np.testing.assert_allclose(metrics.relevance_rank_accuracy(maps, masks), [1 / 2, 2 / 3])  # ties by position
    uniform, single = np.ones((1, 10)), np.eye(10)[:1]
    np.testing.assert_allclose(metrics.sparseness(np.concatenate([uniform, single])), [0.0, 0.9], atol=1e-12)
    np.testing.assert_allclose(metrics.complexity(np.concatenate([uniform, single])), [np.log(10), 0.0], atol=1e-12)
    channels = np.stack([maps, maps], -1)  # (N, H, W, C) maps are summed over channels for localisation
    np.testing.assert_allclose(metrics.relevance_mass_accuracy(channels, masks), [3 / 4, 1 / 3])


def test_bad_input():
    model = linear_model()
    with pytest.raises(InvalidInputError, match=r"attributions must be shaped like xs \(3, 4, 4, 2\)"):
        metrics.deletion(model, XS, np.zeros((3, 16)))
    with pytest.raises(InvalidInputError, match="steps must be a positive int; got 0"):
        metrics.deletion(model, XS, XS, steps=0)
    with pytest.raises(InvalidInputError, match="max_percentage_perturbed must be in"):
        metrics.insertion(model, XS, XS, max_percentage_perturbed=0)
    with pytest.raises(InvalidInputError, match=r"masks \(3, 3\) do not match the attribution maps \(3, 4\)"):
        metrics.pointing_game(np.zeros((3, 4)), np.zeros((3, 3), bool))
    with pytest.raises(InvalidInputError, match="order must be 'morf', 'lerf' or 'random'"):
        metrics.pixel_flipping(model, XS, XS, order="best")
    with pytest.raises(InvalidInputError, match="attributions hold NaN"):
        metrics.deletion(model, XS, np.full(XS.shape, np.nan))


def test_mufidelity_equals_xplique_on_the_same_subsets():
    xplique_metrics = pytest.importorskip("xplique.metrics")
    import tensorflow as tf

    model = small_cnn()
    xs = RNG.uniform(size=(3, 10, 10, 3)).astype(np.float32)
    attributions = RNG.normal(size=xs.shape)
    ys = np.eye(3, dtype=np.float32)[[0, 1, 2]]
    ours = metrics.mufidelity(model, xs, attributions, ys=ys, grid=5, samples=40, seed=3, baseline=0.1)
    # the same subsets for xplique: our seeded masks, drawn sample after sample
    rng = np.random.default_rng(3)
    masks = [metrics._subset_masks(rng, 40, (10, 10), 5, 0.2) for _ in range(3)]
    metric = xplique_metrics.MuFidelity(model, xs, ys, batch_size=40, grid_size=5, nb_samples=40, baseline_mode=0.1)
    drawn = iter(masks)

    def perturb(inputs, count):  # xplique asks one sample's subsets at a time (batch_size = nb_samples)
        keep = next(drawn)[:, :, :, None].astype(np.float32)
        degraded = np.asarray(inputs)[:, None] * keep + np.float32(0.1) * (1 - keep)
        return tf.constant(degraded.reshape(-1, 10, 10, 3)), tf.constant(keep[None])

    metric._perturb_samples = perturb
    assert ours.mean() == pytest.approx(metric.evaluate(attributions.astype(np.float32)), abs=1e-6)
    with pytest.raises(InvalidInputError, match="subset_percent must be in"):
        metrics.mufidelity(model, xs, attributions, subset_percent=1.0)


def test_mufidelity_of_exact_attributions_of_a_linear_model_is_one():
    model = linear_model()
    contributions = XS * W  # the drop of removing a subset is exactly its summed contribution
    np.testing.assert_allclose(metrics.mufidelity(model, XS, contributions, target=0, grid=2, samples=30, seed=0), 1)


def test_evaluate_tables_methods_and_arrays_from_elsewhere():
    model = small_cnn()
    xs = RNG.uniform(size=(3, 10, 10, 3)).astype(np.float32)
    masks = np.zeros((3, 10, 10), bool)
    masks[:, 2:6, 3:7] = True
    noise = RNG.normal(size=xs.shape)
    evaluation = metrics.evaluate({"saliency": {}, "intgrad": {"steps": 8}, "noise": noise}, model, xs, target=1,
                                  metrics=("deletion", "sparseness", "pointing_game"), masks=masks)  # fmt: skip
    assert evaluation.methods == ("saliency", "intgrad", "noise")
    saliency = deepexplain.explain("saliency", model, xs, target=1)
    expected = metrics.deletion(model, xs, saliency, target=1).auc
    np.testing.assert_allclose(evaluation.values["saliency", "deletion"], expected)
    np.testing.assert_allclose(evaluation.values["noise", "sparseness"], metrics.sparseness(noise))
    table = str(evaluation)
    assert "deletion ↓" in table and "sparseness ↑" in table and table.count("\n") == 4 and "±" in table
    with pytest.raises(InvalidInputError, match="need masks="):
        metrics.evaluate(["saliency"], model, xs, metrics=("pointing_game",))
    with pytest.raises(InvalidInputError, match="unknown metrics"):
        metrics.evaluate(["saliency"], model, xs, metrics=("roar",))


def test_randomization_check():
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    model = small_cnn()
    before = [w.copy() for w in model.get_weights()]
    xs = RNG.uniform(size=(3, 10, 10, 3)).astype(np.float32)
    result = metrics.randomization_check("saliency", model, xs, target=1, seed=0)
    assert result.layers == tuple(layer.name for layer in model.layers if layer.get_weights())[::-1]
    assert result.spearman.shape == result.ssim.shape == (2, 3) and result.random_logit.shape == (3,)
    assert np.all(result.spearman[-1] < 0.9)  # every layer random: the map changed
    for w, b in zip(model.get_weights(), before, strict=True):
        np.testing.assert_array_equal(w, b)  # the model itself is untouched
    control = metrics.randomization_check("input", model, xs, target=1, order="independent")
    np.testing.assert_allclose(control.spearman, 1.0)  # the input baseline ignores the weights
    np.testing.assert_allclose(control.ssim, 1.0)
    # the similarities are scipy's and scikit-image's on the maps
    a, b = RNG.normal(size=(2, 10, 10)), RNG.normal(size=(2, 10, 10))
    np.testing.assert_allclose(metrics._rank_correlations(a, b, spearmanr),
                               [spearmanr(a[i].ravel(), b[i].ravel())[0] for i in range(2)])  # fmt: skip
    scaled = [(m - m.min()) / np.ptp(m) for m in (a[0], b[0])]
    assert metrics._ssims(a[:1], b[:1])[0] == pytest.approx(structural_similarity(*scaled, data_range=1.0))
    with pytest.raises(InvalidInputError, match="order must be 'cascading' or 'independent'"):
        metrics.randomization_check("saliency", model, xs, order="bottom_up")


def test_local_lipschitz_of_grad_times_input_on_a_linear_model_by_hand():
    model = linear_model()
    explainer = deepexplain.Explainer("grad*input", model)
    noise = np.random.default_rng(4).normal(0, 0.1, size=(4, *XS.shape)).astype(np.float32)
    got = metrics.local_lipschitz(explainer, XS, target=0, perturbations=noise)
    expected = np.max([np.linalg.norm((d * W).reshape(3, -1), axis=1) / np.linalg.norm(d.reshape(3, -1), axis=1)
                       for d in noise], axis=0)  # fmt: skip
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert np.all(got <= np.abs(W).max() + 1e-6)  # |w * d| <= max|w| |d|
    with pytest.raises(InvalidInputError, match="perturbations must be shaped"):
        metrics.local_lipschitz(explainer, XS, target=0, perturbations=noise[:, :2])


def test_road_imputation_recovers_a_linear_image_and_the_curve_runs():
    rows, cols = np.indices((9, 9))
    image = np.stack([0.1 * rows + 0.2 * cols, 1.0 - 0.05 * rows], -1)
    removed = np.zeros((9, 9), bool)
    removed[2:7, 3:6] = True  # an interior hole: the symmetric neighbour means reproduce a linear function
    removed[4, 7] = True
    filled = metrics.impute(image * np.where(removed[..., None], 7.0, 1.0), removed, noise=0.0)
    np.testing.assert_allclose(filled, image, atol=1e-10)
    noisy = metrics.impute(image, removed, noise=0.01, rng=np.random.default_rng(0))
    assert 0.003 < np.std((noisy - image)[removed]) < 0.03 and np.array_equal(noisy[~removed], image[~removed])
    model = small_cnn()
    xs = RNG.uniform(size=(2, 10, 10, 3)).astype(np.float32)
    attributions = RNG.normal(size=xs.shape)
    curve = metrics.road(model, xs, attributions, target=0, steps=3, seed=0)
    np.testing.assert_allclose(curve.fractions, [0, 0.3, 0.6, 0.9])
    np.testing.assert_allclose(curve.scores[:, 0], model(xs).numpy()[:, 0], rtol=1e-5)
    again = metrics.road(model, xs, attributions, target=0, steps=3, seed=0, batch_size=3)
    np.testing.assert_allclose(again.scores, curve.scores, rtol=1e-6)
    with pytest.raises(InvalidInputError, match="road imputes pixels of images"):
        metrics.road(model, xs[:, 0], attributions[:, 0], target=0)


def test_sensitivity_max_equals_captum_on_the_same_perturbations():
    torch = pytest.importorskip("torch")
    captum_attr = pytest.importorskip("captum.attr")
    captum_metrics = pytest.importorskip("captum.metrics")
    rng = np.random.default_rng(6)
    kernel = rng.normal(size=(5, 4)).astype(np.float32)
    model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, use_bias=False, activation="tanh"),
                              keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")])  # fmt: skip
    model.layers[0].set_weights([kernel])
    xs = rng.normal(size=(3, 5)).astype(np.float32)
    noise = rng.uniform(-0.2, 0.2, size=(7, 3, 5)).astype(np.float32)
    ours = metrics.sensitivity_max(deepexplain.Explainer("grad*input", model), xs, target=0, perturbations=noise)
    twin = torch.nn.Sequential(torch.nn.Linear(5, 4, bias=False), torch.nn.Tanh(), torch.nn.Linear(4, 1, bias=False))
    with torch.no_grad():
        twin[0].weight.copy_(torch.from_numpy(kernel.T))
        twin[2].weight.fill_(1.0)
    expanded = torch.from_numpy(noise.transpose(1, 0, 2).reshape(-1, 5))  # Captum repeats each sample S times

    def perturb(inputs, radius):
        return inputs + expanded

    theirs = captum_metrics.sensitivity_max(captum_attr.InputXGradient(twin).attribute, torch.from_numpy(xs),
                                            perturb_func=perturb, n_perturb_samples=7, target=0)  # fmt: skip
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-4)
