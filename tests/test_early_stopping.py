"""Early stopping: the one rule the Solver and the distributed ledger share."""

import pytest

from distnet.early_stopping import no_improvement


@pytest.mark.parametrize(
    "history, patience, stop",
    [
        ([0.1, 0.2, 0.3], None, False),  # no patience: never
        ([0.5, 0.4], 2, False),  # fewer than patience + 1 epochs
        ([0.5, 0.4], 1, True),  # the last epoch did not beat the first
        ([0.5, 0.5], 1, True),  # equal is no better
        ([0.5, 0.4, 0.6], 1, False),  # the last epoch is the best
        ([0.5, 0.4, 0.45], 2, True),  # two epochs below 0.5
        ([0.5, 0.6, 0.4, 0.45], 2, True),  # the best (0.6) is older than the last two
        ([0.5, 0.4, 0.51, 0.3], 3, False),  # 0.51 within the last three
    ],
)
def test_no_improvement(history, patience, stop):
    assert no_improvement(history, patience) is stop
