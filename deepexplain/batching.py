"""How many rows one model call takes: one budget and one default for every method family.

Methods that need many evaluations per sample (integrated gradients' steps, SmoothGrad's samples, DeepSHAP's
baselines, perturbations) put them into the batch dimension, so ``batch_size`` (rows per call) bounds the memory of
a job whatever the method needs, and results do not depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class RowLayout:
    """How the rows of the backward family's model calls are laid out for one method on one runner: the one
    place that says where the samples, their evaluation points and their references go.

    Attributes
    ----------
    fixed_rows : int or None
        The batch size the model's input fixes (every call takes that many rows, padded).
    whole_batch : bool
        The explained output's rows are not the samples' (a TF1 ``T`` whose first dimension is fixed while ``X``'s
        batch is free): ``T`` is a function of the whole batch, so a group's samples are fed together, one call per
        evaluation point of the method (an integrated-gradients step, a DeepSHAP baseline) and nothing else; a row
        has no output, and no seed relevance, of its own.
    references : str or None
        Where a reference method's references go: None (the method has none), ``'apart'`` (a batch of their own,
        one row per row: ``whole_batch``), ``'blocks'`` (in the batch, one block of rows per reference: a free batch
        size) or ``'appended'`` (in the batch, after the rows and the padding of a fixed batch size).
    """

    fixed_rows: int | None = None
    whole_batch: bool = False
    references: str | None = None

    @classmethod
    def of(cls, runner, method) -> RowLayout:
        """The layout of ``method`` (its ``uses_references``) on ``runner`` (its ``fixed_rows`` and, for a TF1
        graph, ``rows_are_samples``)."""
        whole = not runner.rows_are_samples
        references = None
        if getattr(method, "uses_references", False):
            references = "apart" if whole else "appended" if runner.fixed_rows else "blocks"
        return cls(runner.fixed_rows, whole, references)

    @property
    def references_in_batch(self) -> bool:
        """Whether the references ride in the calls' batch (each row reads its own by an index)."""
        return self.references in ("blocks", "appended")

    def rows_per_run(self, batch_size, arrays, method: str = "") -> int:
        """Rows per call (see :func:`rows_per_run`) for the explained input ``arrays``; a whole batch is fed
        together (its ``batch_size`` is checked by the explainer: None or ``T``'s first dimension)."""
        if self.whole_batch:
            return batch_size or len(arrays[0])
        row_bytes = sum(int(np.prod(a.shape[1:])) * a.itemsize for a in arrays)
        return rows_per_run(batch_size, row_bytes, 2 if self.references_in_batch else 1, self.fixed_rows, method)

    def groups(self, samples: int, rows_per_run: int, points: int, reference_rows: int) -> tuple[int, int]:
        """``(group, runs)``: how many samples are expanded together (each into ``points`` rows, besides
        ``reference_rows`` references in the batch) and how many calls the ``samples`` take."""
        if self.whole_batch:
            return rows_per_run, -(-samples // rows_per_run) * points
        room = max(1, rows_per_run - reference_rows)
        return max(1, room // points), -(-samples * points // room)

    def ranges(self, total: int, group: int, rows_per_run: int, reference_ids=None):
        """``(lo, hi)`` ranges of a group's ``total`` expanded rows, one call each: a whole batch's ``group``
        samples at one point per call; rows in reference blocks (:func:`reference_block_chunks`); or rows plus
        the distinct references they need (:func:`chunks`)."""
        if self.whole_batch:
            return chunks(total, group)
        if reference_ids is not None and self.references == "blocks":
            return reference_block_chunks(reference_ids, rows_per_run)
        return chunks(total, rows_per_run, reference_ids)


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
