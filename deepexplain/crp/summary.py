"""The concepts behind one prediction, as plain arrays to draw (:func:`deepexplain.plot.concepts`): the most
relevant channels of a layer, their shares, their conditional heatmaps and their reference samples."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from deepexplain.crp.concepts import ChannelConcept
from deepexplain.errors import InvalidInputError


@dataclass(frozen=True)
class Concepts:
    """The top concepts of one prediction.

    Attributes
    ----------
    image : ndarray
        The sample (as given, before any preprocessing).
    layer : str
    target : int
        The explained class.
    heatmap : ndarray
        The unconditional heatmap of the prediction.
    ids : list of int
        The concepts (channels), most relevant first.
    shares : ndarray
        Each concept's relevance over the sum of absolute relevances of the layer.
    heatmaps : ndarray
        ``(len(ids), ...)``: each concept's conditional heatmap ``{y: target, layer: [id]}``.
    references : dict
        Concept -> reference image crops (RelMax or ActMax of a :class:`FeatureVisualization`); empty without one.
    """

    image: np.ndarray
    layer: str
    target: int
    heatmap: np.ndarray
    ids: list
    shares: np.ndarray
    heatmaps: np.ndarray
    references: dict = field(default_factory=dict)


def top_concepts(attribution, sample, layer: str, target=None, n_concepts: int = 4, fv=None, n_ref: int = 6,
                 mode: str = "relevance", stat: str = "sum", preprocess_fn=None) -> Concepts:  # fmt: skip
    """The ``n_concepts`` channels of ``layer`` that contribute most to the prediction of ``sample`` (by the
    absolute value of their relative relevance), with their conditional heatmaps and, given a run
    :class:`FeatureVisualization` ``fv`` of that layer, ``n_ref`` reference crops each (the tutorial figure of
    zennit-crp and of Achtibat et al. 2023, Fig. 1).

    ``target``: the explained class (default: the predicted one). ``preprocess_fn`` maps the sample to the model
    input (default: ``fv``'s, or none).
    """
    image = np.asarray(sample)
    preprocess = preprocess_fn or (fv.preprocess_fn if fv is not None else None)
    xs = image[None]
    xs = preprocess(xs) if preprocess is not None else xs
    y = {} if target is None else {"y": [int(target)]}
    whole = attribution(xs, y, record_layer=[layer], progress=False)
    explained = int(whole.prediction.reshape(1, -1).argmax()) if target is None else int(target)
    shares = ChannelConcept.attribute(whole.relevances[layer])[0]
    if n_concepts < 1:
        raise InvalidInputError(f"n_concepts must be >= 1; got {n_concepts}")
    ids = [int(i) for i in np.argsort(-np.abs(shares), kind="stable")[:n_concepts]]
    conditional = attribution(xs, [{"y": [explained], layer: [c]} for c in ids], progress=False).heatmap
    references = fv.get_max_reference(ids, layer, mode, stat, n_ref=n_ref) if fv is not None else {}
    return Concepts(image, layer, explained, whole.heatmap[0], ids, shares[ids], np.asarray(conditional), references)


__all__ = ["Concepts", "top_concepts"]
