"""Conditional heatmaps against zennit-crp 0.6.0 on a weight-identical PyTorch twin of a residual Keras CNN.

Oracle: zennit-crp's ``CondAttribution`` with zennit's ``EpsilonPlus`` composite (epsilon at Linear, z+ at
convolutions, ``Norm`` at the residual ``Sum``, ``Pass`` at ReLUs) on a twin with the same weights, against
``CondAttribution(model, 'lrp.epsilon_plus')``; the twin is first checked to compute the same logits. Conditions:
unconditional, single channels, several channels (OR), two layers (AND), batched, both ``exclude_parallel`` modes.
The raw input relevance is compared (zennit-crp's test subclass of ``heatmap_modifier``), per row to 1e-4 of the
row's largest value. zennit's stabiliser of the rules other than epsilon (z+, ``Norm`` at the residual sum) is set to
1e-12 (its default 1e-6 moves a few units by ~3e-3 of the largest where the residual sum is near zero: ours
divides exactly there); the epsilon at Linear layers stays 1e-6, as ours.

Not compared: zennit-crp's recorded relevances, which PyTorch 2 records after the mask (its hooks rely on the
PyTorch < 2 hook order; the package pins torch < 2); our toy-table test fixes the intended values instead.
zennit-crp installs with ``--no-deps`` (it pins torch < 2 and zennit 0.4); it imports zennit, whose torchvision
import is satisfied by the stand-in of ``conftest.import_zennit``.
"""

import importlib.util
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")
if importlib.util.find_spec("zennit") is None or importlib.util.find_spec("crp") is None:
    pytest.skip("zennit and zennit-crp are not installed (pip install --no-deps zennit-crp)", allow_module_level=True)

from conftest import import_zennit  # noqa: E402

import_zennit()
from crp.attribution import CondAttribution as TorchCondAttribution  # noqa: E402
from test_crp import RawHeatmap, residual  # noqa: E402
from torch import nn  # noqa: E402
from zennit.composites import EpsilonPlus  # noqa: E402
from zennit.layer import Sum  # noqa: E402


class Twin(nn.Module):
    """``test_crp.residual`` in PyTorch: module names as the Keras layer names, NCHW, NHWC before flattening."""

    def __init__(self, model):
        super().__init__()

        def conv(name, padding):
            kernel, bias = model.get_layer(name).get_weights()
            module = nn.Conv2d(kernel.shape[2], kernel.shape[3], kernel.shape[0], padding=padding)
            module.weight.data = torch.tensor(kernel.transpose(3, 2, 0, 1).copy())
            module.bias.data = torch.tensor(bias)
            return module

        self.c1, self.relu1 = conv("c1", 1), nn.ReLU()
        self.branch, self.relu_branch = conv("branch", 1), nn.ReLU()
        self.skip = conv("skip", 0)
        self.add = Sum()
        self.c3, self.relu3 = conv("c3", 0), nn.ReLU()
        kernel, bias = model.get_layer("logits").get_weights()
        self.logits = nn.Linear(*kernel.shape)
        self.logits.weight.data = torch.tensor(kernel.T.copy())
        self.logits.bias.data = torch.tensor(bias)

    def forward(self, x):
        h = self.relu1(self.c1(x))
        s = self.add(torch.stack([self.relu_branch(self.branch(h)), self.skip(h)], dim=-1))
        c = self.relu3(self.c3(s))
        return self.logits(c.permute(0, 2, 3, 1).reshape(len(c), -1))


class RawTorchHeatmap(TorchCondAttribution):
    def heatmap_modifier(self, data, on_device=None):
        return data.grad.detach().cpu()


@pytest.fixture(scope="module")
def pair():
    model = residual()
    twin = Twin(model).eval()
    xs = np.random.default_rng(7).normal(size=(2, 8, 8, 2)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(twin(torch.tensor(xs.transpose(0, 3, 1, 2))).numpy(), model(xs).numpy(),
                                   rtol=1e-4, atol=1e-5)  # fmt: skip
    return RawHeatmap(model, "lrp.epsilon_plus", progress=False), RawTorchHeatmap(twin), xs


def theirs(torch_ca, xs, conditions, exclude_parallel):
    """zennit-crp's rows for every sample and condition, sample-major; called per (sample, condition), since it
    pairs data and conditions of equal length and groups conditions by their layers."""
    rows = []
    for x in xs:
        for condition in conditions:
            data = torch.tensor(x.transpose(2, 0, 1)[None], requires_grad=True)
            composite = EpsilonPlus(stabilizer=1e-12)
            result = torch_ca(data, [condition], composite, exclude_parallel=exclude_parallel)
            rows.append(result.heatmap.numpy().transpose(0, 2, 3, 1))
    return np.concatenate(rows)


CONDITIONS = [
    [{"y": [3]}],
    [{"y": [1], "c1": [2]}, {"y": [1], "c1": [0, 3]}, {"y": [4], "c3": [1]}],
    [{"y": [2], "branch": [1]}, {"y": [2], "skip": [0, 2]}],
    [{"y": [0], "c3": [2], "c1": [1]}],
    [{"y": [0], "c3": [0, 1], "branch": [3]}],
]


@pytest.mark.parametrize("conditions", CONDITIONS, ids=range(len(CONDITIONS)))
@pytest.mark.parametrize("exclude_parallel", [True, False])
def test_conditional_heatmaps_match_zennit_crp(pair, conditions, exclude_parallel):
    ours_ca, torch_ca, xs = pair
    ours = ours_ca(xs, conditions, exclude_parallel=exclude_parallel).heatmap
    expected = theirs(torch_ca, xs, conditions, exclude_parallel)
    assert ours.shape == expected.shape
    for row, (a, b) in enumerate(zip(ours, expected, strict=True)):
        scale = np.abs(b).max()
        assert scale > 0, f"row {row}: zennit-crp's heatmap is zero"
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * scale, err_msg=f"row {row}")


def test_the_modes_differ_where_a_shortcut_bypasses_the_layer(pair):
    """The comparison above is not vacuous: on the residual block, the two modes give different heatmaps."""
    ours_ca, _, xs = pair
    condition = [{"y": [2], "branch": [1]}]
    chained = ours_ca(xs, condition, exclude_parallel=True).heatmap
    gated = ours_ca(xs, condition, exclude_parallel=False).heatmap
    assert np.abs(chained - gated).max() > 1e-2 * np.abs(gated).max()
