"""deepexplain: attribution methods for TensorFlow models.

- ``deepexplain.explain(method, model, xs, ...)`` and ``deepexplain.Explainer(method, model, ...)`` explain Keras 3,
  tf_keras and eager TensorFlow models, live (:mod:`deepexplain.explainer`, :mod:`deepexplain.adapters.keras`).
- ``from deepexplain.tensorflow import DeepExplain`` gives the original DeepExplain API on TF1-style graphs.

Submodules load lazily, so ``import deepexplain`` costs little more than importing TensorFlow.
"""

import importlib

from deepexplain._version import __version__

_LAZY = {
    "explain": ("deepexplain.explainer", "explain"),
    "Explainer": ("deepexplain.explainer", "Explainer"),
    "strip_softmax": ("deepexplain.adapters.keras", "strip_softmax"),
    "load_model": ("deepexplain.adapters.keras", "load_model"),
    "DeepExplain": ("deepexplain.tensorflow", "DeepExplain"),
    "METHODS": ("deepexplain.tensorflow", "METHODS"),
    "fit_patterns": ("deepexplain.patterns", "fit_patterns"),
    "PatternFitter": ("deepexplain.patterns", "PatternFitter"),
    "Patterns": ("deepexplain.patterns", "Patterns"),
    "signal_quality": ("deepexplain.patterns", "signal_quality"),
    "segments": ("deepexplain.segmentation", "segments"),
    "explain_dataset": ("deepexplain.dataset", "explain_dataset"),
    "DatasetExplanation": ("deepexplain.dataset", "DatasetExplanation"),
    "evaluate_dataset": ("deepexplain.dataset", "evaluate_dataset"),
    "report": ("deepexplain.reporting", "report"),
}
_SUBMODULES = (
    "plot",
    "perturbation",
    "tensorflow",
    "errors",
    "targets",
    "inputs",
    "batching",
    "patterns",
    "segmentation",
    "stream",
    "dataset",
    "files",
    "reporting",
)


def __getattr__(name):
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    if name in _SUBMODULES:
        return importlib.import_module(f"deepexplain.{name}")
    raise AttributeError(f"module 'deepexplain' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY, *_SUBMODULES])


__all__ = [
    "__version__",
    "explain",
    "Explainer",
    "strip_softmax",
    "load_model",
    "DeepExplain",
    "METHODS",
    "fit_patterns",
    "PatternFitter",
    "Patterns",
    "signal_quality",
    "segments",
    "explain_dataset",
    "DatasetExplanation",
    "evaluate_dataset",
    "report",
]
