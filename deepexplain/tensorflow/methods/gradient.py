"""The gradient family: plain gradients at chosen points, or gradients through modified rules.

Each class only declares its rows (see :mod:`deepexplain.tensorflow.methods.base`); batching, target weighting and
assembly live in the Explainer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deepexplain.errors import InvalidEpsilonError, InvalidInputError
from deepexplain.inputs import (
    baseline_or_zeros,
    check_baseline,
    check_flag,
    check_positive_int,
    check_reference_samples,
)
from deepexplain.tensorflow import ops
from deepexplain.tensorflow.methods.base import Expansion, GradientMethod, Settings
from deepexplain.tensorflow.rules import connection as connection_rules
from deepexplain.tensorflow.rules import deeplift as deeplift_rules
from deepexplain.tensorflow.rules import elrp as elrp_rules
from deepexplain.tensorflow.rules import guided as guided_rules

POOLING_NONLINEAR = ops.having(ops.MAX_POOL)

INTEGRATION_SCHEMES = ("riemann_right", "riemann_left", "riemann_middle", "trapezoid", "gausslegendre")


def integration_points(steps: int, integration: str) -> tuple[np.ndarray, np.ndarray]:
    """Points ``alpha`` in [0, 1] and weights of a quadrature of ``integral_0^1 g(alpha) d alpha``.

    The Riemann rules and Gauss-Legendre match Captum's ``approximation_methods``. The trapezoid rule is the
    textbook one on ``linspace(0, 1, steps)`` (weights sum to 1); Captum's ``riemann_trapezoid`` weights sum to
    ``1 - 1/steps`` instead, so it differs from ours by that factor.
    """
    if integration == "riemann_right":
        return np.arange(1, steps + 1) / steps, np.full(steps, 1.0 / steps)
    if integration == "riemann_left":
        return np.arange(steps) / steps, np.full(steps, 1.0 / steps)
    if integration == "riemann_middle":
        return (np.arange(steps) + 0.5) / steps, np.full(steps, 1.0 / steps)
    if integration == "trapezoid":
        if steps < 2:
            raise InvalidInputError(f"the trapezoid rule needs steps >= 2; got {steps}")
        weights = np.full(steps, 1.0 / (steps - 1))
        weights[[0, -1]] /= 2
        return np.linspace(0.0, 1.0, steps), weights
    if integration == "gausslegendre":
        nodes, weights = np.polynomial.legendre.leggauss(steps)
        return (nodes + 1) / 2, weights / 2
    raise InvalidInputError(f"integration must be one of {list(INTEGRATION_SCHEMES)}; got {integration!r}")


class Zero(GradientMethod):
    """All-zero attributions: a control that no real method should resemble."""

    needs_gradient = False


class InputBaseline(GradientMethod):
    """The input itself (iNNvestigate's ``input`` baseline): what any attribution should beat."""

    needs_gradient = False

    def without_gradient(self, xs, rng):
        return [x.astype(np.float32) for x in xs]


class RandomBaseline(GradientMethod):
    """Gaussian noise with standard deviation ``stddev`` (iNNvestigate's ``random`` baseline); ``seed`` for
    reproducible runs."""

    needs_gradient = False
    is_random = True

    def __init__(self, sample_shapes, stddev=1.0, seed=None):
        super().__init__(sample_shapes)
        if not np.isscalar(stddev) or not stddev >= 0:
            raise InvalidInputError(f"stddev of random must be a number >= 0; got {stddev!r}")
        self.stddev = float(stddev)
        self.seed = seed

    def without_gradient(self, xs, rng):
        # drawn sample by sample, so a seeded run does not depend on the batch size
        return [
            np.stack([rng.normal(0.0, self.stddev, x.shape[1:]) for _ in range(len(x))]).astype(np.float32)
            if len(x)
            else np.zeros(x.shape, np.float32)
            for x in xs
        ]


class Gradient(GradientMethod):
    """The plain gradient ``d f / d x`` (iNNvestigate's ``gradient``; ``saliency`` is its absolute value)."""


class GuidedBackprop(GradientMethod):
    """Guided backpropagation (Springenberg et al. 2015), see :mod:`deepexplain.tensorflow.rules.guided`."""

    rules = guided_rules.GUIDED_RULES
    gradient_rule_types = frozenset({"MaxPool", "MaxPoolV2"})


class Deconvnet(GradientMethod):
    """Deconvnet (Zeiler & Fergus 2014), see :mod:`deepexplain.tensorflow.rules.guided`."""

    rules = guided_rules.DECONVNET_RULES
    gradient_rule_types = frozenset({"MaxPool", "MaxPoolV2"})  # "switches": the max locations of the forward pass


class ConnectionWeights(GradientMethod):
    """Connection weights (Olden & Jackson 2002; Olden et al. 2004, Ecological Modelling 178, Sec. 2.4), as innsight's
    ``ConnectionWeights``: the sum over all paths from each input to the explained output of the products of the
    weights along the path (``W_1 W_2 ... W_L`` for a dense network), i.e. the backward pass with every activation
    replaced by the identity. Biases drop out, so the result does not depend on the input; ``times_input=True``
    multiplies it by the input (innsight's local variant).

    Convolutions and average pooling propagate by their transposed op; max-pooling sends each window's signal to the
    window's first element, as innsight does (see :mod:`deepexplain.tensorflow.rules.connection`).
    """

    rules = connection_rules.RULES
    activation_rule = staticmethod(connection_rules.identity_activation)

    def __init__(self, sample_shapes, times_input=False):
        super().__init__(sample_shapes)
        self.times_input = check_flag(times_input, "times_input", "connection_weights")

    def expand(self, xs, rng):
        factors = [x[None] if self.times_input else None for x in xs]
        return Expansion(points=xs, weights=np.ones(1), factors=factors)


class Saliency(GradientMethod):
    """``|d f / d x|`` (Simonyan et al. 2014, "Deep Inside Convolutional Networks", Eq. 3)."""

    def finalize(self, attribution):
        return np.abs(attribution)


class GradientXInput(GradientMethod):
    """``x * d f / d x`` (Shrikumar et al. 2016, "Not Just a Black Box")."""

    def expand(self, xs, rng):
        return Expansion(points=xs, weights=np.ones(1), factors=[x[None] for x in xs])


class IntegratedGradients(GradientMethod):
    """Integrated gradients (Sundararajan et al. 2017, ICML, Eq. 3).

    ``(x - b) * integral_0^1 grad f(b + alpha (x - b)) d alpha`` by the quadrature ``integration`` with ``steps``
    points (default right Riemann sum, as the original DeepExplain). All steps of all samples go into the batch
    dimension.
    """

    promises_completeness = True
    evaluates_at_samples = False

    def __init__(self, sample_shapes, steps=100, baseline=None, integration="riemann_right"):
        super().__init__(sample_shapes)
        self.steps = check_positive_int(steps, "steps", "intgrad")
        self.alphas, self.step_weights = integration_points(self.steps, integration)
        self.integration = integration
        self.baselines = check_baseline(baseline, self.sample_shapes)

    @property
    def rows_per_sample(self):
        return self.steps

    def expand(self, xs, rng):
        points, factors = [], []
        for x, baseline in zip(xs, self.baselines, strict=True):
            b = baseline_or_zeros(baseline, x)
            delta = (x - b).astype(np.float32)
            alphas = self.alphas.astype(np.float32).reshape((-1,) + (1,) * x.ndim)
            points.append((b + alphas * delta[None]).reshape((-1,) + x.shape[1:]))
            factors.append(delta[None])
        return Expansion(points=points, weights=self.step_weights, factors=factors)

    def completeness_references(self, xs):
        return [baseline_or_zeros(b, x)[None] for b, x in zip(self.baselines, xs, strict=True)]


@dataclass(frozen=True)
class _EpsilonSettings(Settings):
    epsilon: float = 1e-4


class InnvestigateIntegratedGradients(IntegratedGradients):
    """Integrated gradients with iNNvestigate's defaults (64 steps, left Riemann sum), under its name."""

    def __init__(self, sample_shapes, steps=64, baseline=None, integration="riemann_left"):
        super().__init__(sample_shapes, steps=steps, baseline=baseline, integration=integration)


class EpsilonLRP(GradientMethod):
    """eps-LRP (Bach et al. 2015) as ``x * modified gradient`` (Ancona et al. 2018), see :mod:`..rules.elrp`.

    ``epsilon`` must be positive (ValueError; the original DeepExplain raised AssertionError, which the error type
    also is).
    """

    divides_by_activations = True
    rules = elrp_rules.RULES
    activation_rule = staticmethod(elrp_rules.ratio_of_activation)
    explains_logits = True
    products = "factor"
    gradient_rule_types = POOLING_NONLINEAR  # winner-takes-all: relevance goes to the max (Bach et al. 2015)

    def __init__(self, sample_shapes, epsilon=1e-4):
        super().__init__(sample_shapes)
        if not np.isscalar(epsilon) or not np.isfinite(epsilon) or epsilon <= 0:
            raise InvalidEpsilonError(f"LRP epsilon must be greater than zero; got {epsilon!r}")
        self.epsilon = float(epsilon)

    def graph_settings(self, reference_index, path):
        return _EpsilonSettings(path, self.epsilon)

    def expand(self, xs, rng):
        return Expansion(points=xs, weights=np.ones(1), factors=[x[None] for x in xs])


@dataclass(frozen=True)
class _ReferenceSettings(Settings):
    reference_index: object = None
    single_reference: bool = True
    blocked_references: bool = False  # several references, each closing the block of rows that read it
    reference_tensors: dict | None = None  # tensor ref -> its reference: the references apart, not in the batch
    differences: dict = field(default_factory=dict)  # tensor -> its difference from the reference, per compilation
    reveal_cancel: dict = field(default_factory=dict)  # linear op -> RevealCancel multipliers left by its nonlinearity


DEEPLIFT_RULES = ("rescale", "reveal_cancel")


class DeepLIFTRescale(GradientMethod):
    """DeepLIFT (Shrikumar et al. 2017, ICML) with the Rescale rule (default) or the RevealCancel rule, reference
    activations from the same batch.

    The reference input (``baseline``, zeros by default) is appended to each batch as one extra row, so the
    reference activations of every layer come from the same run as the inputs. Max-pooling uses the cross-maximum
    rule of :func:`deepexplain.tensorflow.rules.deeplift.max_pool`, which keeps summation-to-delta.

    ``rule='reveal_cancel'`` (their Sec. 3.5.3, as innsight implements it) splits each nonlinearity's input difference
    into its positive and negative contributions, see :func:`deepexplain.tensorflow.rules.deeplift.reveal_cancel`; a
    nonlinearity whose input is not a weighted linear op (plus bias) falls back to Rescale there, with a warning.
    Both rules keep summation-to-delta.

    Raises
    ------
    InvalidInputError
        For a ``rule`` other than ``'rescale'`` and ``'reveal_cancel'``.
    """

    rules = deeplift_rules.RULES
    activation_rule = staticmethod(deeplift_rules.rescale_activation)
    explains_logits = True
    products = "shapley"
    uses_references = True
    promises_completeness = True
    divides_by_activations = True

    def __init__(self, sample_shapes, baseline=None, rule="rescale"):
        super().__init__(sample_shapes)
        self.baselines = check_baseline(baseline, self.sample_shapes)
        if not isinstance(rule, str) or rule not in DEEPLIFT_RULES:
            raise InvalidInputError(f"rule of deeplift must be one of {list(DEEPLIFT_RULES)}; got {rule!r}")
        self.rule = rule
        if rule == "reveal_cancel":
            self.rules = deeplift_rules.REVEAL_CANCEL_RULES
            self.activation_rule = deeplift_rules.reveal_cancel_activation

    @property
    def reference_rows(self):
        return 1

    def graph_settings(self, reference_index, path, reference_inputs=None):
        """``reference_inputs``: the references as inputs of their own, a row per row of ``X`` (for an output whose
        rows are not the samples'), read through a copy of the forward pass
        (:func:`~deepexplain.tensorflow.rules.deeplift.reference_pass`) instead of rows of the batch."""
        if reference_inputs is not None:
            return _ReferenceSettings(path, reference_tensors=deeplift_rules.reference_pass(path, reference_inputs))
        # The Explainer lays several references out in blocks whenever the batch has no fixed size (a fixed batch
        # is padded, and padding does not come in blocks); the batch size is free exactly when no explained input
        # fixes it, so the rules read the blocks only then (gathering each row's reference is right for any layout)
        free_batch = all(not x.shape.rank or x.shape.as_list()[0] is None for x in path.inputs)
        single = self.reference_rows == 1
        return _ReferenceSettings(
            path, reference_index, single_reference=single, blocked_references=not single and free_batch
        )

    def op_rules(self, path):
        return deeplift_rules.fused_activation_pools(path) if self.rule == "rescale" else {}

    def expand(self, xs, rng):
        references = [baseline_or_zeros(b, x)[None] for b, x in zip(self.baselines, xs, strict=True)]
        factors = [(x - r)[None] for x, r in zip(xs, references, strict=True)]
        ids = np.zeros(len(xs[0]), dtype=np.int64)
        return Expansion(points=xs, weights=np.ones(1), factors=factors, references=references, reference_ids=ids)

    def completeness_references(self, xs):
        return [baseline_or_zeros(b, x)[None] for b, x in zip(self.baselines, xs, strict=True)]


class DeepSHAP(DeepLIFTRescale):
    """DeepSHAP (Lundberg & Lee 2017, NeurIPS, Sec. 5): DeepLIFT averaged over a set of reference samples.

    Each sample is paired with every baseline in ``baselines`` (M reference samples, without a batch dimension
    per sample: shape ``(M, *sample_shape)``); the attributions sum to ``f(x) - mean_m f(baselines[m])``. With a
    single baseline it equals :class:`DeepLIFTRescale` with that baseline.
    """

    def __init__(self, sample_shapes, baselines=None):
        GradientMethod.__init__(self, sample_shapes)
        self.rule = "rescale"
        self.references = check_reference_samples(baselines, self.sample_shapes, "deepshap")

    @property
    def rows_per_sample(self):
        return len(self.references[0])

    @property
    def reference_rows(self):
        return len(self.references[0])

    def expand(self, xs, rng):
        count, n = len(self.references[0]), len(xs[0])
        points = [np.broadcast_to(x[None], (count, *x.shape)).reshape((-1,) + x.shape[1:]) for x in xs]
        factors = [x[None] - r[:, None] for x, r in zip(xs, self.references, strict=True)]
        ids = np.repeat(np.arange(count), n)
        return Expansion(
            points=points,
            weights=np.full(count, 1.0 / count),
            factors=factors,
            references=self.references,
            reference_ids=ids,
        )

    def completeness_references(self, xs):
        return self.references


def noisy_copies(x: np.ndarray, samples: int, noise_level: float, rng) -> np.ndarray:
    """``(samples, n, ...)`` copies of the samples ``x`` plus Gaussian noise of standard deviation ``noise_level *
    (max - min)`` of each sample (Smilkov et al. 2017, Sec. 3; PAIR's ``stdev_spread``). The noise is drawn sample
    by sample, so a seeded run does not depend on how samples are grouped into batches."""
    noise = np.stack([rng.standard_normal((samples, *x.shape[1:])) for _ in range(len(x))], axis=1)
    spread = (x.reshape(len(x), -1).max(axis=1) - x.reshape(len(x), -1).min(axis=1)) * noise_level
    return (x[None] + noise * spread.reshape((1, -1) + (1,) * (x.ndim - 1))).astype(np.float32)


class SmoothGrad(GradientMethod):
    """SmoothGrad (Smilkov et al. 2017): the gradient averaged over noisy copies of the input.

    The noise of each sample is Gaussian with standard deviation ``noise_level * (max(x) - min(x))`` of that
    sample (Smilkov et al., Sec. 3: "noise level" relative to the input range). With ``times_input`` the average
    gradient is multiplied by the input (their "SmoothGrad x Input").
    """

    is_random = True
    evaluates_at_samples = False

    def __init__(self, sample_shapes, samples=50, noise_level=0.15, times_input=False, seed=None):
        super().__init__(sample_shapes)
        self.samples = check_positive_int(samples, "samples", "smoothgrad")
        if not np.isscalar(noise_level) or not noise_level >= 0:
            raise InvalidInputError(f"noise_level of smoothgrad must be a number >= 0; got {noise_level!r}")
        self.noise_level = float(noise_level)
        self.times_input = bool(times_input)
        self.seed = seed

    @property
    def rows_per_sample(self):
        return self.samples

    def expand(self, xs, rng):
        points = [noisy_copies(x, self.samples, self.noise_level, rng).reshape((-1,) + x.shape[1:]) for x in xs]
        factors = [x[None] if self.times_input else None for x in xs]
        return Expansion(points=points, weights=np.full(self.samples, 1.0 / self.samples), factors=factors)


class ExpectedGradients(GradientMethod):
    """Expected gradients (Erion et al. 2021, Nature Machine Intelligence, Eq. 5).

    ``E_{b ~ baselines, alpha ~ U(0,1)} [(x - b) * grad f(b + alpha (x - b))]`` estimated with ``samples`` draws
    per sample. The attributions sum to ``f(x) - mean f(baselines)`` in expectation.
    """

    promises_completeness = True
    is_random = True
    evaluates_at_samples = False

    def __init__(self, sample_shapes, baselines=None, samples=50, seed=None):
        super().__init__(sample_shapes)
        self.references = check_reference_samples(baselines, self.sample_shapes, "expected_gradients")
        self.samples = check_positive_int(samples, "samples", "expected_gradients")
        self.seed = seed

    @property
    def rows_per_sample(self):
        return self.samples

    def expand(self, xs, rng):
        n = len(xs[0])
        draws = [(rng.integers(len(self.references[0]), size=self.samples), rng.random(self.samples)) for _ in range(n)]
        chosen = np.stack([d[0] for d in draws], axis=1)  # (R, n)
        alphas = np.stack([d[1] for d in draws], axis=1).astype(np.float32)
        points, factors = [], []
        for x, references in zip(xs, self.references, strict=True):
            b = references[chosen]  # (R, n, ...)
            delta = x[None] - b
            a = alphas.reshape(alphas.shape + (1,) * (x.ndim - 1))
            points.append((b + a * delta).reshape((-1,) + x.shape[1:]))
            factors.append(delta)
        return Expansion(points=points, weights=np.full(self.samples, 1.0 / self.samples), factors=factors)

    def completeness_references(self, xs):
        return self.references
