"""deepexplain's LRP rules against zennit on weight-identical TensorFlow / PyTorch twins.

Oracle: zennit (a PyTorch LRP library) on a PyTorch copy of each TF1-graph model with the same weights, the same
float32 inputs and the same one-hot output selection. zennit's relevance is seeded with the explained output's value,
as ours is: ``with composite.context(model) as m: out = m(x); R = grad(out, x, grad_outputs=onehot * out)``. The
twins are first checked to compute the same outputs, so a disagreement is a disagreement of the LRP rules.

Models: an MLP (dense-ReLU-dense-ReLU-dense) and a CNN (conv-ReLU, max-pool, conv-ReLU, avg-pool, flatten, dense-ReLU,
dense), with non-zero biases and bias-free; inputs with negative values (N(0, 1) clipped to [-3, 3]) and in [0, 1].
Layouts as in ``test_captum_crosscheck`` (whose ``Twin`` and weight helpers are reused, so this module also skips
without captum): the TF model takes NHWC, its twin NCHW (kernels HWIO -> OIHW) and permutes back to NHWC before
flattening.

Rules per layer type: zennit hooks modules, we hook ops. zennit's max-pooling has no rule (its gradient, winner takes
all), as ours; activations get ``Pass``, average pooling ``Norm`` (epsilon rule with the 1e-6 stabiliser), as ours
(which gives average pooling the epsilon rule with the method's epsilon, 1e-6 in every comparison here).

Tolerance: zennit stabilises every denominator by +-1e-6 (sign(0) = +1), in float64 here; ours computes in float32
and, in the rules other than epsilon, divides without a stabiliser (0/0 -> 0). That 1e-6 is the largest source of
difference (alpha-beta: ~7e-5 of the attribution scale; ~1e-7 with zennit's stabiliser at 1e-12). Per sample, rtol 1e-3
and an atol of 1e-4 of that sample's largest attribution; the relevance must not be trivially zero.

Batch normalisation (``build_bn_cnn``: fused and ``tf.nn.batch_normalization`` forms, negative gammas) against
zennit with its ``SequentialMergeBatchNorm`` canonizer: both fold it into the layer before it (with a tiny batch-norm
epsilon: zennit's merged batch norm is not an exact identity, see ``BN_EPSILON``).

Differences (asserted as differences, see the tests at the end):
- ``lrp.z_plus`` ignores biases (iNNvestigate's definition); zennit's ``ZPlus`` keeps b+ in the denominator and equals
  our ``lrp.alpha_1_beta_0``. They agree on the bias-free twins.
- ``lrp.w_square`` ignores biases (iNNvestigate); zennit's ``WSquare`` squares the bias into the denominator
  (``rules.py: WSquare``, ``ParamMod(param ** 2)`` on every parameter). They agree on the bias-free twins.

Installing zennit from PyPI pulls torchvision, whose Linux wheels there are CUDA builds: with the CPU torch that
``constraints.txt`` pins, ``import torchvision`` fails ("operator torchvision::nms does not exist"), and
``import zennit`` with it (``zennit/__init__.py`` imports ``zennit.torchvision``, which needs only the two ResNet block
classes, for canonizers not used here). If that happens, zennit is imported with a stand-in torchvision that holds
those two classes, removed from ``sys.modules`` right after.
"""

import importlib
import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
if importlib.util.find_spec("zennit") is None:
    pytest.skip("zennit is not installed (pip install -c constraints.txt zennit)", allow_module_level=True)

from conftest import import_zennit  # noqa: E402

zennit = import_zennit()

import tensorflow as tf  # noqa: E402
from conftest import tf1  # noqa: E402
from test_captum_crosscheck import Twin, _dense_weights, _param, _ToChannelsLast, _variable  # noqa: E402
from torch import nn  # noqa: E402
from zennit.canonizers import SequentialMergeBatchNorm  # noqa: E402
from zennit.composites import (  # noqa: E402
    EpsilonGammaBox,
    EpsilonPlus,
    EpsilonPlusFlat,
    LayerMapComposite,
    MixedComposite,
    NameMapComposite,
    SpecialFirstLayerMapComposite,
)
from zennit.rules import AlphaBeta, Epsilon, Flat, Gamma, Norm, Pass, WSquare, ZBox, ZPlus  # noqa: E402
from zennit.types import Activation, AvgPool, Convolution  # noqa: E402
from zennit.types import Linear as AnyLinear  # noqa: E402  (zennit's Linear: nn.Linear and every convolution)

from deepexplain.tensorflow.methods import METHODS  # noqa: E402

CLASSES = 3
N_SAMPLES = 4
RTOL = 1e-3
ATOL_RELATIVE = 1e-4  # of each sample's largest |attribution|
EPSILON = 1e-6  # zennit's stabiliser; our epsilon in every comparison
GAMMA = 0.25
BOUNDS = {"signed": (-3.0, 3.0), "unit": (0.0, 1.0)}  # (low, high) that hold every input of that kind

MLP_SIZES = (6, 8, 7, CLASSES)
CNN_SIZE, CNN_CHANNELS, CNN_FILTERS, CNN_HIDDEN = 8, 2, (4, 3), 10


# ----------------------------------------------------------------------------------------------------------------
# The twins: built in the ``session`` fixture's graph
# ----------------------------------------------------------------------------------------------------------------


def _linear(w, b):
    layer = nn.Linear(*w.shape, bias=b is not None)
    with torch.no_grad():
        layer.weight = _param(w.T)  # TF: x @ w, torch: x @ weight.T
        if b is not None:
            layer.bias = _param(b)
    return layer


def _conv(kernel, b):
    layer = nn.Conv2d(
        kernel.shape[2], kernel.shape[3], kernel.shape[0], padding=kernel.shape[0] // 2, bias=b is not None
    )
    with torch.no_grad():
        layer.weight = _param(kernel.transpose(3, 2, 0, 1))  # HWIO -> OIHW
        if b is not None:
            layer.bias = _param(b)
    return layer


def _tf_bias(h, b, name):
    return h if b is None else h + _variable(b, name)


def build_mlp(session, bias=True):
    """dense -> ReLU -> dense -> ReLU -> dense (logits)."""
    rng = np.random.default_rng(20240620)
    layers = [_dense_weights(rng, i, o) for i, o in zip(MLP_SIZES[:-1], MLP_SIZES[1:], strict=True)]
    layers = [(w, b if bias else None) for w, b in layers]
    X = tf1.placeholder(tf.float32, [None, MLP_SIZES[0]], name="X")
    h, modules = X, []
    for k, (w, b) in enumerate(layers):
        h = _tf_bias(tf.matmul(h, _variable(w, f"w{k}")), b, f"b{k}")
        modules.append(_linear(w, b))
        if k < len(layers) - 1:
            h = tf.nn.relu(h)
            modules.append(nn.ReLU())  # one module per use: zennit hooks module instances
    session.run(tf1.global_variables_initializer())
    return Twin(session.graph, session, X, h, nn.Sequential(*modules), channels_last=False)


def build_cnn(session, bias=True):
    """conv 3x3 SAME + ReLU -> max-pool 2 -> conv 3x3 SAME + ReLU -> avg-pool 2 -> flatten (NHWC) -> dense + ReLU ->
    dense."""
    rng = np.random.default_rng(5)
    f1, f2 = CNN_FILTERS
    k1 = rng.normal(0, 0.5, (3, 3, CNN_CHANNELS, f1)).astype(np.float32)
    c1 = rng.normal(0, 0.3, f1).astype(np.float32)
    k2 = rng.normal(0, 0.4, (3, 3, f1, f2)).astype(np.float32)
    c2 = rng.normal(0, 0.3, f2).astype(np.float32)
    flat = (CNN_SIZE // 4) ** 2 * f2
    w1, b1 = _dense_weights(rng, flat, CNN_HIDDEN)
    w2, b2 = _dense_weights(rng, CNN_HIDDEN, CLASSES)
    assert np.all(c1 != 0) and np.all(c2 != 0)
    if not bias:
        c1 = c2 = b1 = b2 = None

    X = tf1.placeholder(tf.float32, [None, CNN_SIZE, CNN_SIZE, CNN_CHANNELS], name="X")
    h = tf.nn.relu(_tf_bias(tf.nn.conv2d(X, _variable(k1, "k1"), 1, "SAME"), c1, "c1"))
    h = tf.nn.max_pool2d(h, 2, 2, "VALID")
    h = tf.nn.relu(_tf_bias(tf.nn.conv2d(h, _variable(k2, "k2"), 1, "SAME"), c2, "c2"))
    h = tf.nn.avg_pool2d(h, 2, 2, "VALID")
    h = tf.reshape(h, [-1, flat])
    h = tf.nn.relu(_tf_bias(tf.matmul(h, _variable(w1, "w1")), b1, "b1"))
    T = _tf_bias(tf.matmul(h, _variable(w2, "w2")), b2, "b2")
    session.run(tf1.global_variables_initializer())

    model = nn.Sequential(
        _conv(k1, c1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        _conv(k2, c2),
        nn.ReLU(),
        nn.AvgPool2d(2),
        _ToChannelsLast(),
        nn.Flatten(),
        _linear(w1, b1),
        nn.ReLU(),
        _linear(w2, b2),
    )
    return Twin(session.graph, session, X, T, model, channels_last=True)


BUILDERS = {"mlp": build_mlp, "cnn": build_cnn}


def sample_shape(twin):
    return tuple(twin.X.shape.as_list()[1:])


def inputs(twin, kind, seed=0):
    """Float32 samples and their target classes (cycling). ``kind``: 'signed' (N(0, 1) clipped to [-3, 3]), 'unit'
    (U[0, 1]) or 'mixed' (both, in one batch: one explanation run covers both kinds)."""
    if kind == "mixed":
        (signed, t_signed), (unit, t_unit) = inputs(twin, "signed", seed), inputs(twin, "unit", seed)
        return np.concatenate([signed, unit]), np.concatenate([t_signed, t_unit])
    rng = np.random.default_rng(seed)
    shape = (N_SAMPLES, *sample_shape(twin))
    xs = np.clip(rng.normal(0, 1, shape), -3, 3) if kind == "signed" else rng.uniform(0, 1, shape)
    return xs.astype(np.float32), np.arange(N_SAMPLES) % CLASSES


def zennit_relevance(twin, composite, xs, targets):
    """zennit's LRP with ``composite``, relevance seeded with the selected output's value."""
    x = twin.to_torch(xs).requires_grad_(True)
    onehot = torch.eye(CLASSES, dtype=x.dtype)[torch.as_tensor(targets)]
    with composite.context(twin.torch_model) as modified:
        out = modified(x)
        (relevance,) = torch.autograd.grad(out, x, grad_outputs=(onehot * out).detach())
    return twin.from_torch(relevance)


def ours(twin, method, xs, targets, **kwargs):
    if method not in METHODS:
        pytest.skip(f"{method} is not in deepexplain.tensorflow.methods.METHODS yet")
    return twin.deepexplain(method, xs, np.eye(CLASSES, dtype=np.float32)[targets], **kwargs)


def assert_agrees(a, b):
    """Per sample: allclose with rtol 1e-3 and an atol of 1e-4 of the sample's largest |zennit attribution|. A sample
    whose relevance is exactly 0 in zennit (every path to the target is switched off) must be ~0 in ours too
    (atol relative to the batch); most samples must carry relevance, or the comparison would be vacuous."""
    assert a.shape == b.shape
    batch_scale = np.abs(b).max()
    scales = np.abs(b.reshape(len(b), -1)).max(axis=1)
    assert batch_scale > 1e-3 and (scales > 1e-3 * batch_scale).mean() >= 0.75, f"zennit's relevance is ~0: {scales}"
    for i, (mine, theirs, scale) in enumerate(zip(a, b, scales, strict=True)):
        atol = ATOL_RELATIVE * max(scale, 1e-3 * batch_scale)
        np.testing.assert_allclose(mine, theirs, rtol=RTOL, atol=atol, err_msg=f"sample {i}")


def max_relative_difference(a, b):
    """The largest |a - b| relative to the batch's largest |b|."""
    return np.abs(a - b).max() / np.abs(b).max()


# ----------------------------------------------------------------------------------------------------------------
# zennit composites equivalent to our methods
# ----------------------------------------------------------------------------------------------------------------


def base_map():
    """What every zennit built-in composite starts with (``composites.py: layer_map_base``)."""
    return [(Activation, Pass()), (AvgPool, Norm(stabilizer=EPSILON))]


def every_linear(rule):
    """``rule`` at every dense layer and convolution (zennit's ``types.Linear``)."""
    return LayerMapComposite(base_map() + [(AnyLinear, rule)])


def epsilon_gamma_box(low, high, model):
    """zennit's EpsilonGammaBox gives ZBox to the first layer only if it is a convolution (``composites.py:
    EpsilonGammaBox``, ``first_map = [(Convolution, ZBox)]``); so does ours: on the MLP every dense layer gets
    epsilon."""
    return EpsilonGammaBox(low, high, epsilon=EPSILON, gamma=GAMMA)


# The op / module named in the name-keyed composite: the second dense layer of the MLP, the second conv of the CNN.
NAMED_LAYER = {"mlp": ("MatMul_1", "2"), "cnn": ("Conv2D_1", "3")}


def composite_objects_kwargs(low, high, model):
    from deepexplain.tensorflow.rules import lrp as rules

    return {
        "rules": {
            NAMED_LAYER[model][0]: rules.AlphaBeta(2.0, 1.0),
            "conv": rules.Gamma(GAMMA),
            "dense": rules.Epsilon(EPSILON),
        },
        "first_layer": rules.Flat(),
        "epsilon": EPSILON,
    }


def composite_objects_zennit(low, high, model):
    """A name-keyed rule before the type-keyed ones: zennit's MixedComposite takes the first composite's hook."""
    return MixedComposite(
        [
            NameMapComposite([((NAMED_LAYER[model][1],), AlphaBeta(alpha=2, beta=1, stabilizer=EPSILON))]),
            SpecialFirstLayerMapComposite(
                layer_map=base_map()
                + [(Convolution, Gamma(gamma=GAMMA, stabilizer=EPSILON)), (nn.Linear, Epsilon(epsilon=EPSILON))],
                first_map=[(AnyLinear, Flat(stabilizer=EPSILON))],
            ),
        ]
    )


class Pair:
    """Our method with kwargs(low, high, model) against zennit's composite(low, high, model). ``bounded`` pairs
    take the input bounds, so each kind of input is explained separately, with its own (low, high)."""

    def __init__(self, method, kwargs, composite, bounded=False):
        self.method, self.kwargs, self.composite, self.bounded = method, kwargs, composite, bounded

    def kinds(self):
        return tuple(BOUNDS) if self.bounded else ("mixed",)


def fixed(**kwargs):
    return lambda low, high, model: kwargs


def same_everywhere(rule):
    return lambda low, high, model: every_linear(rule())


PAIRS = {
    "lrp.epsilon": Pair("lrp.epsilon", fixed(epsilon=EPSILON), same_everywhere(lambda: Epsilon(epsilon=EPSILON))),
    "lrp.alpha_beta": Pair(
        "lrp.alpha_beta", fixed(alpha=2, beta=1), same_everywhere(lambda: AlphaBeta(2, 1, stabilizer=EPSILON))
    ),
    "lrp.alpha_1_beta_0": Pair(
        "lrp.alpha_1_beta_0", fixed(bias=True), same_everywhere(lambda: AlphaBeta(1, 0, stabilizer=EPSILON))
    ),
    "lrp.gamma": Pair("lrp.gamma", fixed(gamma=GAMMA), same_everywhere(lambda: Gamma(GAMMA, stabilizer=EPSILON))),
    "lrp.flat": Pair("lrp.flat", fixed(), same_everywhere(lambda: Flat(stabilizer=EPSILON))),
    "lrp.bounded": Pair(
        "lrp.bounded",
        lambda low, high, model: {"low": low, "high": high},
        lambda low, high, model: every_linear(ZBox(low, high, stabilizer=EPSILON)),
        bounded=True,
    ),
    "lrp.epsilon_plus": Pair("lrp.epsilon_plus", fixed(epsilon=EPSILON), lambda *_: EpsilonPlus(epsilon=EPSILON)),
    "lrp.epsilon_plus_flat": Pair(
        "lrp.epsilon_plus_flat", fixed(epsilon=EPSILON), lambda *_: EpsilonPlusFlat(epsilon=EPSILON)
    ),
    "lrp.epsilon_gamma_box": Pair(
        "lrp.epsilon_gamma_box",
        lambda low, high, model: {"low": low, "high": high, "gamma": GAMMA, "epsilon": EPSILON},
        epsilon_gamma_box,
        bounded=True,
    ),
    # rules by name take our defaults: 'epsilon' is Epsilon(1e-7), 'gamma' Gamma(0.25) with bias
    "lrp.composite(names)": Pair(
        "lrp.composite",
        fixed(rules={"dense": "epsilon", "conv": "gamma"}, first_layer="flat", epsilon=EPSILON),
        lambda *_: SpecialFirstLayerMapComposite(
            layer_map=base_map()
            + [(Convolution, Gamma(gamma=GAMMA, stabilizer=EPSILON)), (nn.Linear, Epsilon(epsilon=1e-7))],
            first_map=[(AnyLinear, Flat(stabilizer=EPSILON))],
        ),
    ),
    "lrp.composite(objects, layer name)": Pair("lrp.composite", composite_objects_kwargs, composite_objects_zennit),
}
# Rules whose bias handling matters, again on the bias-free twins (isolates the weight/input split); and the two
# rules that ignore biases by definition, compared on the bias-free twins only.
BIAS_FREE_PAIRS = {
    **{name: PAIRS[name] for name in ("lrp.epsilon", "lrp.alpha_beta", "lrp.alpha_1_beta_0", "lrp.gamma")},
    "lrp.z_plus": Pair("lrp.z_plus", fixed(), same_everywhere(lambda: ZPlus(stabilizer=EPSILON))),
    "lrp.w_square": Pair("lrp.w_square", fixed(), same_everywhere(lambda: WSquare(stabilizer=EPSILON))),
}


def compare(session, model, bias, kind, pair, composite=None):
    """(ours, zennit's) relevance on the twin ``model``; ``composite`` overrides the pair's zennit composite."""
    if pair.method not in METHODS:
        pytest.skip(f"{pair.method} is not in deepexplain.tensorflow.methods.METHODS yet")
    twin = BUILDERS[model](session, bias=bias)
    xs, targets = inputs(twin, kind)
    low, high = BOUNDS.get(kind, BOUNDS["signed"])
    mine = ours(twin, pair.method, xs, targets, **pair.kwargs(low, high, model))
    theirs = zennit_relevance(twin, composite or pair.composite(low, high, model), xs, targets)
    return mine, theirs


def cases(pairs):
    return [
        pytest.param(name, model, kind, id=f"{name}-{model}-{kind}")
        for name, pair in pairs.items()
        for model in sorted(BUILDERS)
        for kind in pair.kinds()
    ]


# ----------------------------------------------------------------------------------------------------------------
# The twins compute the same function
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("model", sorted(BUILDERS))
def test_tf_model_and_torch_twin_compute_the_same_logits(session, model, bias):
    twin = BUILDERS[model](session, bias=bias)
    xs, _ = inputs(twin, "mixed")
    np.testing.assert_allclose(twin.tf_forward(xs), twin.torch_forward(xs), rtol=1e-5, atol=1e-5)


def test_the_inputs_switch_relus_both_on_and_off_and_outputs_have_both_signs(session):
    """Guard: the first ReLU layer is in mixed states and the explained outputs take both signs, so the rules'
    treatment of positive/negative parts matters."""
    for model in BUILDERS:
        twin = BUILDERS[model](session, bias=True)
        for kind in BOUNDS:
            xs, targets = inputs(twin, kind)
            with torch.no_grad():
                pre = twin.torch_model[0](twin.to_torch(xs)).numpy()
            assert 0.2 < (pre > 0).mean() < 0.8, (model, kind)
            explained = twin.tf_forward(xs)[np.arange(N_SAMPLES), targets]
            assert (explained > 0).any() and (explained < 0).any(), (model, kind)
        for tf_name, torch_name in [NAMED_LAYER[model]]:  # the name-keyed composite names existing layers
            assert twin.graph.get_operation_by_name(tf_name).type in ("MatMul", "Conv2D")
            assert isinstance(dict(twin.torch_model.named_modules())[torch_name], nn.Linear | nn.Conv2d)


def test_zennit_zplus_is_its_alpha_1_beta_0(session):
    """So our ``lrp.alpha_1_beta_0`` (bias=True) is also zennit's ZPlus (b+ in the denominator)."""
    twin = BUILDERS["cnn"](session, bias=True)
    xs, targets = inputs(twin, "mixed")
    zplus = zennit_relevance(twin, every_linear(ZPlus(stabilizer=EPSILON)), xs, targets)
    alpha_beta = zennit_relevance(twin, every_linear(AlphaBeta(1, 0, stabilizer=EPSILON)), xs, targets)
    np.testing.assert_allclose(zplus, alpha_beta, rtol=1e-12, atol=1e-12)
    assert np.abs(zplus).max() > 1e-3


# ----------------------------------------------------------------------------------------------------------------
# Agreement
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pair, model, kind", cases(PAIRS))
def test_lrp_matches_zennit_on_twins_with_biases(session, pair, model, kind):
    assert_agrees(*compare(session, model, True, kind, PAIRS[pair]))


@pytest.mark.parametrize("pair, model, kind", cases(BIAS_FREE_PAIRS))
def test_lrp_matches_zennit_on_bias_free_twins(session, pair, model, kind):
    assert_agrees(*compare(session, model, False, kind, BIAS_FREE_PAIRS[pair]))


# ----------------------------------------------------------------------------------------------------------------
# Batch normalisation: folded into the layer before it, as zennit's SequentialMergeBatchNorm canonizer does
# ----------------------------------------------------------------------------------------------------------------

# zennit's merge leaves each batch norm computing x / sqrt(1 + eps), not x (``MergeBatchNorm.merge_batch_norm`` sets
# running_var to 1 and keeps eps), so its merged model's output is off by that factor per batch norm: with Keras'
# eps = 1e-3 our relevance differed from zennit's by up to 0.37% (3 batch norms). A tiny eps isolates the rules.
BN_EPSILON = 1e-8


def _batch_norm_parameters(rng, units):
    """gamma with both signs (a negative one flips the signs the sign-splitting rules see), mean, variance."""
    gamma = rng.normal(0, 1, units).astype(np.float32)
    gamma[0] = -abs(gamma[0]) - 0.3
    beta, mean = rng.normal(0, 0.5, units).astype(np.float32), rng.normal(0, 0.3, units).astype(np.float32)
    return gamma, beta, mean, rng.uniform(0.2, 2, units).astype(np.float32)


def _torch_batch_norm(kind, parameters):
    gamma, beta, mean, variance = parameters
    bn = kind(len(gamma), eps=BN_EPSILON)
    with torch.no_grad():
        bn.weight, bn.bias = _param(gamma), _param(beta)
        bn.running_mean = torch.from_numpy(mean.astype(np.float64))
        bn.running_var = torch.from_numpy(variance.astype(np.float64))
    return bn


def build_bn_cnn(session):
    """conv -> fused batch norm -> ReLU -> conv (no bias) -> batch norm (``tf.nn.batch_normalization``: Mul, Add)
    -> ReLU -> avg-pool 2 -> flatten (NHWC) -> dense -> batch norm -> ReLU -> dense."""
    rng = np.random.default_rng(17)
    f1, f2 = CNN_FILTERS
    k1 = rng.normal(0, 0.5, (3, 3, CNN_CHANNELS, f1)).astype(np.float32)
    c1 = rng.normal(0, 0.3, f1).astype(np.float32)
    k2 = rng.normal(0, 0.4, (3, 3, f1, f2)).astype(np.float32)
    flat = (CNN_SIZE // 2) ** 2 * f2
    w1, b1 = _dense_weights(rng, flat, CNN_HIDDEN)
    w2, b2 = _dense_weights(rng, CNN_HIDDEN, CLASSES)
    bn1, bn2, bn3 = (_batch_norm_parameters(rng, n) for n in (f1, f2, CNN_HIDDEN))

    def tf_batch_norm(h, parameters, name):
        gamma, beta, mean, variance = (_variable(p, f"{name}_{k}") for k, p in zip("gbmv", parameters, strict=True))
        return tf.nn.batch_normalization(h, mean, variance, beta, gamma, BN_EPSILON)

    X = tf1.placeholder(tf.float32, [None, CNN_SIZE, CNN_SIZE, CNN_CHANNELS], name="X")
    h = _tf_bias(tf.nn.conv2d(X, _variable(k1, "bk1"), 1, "SAME"), c1, "bc1")
    gamma, beta, mean, variance = (_variable(p, f"bn1_{k}") for k, p in zip("gbmv", bn1, strict=True))
    h, _, _ = tf1.nn.fused_batch_norm(h, gamma, beta, mean, variance, epsilon=BN_EPSILON, is_training=False)
    h = tf.nn.relu(h)
    h = tf.nn.relu(tf_batch_norm(tf.nn.conv2d(h, _variable(k2, "bk2"), 1, "SAME"), bn2, "bn2"))
    h = tf.reshape(tf.nn.avg_pool2d(h, 2, 2, "VALID"), [-1, flat])
    h = tf.nn.relu(tf_batch_norm(_tf_bias(tf.matmul(h, _variable(w1, "bw1")), b1, "bb1"), bn3, "bn3"))
    T = _tf_bias(tf.matmul(h, _variable(w2, "bw2")), b2, "bb2")
    session.run(tf1.global_variables_initializer())

    model = nn.Sequential(
        _conv(k1, c1),
        _torch_batch_norm(nn.BatchNorm2d, bn1),
        nn.ReLU(),
        _conv(k2, None),
        _torch_batch_norm(nn.BatchNorm2d, bn2),
        nn.ReLU(),
        nn.AvgPool2d(2),
        _ToChannelsLast(),
        nn.Flatten(),
        _linear(w1, b1),
        _torch_batch_norm(nn.BatchNorm1d, bn3),
        nn.ReLU(),
        _linear(w2, b2),
    )
    return Twin(session.graph, session, X, T, model, channels_last=True)


def _merged(composite_class, *args, **kwargs):
    return lambda: composite_class(*args, canonizers=[SequentialMergeBatchNorm()], **kwargs)


BN_PAIRS = {
    "lrp.epsilon": (dict(epsilon=EPSILON), _merged(LayerMapComposite, base_map() + [(AnyLinear, Epsilon(EPSILON))])),
    "lrp.alpha_beta": (
        dict(alpha=2, beta=1),
        _merged(LayerMapComposite, base_map() + [(AnyLinear, AlphaBeta(2, 1, stabilizer=EPSILON))]),
    ),
    "lrp.alpha_1_beta_0": (
        dict(bias=True),
        _merged(LayerMapComposite, base_map() + [(AnyLinear, AlphaBeta(1, 0, stabilizer=EPSILON))]),
    ),
    "lrp.gamma": (
        dict(gamma=GAMMA),
        _merged(LayerMapComposite, base_map() + [(AnyLinear, Gamma(GAMMA, stabilizer=EPSILON))]),
    ),
    "lrp.epsilon_plus": (dict(epsilon=EPSILON), _merged(EpsilonPlus, epsilon=EPSILON)),
}


def test_batch_norm_twin_computes_the_same_logits(session):
    twin = build_bn_cnn(session)
    xs, _ = inputs(twin, "mixed")
    np.testing.assert_allclose(twin.tf_forward(xs), twin.torch_forward(xs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("method", sorted(BN_PAIRS))
def test_lrp_through_batch_norm_matches_zennit_with_merged_batch_norm(session, method):
    """Both batch-norm forms (fused, and Mul/Add) after a conv with and without bias and after a dense layer."""
    kwargs, composite = BN_PAIRS[method]
    twin = build_bn_cnn(session)
    xs, targets = inputs(twin, "mixed")
    assert_agrees(ours(twin, method, xs, targets, **kwargs), zennit_relevance(twin, composite(), xs, targets))


# ----------------------------------------------------------------------------------------------------------------
# Deliberate differences
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pair", ["lrp.z_plus", "lrp.w_square"])
def test_bias_ignoring_rules_differ_from_zennit_with_biases(session, pair):
    """``lrp.z_plus`` and ``lrp.w_square`` leave biases out (iNNvestigate); zennit's ZPlus keeps b+ and WSquare adds
    b**2 to the denominators (``zennit/rules.py``: ``ZPlus``, ``WSquare``), so with biases they must differ."""
    mine, theirs = compare(session, "cnn", True, "mixed", BIAS_FREE_PAIRS[pair])
    assert max_relative_difference(mine, theirs) > 100 * ATOL_RELATIVE
