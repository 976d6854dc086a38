"""Early stopping, one rule for the single-process Solver and the distributed ledger."""

from __future__ import annotations

from collections.abc import Sequence


def no_improvement(val_acc_history: Sequence[float], patience: int | None) -> bool:
    """Whether the last `patience` epochs brought no better validation accuracy than the
    best before them; never without a patience, nor before patience + 1 epochs."""
    if patience is None or len(val_acc_history) <= patience:
        return False
    return max(val_acc_history[-patience:]) <= max(val_acc_history[:-patience])
