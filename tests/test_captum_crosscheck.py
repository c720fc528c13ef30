"""deepexplain against Captum on weight-identical TensorFlow / PyTorch twins.

Oracle: Captum (Saliency with abs=True, InputXGradient, IntegratedGradients, DeepLift) on a PyTorch copy of each
TF1-graph model, with the same weights (non-zero biases), the same inputs, targets, baselines, integration rule and
number of steps. The twins are first checked to compute the same outputs, so a disagreement in the attributions is
a disagreement of the attribution methods.

Layouts: the TF model takes NHWC inputs, its PyTorch twin NCHW (conv kernels HWIO -> OIHW). The twin permutes its
activations back to NHWC before flattening so that the dense layer sees the same order; Captum's attributions are
permuted from NCHW to NHWC before the comparison.

Tolerance: float32 on the TF side, float64 in PyTorch (so the oracle adds no rounding of its own); the inputs are
drawn in float32 and fed to both sides unchanged. The baseline is drawn independently of the inputs, so the
differences x - x_ref at every layer are of order 0.1-1 and DeepLIFT's secant multipliers (delta out / delta in) do
not amplify float32 rounding beyond the tolerance.

Captum caveat (captum 0.9.0, meta-pytorch/captum#1104): Captum's DeepLift is wrong whenever one hooked nonlinear
module feeds another directly (nn.ReLU -> nn.MaxPool2d, nn.Tanh -> nn.Sigmoid, ...). Its hooks work on tensors: a
module's forward hook registers a hook on its output tensor that records grad_output, and the next module's pre-hook
registers, on that same tensor, the hook that replaces the gradient by that module's DeepLIFT multipliers. Hooks run
in registration order, so the first module records the plain gradient instead of the modified one. On the CNN below,
without a separator, Captum's attributions do not even sum to f(x) - f(baseline) (its own convergence delta reaches
1.9), while deepexplain's match a hand-written Rescale/cross-maximum reference to 7e-8. The PyTorch twin therefore
puts a clone (identity on values, a fresh tensor) between its ReLU and its MaxPool2d; with it Captum agrees with that
reference exactly. The hand-written reference is also used directly as a second oracle for the CNN.

Not compared: our 'trapezoid' integration, whose weights sum to 1, against Captum's 'riemann_trapezoid', whose
weights sum to 1 - 1/n by design.
"""

import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
captum = pytest.importorskip("captum")

import tensorflow as tf  # noqa: E402
from captum.attr import (  # noqa: E402
    Deconvolution,
    DeepLift,
    GuidedBackprop,
    InputXGradient,
    IntegratedGradients,
    Saliency,
)
from torch import nn  # noqa: E402

from deepexplain.tensorflow import DeepExplain  # noqa: E402

tf1 = tf.compat.v1

pytestmark = [
    pytest.mark.filterwarnings("ignore:Input Tensor 0 did not already require gradients:UserWarning"),
    pytest.mark.filterwarnings("ignore:Setting forward, backward hooks:UserWarning"),
]

RTOL = 1e-5
ATOL = 1e-5
CLASSES = 3
N_SAMPLES = 5
IG_STEPS = 16

MLP_SIZES = (6, 8, 7, 5, CLASSES)  # dense -> ReLU -> dense -> Tanh -> dense -> Sigmoid -> dense (logits)
MLP_ACTIVATIONS = (
    (tf.nn.relu, nn.ReLU),
    (tf.nn.tanh, nn.Tanh),
    (tf.nn.sigmoid, nn.Sigmoid),
)
CNN_SIZE, CNN_CHANNELS, CNN_FILTERS = 8, 2, (4, 3)


# ----------------------------------------------------------------------------------------------------------------
# The twins
# ----------------------------------------------------------------------------------------------------------------


class Twin:
    """A TF1 graph model (placeholder ``X``, logits ``T``, its session) and its PyTorch copy taking ``to_torch(xs)``."""

    def __init__(self, graph, session, X, T, torch_model, channels_last):
        self.graph, self.session, self.X, self.T = graph, session, X, T
        self.torch_model = torch_model.double().eval()
        self.channels_last = channels_last

    def to_torch(self, xs):
        x = torch.from_numpy(np.asarray(xs, dtype=np.float32).astype(np.float64))
        return x.permute(0, 3, 1, 2).contiguous() if self.channels_last else x

    def from_torch(self, tensor):
        a = tensor.detach()
        a = a.permute(0, 2, 3, 1) if self.channels_last else a
        return a.numpy()

    def tf_forward(self, xs):
        return self.session.run(self.T, {self.X: xs})

    def torch_forward(self, xs):
        with torch.no_grad():
            return self.torch_model(self.to_torch(xs)).numpy()

    def deepexplain(self, method, xs, ys, **kwargs):
        with DeepExplain(session=self.session) as de:
            return de.explain(method, self.T, self.X, xs, ys=ys, progress=False, **kwargs)

    def close(self):
        self.session.close()


def _param(array):
    return nn.Parameter(torch.from_numpy(np.asarray(array, dtype=np.float32).astype(np.float64)))


def _variable(array, name):
    return tf.Variable(np.asarray(array, dtype=np.float32), name=name)


def _dense_weights(rng, fan_in, fan_out):
    w = rng.normal(0, 1.5 / np.sqrt(fan_in), (fan_in, fan_out)).astype(np.float32)
    b = rng.normal(0, 0.4, fan_out).astype(np.float32)
    assert np.all(b != 0)
    return w, b


def _torch_linear(w, b):
    layer = nn.Linear(*w.shape)
    with torch.no_grad():
        layer.weight = _param(w.T)  # TF: x @ w, torch: x @ weight.T
        layer.bias = _param(b)
    return layer


def build_mlp():
    rng = np.random.default_rng(20240601)
    layers = [_dense_weights(rng, i, o) for i, o in zip(MLP_SIZES[:-1], MLP_SIZES[1:], strict=True)]
    graph = tf.Graph()
    with graph.as_default():
        X = tf1.placeholder(tf.float32, [None, MLP_SIZES[0]], name="X")
        h = X
        for k, (w, b) in enumerate(layers):
            h = tf.matmul(h, _variable(w, f"w{k}")) + _variable(b, f"b{k}")
            if k < len(MLP_ACTIVATIONS):
                h = MLP_ACTIVATIONS[k][0](h)
        session = tf1.Session(graph=graph)
        session.run(tf1.global_variables_initializer())
    modules = []
    for k, (w, b) in enumerate(layers):
        modules.append(_torch_linear(w, b))
        if k < len(MLP_ACTIVATIONS):
            modules.append(MLP_ACTIVATIONS[k][1]())  # a separate module instance per use, as Captum's DeepLift needs
    return Twin(graph, session, X, h, nn.Sequential(*modules), channels_last=False)


class _ToChannelsLast(nn.Module):
    def forward(self, x):
        return x.permute(0, 2, 3, 1)


class _Clone(nn.Module):
    """Identity on values; a fresh tensor between two of Captum's hooked nonlinear modules (see the module doc)."""

    def forward(self, x):
        return x.clone()


def build_cnn():
    """conv 3x3 SAME + ReLU -> max-pool 2 -> conv 3x3 SAME + ReLU -> avg-pool 2 -> flatten (NHWC order) -> dense."""
    rng = np.random.default_rng(7)
    f1, f2 = CNN_FILTERS
    k1 = rng.normal(0, 0.5, (3, 3, CNN_CHANNELS, f1)).astype(np.float32)  # HWIO
    c1 = rng.normal(0, 0.3, f1).astype(np.float32)
    k2 = rng.normal(0, 0.4, (3, 3, f1, f2)).astype(np.float32)
    c2 = rng.normal(0, 0.3, f2).astype(np.float32)
    flat = (CNN_SIZE // 4) ** 2 * f2
    w, b = _dense_weights(rng, flat, CLASSES)
    assert np.all(c1 != 0) and np.all(c2 != 0)

    graph = tf.Graph()
    with graph.as_default():
        X = tf1.placeholder(tf.float32, [None, CNN_SIZE, CNN_SIZE, CNN_CHANNELS], name="X")
        h = tf.nn.relu(tf.nn.conv2d(X, _variable(k1, "k1"), 1, "SAME") + _variable(c1, "c1"))
        h = tf.nn.max_pool2d(h, 2, 2, "VALID")
        h = tf.nn.relu(tf.nn.conv2d(h, _variable(k2, "k2"), 1, "SAME") + _variable(c2, "c2"))
        h = tf.nn.avg_pool2d(h, 2, 2, "VALID")
        h = tf.reshape(h, [-1, flat])
        T = tf.matmul(h, _variable(w, "w")) + _variable(b, "b")
        session = tf1.Session(graph=graph)
        session.run(tf1.global_variables_initializer())

    conv1, conv2 = nn.Conv2d(CNN_CHANNELS, f1, 3, padding=1), nn.Conv2d(f1, f2, 3, padding=1)
    with torch.no_grad():
        conv1.weight, conv1.bias = _param(k1.transpose(3, 2, 0, 1)), _param(c1)  # HWIO -> OIHW
        conv2.weight, conv2.bias = _param(k2.transpose(3, 2, 0, 1)), _param(c2)
    model = nn.Sequential(
        conv1,
        nn.ReLU(),
        _Clone(),
        nn.MaxPool2d(2),
        conv2,
        nn.ReLU(),
        nn.AvgPool2d(2),
        _ToChannelsLast(),
        nn.Flatten(),
        _torch_linear(w, b),
    )
    return Twin(graph, session, X, T, model, channels_last=True)


BUILDERS = {"mlp": build_mlp, "cnn": build_cnn}


@pytest.fixture(scope="module")
def twins():
    built = {}
    yield lambda name: built.setdefault(name, BUILDERS[name]())
    for twin in built.values():
        twin.close()


@pytest.fixture(params=["mlp", "cnn"])
def twin(request, twins):
    return twins(request.param)


def sample_shape(twin):
    return tuple(twin.X.shape.as_list()[1:])


def inputs(twin, seed=0):
    """N float32 samples around 0, with a different target class per sample."""
    rng = np.random.default_rng(seed)
    xs = rng.normal(0, 1, (N_SAMPLES, *sample_shape(twin))).astype(np.float32)
    targets = np.arange(N_SAMPLES) % CLASSES
    return xs, targets


def baseline(twin):
    """A non-zero, non-constant reference (one sample's shape), away from the inputs."""
    rng = np.random.default_rng(99)
    return (rng.uniform(0.5, 1.5, sample_shape(twin)) * np.where(rng.random(sample_shape(twin)) < 0.5, -1, 1)).astype(
        np.float32
    )


def one_hot(targets):
    return np.eye(CLASSES, dtype=np.float32)[targets]


def torch_baseline(twin, b):
    return twin.to_torch(b[None])


def assert_matches(ours, theirs):
    assert ours.shape == theirs.shape
    assert np.abs(theirs).max() > 1e-2, "the oracle's attributions are all ~0: the comparison would be vacuous"
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=ATOL)


# ----------------------------------------------------------------------------------------------------------------
# The twins compute the same function
# ----------------------------------------------------------------------------------------------------------------


def test_tf_model_and_torch_twin_compute_the_same_logits(twin):
    xs, _ = inputs(twin)
    tf_out, torch_out = twin.tf_forward(xs), twin.torch_forward(xs)
    assert tf_out.shape == (N_SAMPLES, CLASSES)
    np.testing.assert_allclose(tf_out, torch_out, rtol=1e-5, atol=1e-5)
    b = baseline(twin)[None]
    np.testing.assert_allclose(twin.tf_forward(b), twin.torch_forward(b), rtol=1e-5, atol=1e-5)


def test_the_inputs_switch_relus_both_on_and_off(twins):
    """Guard: the samples and the baseline put the first ReLU layer in mixed states, so the ReLU rules matter."""
    for name in ("mlp", "cnn"):
        twin = twins(name)
        xs, _ = inputs(twin)
        first_pre = twin.torch_model[0]
        with torch.no_grad():
            pre = first_pre(twin.to_torch(np.concatenate([xs, baseline(twin)[None]]))).numpy()
        assert 0.2 < (pre > 0).mean() < 0.8, name


# ----------------------------------------------------------------------------------------------------------------
# Gradient methods
# ----------------------------------------------------------------------------------------------------------------


def test_saliency_matches_captum_saliency_abs(twin):
    xs, targets = inputs(twin)
    ours = twin.deepexplain("saliency", xs, one_hot(targets))
    theirs = Saliency(twin.torch_model).attribute(twin.to_torch(xs), target=targets.tolist(), abs=True)
    assert_matches(ours, twin.from_torch(theirs))


def test_grad_times_input_matches_captum_input_x_gradient(twin):
    xs, targets = inputs(twin)
    ours = twin.deepexplain("grad*input", xs, one_hot(targets))
    theirs = InputXGradient(twin.torch_model).attribute(twin.to_torch(xs), target=targets.tolist())
    assert_matches(ours, twin.from_torch(theirs))


@pytest.mark.parametrize("method, peer", [("guided_backprop", GuidedBackprop), ("deconvnet", Deconvolution)])
def test_relu_filtering_rules_match_captum(twin, method, peer):
    """Captum's GuidedBackprop/Deconvolution override ReLU modules only, as our rules do (Tanh/Sigmoid keep their
    gradients; ours warn about them)."""
    xs, targets = inputs(twin)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = twin.deepexplain(method, xs, one_hot(targets))
    theirs = peer(twin.torch_model).attribute(twin.to_torch(xs), target=targets.tolist())
    assert_matches(ours, twin.from_torch(theirs))


@pytest.mark.parametrize("integration", ["riemann_right", "riemann_left", "riemann_middle", "gausslegendre"])
def test_intgrad_matches_captum_integrated_gradients_with_the_same_rule_and_baseline(twin, integration):
    xs, targets = inputs(twin)
    b = baseline(twin)
    ours = twin.deepexplain("intgrad", xs, one_hot(targets), steps=IG_STEPS, baseline=b, integration=integration)
    theirs = IntegratedGradients(twin.torch_model).attribute(
        twin.to_torch(xs),
        baselines=torch_baseline(twin, b),
        target=targets.tolist(),
        n_steps=IG_STEPS,
        method=integration,
    )
    assert_matches(ours, twin.from_torch(theirs))


def test_intgrad_default_zero_baseline_and_riemann_right_match_captum_integrated_gradients(twin):
    xs, targets = inputs(twin)
    ours = twin.deepexplain("intgrad", xs, one_hot(targets), steps=IG_STEPS)
    theirs = IntegratedGradients(twin.torch_model).attribute(
        twin.to_torch(xs), target=targets.tolist(), n_steps=IG_STEPS, method="riemann_right"
    )
    assert_matches(ours, twin.from_torch(theirs))


def test_captum_integration_rules_differ_by_more_than_the_crosscheck_tolerance(twins):
    """Guard: with IG_STEPS steps the four rules give different attributions, so matching the named rule is real."""
    twin = twins("mlp")
    xs, targets = inputs(twin)
    ig = IntegratedGradients(twin.torch_model)
    results = {
        m: ig.attribute(
            twin.to_torch(xs),
            baselines=torch_baseline(twin, baseline(twin)),
            target=targets.tolist(),
            n_steps=IG_STEPS,
            method=m,
        ).numpy()
        for m in ("riemann_right", "riemann_left", "riemann_middle", "gausslegendre")
    }
    names = sorted(results)
    for i, a in enumerate(names):
        for other in names[i + 1 :]:
            assert np.abs(results[a] - results[other]).max() > 100 * ATOL, (a, other)


# ----------------------------------------------------------------------------------------------------------------
# DeepLIFT (Rescale; cross-maximum rule for max-pooling in both libraries)
# ----------------------------------------------------------------------------------------------------------------


def _deeplift_pair(twin, b):
    xs, targets = inputs(twin)
    kwargs = {} if b is None else {"baseline": b}
    ours = twin.deepexplain("deeplift", xs, one_hot(targets), **kwargs)
    baselines = None if b is None else torch_baseline(twin, b)
    theirs = DeepLift(twin.torch_model).attribute(twin.to_torch(xs), baselines=baselines, target=targets.tolist())
    return ours, twin.from_torch(theirs)


def test_deeplift_matches_captum_deeplift_on_mlp_with_relu_tanh_sigmoid(twins):
    twin = twins("mlp")
    assert_matches(*_deeplift_pair(twin, baseline(twin)))


def test_deeplift_default_zero_baseline_matches_captum_deeplift_on_mlp(twins):
    assert_matches(*_deeplift_pair(twins("mlp"), None))


def test_deeplift_matches_captum_deeplift_on_cnn_with_maxpool(twins):
    twin = twins("cnn")
    b = baseline(twin)
    # Guard: in some pooling windows the reference's max exceeds the input's and sits elsewhere, so the
    # cross-maximum split (not a plain max-pool gradient) is exercised.
    xs, _ = inputs(twin)
    with torch.no_grad():
        act = twin.torch_model[1](twin.torch_model[0](twin.to_torch(np.concatenate([xs, b[None]]))))
    pooled, where = nn.functional.max_pool2d(act, 2, return_indices=True)
    ref_larger = pooled[:-1] < pooled[-1:]
    other_argmax = where[:-1] != where[-1:]
    assert (ref_larger & other_argmax).sum() >= 10
    assert_matches(*_deeplift_pair(twin, b))


def test_deeplift_default_zero_baseline_matches_captum_deeplift_on_cnn_with_maxpool(twins):
    assert_matches(*_deeplift_pair(twins("cnn"), None))


def rescale_cross_max_reference(model, x, r, targets):
    """DeepLIFT multipliers by hand in float64, layer by layer over an nn.Sequential (independent of Captum's hooks).

    Rescale ``(y - y_ref) / (x - x_ref)`` for ReLU/Tanh/Sigmoid; for MaxPool2d(2) the cross-maximum split: with
    ``c = max(y, y_ref)`` per window, ``c - y_ref`` goes to the argmax of ``x`` and ``y - c`` to the argmax of
    ``x_ref``, then divided by ``x - x_ref``; every other layer is linear, so its multiplier is its vector-Jacobian
    product. Where ``x == x_ref`` the multiplier is set to 0: with these float inputs that only happens behind a ReLU
    that is off for both, whose own multiplier (0 / nonzero delta) then zeroes it anyway.
    """
    xs_, rs_ = [x], [r]
    with torch.no_grad():
        for layer in model:
            xs_.append(layer(xs_[-1]))
            rs_.append(layer(rs_[-1]))
    m = torch.zeros_like(xs_[-1])
    m[torch.arange(len(x)), torch.as_tensor(targets)] = 1.0
    for k in range(len(model) - 1, -1, -1):
        layer, x_in, r_in, y, y_ref = model[k], xs_[k], rs_[k].expand_as(xs_[k]), xs_[k + 1], rs_[k + 1]
        delta = x_in - r_in
        usable = delta.abs() > 1e-12
        safe = torch.where(usable, delta, torch.ones_like(delta))
        if isinstance(layer, nn.ReLU | nn.Tanh | nn.Sigmoid):
            m = torch.where(usable, m * (y - y_ref) / safe, 0.0)
        elif isinstance(layer, nn.MaxPool2d):
            (_, at_x), (_, at_r) = (nn.functional.max_pool2d(v, 2, return_indices=True) for v in (x_in, r_in))
            cross = torch.maximum(y, y_ref)
            size = x_in.shape[-2:]
            parts = nn.functional.max_unpool2d(m * (cross - y_ref), at_x, 2, output_size=size)
            parts = parts + nn.functional.max_unpool2d(m * (y - cross), at_r, 2, output_size=size)
            m = torch.where(usable, parts / safe, 0.0)
        else:
            point = x_in.clone().requires_grad_(True)
            (m,) = torch.autograd.grad(layer(point), point, m)
    return m * (x - r)


def test_deeplift_matches_hand_written_rescale_cross_max_reference_on_cnn_with_maxpool(twins):
    twin = twins("cnn")
    xs, targets = inputs(twin)
    b = baseline(twin)
    ours = twin.deepexplain("deeplift", xs, one_hot(targets), baseline=b)
    reference = rescale_cross_max_reference(twin.torch_model, twin.to_torch(xs), twin.to_torch(b[None]), targets)
    assert_matches(ours, twin.from_torch(reference))
