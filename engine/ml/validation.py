"""Purged, embargoed walk-forward splits (López de Prado, *Advances in Financial Machine Learning*, ch. 7).

A label decided on day *t* is not known until its trade exits on day ``end[t]``, so consecutive samples
share most of their outcome. A plain time split would train on samples whose outcome window reaches into
the test window — the model would see the test period's prices through its labels. Each fold here:

- tests on a contiguous block of decisions (walk-forward: every test block lies after all its training);
- **purges** training samples whose label ends on or after the first test decision (their outcome overlaps
  the test window);
- **embargoes** training samples whose label ends within ``embargo`` sessions before the test block, since
  features are serially correlated and a label that ends the day before a test decision shares its state.

Rows are day indices; samples must be ordered by decision day.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class Fold:
    """One walk-forward fold: sample positions to train and test on, and what was removed and why."""

    number: int
    train: np.ndarray
    test: np.ndarray
    purged: int
    embargoed: int
    test_first_row: int
    test_last_row: int

    def to_dict(self, days: tuple[date, ...] | None = None, start: np.ndarray | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"fold": self.number, "train": len(self.train), "test": len(self.test),
                               "purged": self.purged, "embargoed": self.embargoed}
        if days is not None and start is not None:
            if len(self.train):
                out["train_first_day"] = days[int(start[self.train[0]])].isoformat()
                out["train_last_day"] = days[int(start[self.train[-1]])].isoformat()
            out["test_first_day"] = days[self.test_first_row].isoformat()
            out["test_last_day"] = days[self.test_last_row].isoformat()
        return out


def purged_walk_forward(start: np.ndarray, end: np.ndarray, *, n_folds: int = 5, embargo: int = 5,
                        min_train_frac: float = 0.4, purge: bool = True) -> list[Fold]:
    """Walk-forward folds over samples ordered by decision row ``start`` with label end rows ``end``.

    The first ``min_train_frac`` of the samples only train; the rest is cut into ``n_folds`` test blocks.
    ``purge=False`` (with ``embargo=0``) gives the naive split, kept to show what purging removes.
    """
    start = np.asarray(start, np.int64)
    end = np.asarray(end, np.int64)
    n = len(start)
    if len(end) != n:
        raise ValueError(f"{n} starts for {len(end)} ends")
    if n_folds < 1 or embargo < 0 or not 0 < min_train_frac < 1:
        raise ValueError(f"bad split settings: n_folds={n_folds}, embargo={embargo}, min_train_frac={min_train_frac}")
    if np.any(np.diff(start) < 0):
        raise ValueError("samples must be ordered by decision day")
    if np.any(end <= start):
        raise ValueError("every label must end after its decision day")
    first_test = int(n * min_train_frac)
    if n - first_test < n_folds * 10:
        raise ValueError(f"{n} samples are too few for {n_folds} test folds of at least 10 samples")
    bounds = np.linspace(first_test, n, n_folds + 1).astype(int)
    folds = []
    for k in range(n_folds):
        test = np.arange(bounds[k], bounds[k + 1])
        t0 = int(start[test[0]])
        before = np.nonzero(start < t0)[0]
        if purge:
            overlap = end[before] >= t0
            near = (~overlap) & (end[before] >= t0 - embargo)
        else:
            overlap = np.zeros(len(before), bool)
            near = np.zeros(len(before), bool)
        train = before[~overlap & ~near]
        folds.append(Fold(k + 1, train, test, int(overlap.sum()), int(near.sum()), t0, int(start[test[-1]])))
    return folds


def overlapping_train(fold: Fold, start: np.ndarray, end: np.ndarray) -> int:
    """Training samples of ``fold`` whose label window [start, end] intersects the test block's
    [first decision, last label end]: the leakage a purged split must keep at zero."""
    if not len(fold.train):
        return 0
    lo = int(start[fold.test[0]])
    hi = int(np.max(end[fold.test]))
    s, e = start[fold.train], end[fold.train]
    return int(np.count_nonzero((e >= lo) & (s <= hi)))
