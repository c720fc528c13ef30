"""What a method declares, and the checks every method shares.

A gradient-family method is a declaration, not a code path: for each sample it names the rows where gradients are
taken (``points``), how much each row counts (``weights``), what multiplies each row's gradient (``factors``) and,
for DeepLIFT-like rules, which reference rows travel in the same batch. The :class:`Explainer` runs the rows in
batches and forms, per sample ``i`` and input tensor,

    attribution_i = sum_r  weights[r] * factors[r, i] * gradient(points[r, i])

then applies :meth:`GradientMethod.finalize`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

SampleShape = tuple  # one sample's static shape (None for a dimension unknown until run time), or None if unknown


@dataclass(frozen=True)
class Expansion:
    """The rows a gradient method evaluates for a group of ``n`` samples.

    Attributes
    ----------
    points : list of ndarray
        Per input tensor, ``(R * n, *sample_shape)``, step-major: row ``r * n + i`` belongs to sample ``i``.
    weights : ndarray
        ``(R,)``, the weight of each of a sample's ``R`` rows.
    factors : list of (ndarray or None)
        Per input tensor, broadcastable to ``(R, n, *sample_shape)``; ``None`` means 1.
    references : list of ndarray or None
        Per input tensor ``(K, *sample_shape)``: reference rows that rules read (DeepLIFT), or None.
    reference_ids : ndarray or None
        ``(R * n,)`` index in ``0..K-1`` of each row's reference.
    row_values : list of ndarray or None
        Per extra row input the method declares (:attr:`GradientMethod.row_input_specs`), ``(R * n, *shape)``: what
        each row feeds there (e.g. the channel mask of a concept); the rules read the tensors as
        ``settings.path.row_inputs``.
    """

    points: list
    weights: np.ndarray
    factors: list
    references: list | None = None
    reference_ids: np.ndarray | None = None
    row_values: list | None = None


@dataclass(frozen=True)
class Settings:
    """What the rules of one explanation read: the explained path (which tensors are parameters, ...)."""

    path: object


class GradientMethod:
    """Base class of the modified-backward-pass methods.

    Class attributes
    ----------------
    rules : mapping
        Op type -> backward rule used while the explanation graph is built; empty for plain gradients.
    activation_rule : callable or None
        ``rule(activation, grad, settings) -> signal`` at an activation written as several ops (gelu, swish, ...;
        see :mod:`deepexplain.tensorflow.activations`); None: such activations keep their gradient.
    normalisation_rule : callable or None
        ``rule(normalisation, relevance, settings) -> relevance of x`` at a layer or RMS normalisation written as
        several ops (:mod:`deepexplain.tensorflow.normalisation`); None: their ops are rules of their own.
    gradient_rule_types : frozenset
        Nonlinear op types whose own gradient *is* the method's rule (e.g. max-pooling for eps-LRP).
    uses_references : bool
        Whether the rules read reference rows (``settings.reference_index``).
    promises_completeness : bool
        Whether attributions sum to ``f(x) - E[f(baseline)]`` (exactly or in the limit of many steps/samples).
    seeds_relevance : bool
        Whether the backward pass starts from the explained output's value (relevance methods, LRP) instead of from
        its weights (gradients).
    explains_positive_output : bool
        Whether the relevance seed is the output passed through a ReLU (Deep Taylor decomposes positive evidence).
    divides_by_activations : bool
        Whether the rules divide by activations or pre-activations (LRP, DeepLIFT, eps-LRP): where those are near
        zero the attributions can overflow, which the warning on non-finite attributions says.
    covers_all_ops : bool
        Whether every op on the path from X to T must have a rule, be in ``gradient_rule_types`` or in
        ``structural_types`` (ops that only move values: reshapes, concatenation, padding); ``strict`` then says
        whether an uncovered op is an error (True) or a warning (False).
    evaluates_at_samples : bool
        Whether every row is one of the samples themselves (not an interpolation or a noisy copy), so that target
        'max' can be read off the rows' own outputs inside the explanation graph.
    explains_logits : bool
        Whether, on a model whose output is a softmax, the method explains the logits (its rules need them).
    row_input_specs : tuple of tf.TensorSpec
        Extra inputs with one value per row (first dimension None) that the rules read (concept masks); the
        expansion gives their values (:attr:`Expansion.row_values`).
    needs_fit : bool
        Whether the method learns statistics from data first (:meth:`fit_tensors`, :meth:`fit_batch`,
        :meth:`fit_end`, run by ``Explainer.fit(data)``); ``run`` refuses to explain before.
    iterative : bool
        Whether each row depends on the gradients of the rows before (an adaptive path such as Guided IG): the
        Explainer then calls :meth:`iterate` with a gradient function instead of :meth:`expand`.
    products : str or None
        How the rules treat a product of two tensors that depend on the input: 'shapley' (both factors of an
        elementwise product, DeepLIFT), 'factor' (a modulating factor, a gate, a normaliser or attention
        probabilities, is a constant: LRP, eLRP), 'uniform' (each factor gets an equal share; only normalisers are
        constants: AttnLRP) or None (no rule).
    """

    rules: ClassVar[Mapping] = {}
    activation_rule: ClassVar[Callable | None] = None
    normalisation_rule: ClassVar[Callable | None] = None
    gradient_rule_types: ClassVar[frozenset] = frozenset()
    uses_references: ClassVar[bool] = False
    promises_completeness: ClassVar[bool] = False
    needs_gradient: ClassVar[bool] = True
    seeds_relevance: ClassVar[bool] = False
    explains_positive_output: ClassVar[bool] = False
    covers_all_ops: ClassVar[bool] = False
    divides_by_activations: ClassVar[bool] = False
    structural_types: ClassVar[frozenset] = frozenset()
    strict: bool = False
    is_random: ClassVar[bool] = False
    evaluates_at_samples: ClassVar[bool] = True
    explains_logits: ClassVar[bool] = False
    products: ClassVar[str | None] = None
    row_input_specs: ClassVar[tuple] = ()
    needs_fit: ClassVar[bool] = False
    iterative: ClassVar[bool] = False

    def __init__(self, sample_shapes: Sequence[SampleShape]):
        self.sample_shapes = [None if s is None else tuple(s) for s in sample_shapes]

    @property
    def rows_per_sample(self) -> int:
        """How many rows ``R`` each sample expands to (not counting shared reference rows)."""
        return 1

    @property
    def reference_rows(self) -> int:
        """How many shared reference rows a batch may need at most."""
        return 0

    def graph_settings(self, reference_index, path):
        """The object the rules of one compilation receive.

        Parameters
        ----------
        reference_index : tf.Tensor or None
            The int32 row-index tensor of the reference rows (methods with ``uses_references``).
        path : deepexplain.tensorflow.graph.Path
            The explained path (parameters, the layers nearest the input, ...).
        """
        return Settings(path)

    fitted: bool = False

    def fit_tensors(self, path, valid) -> list:
        """The statistics of one batch of the fitting data (``needs_fit``), as tensors of the explained graph.

        Parameters
        ----------
        path : Path
            The explained path (its ``weight_names`` name the model's weights by layer).
        valid : tf.Tensor
            ``(N,)`` float32, 1 for a row of the data and 0 for padding (inputs with a fixed batch size): the
            statistics must weight the rows by it, so that they are sums over the data's rows only.
        """
        raise NotImplementedError(f"{type(self).__name__} learns nothing from data")

    def fit_batch(self, values: list) -> None:
        """Accumulate the values of :meth:`fit_tensors` on one batch (numpy arrays)."""
        raise NotImplementedError(f"{type(self).__name__} learns nothing from data")

    def fit_end(self) -> None:
        """Turn the accumulated statistics into what the explanation uses; the method is then fitted."""
        self.fitted = True

    def op_rules(self, path) -> dict:
        """Rules for single ops of ``path`` that take precedence over :attr:`rules` (patterns of several ops that
        a rule family handles together); none by default."""
        return {}

    def expand(self, xs: list, rng: np.random.Generator) -> Expansion:
        """Rows for the samples ``xs`` (one array ``(n, ...)`` per input tensor)."""
        return Expansion(points=xs, weights=np.ones(1), factors=[None] * len(xs))

    def iterate(self, gradients, xs: list, rng) -> list:
        """Attributions of the samples ``xs`` of an ``iterative`` method, given ``gradients(points) -> list``: the
        gradients (with the method's rules) of the explained outputs of these samples at ``points`` (one array per
        input, shaped like ``xs``), one batched model call per use."""
        raise NotImplementedError(f"{type(self).__name__} is not iterative")

    def without_gradient(self, xs: list, rng) -> list:
        """Attributions of a method that needs no gradient (``needs_gradient = False``); zeros by default."""
        return [np.zeros(x.shape, dtype=np.float32) for x in xs]

    def finalize(self, attribution: np.ndarray) -> np.ndarray:
        """Last elementwise step on one input's attributions (e.g. ``abs`` for saliency)."""
        return attribution

    def summarize(self, attributions: list, xs: list, start: int = 0) -> list:
        """The results of a group of samples ``xs`` (samples ``start``, ``start + 1``, ... of the run) from their
        attributions (after :meth:`finalize`), when they are not the attributions themselves (XRAI's regions); the
        attributions by default."""
        return attributions

    def completeness_references(self, xs: list) -> list:
        """Per input tensor ``(M, *sample_shape)``: the points whose mean output the attributions should explain
        away (``sum(a) == f(x) - mean_m f(reference_m)``)."""
        raise NotImplementedError(f"{type(self).__name__} does not promise completeness")
