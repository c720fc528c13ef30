"""The TF1-graph API, compatible with the original DeepExplain: ``from deepexplain.tensorflow import DeepExplain``."""

from deepexplain.tensorflow.context import DeepExplain
from deepexplain.tensorflow.explainer import Explainer
from deepexplain.tensorflow.methods import METHODS

__all__ = ["DeepExplain", "Explainer", "METHODS"]
