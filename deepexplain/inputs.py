"""Input arrays, baselines and reference samples: one normalisation and one validation, before the model runs.

Every array that reaches a model passes here first: ``xs`` (:func:`as_arrays`), a method's ``baseline`` (one
sample's shape, :func:`check_baseline`) and reference samples (``(M, *sample_shape)``,
:func:`check_reference_samples`). Non-finite values are refused, naming the argument and how many there are: a NaN
fed to a model comes back as numbers that mean nothing (fused ReLU kernels turn it into 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from deepexplain.errors import InvalidInputError, InvalidTypeError, describe_shape

SampleShape = tuple  # one sample's shape, None for a dimension of any size; None for a shape not known yet


@dataclass(frozen=True)
class InputSpec:
    """What one model input takes: a name for messages, a numpy dtype and one sample's shape."""

    name: str
    dtype: np.dtype
    shape: SampleShape


def shapes_match(shape: tuple, expected: SampleShape) -> bool:
    """Whether a concrete shape fits a static one (None matches any size; an unknown shape matches any)."""
    if expected is None:
        return True
    return len(shape) == len(expected) and all(e is None or e == s for s, e in zip(shape, expected, strict=True))


def check_finite(array: np.ndarray, name: str) -> None:
    """Raise :class:`InvalidInputError` if a floating-point ``array`` holds NaN or inf."""
    if np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        if bad:
            raise InvalidInputError(
                f"{name} holds {bad} non-finite value(s) (NaN or inf) of {array.size}; attributions of such inputs "
                "mean nothing"
            )


def as_arrays(xs, specs: Sequence[InputSpec], multiple: bool, name: str = "xs") -> list[np.ndarray]:
    """``xs`` as one array per input, converted to the input's dtype and checked against its spec.

    Parameters
    ----------
    xs : ndarray or list of ndarray
        One array per input (a list when there are several), first dimension the samples.
    specs : sequence of InputSpec
        One per input.
    multiple : bool
        Whether the model has several inputs (then ``xs`` must be a list).
    name : str
        The argument's name, for messages.

    Raises
    ------
    InvalidInputError, InvalidTypeError
        For a wrong count, an array that does not convert, a shape that does not fit, different numbers of samples,
        an empty batch or non-finite values.
    """
    if multiple:
        if not isinstance(xs, list | tuple):
            raise InvalidInputError(
                f"the model has {len(specs)} inputs, so {name} must be a list of {len(specs)} arrays; got "
                f"{type(xs).__name__}"
            )
        if len(xs) != len(specs):
            raise InvalidInputError(
                f"List of input tensors and input data have different lengths ({len(specs)} and {len(xs)})"
            )
        arrays = list(xs)
    else:
        if isinstance(xs, list | tuple) and len(xs) == 1 and hasattr(xs[0], "shape") and np.ndim(xs[0]) >= 1:
            arrays = [xs[0]]  # [array] for a one-input model
        else:
            arrays = [xs]
    checked = []
    for array, spec in zip(arrays, specs, strict=True):
        label = name if len(specs) == 1 else f"{name} for {spec.name}"
        if array is None:
            raise InvalidTypeError(f"{label} must be an array; got None")
        try:
            converted = np.asarray(array, dtype=spec.dtype)
        except (TypeError, ValueError) as error:
            raise InvalidTypeError(f"{label} cannot be converted to {np.dtype(spec.dtype).name}: {error}") from None
        if (
            converted.ndim == 0
            or (spec.shape is not None and converted.ndim != len(spec.shape) + 1)
            or not (shapes_match(converted.shape[1:], spec.shape))
        ):
            expected = "(N, ...)" if spec.shape is None else describe_shape((None, *spec.shape))
            raise InvalidInputError(
                f"{label} has shape {describe_shape(np.shape(converted))}, but the input expects {expected} (first "
                "dimension: samples)"
            )
        check_finite(converted, label)
        checked.append(converted)
    counts = [len(a) for a in checked]
    if len(set(counts)) > 1:
        raise InvalidInputError(
            "Evaluation in batches requires all inputs to have the same number of samples (the first dimension); "
            f"got {counts}"
        )
    if counts[0] == 0:
        raise InvalidInputError(f"{name} holds no samples (its first dimension is 0)")
    return checked


def per_input(value, count: int, name: str) -> list:
    """One entry per input tensor: a list/tuple for several inputs, the value itself for one."""
    if count == 1 and not isinstance(value, list | tuple):
        return [value]
    if not isinstance(value, list | tuple) or len(value) != count:
        given = f"a list of {len(value)}" if isinstance(value, list | tuple) else type(value).__name__
        raise InvalidInputError(f"{name} must be a list with one entry per input tensor ({count}); got {given}")
    return list(value)


def _float_array(value, name: str) -> np.ndarray:
    if isinstance(value, str):
        raise InvalidTypeError(f"{name} must be a number or an array; got the string {value!r}")
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise InvalidTypeError(f"{name} must be a number or an array of numbers: {error}") from None
    check_finite(array, name)
    return array


def check_baseline(baseline, sample_shapes: Sequence[SampleShape], name: str = "baseline") -> list:
    """Per input: None (zeros), or a float array of one sample's shape (a scalar is broadcast).

    Raises
    ------
    InvalidInputError
        When a baseline's shape is not the sample shape of its input tensor, or it holds NaN/inf.
    """
    if baseline is None:
        return [None] * len(sample_shapes)
    values = per_input(baseline, len(sample_shapes), name)
    checked = []
    for value, expected in zip(values, sample_shapes, strict=True):
        if value is None:
            checked.append(None)
            continue
        array = _float_array(value, name)
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
        expected = ", ".join(describe_shape(("M", *(s or ("...",)))) for s in sample_shapes)
        raise InvalidInputError(f"{method} needs baselines: an array of reference samples shaped {expected}")
    arrays = [_float_array(b, "baselines") for b in per_input(baselines, len(sample_shapes), "baselines")]
    for array, expected in zip(arrays, sample_shapes, strict=True):
        rank_ok = array.ndim >= 1 if expected is None else array.ndim == len(expected) + 1
        if not rank_ok or not shapes_match(array.shape[1:], expected) or len(array) == 0:
            shown = "(M, ...)" if expected is None else describe_shape(("M", *expected))
            raise InvalidInputError(
                f"baselines of {method} must be shaped (M, *sample_shape) = {shown} with M >= 1; got "
                f"{describe_shape(array.shape)}"
            )
    if len({len(a) for a in arrays}) > 1:
        raise InvalidInputError(f"baselines of {method}: every input needs the same number of reference samples")
    return arrays


def check_positive_int(value, name: str, method: str) -> int:
    """``value`` as an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InvalidInputError(f"{name} of {method} must be a positive integer; got {value!r}")
    return int(value)


def check_flag(value, name: str, method: str) -> bool:
    """``value`` as a bool (True or False, numpy's too)."""
    if not isinstance(value, bool | np.bool_):
        raise InvalidInputError(f"{name} of {method} must be True or False; got {value!r}")
    return bool(value)


def check_number(value, name: str, method: str, low: float, high: float | None = None) -> float:
    """``value`` as a float in ``[low, high]`` (``high`` None: no upper bound)."""
    numeric = isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_)
    if not numeric or not value >= low or (high is not None and not value <= high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise InvalidInputError(f"{name} of {method} must be a number {bound}; got {value!r}")
    return float(value)


def check_choice(value, name: str, method: str, choices) -> None:
    """Refuse a ``value`` that is not one of ``choices``."""
    if value not in choices:
        raise InvalidInputError(f"{name} of {method} must be one of {list(choices)}; got {value!r}")


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
