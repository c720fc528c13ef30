"""What a method declares, and the checks every method shares.

A gradient-family method is a declaration, not a code path: for each sample it names the rows where gradients are
taken (``points``), how much each row counts (``weights``), what multiplies each row's gradient (``factors``) and,
for DeepLIFT-like rules, which reference rows travel in the same batch. The :class:`Explainer` runs the rows in
batches and forms, per sample ``i`` and input tensor,

    attribution_i = sum_r  weights[r] * factors[r, i] * gradient(points[r, i])

then applies :meth:`GradientMethod.finalize`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from deepexplain.errors import InvalidInputError, describe_shape

SampleShape = tuple  # one sample's static shape; None for a dimension unknown until run time


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
    """

    points: list
    weights: np.ndarray
    factors: list
    references: list | None = None
    reference_ids: np.ndarray | None = None


class GradientMethod:
    """Base class of the modified-backward-pass methods.

    Class attributes
    ----------------
    rules : mapping
        Op type -> backward rule used while the explanation graph is built; empty for plain gradients.
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
    covers_all_ops : bool
        Whether every op on the path from X to T must have a rule, be in ``gradient_rule_types`` or in
        ``structural_types`` (ops that only move values: reshapes, concatenation, padding); ``strict`` then says
        whether an uncovered op is an error (True) or a warning (False).
    """

    rules: ClassVar[Mapping] = {}
    gradient_rule_types: ClassVar[frozenset] = frozenset()
    uses_references: ClassVar[bool] = False
    promises_completeness: ClassVar[bool] = False
    needs_gradient: ClassVar[bool] = True
    seeds_relevance: ClassVar[bool] = False
    explains_positive_output: ClassVar[bool] = False
    covers_all_ops: ClassVar[bool] = False
    structural_types: ClassVar[frozenset] = frozenset()
    strict: bool = False
    is_random: ClassVar[bool] = False

    def __init__(self, sample_shapes: Sequence[SampleShape]):
        self.sample_shapes = [tuple(s) for s in sample_shapes]

    @property
    def rows_per_sample(self) -> int:
        """How many rows ``R`` each sample expands to (not counting shared reference rows)."""
        return 1

    @property
    def reference_rows(self) -> int:
        """How many shared reference rows a batch may need at most."""
        return 0

    def settings(self, reference_index):
        """The object the rules receive; ``reference_index`` is the int32 row-index tensor or None."""
        return self

    def graph_settings(self, reference_index, path_ops, inputs):
        """The settings object for one compilation, which may depend on the explained path (e.g. which layer is
        nearest the input); by default :meth:`settings`."""
        return self.settings(reference_index)

    def expand(self, xs: list, rng: np.random.Generator) -> Expansion:
        """Rows for the samples ``xs`` (one array ``(n, ...)`` per input tensor)."""
        return Expansion(points=xs, weights=np.ones(1), factors=[None] * len(xs))

    def without_gradient(self, xs: list, rng) -> list:
        """Attributions of a method that needs no gradient (``needs_gradient = False``); zeros by default."""
        return [np.zeros(x.shape, dtype=np.float32) for x in xs]

    def finalize(self, attribution: np.ndarray) -> np.ndarray:
        """Last elementwise step on one input's attributions (e.g. ``abs`` for saliency)."""
        return attribution

    def completeness_references(self, xs: list) -> list:
        """Per input tensor ``(M, *sample_shape)``: the points whose mean output the attributions should explain
        away (``sum(a) == f(x) - mean_m f(reference_m)``)."""
        raise NotImplementedError(f"{type(self).__name__} does not promise completeness")


# ----------------------------------------------------------------------------------------------------------------
# Shared argument checks
# ----------------------------------------------------------------------------------------------------------------


def shapes_match(shape: tuple, expected: SampleShape) -> bool:
    """Whether a concrete shape fits a static one (None matches any size)."""
    return len(shape) == len(expected) and all(e is None or e == s for s, e in zip(shape, expected, strict=True))


def per_input(value, count: int, name: str) -> list:
    """One entry per input tensor: a list/tuple for several inputs, the value itself for one."""
    if count == 1 and not isinstance(value, list | tuple):
        return [value]
    if not isinstance(value, list | tuple) or len(value) != count:
        given = f"a list of {len(value)}" if isinstance(value, list | tuple) else type(value).__name__
        raise InvalidInputError(f"{name} must be a list with one entry per input tensor ({count}); got {given}")
    return list(value)


def check_baseline(baseline, sample_shapes: Sequence[SampleShape], name: str = "baseline") -> list:
    """Per input: None (zeros), or a float array of one sample's shape (a scalar is broadcast).

    Raises
    ------
    InvalidInputError
        When a baseline's shape is not the sample shape of its input tensor.
    """
    if baseline is None:
        return [None] * len(sample_shapes)
    values = per_input(baseline, len(sample_shapes), name)
    checked = []
    for value, expected in zip(values, sample_shapes, strict=True):
        if value is None:
            checked.append(None)
            continue
        array = np.asarray(value, dtype=np.float32)
        if array.ndim != 0 and not shapes_match(array.shape, expected):
            raise InvalidInputError(
                f"Baseline shape {describe_shape(array.shape)} does not match expected shape "
                f"{describe_shape(expected)}: {name} must have the shape of one sample (no batch dimension) "
                "or be a scalar"
            )
        checked.append(array)
    return checked


def check_reference_samples(baselines, sample_shapes: Sequence[SampleShape], method: str) -> list:
    """Per input a float array ``(M, *sample_shape)`` of reference samples, the same ``M`` for every input."""
    if baselines is None:
        expected = ", ".join(describe_shape(("M", *s)) for s in sample_shapes)
        raise InvalidInputError(f"{method} needs baselines: an array of reference samples shaped {expected}")
    arrays = [np.asarray(b, dtype=np.float32) for b in per_input(baselines, len(sample_shapes), "baselines")]
    for array, expected in zip(arrays, sample_shapes, strict=True):
        if array.ndim != len(expected) + 1 or not shapes_match(array.shape[1:], expected) or len(array) == 0:
            raise InvalidInputError(
                f"baselines of {method} must be shaped (M, *sample_shape) = {describe_shape(('M', *expected))} "
                f"with M >= 1; got {describe_shape(array.shape)}"
            )
    if len({len(a) for a in arrays}) > 1:
        raise InvalidInputError(f"baselines of {method}: every input needs the same number of reference samples")
    return arrays


def check_positive_int(value, name: str, method: str) -> int:
    """``value`` as an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInputError(f"{name} of {method} must be a positive integer; got {value!r}")
    return int(value)


def baseline_or_zeros(baseline: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """The baseline broadcast to one sample of ``x`` (zeros when None)."""
    sample_shape = x.shape[1:]
    if baseline is None:
        return np.zeros(sample_shape, dtype=np.float32)
    if baseline.ndim != 0 and baseline.shape != sample_shape:
        raise InvalidInputError(
            f"Baseline shape {describe_shape(baseline.shape)} does not match expected shape "
            f"{describe_shape(sample_shape)}"
        )
    return np.broadcast_to(baseline, sample_shape).astype(np.float32)
