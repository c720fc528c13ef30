"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers", ACL, Sec. 3).

The attention probabilities of every Keras ``MultiHeadAttention`` layer are read from the trace of the live model
(its ``Softmax`` of shape ``(N, heads, T, T)``: no change to the model, no ``return_attention_scores``). Per layer
``l`` the heads are fused (mean by default) into ``A_l``; the residual connection is accounted for as
``Â_l = (A_l + I) / 2`` (rows renormalised), and the rollout is the product ``Â_L ··· Â_1``: how much each input
token flows into each position of the last layer. The result per sample is the row of the explained position
(``token``), or the mean over the rows for a model that pools over positions (``token=None``), ``(N, T)``.

The rollout does not depend on the explained output (the target is ignored); it is a forward-only method.
"""

from __future__ import annotations

import numpy as np

from deepexplain.errors import InvalidInputError
from deepexplain.inputs import check_choice, check_flag
from deepexplain.tensorflow.methods.base import GradientMethod

HEAD_FUSIONS = ("mean", "max", "min")


class AttentionRollout(GradientMethod):
    """Attention rollout of the Keras ``MultiHeadAttention`` layers of a model; see the module docstring.

    Parameters
    ----------
    head_fusion : {'mean', 'max', 'min'}
        How the heads of a layer become one matrix: the paper's mean, or the max/min as common implementations
        offer.
    residual : bool
        Add the identity for the residual connection, ``(A + I) / 2`` (the paper); False multiplies the raw
        attention matrices.
    token : int or None
        The explained position (0 for a ``[CLS]`` token); None: the mean over positions (a pooled model).
    """

    name = "attention_rollout"
    needs_gradient = False
    reads_attention = True

    def __init__(self, sample_shapes, head_fusion="mean", residual=True, token=None):
        super().__init__(sample_shapes)
        check_choice(head_fusion, "head_fusion", self.name, HEAD_FUSIONS)
        self.head_fusion = head_fusion
        self.residual = bool(check_flag(residual, "residual", self.name))
        if token is not None and (isinstance(token, bool) or not isinstance(token, int | np.integer)):
            raise InvalidInputError(f"token of {self.name} must be an int position or None; got {token!r}")
        self.token = None if token is None else int(token)

    def rollout(self, attentions: list) -> np.ndarray:
        """``(N, T)`` from the layers' attention probabilities, each ``(N, heads, T, T)``, in forward order."""
        fuse = {"mean": np.mean, "max": np.max, "min": np.min}[self.head_fusion]
        result = None
        for probabilities in attentions:
            matrix = fuse(np.asarray(probabilities, np.float64), axis=1)
            if self.residual:
                matrix = (matrix + np.eye(matrix.shape[-1])) / 2
                matrix = matrix / matrix.sum(axis=-1, keepdims=True)
            result = matrix if result is None else matrix @ result
        positions = result.shape[-1]
        if self.token is None:
            return result.mean(axis=1).astype(np.float32)
        if not -positions <= self.token < positions:
            raise InvalidInputError(f"token of {self.name} must index one of {positions} positions; got {self.token}")
        return result[:, self.token].astype(np.float32)


def attention_probabilities(graph, layer_names) -> list:
    """The outputs of the ``Softmax`` ops of the ``MultiHeadAttention`` layers ``layer_names`` in ``graph``, in the
    order they were created (the forward order): a Keras layer ``mha`` called in a trace scopes its ops
    ``.../mha/...`` or ``.../mha_1/...``."""
    names = set(layer_names)
    found = []
    for op in graph.get_operations():
        if op.type != "Softmax" or op.outputs[0].shape.rank != 4:
            continue
        scopes = op.name.split("/")[:-1]
        if any(scope in names or scope.rsplit("_", 1)[0] in names for scope in scopes):
            found.append(op.outputs[0])
    return found


__all__ = ["HEAD_FUSIONS", "AttentionRollout", "attention_probabilities"]
