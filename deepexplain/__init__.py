"""deepexplain: attribution methods for TensorFlow models.

``from deepexplain.tensorflow import DeepExplain`` gives the original DeepExplain API on TF1-style graphs.
Submodules load lazily, so ``import deepexplain`` costs little more than importing TensorFlow.
"""

import importlib

from deepexplain._version import __version__

_LAZY = {
    "DeepExplain": ("deepexplain.tensorflow", "DeepExplain"),
    "Explainer": ("deepexplain.tensorflow", "Explainer"),
    "METHODS": ("deepexplain.tensorflow", "METHODS"),
}


def __getattr__(name):
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    if name in ("plot", "perturbation", "tensorflow", "errors"):
        return importlib.import_module(f"deepexplain.{name}")
    raise AttributeError(f"module 'deepexplain' has no attribute {name!r}")


__all__ = ["__version__", "DeepExplain", "Explainer", "METHODS"]
