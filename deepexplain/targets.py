"""Which output is explained: one vocabulary for every method, both APIs and any output rank.

A *target* says how the explained scalar of each sample is formed from the output ``T`` (shaped ``(N, *units)``):

- ``'max'`` (iNNvestigate's ``'max_activation'``): each sample's largest unit;
- ``'all'``: the sum of all units;
- an int: that unit (an index into a sample's flattened output) for every sample;
- a sequence or integer array of ``N`` ints: one unit per sample;
- a float array shaped ``(N, *units)``: weights of the units (DeepExplain's ``ys``, e.g. one-hot rows);
- a callable ``score(T) -> (N,)`` applied to the output tensor inside the model's graph (a segmentation mask's
  summed score, a regression output, a difference of two logits).

:func:`parse` checks the syntax before anything runs; :meth:`Target.check` then checks the sample count and, once
the output shape is known, the units; :meth:`Target.weights` forms the weights (running the model only for ``'max'``).
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from deepexplain.errors import InvalidInputError, InvalidTypeError, closest, describe_shape

CHOICES = (
    "'max' (alias 'max_activation'), 'all', an int, a sequence of one int per sample, weights shaped like the "
    "output (ys), or a callable from the output tensor to one score per sample"
)
NAMES = ("max", "max_activation", "all")
"""The targets given by name."""


@dataclass(frozen=True)
class Target:
    """A parsed target.

    Attributes
    ----------
    kind : str
        'max', 'all', 'unit' (one index for all samples), 'units' (one index per sample), 'weights' or 'callable'.
    value : object
        The index, the indices, the weights or the callable.
    name : str
        The argument the target came from (for messages).
    """

    kind: str
    value: object = None
    name: str = "target"

    @property
    def score(self) -> Callable | None:
        """The callable of a callable target (applied to the output tensor), else None."""
        return self.value if self.kind == "callable" else None

    def check(self, n: int, output_shape: tuple | None = None, output_name: str = "the output") -> None:
        """Raise :class:`InvalidInputError` unless the target fits ``n`` samples and (when known) one sample's output
        shape ``output_shape`` (``output_name`` says what the output is, for messages)."""
        if self.kind == "units" and len(self.value) != n:
            raise InvalidInputError(
                f"{self.name} has {len(self.value)} entries for {n} samples: give one output index per sample"
            )
        if self.kind == "weights" and len(self.value) != n:
            raise InvalidInputError(
                f"When provided, {self.name} must have the same batch size as xs (xs has batch size {n} and "
                f"{self.name} {len(self.value)})"
            )
        if output_shape is None:
            return
        if self.kind in ("unit", "units") and None in output_shape:
            raise InvalidInputError(
                f"{self.name}={self._shown()} needs an output with a static shape; this output has shape "
                f"{describe_shape(('N', *output_shape))}: pass weights (ys) or a callable target"
            )
        if self.kind in ("unit", "units"):
            units = int(np.prod(output_shape))
            indices = np.atleast_1d(np.asarray(self.value))
            if indices.size and (indices.min() < 0 or indices.max() >= units):
                raise InvalidInputError(
                    f"{self.name} units must be in [0, {units}); got {sorted(set(indices.tolist()))} (the output "
                    f"has shape {describe_shape(('N', *output_shape))})"
                )
        if self.kind == "weights":
            shape = self.value.shape[1:]
            mismatch = len(shape) != len(output_shape) or any(
                e is not None and e != s for s, e in zip(shape, output_shape, strict=True)
            )
            if mismatch:
                hint = ""
                if self.value.ndim == 1:
                    hint = f" (as one output index per sample, {self.name} must hold ints, not floats)"
                raise InvalidInputError(
                    f"{self.name} has shape {describe_shape(self.value.shape)}, but {output_name} has shape "
                    f"{describe_shape(('N', *output_shape))}: {self.name} must be shaped (N, *output.shape[1:])"
                    f"{hint}"
                )

    def weights(self, n: int, output_shape: tuple, dtype, outputs: Callable[[], np.ndarray]) -> np.ndarray | None:
        """Weights ``(n, *output_shape)`` of the output units, or None for a callable target (its score is
        explained as it is) and for 'all' (every unit, weight 1).

        ``outputs() -> (n, *output_shape)`` is called only for 'max'.
        """
        if self.kind in ("callable", "all"):
            return None
        if self.kind == "weights":
            return self.value.astype(dtype, copy=False)
        if self.kind == "max":
            values = np.asarray(outputs())
            indices = np.argmax(values.reshape(n, -1), axis=1)
            return np.eye(values[0].size, dtype=dtype)[indices].reshape(values.shape)
        units = int(np.prod(output_shape))
        if self.kind == "unit":
            indices = np.full(n, self.value)
        else:
            indices = self.value
        return np.eye(units, dtype=dtype)[indices].reshape((n, *output_shape))

    def _shown(self) -> str:
        return repr(self.value) if self.kind in ("unit",) else repr(self.kind)


def parse(target=None, ys=None, neuron_selection=None, default: str = "all") -> Target:
    """One :class:`Target` from the ways callers name it.

    Parameters
    ----------
    target : see the module docstring, optional
    ys : ndarray, optional
        DeepExplain's weights of the output units (the same as a float-array ``target``).
    neuron_selection : optional
        iNNvestigate's name for ``target``.
    default : str
        The target when none is given: 'all' (DeepExplain: the sum of ``T``) or 'max' (a model's top class).

    Raises
    ------
    InvalidInputError, InvalidTypeError
        For more than one of the three, an unknown name (with the closest suggested), a float or bool index, or
        an array that is neither one int per sample nor weights.
    """
    given = [(name, value) for name, value in (("target", target), ("ys", ys), ("neuron_selection", neuron_selection))
             if value is not None]  # fmt: skip
    if len(given) > 1:
        raise InvalidInputError(f"pass either {given[0][0]} or {given[1][0]}, not both (they name the same thing)")
    if not given:
        return Target(default, name="target")
    name, value = given[0]
    if name == "ys":
        return Target("weights", _weights_array(value, name), name)
    if isinstance(value, str):
        if value not in NAMES:
            hint = closest(value, NAMES)
            raise InvalidInputError(f"{name} must be {CHOICES}; got {value!r}{hint}")
        return Target("all" if value == "all" else "max", name=name)
    if callable(value):
        return Target("callable", value, name)
    if isinstance(value, bool | np.bool_):
        raise InvalidTypeError(f"{name} must be {CHOICES}; got the bool {value!r}")
    if isinstance(value, numbers.Integral):
        return Target("unit", int(value), name)
    if isinstance(value, numbers.Real):
        raise InvalidTypeError(
            f"{name} as an output index must be an int; got the float {value!r} (pass int({value!r}) to explain "
            "that unit, or weights shaped like the output)"
        )
    try:
        array = np.asarray(value)
    except (TypeError, ValueError):
        array = np.asarray(value, dtype=object)
    if array.dtype == object or array.ndim == 0:
        raise InvalidTypeError(f"{name} must be {CHOICES}; got {type(value).__name__} {value!r}"[:400])
    if np.issubdtype(array.dtype, np.integer):
        if array.ndim != 1:
            raise InvalidInputError(
                f"{name} as output indices must be one int per sample (shape (N,)); got shape "
                f"{describe_shape(array.shape)}"
            )
        return Target("units", array.astype(np.int64), name)
    if np.issubdtype(array.dtype, np.bool_):
        raise InvalidTypeError(f"{name} must be {CHOICES}; got a boolean array")
    return Target("weights", _weights_array(array, name), name)


def _weights_array(value, name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise InvalidTypeError(f"{name} must be an array of weights shaped like the output; {error}") from None
    if array.ndim == 0:
        raise InvalidInputError(
            f"When provided, {name} must have the same batch size as xs; got a scalar (weights are shaped "
            "(N, *output.shape[1:]))"
        )
    if not np.all(np.isfinite(array)):
        raise InvalidInputError(f"{name} holds {int(np.sum(~np.isfinite(array)))} non-finite value(s) (NaN or inf)")
    return array
