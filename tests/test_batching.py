"""The row layout of the backward family's calls (deepexplain.batching.RowLayout): where references go, how a
group's rows are cut into calls, and that every call fits its budget."""

from types import SimpleNamespace

import numpy as np
import pytest

from deepexplain.batching import RowLayout
from deepexplain.errors import InvalidInputError


def runner(fixed_rows=None, rows_are_samples=True):
    return SimpleNamespace(fixed_rows=fixed_rows, rows_are_samples=rows_are_samples)


REFERENCES = SimpleNamespace(uses_references=True)
PLAIN = SimpleNamespace(uses_references=False)


def test_references_go_where_the_runner_allows():
    assert RowLayout.of(runner(), REFERENCES).references == "blocks"
    assert RowLayout.of(runner(fixed_rows=8), REFERENCES).references == "appended"
    assert RowLayout.of(runner(rows_are_samples=False), REFERENCES).references == "apart"
    assert RowLayout.of(runner(), PLAIN).references is None
    assert RowLayout.of(runner(), None) == RowLayout()
    assert RowLayout.of(runner(rows_are_samples=False), PLAIN).whole_batch


def covered(ranges, total):
    ranges = list(ranges)
    assert ranges[0][0] == 0 and ranges[-1][1] == total
    assert all(hi > lo for lo, hi in ranges)
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:], strict=False))
    return ranges


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("rows_per_run", [2, 5, 16, 64])
def test_each_call_holds_its_rows_and_the_references_they_read(seed, rows_per_run):
    rng = np.random.default_rng(seed)
    references = int(rng.integers(1, 9))
    ids = np.repeat(np.arange(references), rng.integers(1, 12, references))  # DeepSHAP: runs of one reference
    for placed in ("appended", "blocks"):
        layout = RowLayout(references=placed)
        for lo, hi in covered(layout.ranges(len(ids), len(ids), rows_per_run, ids), len(ids)):
            used, counts = np.unique(ids[lo:hi], return_counts=True)
            if placed == "appended":  # the rows, then each distinct reference once
                assert hi - lo + len(used) <= rows_per_run
            else:  # one block per reference: its largest run of rows and the reference
                assert len(used) * (counts.max() + 1) <= rows_per_run


def test_rows_without_references_fill_each_call():
    ranges = covered(RowLayout().ranges(23, 23, 5), 23)
    assert [hi - lo for lo, hi in ranges] == [5, 5, 5, 5, 3]
    assert RowLayout().groups(23, 10, points=4, reference_rows=0) == (2, 10)  # 92 rows in calls of 10
    assert RowLayout(references="blocks").groups(23, 10, points=1, reference_rows=2) == (8, 3)


def test_a_whole_batch_is_fed_together_one_call_per_point():
    layout = RowLayout.of(runner(rows_are_samples=False), REFERENCES)
    # six samples, each at 50 integrated-gradients steps: every call holds the six samples at one step
    assert layout.groups(6, layout.rows_per_run(None, [np.zeros((6, 3))]), points=50, reference_rows=1) == (6, 50)
    assert list(layout.ranges(300, 6, 6, np.zeros(300, int))) == [(lo, lo + 6) for lo in range(0, 300, 6)]
    assert layout.rows_per_run(2, [np.zeros((6, 3))]) == 2  # T's own first dimension (checked by the explainer)


def test_references_in_the_batch_need_room_for_a_row_and_its_reference():
    arrays = [np.zeros((4, 3), np.float32)]
    with pytest.raises(InvalidInputError, match="at least 2"):
        RowLayout(references="blocks").rows_per_run(1, arrays, "deeplift")
    assert RowLayout().rows_per_run(1, arrays) == 1
    assert RowLayout(fixed_rows=8, references="appended").rows_per_run(None, arrays) == 8
