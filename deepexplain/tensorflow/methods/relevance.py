"""The LRP family and Deep Taylor: which rule each dense/convolution op gets (see :mod:`..rules.lrp`).

Names and defaults follow iNNvestigate (``lrp.z``, ``lrp.epsilon``, ``lrp.alpha_2_beta_1``, presets, ``deep_taylor``)
and zennit for its composites (``lrp.epsilon_plus``, ``lrp.epsilon_plus_flat``, ``lrp.epsilon_gamma_box``). Every
LRP method takes ``strict`` (default True: an op on the path from X to T that no rule covers is an error; False: a
warning, and the op's gradient is used) and ``maxpool`` ('max': winner takes all; 'avg': proportional, as innsight
offers).
"""

from __future__ import annotations

import numbers

import numpy as np

from deepexplain.errors import InvalidInputError
from deepexplain.tensorflow.graph import layer_type
from deepexplain.tensorflow.methods.base import GradientMethod
from deepexplain.tensorflow.rules import attention as attention_rules
from deepexplain.tensorflow.rules import lrp as lrp_rules
from deepexplain.tensorflow.rules.linear_ops import CONV_TYPES, WEIGHTED_TYPES
from deepexplain.tensorflow.rules.lrp import AlphaBeta, Bounded, Epsilon, Flat, Gamma, WSquare, ZPlusFast, z_plus

MAXPOOL_MODES = ("max", "avg")


def _number(value, name: str, method: str, minimum: float | None = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise InvalidInputError(f"{name} of {method} must be a finite number; got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidInputError(f"{name} of {method} must be >= {minimum}; got {value!r}")
    return float(value)


def _bounds(low, high, method: str) -> tuple:
    if low is None or high is None:
        raise InvalidInputError(
            f"{method} needs low and high: the smallest and largest values an input can take (scalars or arrays "
            f"that broadcast to one sample, e.g. low=0, high=1 for images in [0, 1]); got low={low!r}, high={high!r}"
        )
    low, high = np.asarray(low, dtype=np.float32), np.asarray(high, dtype=np.float32)
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))) or np.any(low > high):
        raise InvalidInputError(f"low and high of {method} must be finite with low <= high; got {low!r}, {high!r}")
    return low, high


class LRP(GradientMethod):
    """Base class: a relevance-seeded backward pass where each dense/convolution op gets a :class:`LayerRule`.

    Subclasses choose the rules through :meth:`layer_rules`; a batch norm right after a dense/convolution op is
    folded into it (:func:`..rules.linear_ops.batch_norm_after`). ``stabiliser`` is the epsilon at other batch norms
    and scalings by a constant; ``bias_at_weightless`` whether such a batch norm's shift absorbs relevance;
    ``first_layer_types`` the op types that may count as the first layer.
    """

    rules = lrp_rules.RULES
    activation_rule = staticmethod(lrp_rules.activation)
    normalisation_rule = staticmethod(lrp_rules.normalisation)
    explains_logits = True
    products = "factor"
    seeds_relevance = True
    covers_all_ops = True
    divides_by_activations = True
    structural_types = lrp_rules.STRUCTURAL_TYPES
    stabiliser = 0.0
    bias_at_weightless = True
    first_layer_types = WEIGHTED_TYPES

    def __init__(self, sample_shapes, strict=True, maxpool="max"):
        super().__init__(sample_shapes)
        if maxpool not in MAXPOOL_MODES:
            raise InvalidInputError(f"maxpool must be one of {list(MAXPOOL_MODES)}; got {maxpool!r}")
        self.strict, self.maxpool = bool(strict), maxpool

    def layer_rules(self):
        """``(rules, default, first_layer)``: key -> LayerRule (see :func:`..rules.lrp.rule_selector`), the rule
        of ops no key matches, and the rule of the ops nearest the input (None: no special first layer)."""
        raise NotImplementedError

    def graph_settings(self, reference_index, path):
        rules, default, first_layer = self.layer_rules()
        first_ops = frozenset()
        if first_layer is not None:
            first_ops = frozenset(op for op in path.first_weighted_ops if layer_type(op) in self.first_layer_types)
        return lrp_rules.LRPSettings(
            rule_for=lrp_rules.rule_selector(rules, default, first_ops, first_layer),
            path=path,
            epsilon=self.stabiliser,
            bias=self.bias_at_weightless,
            maxpool=self.maxpool,
        )


class _SingleRule(LRP):
    """One rule at every dense/convolution op."""

    def rule(self):
        raise NotImplementedError

    def layer_rules(self):
        return {}, self.rule(), None


class LRPEpsilon(_SingleRule):
    """LRP with the epsilon rule at every linear op (Bach et al. 2015; Montavon et al. 2019, Eq. 4). ``bias=False``
    leaves biases out of the denominators, so relevance is conserved exactly: the attributions sum to the output.

    Unlike ``elrp`` (DeepExplain's reformulation, which stabilises at the activations), the stabiliser sits at the
    linear ops, as in iNNvestigate and zennit, including the output layer.
    """

    def __init__(self, sample_shapes, epsilon=1e-7, bias=True, strict=True, maxpool="max"):
        super().__init__(sample_shapes, strict, maxpool)
        self.epsilon, self.bias = _number(epsilon, "epsilon", "lrp.epsilon"), bool(bias)
        self.stabiliser, self.bias_at_weightless = self.epsilon, self.bias

    def rule(self):
        return Epsilon(self.epsilon, self.bias)


class LRPZ(LRPEpsilon):
    """LRP with the z-rule (LRP-0; Bach et al. 2015, Eq. 56): epsilon = 0. On ReLU networks it equals gradient x
    input."""

    def __init__(self, sample_shapes, bias=True, strict=True, maxpool="max"):
        super().__init__(sample_shapes, 0.0, bias, strict, maxpool)


class LRPWSquare(_SingleRule):
    """The w**2 rule at every layer (:class:`..rules.lrp.WSquare`; biases ignored, as iNNvestigate)."""

    bias_at_weightless = False

    def rule(self):
        return WSquare()


class LRPFlat(_SingleRule):
    """The flat rule at every layer (:class:`..rules.lrp.Flat`)."""

    bias_at_weightless = False

    def rule(self):
        return Flat()


def alpha_beta_parameters(alpha, beta, method: str) -> tuple[float, float]:
    """``(alpha, beta)`` with the missing one inferred from ``alpha - beta = 1`` (both >= 0)."""
    if alpha is None and beta is None:
        alpha, beta = 2.0, 1.0
    elif alpha is None:
        alpha = _number(beta, "beta", method) + 1.0
    elif beta is None:
        beta = _number(alpha, "alpha", method, minimum=1.0) - 1.0
    alpha, beta = _number(alpha, "alpha", method), _number(beta, "beta", method)
    if not np.isclose(alpha - beta, 1.0):
        raise InvalidInputError(f"alpha and beta of {method} must satisfy alpha - beta = 1; got {alpha} and {beta}")
    return alpha, beta


class LRPAlphaBeta(_SingleRule):
    """The alpha-beta rule at every layer (:class:`..rules.lrp.AlphaBeta`; alpha - beta = 1, default 2 and 1; give
    one and the other is inferred). With biases, the positive bias part joins the positive denominator (zennit);
    iNNvestigate 2.1.2 adds the whole bias to both denominators, so the two agree only with ``bias=False``."""

    def __init__(self, sample_shapes, alpha=None, beta=None, bias=True, strict=True, maxpool="max"):
        super().__init__(sample_shapes, strict, maxpool)
        self.alpha, self.beta = alpha_beta_parameters(alpha, beta, "lrp.alpha_beta")
        self.bias = self.bias_at_weightless = bool(bias)

    def rule(self):
        return AlphaBeta(self.alpha, self.beta, self.bias)


class LRPAlpha1Beta0(LRPAlphaBeta):
    """alpha=1, beta=0 (excitation backprop-like: only positive contributions)."""

    def __init__(self, sample_shapes, bias=True, strict=True, maxpool="max"):
        super().__init__(sample_shapes, 1.0, 0.0, bias, strict, maxpool)


class LRPAlpha2Beta1(LRPAlphaBeta):
    """alpha=2, beta=1."""

    def __init__(self, sample_shapes, bias=True, strict=True, maxpool="max"):
        super().__init__(sample_shapes, 2.0, 1.0, bias, strict, maxpool)


class LRPZPlus(_SingleRule):
    """The z+ rule at every layer: alpha=1, beta=0 with biases ignored (iNNvestigate's ``lrp.z_plus``)."""

    bias_at_weightless = False

    def rule(self):
        return z_plus()


class LRPZPlusFast(_SingleRule):
    """z+ without splitting inputs by sign (:class:`..rules.lrp.ZPlusFast`); equals ``lrp.z_plus`` when every
    layer's input is >= 0."""

    bias_at_weightless = False

    def rule(self):
        return ZPlusFast()


class LRPGamma(_SingleRule):
    """The gamma rule at every layer (:class:`..rules.lrp.Gamma`, zennit's generalisation to signed inputs)."""

    def __init__(self, sample_shapes, gamma=0.25, bias=True, strict=True, maxpool="max"):
        super().__init__(sample_shapes, strict, maxpool)
        self.gamma, self.bias = _number(gamma, "gamma", "lrp.gamma"), bool(bias)
        self.bias_at_weightless = self.bias

    def rule(self):
        return Gamma(self.gamma, self.bias)


class LRPBounded(_SingleRule):
    """The z^B rule at every layer (:class:`..rules.lrp.Bounded`), inputs bounded by ``low`` and ``high``
    (iNNvestigate's ``Bounded`` rule and defaults). For a bounded *first* layer only, see ``lrp.epsilon_gamma_box``
    or ``lrp.composite(first_layer=Bounded(low, high))``."""

    bias_at_weightless = False

    def __init__(self, sample_shapes, low=-1.0, high=1.0, strict=True, maxpool="max"):
        super().__init__(sample_shapes, strict, maxpool)
        self.low, self.high = _bounds(low, high, "lrp.bounded")

    def rule(self):
        return Bounded(self.low, self.high)


class LRPComposite(LRP):
    """User-defined LRP: a rule per op type, op group or layer name.

    Parameters
    ----------
    rules : mapping, optional
        Key -> rule. Keys: an op type ('MatMul', 'Conv2D', 'DepthwiseConv2dNative', ...), 'dense' (MatMul) or
        'conv' (any convolution), or an fnmatch pattern matched against the op name and each of its '/'-separated
        scopes (so a Keras layer name such as 'conv2d_1' or 'block*' selects that layer's op). The first matching
        key wins. Rules: objects from :mod:`deepexplain.tensorflow.rules.lrp` (``Epsilon(0.1)``, ``AlphaBeta(2, 1)``,
        ``Gamma(0.25)``, ``Bounded(0, 1)``, ...) or names ('z', 'epsilon', 'alpha_1_beta_0', 'alpha_2_beta_1',
        'z_plus', 'z_plus_fast', 'gamma', 'w_square', 'flat').
    first_layer : rule, optional
        Rule of the dense/convolution ops nearest to the input (before any other such op), overriding ``rules``.
    default : rule
        Rule of the ops no key matches (default the z-rule).
    epsilon : float
        Stabiliser at batch normalisation and scalings by a constant (pooling and residual sums use the z-rule).
    """

    def __init__(self, sample_shapes, rules=None, first_layer=None, default="z", epsilon=0.0, strict=True,
                 maxpool="max"):  # fmt: skip
        super().__init__(sample_shapes, strict, maxpool)
        rules = {} if rules is None else rules
        if not hasattr(rules, "items") or not all(isinstance(k, str) for k in rules):
            raise InvalidInputError(
                f"rules of lrp.composite must be a mapping from op type, 'dense', 'conv' or a layer-name pattern (str) "
                f"to a rule; got {rules!r}"
            )
        self.composite = {k: lrp_rules.as_rule(v, f"rules[{k!r}] of lrp.composite") for k, v in rules.items()}
        self.first_layer = None if first_layer is None else lrp_rules.as_rule(first_layer, "first_layer")
        self.default = lrp_rules.as_rule(default, "default of lrp.composite")
        self.stabiliser = _number(epsilon, "epsilon", "lrp.composite")

    def layer_rules(self):
        return self.composite, self.default, self.first_layer


# The epsilon rule at the linear layers of a transformer (AttnLRP's and lxt's 1e-6); a frozen rule, shared safely.
TRANSFORMER_EPSILON = Epsilon(1e-6)


class ConservativeLRP(LRPComposite):
    """CP-LRP (Ali et al. 2022, "XAI for Transformers: Better Explanations through Conservative Propagation", ICML,
    Sec. 3.2): LRP where the attention probabilities and the normaliser of layer/RMS normalisation are constants, so
    attention heads are linear layers with weights ``P`` (the AH rule) and a normalisation ``y = A x + b`` is
    affine (the LN rule, :func:`..rules.lrp.normalisation`); in a bias-free model relevance is conserved exactly.
    The epsilon rule (``default``, 1e-6 as AttnLRP) at linear layers; ``rules``, ``first_layer``, ``default`` and
    ``epsilon`` (the stabiliser at normalisations and scalings) as in ``lrp.composite``.

    Every LRP method of this library treats attention and normalisation this way; ``lrp.cp`` names it and gives it
    transformer defaults. It equals ``lxt``'s CP-LRP patches (gradients stopped at the queries and keys, and at the
    normaliser) up to the stabilisers.
    """

    def __init__(self, sample_shapes, rules=None, first_layer=None, default=TRANSFORMER_EPSILON, epsilon=1e-6,
                 strict=True, maxpool="max"):  # fmt: skip
        super().__init__(sample_shapes, rules, first_layer, default, epsilon, strict, maxpool)


class AttnLRP(ConservativeLRP):
    """AttnLRP (Achtibat et al. 2024, "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for Transformers",
    ICML): relevance also flows through the attention weights into the queries and keys. The softmax gets the
    Taylor-decomposition rule of Prop. 3.1, every product of two activations (query x key, attention x value,
    gated units) the uniform rule of Prop. 3.2/3.3 (each factor half, after the epsilon rule at a matrix product,
    ``product_epsilon``), normalisations the identity/epsilon rule with their normaliser constant (Prop. 3.4),
    GELU/SiLU the identity rule (Eq. 9), linear layers the epsilon rule (``default``); see
    :mod:`..rules.attention`.

    Stabilisers default to those of the authors' ``lxt`` (1e-6 at linear layers and normalisations, 1e-8 at
    products); a larger epsilon moves token relevances by ~1e-4. Differences from ``lxt``'s explicit rules: our
    epsilon carries the sign of ``z`` (``lxt`` adds it), and residual sums and means use the z-rule (``lxt``: epsilon
    1e-8 and 1e-6), which changes relevances by ~epsilon / |z|. Relevance is not conserved exactly: the softmax rule
    decomposes at ``x`` with a bias term, which absorbs part of it (the paper's Prop. 3.1).
    """

    rules = attention_rules.RULES
    products = "uniform"

    def __init__(self, sample_shapes, rules=None, first_layer=None, default=TRANSFORMER_EPSILON, epsilon=1e-6,
                 product_epsilon=1e-8, strict=True, maxpool="max"):  # fmt: skip
        super().__init__(sample_shapes, rules, first_layer, default, epsilon, strict, maxpool)
        self.product_epsilon = _number(product_epsilon, "product_epsilon", "lrp.attn")

    def graph_settings(self, reference_index, path):
        settings = super().graph_settings(reference_index, path)
        fields = {f: getattr(settings, f) for f in ("rule_for", "path", "epsilon", "bias", "maxpool")}
        return attention_rules.AttnSettings(**fields, product_epsilon=self.product_epsilon)


class _Preset(LRP):
    """Fixed composites: dense ops get ``dense``, convolutions ``conv``, the first layer optionally ``first``."""

    def __init__(self, sample_shapes, epsilon, strict, maxpool, method):
        super().__init__(sample_shapes, strict, maxpool)
        self.epsilon = self.stabiliser = _number(epsilon, "epsilon", method)

    def presets(self):
        raise NotImplementedError

    def layer_rules(self):
        dense, conv, first = self.presets()
        return {"dense": dense, "conv": conv}, Epsilon(0.0), first


class SequentialPresetA(_Preset):
    """iNNvestigate's ``lrp.sequential_preset_a``: epsilon rule (``epsilon``, with bias) at dense layers,
    alpha=1/beta=0 (with bias) at convolutions."""

    conv_rule = AlphaBeta(1.0, 0.0)
    flat_first_layer = False

    def __init__(self, sample_shapes, epsilon=0.1, strict=True, maxpool="max"):
        super().__init__(sample_shapes, epsilon, strict, maxpool, "lrp.sequential_preset_a")

    def presets(self):
        return Epsilon(self.epsilon), self.conv_rule, Flat() if self.flat_first_layer else None


class SequentialPresetB(SequentialPresetA):
    """iNNvestigate's ``lrp.sequential_preset_b``: as preset A with alpha=2/beta=1 at convolutions."""

    conv_rule = AlphaBeta(2.0, 1.0)


class SequentialPresetAFlat(SequentialPresetA):
    """Preset A with the flat rule at the first layer."""

    flat_first_layer = True


class SequentialPresetBFlat(SequentialPresetB):
    """Preset B with the flat rule at the first layer."""

    flat_first_layer = True


class EpsilonPlus(_Preset):
    """zennit's ``EpsilonPlus`` composite: epsilon rule at dense layers, z+ (alpha=1/beta=0 with the positive bias
    part, zennit's ``ZPlus``) at convolutions."""

    def __init__(self, sample_shapes, epsilon=1e-6, strict=True, maxpool="max"):
        super().__init__(sample_shapes, epsilon, strict, maxpool, "lrp.epsilon_plus")

    def presets(self):
        return Epsilon(self.epsilon), AlphaBeta(1.0, 0.0), None


class EpsilonPlusFlat(EpsilonPlus):
    """zennit's ``EpsilonPlusFlat``: ``EpsilonPlus`` with the flat rule at the first layer."""

    def presets(self):
        return Epsilon(self.epsilon), AlphaBeta(1.0, 0.0), Flat()


class EpsilonGammaBox(_Preset):
    """zennit's ``EpsilonGammaBox``: z^B (``low``, ``high``) at the first layer if it is a convolution (as zennit,
    whose box rule is for pixel inputs), gamma rule at convolutions, epsilon rule at dense layers."""

    first_layer_types = CONV_TYPES

    def __init__(self, sample_shapes, low=None, high=None, epsilon=1e-6, gamma=0.25, strict=True, maxpool="max"):
        super().__init__(sample_shapes, epsilon, strict, maxpool, "lrp.epsilon_gamma_box")
        self.low, self.high = _bounds(low, high, "lrp.epsilon_gamma_box")
        self.gamma = _number(gamma, "gamma", "lrp.epsilon_gamma_box")

    def presets(self):
        return Epsilon(self.epsilon), Gamma(self.gamma), Bounded(self.low, self.high)


class DeepTaylor(_SingleRule):
    """Deep Taylor decomposition for ReLU networks (Montavon et al. 2017, Pattern Recognition, Sec. 4): the
    explained output passes a ReLU first (only positive evidence is decomposed) and every dense/convolution layer
    gets the z+ rule (alpha=1, beta=0, biases ignored), the rule the paper derives for layers with ReLU inputs.

    This is also what iNNvestigate 2.1.2 computes: its layer check ``contains_activation`` is true for every Dense
    and Conv layer, so its w**2 branch for layers "without activation" never fires. Differences from it: residual
    additions split relevance in proportion to the summands (it passes the full relevance to each summand), average
    pooling uses the z-rule (it uses the gradient), and batch normalisation after a layer is folded into it, the z+
    rule applied to ``W s`` (it passes batch norm by its gradient, scaling relevance by gamma/sigma), so relevance is
    conserved through all three.
    """

    bias_at_weightless = False
    explains_positive_output = True

    def rule(self):
        return z_plus()


class DeepTaylorBounded(DeepTaylor):
    """Deep Taylor with the z^B rule (inputs within ``low`` .. ``high``) at the first layer (Montavon et al. 2017,
    Sec. 4.3; iNNvestigate's ``deep_taylor.bounded``)."""

    def __init__(self, sample_shapes, low=None, high=None, strict=True, maxpool="max"):
        super().__init__(sample_shapes, strict, maxpool)
        self.low, self.high = _bounds(low, high, "deep_taylor.bounded")

    def layer_rules(self):
        return {}, self.rule(), Bounded(self.low, self.high)
