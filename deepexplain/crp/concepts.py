"""Concepts: which units of a layer make up one concept. A channel (all positions of a convolution channel, one unit
of a dense layer) is zennit-crp's ``ChannelConcept`` and the paper's (Achtibat et al. 2023, Sec. 4.1)."""

from __future__ import annotations

import numpy as np

from deepexplain.errors import InvalidInputError

STATS = ("sum", "max")
ABS_NORM_EPSILON = 1e-10  # as zennit-crp: a row of zeros stays zeros


def _rows_by_channel(values) -> np.ndarray:
    """``(rows, positions, channels)`` of a layer tensor (NHWC, NTC or (rows, units))."""
    values = np.asarray(values)
    if values.ndim < 2:
        raise InvalidInputError(f"a layer tensor has a rows axis and a channel axis; got shape {values.shape}")
    return values.reshape(len(values), -1, values.shape[-1])


def abs_normed(scores: np.ndarray) -> np.ndarray:
    """``scores`` divided per row by the sum of their absolute values (+1e-10): each concept's share."""
    scores = np.asarray(scores)
    return scores / (np.abs(scores).sum(axis=1, keepdims=True) + ABS_NORM_EPSILON)


class ChannelConcept:
    """A channel as a concept (zennit-crp's ``ChannelConcept``); the channel axis is the last (NHWC)."""

    @staticmethod
    def attribute(relevance, mask=None, abs_norm: bool = True) -> np.ndarray:
        """The relevance of each channel, ``(rows, channels)``: the sum over its positions (of ``relevance * mask``
        with a mask, e.g. a region of the layer's map for a local analysis), divided per row by the sum of the
        absolute values with ``abs_norm`` (the paper's relative relevance)."""
        relevance = np.asarray(relevance, np.float64)
        if mask is not None:
            relevance = relevance * np.asarray(mask, np.float64)
        scores = _rows_by_channel(relevance).sum(axis=1)
        return abs_normed(scores) if abs_norm else scores

    @staticmethod
    def mask(concept_ids, channels: int) -> np.ndarray:
        """``(channels,)`` float mask: 1 at the listed channels (OR), 0 elsewhere."""
        mask = np.zeros(channels, np.float32)
        mask[list(np.atleast_1d(np.asarray(concept_ids, dtype=np.int64)))] = 1.0
        return mask

    @staticmethod
    def mask_rf(neuron_ids: dict, shape) -> np.ndarray:
        """A mask of the layer's shape (without rows): 1 at the listed units ``{channel: [flat spatial index]}``."""
        mask = np.zeros(shape, np.float32)
        units = mask.reshape(-1, shape[-1])
        for channel, positions in neuron_ids.items():
            units[list(np.atleast_1d(positions)), channel] = 1.0
        return mask

    @staticmethod
    def reference_sampling(values, stat: str = "sum", abs_norm: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Per row and channel, the score of RelMax/ActMax and the position of the most relevant (active) unit.

        Parameters
        ----------
        values : ndarray
            ``(rows, *layer shape)``: a layer's relevance or activation.
        stat : {'sum', 'max'}
            The channel's sum over its positions, or its largest value.
        abs_norm : bool
            Divide each row's scores by the sum of their absolute values over the channels.

        Returns
        -------
        scores : ndarray
            ``(rows, channels)`` float64.
        rf : ndarray
            ``(rows, channels)`` int64: the flat spatial index of the channel's largest value (0 for a dense layer).
        """
        if stat not in STATS:
            raise InvalidInputError(f"stat must be one of {STATS}; got {stat!r}")
        by_channel = _rows_by_channel(np.asarray(values, np.float64))
        rf = by_channel.argmax(axis=1)
        scores = by_channel.sum(axis=1) if stat == "sum" else by_channel.max(axis=1)
        return (abs_normed(scores) if abs_norm else scores), rf.astype(np.int64)

    @staticmethod
    def get_rf_indices(shape) -> np.ndarray:
        """The flat spatial indices of a layer of ``shape`` (without rows): ``[0]`` for a dense layer."""
        return np.arange(int(np.prod(shape[:-1]))) if len(shape) > 1 else np.zeros(1, np.int64)


__all__ = ["STATS", "ChannelConcept", "abs_normed"]
