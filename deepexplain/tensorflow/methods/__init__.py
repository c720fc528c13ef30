"""The registry of attribution methods by name (names as in the original DeepExplain)."""

from __future__ import annotations

import inspect
from types import MappingProxyType

from deepexplain.errors import InvalidInputError, UnknownMethodError, closest
from deepexplain.tensorflow.methods import (
    attention,
    cam,
    gradient,
    noise,
    paths,
    patterns,
    perturbation,
    relevance,
    xrai,
)
from deepexplain.tensorflow.methods.base import GradientMethod

METHODS = MappingProxyType(
    {
        "zero": gradient.Zero,
        "saliency": gradient.Saliency,
        "grad*input": gradient.GradientXInput,
        "intgrad": gradient.IntegratedGradients,
        "blur_ig": paths.BlurIG,
        "guided_ig": paths.GuidedIG,
        "xrai": xrai.XRAI,
        "elrp": gradient.EpsilonLRP,
        "deeplift": gradient.DeepLIFTRescale,
        "smoothgrad": gradient.SmoothGrad,
        "vargrad": noise.VarGrad,
        "squaregrad": noise.SquareGrad,
        "noise_tunnel": noise.NoiseTunnel,
        "expected_gradients": gradient.ExpectedGradients,
        "deepshap": gradient.DeepSHAP,
        "occlusion": perturbation.Occlusion,
        "shapley_sampling": perturbation.ShapleySampling,
        "shapley_exact": perturbation.ShapleyExact,
        "feature_ablation": perturbation.FeatureAblation,
        "kernel_shap": perturbation.KernelShap,
        "lime": perturbation.Lime,
        "rise": perturbation.Rise,
        "guided_backprop": gradient.GuidedBackprop,
        "deconvnet": gradient.Deconvnet,
        "lrp.z": relevance.LRPZ,
        "lrp.epsilon": relevance.LRPEpsilon,
        "lrp.w_square": relevance.LRPWSquare,
        "lrp.flat": relevance.LRPFlat,
        "lrp.alpha_beta": relevance.LRPAlphaBeta,
        "lrp.alpha_1_beta_0": relevance.LRPAlpha1Beta0,
        "lrp.alpha_2_beta_1": relevance.LRPAlpha2Beta1,
        "lrp.z_plus": relevance.LRPZPlus,
        "lrp.z_plus_fast": relevance.LRPZPlusFast,
        "lrp.gamma": relevance.LRPGamma,
        "lrp.bounded": relevance.LRPBounded,
        "lrp.sequential_preset_a": relevance.SequentialPresetA,
        "lrp.sequential_preset_b": relevance.SequentialPresetB,
        "lrp.sequential_preset_a_flat": relevance.SequentialPresetAFlat,
        "lrp.sequential_preset_b_flat": relevance.SequentialPresetBFlat,
        "lrp.epsilon_plus": relevance.EpsilonPlus,
        "lrp.epsilon_plus_flat": relevance.EpsilonPlusFlat,
        "lrp.epsilon_gamma_box": relevance.EpsilonGammaBox,
        "lrp.composite": relevance.LRPComposite,
        "lrp.cp": relevance.ConservativeLRP,
        "lrp.attn": relevance.AttnLRP,
        "deep_taylor": relevance.DeepTaylor,
        "deep_taylor.bounded": relevance.DeepTaylorBounded,
        "pattern.net": patterns.PatternNet,
        "pattern.attribution": patterns.PatternAttribution,
        "pattern.net.guided": patterns.GuidedPatternNet,
        "gradcam": cam.GradCAM,
        "gradcam++": cam.GradCAMPlusPlus,
        "layercam": cam.LayerCAM,
        "scorecam": cam.ScoreCAM,
        "guided_gradcam": cam.GuidedGradCAM,
        "attention_rollout": attention.AttentionRollout,
        # iNNvestigate's names, so its users can switch
        "gradient": gradient.Gradient,
        "input_t_gradient": gradient.GradientXInput,
        "integrated_gradients": gradient.InnvestigateIntegratedGradients,
        "input": gradient.InputBaseline,
        "random": gradient.RandomBaseline,
        "connection_weights": gradient.ConnectionWeights,
    }
)


# Names that another library uses for a method listed under its own name too (same numbers or same method with
# that library's defaults), and methods that equal another one with its defaults; galleries such as the demo skip them.
ALIASES = frozenset({"input_t_gradient", "integrated_gradients", "lrp.alpha_2_beta_1", "lrp.composite"})


def declaration_of(method) -> type:
    """The declaration class of ``method``: a name of :data:`METHODS`, or a declaration class itself (a
    :class:`GradientMethod` subclass of one's own, or one the library runs without listing it, such as pattern
    fitting)."""
    if isinstance(method, type):
        return method
    if not isinstance(method, str) or method not in METHODS:
        raise UnknownMethodError(f"Method must be in {list(METHODS)}; got {method!r}{closest(method, list(METHODS))}")
    return METHODS[method]


def method_name(method) -> str:
    """The name a method is reported by: its name in :data:`METHODS`, else its declaration's ``name``."""
    return method if isinstance(method, str) else getattr(method, "name", method.__name__)


def method_arguments(name) -> list[str]:
    """The keyword arguments method ``name`` (a name or a declaration class) takes."""
    parameters = list(inspect.signature(declaration_of(name)).parameters.values())[1:]
    return [p.name for p in parameters]


def make_method(name, sample_shapes, kwargs: dict):
    """Instantiate method ``name`` (a name of :data:`METHODS` or a declaration class) for inputs of the given sample
    shapes.

    Raises
    ------
    UnknownMethodError
        'Method must be in [...]' for an unknown name (the original DeepExplain's error; also a RuntimeError and a
        ValueError), suggesting the closest name.
    InvalidInputError
        For an argument the method does not take, naming the ones it does.
    """
    check_method(name, kwargs)
    return declaration_of(name)(sample_shapes, **kwargs)


def check_method(name, kwargs) -> None:
    """Raise for an unknown method name or a keyword the method does not take (with the closest name suggested).

    Raises
    ------
    UnknownMethodError
        'Method must be in [...]' (the original DeepExplain's error; also a RuntimeError and a ValueError).
    InvalidInputError
        For an argument the method does not take, naming the ones it does.
    """
    declaration_of(name)
    accepted = method_arguments(name)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise InvalidInputError(
            f"{method_name(name)} got unexpected argument(s) {unknown}; it takes {accepted or 'no arguments'}"
            f"{closest(unknown[0], accepted)}"
        )


__all__ = [
    "ALIASES",
    "METHODS",
    "GradientMethod",
    "check_method",
    "declaration_of",
    "make_method",
    "method_arguments",
    "method_name",
]
