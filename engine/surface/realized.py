"""Realized volatility estimators on daily bars, annualised (√periods_per_year, default 252).

Each estimator takes price arrays (oldest first) and returns either one number over the whole
sample (``window=None``) or a rolling series aligned with the input (``window=n``: the value at
index t uses the last n periods ending at t; NaN until enough data). Non-positive or non-finite
prices make the windows that contain them NaN; arrays of different lengths raise ``ValueError``.

- close-to-close: sample standard deviation of ln(C_t/C_{t−1}) (mean removed, n − 1).
- Parkinson (1980): σ² = mean(ln(H/L)²) / (4 ln 2).
- Garman-Klass (1980): σ² = mean(½ ln(H/L)² − (2 ln 2 − 1) ln(C/O)²).
- Rogers-Satchell (1991): σ² = mean(ln(H/C)·ln(H/O) + ln(L/C)·ln(L/O)).
- Yang-Zhang (2000): σ² = σ²_overnight + κ σ²_open→close + (1 − κ) σ²_RS,
  κ = 0.34 / (1.34 + (n + 1)/(n − 1)); overnight = ln(O_t/C_{t−1}).
"""

from __future__ import annotations

import numpy as np

TRADING_DAYS = 252


def _arrays(*xs: np.ndarray) -> list[np.ndarray]:
    arrs = [np.asarray(x, dtype=float).ravel() for x in xs]
    n = len(arrs[0])
    for a in arrs[1:]:
        if len(a) != n:
            raise ValueError(f"price arrays must have one length, got {[len(a) for a in arrs]}")
    return arrs


def _log_ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log(a / b)
    bad = ~(np.isfinite(a) & np.isfinite(b) & (a > 0) & (b > 0))
    return np.where(bad, np.nan, out)


def _rolling_sum(x: np.ndarray, window: int) -> np.ndarray:
    """Rolling sum over ``window`` values; NaN when any value in the window is NaN."""
    bad = ~np.isfinite(x)
    c = np.concatenate([[0.0], np.cumsum(np.where(bad, 0.0, x))])
    cb = np.concatenate([[0], np.cumsum(bad)])
    out = np.full(len(x), np.nan)
    if window <= len(x):
        s = c[window:] - c[:-window]
        nb = cb[window:] - cb[:-window]
        out[window - 1 :] = np.where(nb > 0, np.nan, s)
    return out


def _mean(x: np.ndarray, window: int | None) -> np.ndarray | float:
    if window is None:
        return float(np.mean(x)) if len(x) and np.isfinite(x).all() else float("nan")
    return _rolling_sum(x, window) / window


def _var(x: np.ndarray, window: int | None) -> np.ndarray | float:
    """Sample variance (n − 1)."""
    if window is None:
        return float(np.var(x, ddof=1)) if len(x) > 1 and np.isfinite(x).all() else float("nan")
    s1 = _rolling_sum(x, window)
    s2 = _rolling_sum(x * x, window)
    return np.maximum((s2 - s1 * s1 / window) / (window - 1), 0.0)


def _check_window(window: int | None, minimum: int) -> None:
    if window is not None and (not isinstance(window, int | np.integer) or window < minimum):
        raise ValueError(f"window must be an integer ≥ {minimum}, got {window!r}")


def _annualise(var: np.ndarray | float, periods_per_year: float) -> np.ndarray | float:
    out = np.sqrt(np.maximum(np.asarray(var, dtype=float), 0.0) * periods_per_year)
    return float(out) if out.ndim == 0 else out


def _pad_front(x: np.ndarray | float) -> np.ndarray:
    """Series of per-period values defined from index 1 (returns) aligned to the price index (a windowed
    statistic is always a series; the float of :func:`_var`'s signature is the unwindowed case)."""
    return np.concatenate([[np.nan], np.atleast_1d(x)])


def close_to_close(close: np.ndarray, *, window: int | None = None,
                   periods_per_year: float = TRADING_DAYS) -> np.ndarray | float:
    """Annualised close-to-close volatility (``window`` counts returns)."""
    _check_window(window, 2)
    (c,) = _arrays(close)
    r = _log_ratio(c[1:], c[:-1])
    if window is None:
        return _annualise(_var(r, None), periods_per_year)
    return _annualise(_pad_front(_var(r, window)), periods_per_year)


def parkinson(high: np.ndarray, low: np.ndarray, *, window: int | None = None,
              periods_per_year: float = TRADING_DAYS) -> np.ndarray | float:
    """Annualised Parkinson high-low volatility."""
    _check_window(window, 1)
    h, lo = _arrays(high, low)
    x = _log_ratio(h, lo) ** 2 / (4.0 * np.log(2.0))
    return _annualise(_mean(x, window), periods_per_year)


def garman_klass(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, *,
                 window: int | None = None, periods_per_year: float = TRADING_DAYS) -> np.ndarray | float:
    """Annualised Garman-Klass volatility (no overnight term)."""
    _check_window(window, 1)
    o, h, lo, c = _arrays(open_, high, low, close)
    x = 0.5 * _log_ratio(h, lo) ** 2 - (2.0 * np.log(2.0) - 1.0) * _log_ratio(c, o) ** 2
    return _annualise(_mean(x, window), periods_per_year)


def rogers_satchell(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, *,
                    window: int | None = None, periods_per_year: float = TRADING_DAYS) -> np.ndarray | float:
    """Annualised Rogers-Satchell volatility (drift-independent)."""
    _check_window(window, 1)
    o, h, lo, c = _arrays(open_, high, low, close)
    x = _log_ratio(h, c) * _log_ratio(h, o) + _log_ratio(lo, c) * _log_ratio(lo, o)
    return _annualise(_mean(x, window), periods_per_year)


def yang_zhang(open_: np.ndarray, high: np.ndarray, low: np.ndarray, close: np.ndarray, *,
               window: int | None = None, periods_per_year: float = TRADING_DAYS) -> np.ndarray | float:
    """Annualised Yang-Zhang volatility; uses bars 1.. (bar 0 only provides the first previous close)."""
    _check_window(window, 2)
    o, h, lo, c = _arrays(open_, high, low, close)
    if len(c) < 3:
        return float("nan") if window is None else np.full(len(c), np.nan)
    overnight = _log_ratio(o[1:], c[:-1])
    oc = _log_ratio(c[1:], o[1:])
    rs = _log_ratio(h[1:], c[1:]) * _log_ratio(h[1:], o[1:]) + _log_ratio(lo[1:], c[1:]) * _log_ratio(lo[1:], o[1:])
    n = len(overnight) if window is None else window
    kappa = 0.34 / (1.34 + (n + 1) / (n - 1))
    var = _var(overnight, window)
    var = var + kappa * _var(oc, window) + (1.0 - kappa) * _mean(rs, window)
    if window is None:
        return _annualise(var, periods_per_year)
    return _annualise(_pad_front(var), periods_per_year)


def iv_rv_ratio(iv: np.ndarray | float, rv: np.ndarray | float) -> np.ndarray | float:
    """Implied over realized vol; NaN where either is missing or rv ≤ 0."""
    iv_a = np.asarray(iv, dtype=float)
    rv_a = np.asarray(rv, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where((rv_a > 0) & np.isfinite(rv_a) & np.isfinite(iv_a), iv_a / rv_a, np.nan)
    return float(out) if out.ndim == 0 else out
