"""Option price tick schedules (US listed options), shared by the simulator and the paper exchange.

- ``penny_pilot``: $0.01 below $3.00, $0.05 at or above (Penny Interval Program classes, e.g. AAPL, VIX)
- ``all_penny``: $0.01 at every price (SPY, QQQ, IWM)
- ``standard``: $0.05 below $3.00, $0.10 at or above (non-penny classes, e.g. SPX)

Complex (multi-leg) orders may be priced in $0.01 increments whatever the legs' schedule.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np

TICK_SCHEMES: dict[str, tuple[float, float, float]] = {
    # scheme: (tick below threshold, tick at/above threshold, threshold)
    "penny_pilot": (0.01, 0.05, 3.0),
    "all_penny": (0.01, 0.01, 3.0),
    "standard": (0.05, 0.10, 3.0),
}
COMBO_TICK = Decimal("0.01")


def tick_array(scheme: str | np.ndarray, price: np.ndarray) -> np.ndarray:
    """Tick size for each price (vectorized). ``scheme`` is one name or an array of names per row."""
    if isinstance(scheme, str):
        lo, hi, threshold = _scheme(scheme)
        return np.where(price < threshold, lo, hi)
    out = np.empty(len(price))
    for name in np.unique(scheme):
        m = scheme == name
        lo, hi, threshold = _scheme(str(name))
        out[m] = np.where(price[m] < threshold, lo, hi)
    return out


def tick_params(schemes: np.ndarray | list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row (tick below, tick above, threshold) arrays for a column of scheme names (precompute once)."""
    names = list(schemes)
    table = {name: _scheme(str(name)) for name in set(names)}
    rows = np.array([table[name] for name in names], dtype=float).reshape(len(names), 3)
    return rows[:, 0].copy(), rows[:, 1].copy(), rows[:, 2].copy()


def tick_for(scheme: str, price: Decimal | float) -> Decimal:
    """Tick of one price under ``scheme`` (Decimal, for order validation)."""
    lo, hi, threshold = _scheme(scheme)
    return Decimal(str(lo if float(price) < threshold else hi))


def _scheme(name: str) -> tuple[float, float, float]:
    try:
        return TICK_SCHEMES[name]
    except KeyError:
        raise ValueError(f"unknown tick scheme {name!r}; choose one of {sorted(TICK_SCHEMES)}") from None
