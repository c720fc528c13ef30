"""How many rows one model call takes: one budget and one default for every method family.

Methods that need many evaluations per sample (integrated gradients' steps, SmoothGrad's samples, DeepSHAP's
baselines, perturbations) put them into the batch dimension, so ``batch_size`` (rows per call) bounds the memory of
a job whatever the method needs, and results do not depend on it.
"""

from __future__ import annotations

import numpy as np

from deepexplain.errors import InvalidInputError

DEFAULT_INPUT_BYTES_PER_RUN = 16 * 2**20
"""Rows per call when the caller gives no ``batch_size``: as many as fit this many bytes of model input."""


def check_batch_size(batch_size) -> int | None:
    """``batch_size`` as an int >= 1, or None (the default budget)."""
    if batch_size is None:
        return None
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
        raise InvalidInputError(f"batch_size must be a positive integer or None; got {batch_size!r}")
    return int(batch_size)


def rows_per_run(batch_size, row_bytes: int, minimum: int = 1, fixed: int | None = None, method: str = "") -> int:
    """Rows per model call.

    Parameters
    ----------
    batch_size : int or None
        The caller's bound (checked by :func:`check_batch_size`); None: as many rows as fit
        :data:`DEFAULT_INPUT_BYTES_PER_RUN`.
    row_bytes : int
        Bytes of model input per row (all inputs together).
    minimum : int
        The fewest rows a call can take (a row and its reference input for DeepLIFT: 2).
    fixed : int, optional
        The batch size the model's input fixes (a TF1 placeholder of static batch size): every call takes that many.
    method : str
        The method's name, for messages.
    """
    batch_size = check_batch_size(batch_size)
    if fixed:
        if fixed < minimum:
            raise InvalidInputError(
                f"{method} runs each sample's reference input in the same batch, but X has a fixed batch dimension "
                f"of {fixed}; build X with batch dimension None"
            )
        return fixed
    if batch_size is not None:
        if batch_size < minimum:
            raise InvalidInputError(
                f"batch_size of {method} must be at least {minimum} (a row and its reference input); got {batch_size}"
            )
        return batch_size
    return max(minimum, DEFAULT_INPUT_BYTES_PER_RUN // max(1, row_bytes))


def chunks(total: int, rows_per_run: int, reference_ids=None):
    """``(lo, hi)`` ranges of rows such that each range, plus the distinct references it needs, fits one call."""
    lo = 0
    while lo < total:
        hi = min(total, lo + rows_per_run)
        if reference_ids is not None:
            hi = min(hi, lo + rows_per_run - 1)
            while hi - lo + len(np.unique(reference_ids[lo:hi])) > rows_per_run:
                hi = lo + rows_per_run - len(np.unique(reference_ids[lo:hi]))
        yield lo, hi
        lo = hi


def reference_block_chunks(reference_ids: np.ndarray, rows_per_run: int):
    """``(lo, hi)`` ranges of rows that fit one call laid out in reference blocks (the explainer's
    ``_append_reference_blocks``): as many blocks as there are distinct references, each of the size of the largest
    number of rows reading one of them, plus one. Rows reading one reference come in runs
    (DeepSHAP's steps), so a range ends where a run ends whenever it can: equal blocks, no padding."""
    total = len(reference_ids)
    starts = np.flatnonzero(np.r_[True, reference_ids[1:] != reference_ids[:-1]]).tolist()
    ends = starts[1:] + [total]
    run, lo = 0, 0
    while lo < total:
        counts: dict = {}
        hi, largest = lo, 0
        while hi < total:
            while ends[run] <= hi:
                run += 1
            reference = reference_ids[hi]
            have = counts.get(reference, 0)
            blocks = len(counts) + (reference not in counts)
            take = min(ends[run] - hi, rows_per_run // blocks - 1 - have)
            if take <= 0 or blocks * (max(largest, have + take) + 1) > rows_per_run:
                break
            counts[reference] = have + take
            largest = max(largest, have + take)
            hi += take
            if hi < ends[run]:  # the rest of the run does not fit
                break
        yield lo, hi
        lo = hi


def batches(data, rows: int):
    """Batches of ``data`` with at most ``rows`` rows each, without holding all of it: an array (or a list of
    arrays, one per model input) is sliced, a ``tf.data.Dataset`` or any other iterable yields its elements (an
    array, or a tuple/list of arrays for several inputs; a dataset of (x, y) pairs is mapped to x by the caller).

    Raises
    ------
    InvalidInputError
        For data that is neither.
    """
    if isinstance(data, np.ndarray) or (
        isinstance(data, list | tuple) and data and all(isinstance(a, np.ndarray) for a in data)
    ):
        arrays = data if isinstance(data, list | tuple) else [data]
        multiple = isinstance(data, list | tuple)
        for lo in range(0, len(arrays[0]), rows):
            parts = [a[lo : lo + rows] for a in arrays]
            yield parts if multiple else parts[0]
        return
    if hasattr(data, "as_numpy_iterator"):
        yield from data.as_numpy_iterator()
        return
    try:
        iterator = iter(data)
    except TypeError:
        raise InvalidInputError(
            f"data must be an array, a list of arrays, a tf.data.Dataset or an iterable of batches; got "
            f"{type(data).__name__}"
        ) from None
    yield from iterator
