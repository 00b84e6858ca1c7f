"""Underlying return history for VaR, covariances and betas, read from the store's ``iv_history`` closes.

One row per underlying and day (written by the surface service). Returns are simple daily returns on the days
every requested underlying has a close (inner join), oldest first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.risk.greeks import estimate_betas

TRADING_DAYS = 252.0


@dataclass(frozen=True, eq=False)
class ReturnHistory:
    underlyings: tuple[str, ...]
    days: tuple[str, ...]  # ISO dates of the returns' end days
    returns: np.ndarray  # (n_days, n_underlyings)

    def __len__(self) -> int:
        return len(self.days)

    def vols(self) -> dict[str, float]:
        """Annualised vol of each underlying's daily returns (√252 scaling)."""
        if len(self) < 2:
            return {}
        sd = self.returns.std(axis=0, ddof=1) * math.sqrt(TRADING_DAYS)
        return {u: float(v) for u, v in zip(self.underlyings, sd, strict=True) if math.isfinite(v) and v > 0}

    def correlation(self) -> np.ndarray:
        if len(self) < 3:
            return np.eye(len(self.underlyings))
        c = np.atleast_2d(np.nan_to_num(np.corrcoef(self.returns, rowvar=False), nan=0.0))
        np.fill_diagonal(c, 1.0)
        return c

    def betas(self, benchmark: str = "SPY", min_obs: int = 20) -> dict[str, float]:
        return estimate_betas({u: self.returns[:, i] for i, u in enumerate(self.underlyings)}, benchmark, min_obs)


def load_returns(store: Any, underlyings: Sequence[str], lookback_days: int = 252) -> ReturnHistory:
    """Aligned daily returns of ``underlyings`` from ``iv_history`` closes (the last ``lookback_days``)."""
    names = tuple(dict.fromkeys(underlyings))
    closes: dict[str, dict[str, float]] = {}
    for u in names:
        rows = store.query("SELECT day, close FROM iv_history WHERE underlying=? AND close IS NOT NULL "
                           "ORDER BY day DESC LIMIT ?", (u, lookback_days + 1))
        closes[u] = {r["day"]: float(r["close"]) for r in rows if r["close"] and float(r["close"]) > 0}
    common = sorted(set.intersection(*(set(c) for c in closes.values()))) if closes else []
    if len(common) < 2:
        return ReturnHistory(names, (), np.zeros((0, len(names))))
    px = np.array([[closes[u][d] for u in names] for d in common], dtype=float)
    rets = px[1:] / px[:-1] - 1.0
    return ReturnHistory(names, tuple(common[1:]), rets)
