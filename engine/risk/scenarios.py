"""Scenario grid: P&L of the book over spot moves × vol shifts × days forward, by full revaluation.

``spot_moves`` are fractions (−0.20 … +0.20) applied to every underlying scaled by its beta to SPY
(``beta_weighted=True``) or equally; ``vol_shifts`` are absolute vol points as fractions (−0.10 … +0.10 = ±10
points) added to each option's IV; ``days`` are calendar days forward. P&L is against the book's value now
(mid marks), in dollars. Works for the whole portfolio, one underlying (:func:`Book.only`) or a pending
order's legs (:func:`book_from_legs`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal

import numpy as np

from engine.model import Instrument, Position
from engine.risk.market_view import MarketView
from engine.risk.var import Book, book_from_positions

DEFAULT_SPOT_MOVES = tuple(np.round(np.linspace(-0.20, 0.20, 9), 4))
DEFAULT_VOL_SHIFTS = (-0.10, -0.05, 0.0, 0.05, 0.10)
DEFAULT_DAYS = (0.0, 7.0, 30.0)


@dataclass(frozen=True, eq=False)
class ScenarioGrid:
    spot_moves: np.ndarray
    vol_shifts: np.ndarray
    days: np.ndarray
    pnl: np.ndarray  # shape (len(days), len(vol_shifts), len(spot_moves)), dollars
    base_value: float
    scope: str
    missing: tuple[str, ...] = ()

    def worst(self) -> tuple[float, float, float, float]:
        """(P&L, spot move, vol shift, days) of the worst cell."""
        i = np.unravel_index(int(np.argmin(self.pnl)), self.pnl.shape)
        return float(self.pnl[i]), float(self.spot_moves[i[2]]), float(self.vol_shifts[i[1]]), float(self.days[i[0]])

    def to_dict(self) -> dict[str, object]:
        return {"scope": self.scope, "spot_moves": self.spot_moves.tolist(), "vol_shifts": self.vol_shifts.tolist(),
                "days": self.days.tolist(), "pnl": self.pnl.tolist(), "base_value": self.base_value,
                "missing": list(self.missing)}


def only(book: Book, underlying: str) -> Book:
    """The rows of one underlying (same underlying axis, so spot vectors still line up)."""
    if underlying not in book.underlyings:
        raise ValueError(f"no positions in {underlying!r} (have {list(book.underlyings)})")
    m = book.und_index == book.underlyings.index(underlying)
    return replace(book, und_index=book.und_index[m], is_option=book.is_option[m], is_call=book.is_call[m],
                   strike=book.strike[m], T=book.T[m], iv=book.iv[m], q=book.q[m], units=book.units[m])


def book_from_legs(instruments: Sequence[Instrument], units: Sequence[int], market: MarketView,
                   now: datetime) -> Book:
    """A book of an order's legs (``units``: signed contracts per leg × order quantity)."""
    return book_from_positions([Position(i, int(u), Decimal(0)) for i, u in zip(instruments, units, strict=True)],
                               market, now)


def scenario_grid(book: Book, *, spot_moves: Sequence[float] = DEFAULT_SPOT_MOVES,
                  vol_shifts: Sequence[float] = DEFAULT_VOL_SHIFTS, days: Sequence[float] = DEFAULT_DAYS,
                  beta_of: Callable[[str], float] | None = None, scope: str = "portfolio") -> ScenarioGrid:
    """Full-revaluation P&L grid; one vectorized revaluation per (day, vol shift) over all spot moves."""
    moves = np.asarray(spot_moves, float)
    shifts = np.asarray(vol_shifts, float)
    ds = np.asarray(days, float)
    betas = np.array([beta_of(u) if beta_of else 1.0 for u in book.underlyings], dtype=float)
    spots = book.spot[None, :] * (1.0 + moves[:, None] * betas[None, :])
    spots = np.maximum(spots, 1e-6)
    base = book.base_value() if len(book) else 0.0
    pnl = np.zeros((len(ds), len(shifts), len(moves)))
    if len(book):
        for i, d in enumerate(ds):
            for j, v in enumerate(shifts):
                pnl[i, j] = book.value(spots, vol_shift=v, days_forward=d) - base
    return ScenarioGrid(moves, shifts, ds, pnl, float(base), scope, book.missing)
