"""Which output neurons to explain: iNNvestigate's ``neuron_selection`` as target weights ``ys``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from deepexplain.errors import InvalidInputError

SELECTION_CHOICES = "'max_activation', 'all', an int, or a sequence of one int per sample"


def selection_weights(
    selection, n: int, output_shape: tuple, dtype, outputs: Callable[[], np.ndarray], name: str = "neuron_selection"
) -> np.ndarray:
    """One-hot weights ``(n, *output_shape)`` of the selected output neuron of each sample.

    Parameters
    ----------
    selection : 'max_activation', 'max', 'all', int or sequence of int
        'max_activation' (alias 'max'): each sample's largest output; 'all': every output (weights of ones, i.e.
        their sum is explained); an int: that output neuron (an index into the flattened output of one sample) for
        every sample; a sequence: one index per sample.
    n : int
        Number of samples.
    output_shape : tuple of int
        One sample's output shape.
    dtype : numpy dtype
        Dtype of the weights.
    outputs : callable
        ``outputs() -> (n, *output_shape)`` array, called only for 'max_activation'.
    name : str
        The argument's name, for messages.

    Raises
    ------
    InvalidInputError
        For an unknown string, a sequence of the wrong length or an index outside the output.
    """
    units = int(np.prod(output_shape))
    if isinstance(selection, str):
        if selection == "all":
            return np.ones((n, *output_shape), dtype=dtype)
        if selection not in ("max_activation", "max"):
            raise InvalidInputError(f"{name} must be {SELECTION_CHOICES}; got {selection!r}")
        indices = np.argmax(np.asarray(outputs()).reshape(n, -1), axis=1)
    elif isinstance(selection, int | np.integer) and not isinstance(selection, bool):
        indices = np.full(n, int(selection))
    else:
        try:
            indices = np.asarray(selection, dtype=np.int64).reshape(-1)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{name} must be {SELECTION_CHOICES}; got {selection!r}") from None
        if len(indices) != n:
            raise InvalidInputError(f"{name} has {len(indices)} entries for {n} samples")
    if indices.size and (indices.min() < 0 or indices.max() >= units):
        raise InvalidInputError(f"{name} units must be in [0, {units}); got {sorted(set(indices.tolist()))}")
    return np.eye(units, dtype=dtype)[indices].reshape((n, *output_shape))
