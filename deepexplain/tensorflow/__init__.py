"""The TF1-graph API, compatible with the original DeepExplain: ``from deepexplain.tensorflow import DeepExplain``.

Names load on first use, so that the modules of this package (the op catalogue, the rules) import without the
explainer that builds on them.
"""

import importlib

_LAZY = {
    "DeepExplain": ("deepexplain.tensorflow.context", "DeepExplain"),
    "Explainer": ("deepexplain.explainer", "Explainer"),
    "METHODS": ("deepexplain.tensorflow.methods", "METHODS"),
}


def __getattr__(name):
    if name in _LAZY:
        module, attribute = _LAZY[name]
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'deepexplain.tensorflow' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY])


__all__ = ["DeepExplain", "Explainer", "METHODS"]
