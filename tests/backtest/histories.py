"""Hand-made histories: a few SPY puts with exact quotes, so every P&L in the tests is computable by hand."""

from __future__ import annotations

import numpy as np

from engine.backtest.data import ChainHistory, build_history
from engine.backtest.signals import SignalSeries

# puts of one expiry: strike -> vendor delta (the strategy picks |delta| nearest 0.25 → the 95 put)
DELTAS = {85.0: -0.05, 90.0: -0.12, 95.0: -0.25, 100.0: -0.5}
EXPIRY = "2024-01-05"


def put_history(days: list[tuple[str, float, dict[float, tuple[float, float]]]], expiry: str = EXPIRY) -> ChainHistory:
    """``days``: (date, spot, {strike: (bid, ask)}) — puts of ``expiry`` only."""
    qd, ex, k, bid, ask, spot, delta = [], [], [], [], [], [], []
    for d, s, quotes in days:
        for strike, (b, a) in quotes.items():
            qd.append(d)
            ex.append(expiry)
            k.append(strike)
            bid.append(b)
            ask.append(a)
            spot.append(s)
            delta.append(DELTAS.get(strike, -0.5))
    n = len(qd)
    return build_history("SPY", np.array(qd, dtype="datetime64[D]"), np.array(ex, dtype="datetime64[D]"),
                         np.array(k), np.zeros(n, bool), np.array(bid), np.array(ask), spot_by_row=np.array(spot),
                         delta=np.array(delta))


def fixed_signals(n: int, ivr: float = 0.9, regime: str = "low_vol") -> SignalSeries:
    return SignalSeries(atm_iv=np.full(n, 0.2), hv=np.full(n, 0.15), iv_rank=np.full(n, ivr),
                        regime=np.full(n, regime, dtype=object))


# the hand-made quotes are computed for fills at the natural: the price walk starts there (inside the collar)
HOLD = {"rules.profit_target": None, "rules.stop_multiple": None, "rules.dte_exit": None, "rules.regime_exits": [],
        "dte_min": 0, "dte_max": 30, "pricing.start": 1.0}
