"""Noise over any method: zero noise gives the base method back; the SmoothGrad kind over the gradient is
SmoothGrad; VarGrad and SquareGrad from their definitions on the same noise; Captum's NoiseTunnel on a twin with
the same noisy copies; seeds, batching, targets, both APIs, bad input."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from deepexplain import Explainer  # noqa: E402
from deepexplain.errors import InvalidInputError, UnknownMethodError  # noqa: E402
from deepexplain.tensorflow import DeepExplain  # noqa: E402
from deepexplain.tensorflow.methods.gradient import noisy_copies  # noqa: E402


def mlp(seed=0):
    rng = np.random.default_rng(seed)
    inputs = keras.Input((5,))
    hidden = keras.layers.Dense(8, activation="tanh")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3)(hidden))
    model.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in model.get_weights()])
    return model


XS = np.random.default_rng(1).normal(size=(6, 5)).astype(np.float32)


def gradients(model, points, target):
    x = tf.constant(points)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = model(x)[:, target]
    return tape.gradient(y, x).numpy()


@pytest.mark.parametrize(("method", "kwargs"), [("intgrad", {"steps": 8}), ("deeplift", {}), ("occlusion", {})])
def test_zero_noise_gives_the_base_method(method, kwargs):
    model = mlp()
    base = Explainer(method, model, **kwargs).run(XS, target=2)
    tunnel = Explainer("noise_tunnel", model, method=method, noise_level=0.0, samples=3, method_kwargs=kwargs)
    np.testing.assert_allclose(tunnel.run(XS, target=2), base, atol=1e-6)


def test_kinds_from_their_definitions_on_the_same_noise():
    model = mlp()
    samples, level, seed = 9, 0.2, 4
    noisy = noisy_copies(XS, samples, level, np.random.default_rng(seed))  # (samples, n, 5)
    g = gradients(model, noisy.reshape(-1, 5), 1).reshape(samples, len(XS), 5).astype(np.float64)
    expected = {"smoothgrad": g.mean(0), "smoothgrad_sq": (g**2).mean(0), "vargrad": g.var(0)}
    for kind, values in expected.items():
        got = Explainer("noise_tunnel", model, method="gradient", kind=kind, samples=samples, noise_level=level,
                        seed=seed).run(XS, target=1, batch_size=10)  # fmt: skip
        np.testing.assert_allclose(got, values, rtol=1e-5, atol=1e-6, err_msg=kind)
    vargrad = Explainer("vargrad", model, samples=samples, noise_level=level, seed=seed).run(XS, target=1)
    np.testing.assert_allclose(vargrad, expected["vargrad"], rtol=1e-5, atol=1e-6)
    square = Explainer("squaregrad", model, samples=samples, noise_level=level, seed=seed).run(XS, target=1)
    np.testing.assert_allclose(square, expected["smoothgrad_sq"], rtol=1e-5, atol=1e-6)
    smooth = Explainer("smoothgrad", model, samples=samples, noise_level=level, seed=seed).run(XS, target=1)
    np.testing.assert_allclose(smooth, expected["smoothgrad"], rtol=1e-5, atol=1e-6)


def test_copies_explain_the_clean_samples_output():
    """Target 'max' is each clean sample's largest output, for all its copies (not each copy's own)."""
    model = mlp()
    top = model(XS).numpy().argmax(1)
    explainer = Explainer("noise_tunnel", model, method="saliency", kind="vargrad", samples=5, noise_level=1.0, seed=0)
    np.testing.assert_allclose(explainer.run(XS), explainer.run(XS, target=top), atol=1e-7)
    np.testing.assert_allclose(explainer.run(XS, target=lambda out: out[:, 0] - out[:, 1]),
                               explainer.run(XS, ys=np.tile([[1.0, -1.0, 0.0]], (6, 1)).astype(np.float32)),
                               atol=1e-6)  # fmt: skip


def test_captum_noise_tunnel_on_a_twin():
    torch = pytest.importorskip("torch")
    captum_attr = pytest.importorskip("captum.attr")
    model = mlp()
    w = model.get_weights()
    twin = torch.nn.Sequential(torch.nn.Linear(5, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)).double()
    with torch.no_grad():
        for layer, (kernel, bias) in zip([twin[0], twin[2]], [w[0:2], w[2:4]], strict=True):
            layer.weight.copy_(torch.from_numpy(kernel.T.astype(np.float64)))
            layer.bias.copy_(torch.from_numpy(bias.astype(np.float64)))
    x = XS[:1]
    # Captum draws its own noise; with one sample of constant range, its absolute stdevs equals our relative level
    level = 0.1
    stdev = float(level * (x.max() - x.min()))
    torch.manual_seed(0)
    inputs = torch.from_numpy(np.repeat(x, 1, 0).astype(np.float64))
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(twin))
    theirs = tunnel.attribute(inputs, nt_type="vargrad", nt_samples=4000, stdevs=stdev, target=0, abs=False)
    ours = Explainer("noise_tunnel", model, method="gradient", kind="vargrad", samples=4000, noise_level=level,
                     seed=0).run(x, target=0)  # fmt: skip
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=0.15, atol=1e-3)  # two Monte-Carlo estimates


def test_tf1_context():
    model = mlp()
    w = model.get_weights()
    expected = Explainer("noise_tunnel", model, method="gradient", samples=4, seed=2).run(XS, target=0)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        X = tf.compat.v1.placeholder(tf.float32, (None, 5))
        T = tf.matmul(tf.tanh(tf.matmul(X, w[0]) + w[1]), w[2]) + w[3]
        with DeepExplain(session=session) as de:
            got = de.explain("noise_tunnel", T, X, XS, ys=np.eye(3, dtype=np.float32)[[0] * 6], method="gradient",
                             samples=4, seed=2)  # fmt: skip
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_bad_arguments():
    model = mlp()
    with pytest.raises(InvalidInputError, match="kind of noise_tunnel must be one of"):
        Explainer("noise_tunnel", model, kind="smooth")
    with pytest.raises(UnknownMethodError):
        Explainer("noise_tunnel", model, method="integrated")
    with pytest.raises(InvalidInputError, match="intgrad got unexpected argument"):
        Explainer("noise_tunnel", model, method="intgrad", method_kwargs={"step": 3})
    with pytest.raises(InvalidInputError, match="method of noise_tunnel must be a method without noise"):
        Explainer("noise_tunnel", model, method="vargrad")
    with pytest.raises(InvalidInputError, match="noise_level of vargrad must be a number >= 0"):
        Explainer("vargrad", model, noise_level=-1)
