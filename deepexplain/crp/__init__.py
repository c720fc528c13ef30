"""Concept Relevance Propagation (Achtibat et al., Nature Machine Intelligence 5, 2023), with zennit-crp's names.

- :class:`CondAttribution`: conditional heatmaps, the relevance masked at named layers to chosen channels;
- :class:`ChannelConcept`: a channel as a concept (its relevance, masks, reference scores);
- :class:`FeatureVisualization`: Relevance and Activation Maximization over a dataset (the top-k reference samples
  of every channel), streamed, checkpointed, on Ray if asked;
- :class:`AttributionGraph`: how a concept is made of the concepts of the layers below;
- :func:`top_concepts`: the concepts behind one prediction, to draw with :func:`deepexplain.plot.concepts`.
"""

from deepexplain.crp.attribution import CondAttribution, CondAttributionResult
from deepexplain.crp.concepts import ChannelConcept
from deepexplain.crp.graph import AttributionGraph, AttributionGraphResult
from deepexplain.crp.summary import Concepts, top_concepts
from deepexplain.crp.visualization import FeatureVisualization

__all__ = [
    "AttributionGraph",
    "AttributionGraphResult",
    "ChannelConcept",
    "Concepts",
    "CondAttribution",
    "CondAttributionResult",
    "FeatureVisualization",
    "top_concepts",
]
