"""Daily signal series over a whole history, computed once and vectorized: ATM IV, realized vol, IV rank, regime.

- ATM IV: per day, the expiry nearest ``target_dte`` calendar days (at least ``min_dte``), the strike
  nearest spot; the mean of the call and put implied vols (vendor IV when the data has it, else
  Black-Scholes-Merton on the mid, ``r``/``q`` explicit). Annualised, as a fraction (0.20 = 20 %).
- Realized vol: close-to-close log returns over ``hv_window`` days, annualised with √252.
- IV rank: (IV − min) / (max − min) over the trailing ``lookback`` days including today; NaN until
  ``min_history`` days exist ("insufficient history", never a misleading number).
- Regime (trading-rules.md), with the underlying's ATM IV standing in for VIX (VIX = 100 × IV):
  ``high_vol`` VIX > 25 or rank > 80 %; ``low_vol`` VIX < 15 and rank < 30 %; ``iv_expansion``
  HV/IV > 0.9 and rank > 50 %; ``iv_contraction`` HV/IV < 0.6 and rank < 50 %; else ``neutral``.
  The first matching rule in that order wins.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from engine.backtest.data import ChainHistory


@dataclass(frozen=True)
class SignalSeries:
    atm_iv: np.ndarray
    hv: np.ndarray
    iv_rank: np.ndarray
    regime: np.ndarray  # object array of regime names


def atm_rows(history: ChainHistory, target_dte: int = 30, min_dte: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """Row index of the ATM call and put per day (−1 where a day has none)."""
    n = history.n_days
    calls = np.full(n, -1, np.int64)
    puts = np.full(n, -1, np.int64)
    exp_all = history.c_expiry
    strike_all = history.c_strike
    callflag = history.c_is_call
    for i in range(n):
        lo, hi = int(history.offsets[i]), int(history.offsets[i + 1])
        if hi == lo:
            continue
        cid = history.contract[lo:hi]
        dte = (exp_all[cid] - history.dates[i]).astype(np.int64)
        ok = dte >= min_dte
        if not ok.any():
            continue
        dist = np.where(ok, np.abs(dte - target_dte), np.iinfo(np.int64).max)
        best_exp = exp_all[cid][np.argmin(dist)]
        sel = np.nonzero(exp_all[cid] == best_exp)[0]
        k = strike_all[cid[sel]]
        atm_k = k[np.argmin(np.abs(k - history.spot[i]))]
        at = sel[k == atm_k]
        is_c = callflag[cid[at]]
        if is_c.any():
            calls[i] = lo + at[is_c][0]
        if (~is_c).any():
            puts[i] = lo + at[~is_c][0]
    return calls, puts


def atm_iv_series(history: ChainHistory, *, rate: float = 0.0, dividend_yield: float = 0.0,
                  target_dte: int = 30) -> np.ndarray:
    """ATM implied vol per day (see module docstring); NaN where it cannot be computed."""
    calls, puts = atm_rows(history, target_dte)
    day = np.arange(history.n_days)
    ivs = []
    for rows in (calls, puts):
        have = rows >= 0
        out = np.full(history.n_days, np.nan)
        if have.any():
            r = rows[have]
            if history.has_vendor_iv:
                out[have] = history.iv[r]
            else:
                from engine.pricing import bsm

                cid = history.contract[r]
                mid = 0.5 * (history.bid[r] + history.ask[r])
                t = (history.c_expiry[cid] - history.dates[day[have]]).astype(np.int64) / 365.0
                right = np.where(history.c_is_call[cid], "c", "p")
                out[have] = bsm.implied_vol(mid, right, history.spot[have], history.c_strike[cid], t, rate,
                                            dividend_yield)
        ivs.append(out)
    with np.errstate(invalid="ignore"):
        return np.nanmean(np.vstack(ivs), axis=0) if history.n_days else np.array([])


def realized_vol(spot: np.ndarray, window: int = 20) -> np.ndarray:
    """Annualised close-to-close realized vol over the trailing ``window`` returns (NaN before that)."""
    s = np.asarray(spot, float)
    out = np.full(len(s), np.nan)
    if len(s) <= window:
        return out
    r = np.diff(np.log(s))
    w = sliding_window_view(r, window)
    out[window:] = w.std(axis=1, ddof=1) * np.sqrt(252.0)
    return out


def rolling_rank(x: np.ndarray, lookback: int = 252, min_history: int = 60) -> np.ndarray:
    """(x − min) / (max − min) over the trailing ``lookback`` values incl. today; NaN before ``min_history``."""
    x = np.asarray(x, float)
    n = len(x)
    out = np.full(n, np.nan)
    if n == 0:
        return out
    pad = np.r_[np.full(lookback - 1, np.nan), x]
    w = sliding_window_view(pad, lookback)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows
        lo, hi = np.nanmin(w, axis=1), np.nanmax(w, axis=1)
        count = np.sum(np.isfinite(w), axis=1)
        rng = hi - lo
        rank = np.where(rng > 0, (x - lo) / np.where(rng > 0, rng, 1.0), 0.5)
    ok = (count >= min_history) & np.isfinite(x)
    out[ok] = rank[ok]
    return out


def classify_regime(vix: np.ndarray, vix_rank: np.ndarray, hv_iv: np.ndarray) -> np.ndarray:
    """Rule-based regime per day (trading-rules.md); ``vix`` in points, rank in [0, 1]."""
    vix, rank, ratio = (np.asarray(a, float) for a in (vix, vix_rank, hv_iv))
    out = np.full(len(vix), "neutral", dtype=object)
    with np.errstate(invalid="ignore"):
        conds = [
            ("high_vol", (vix > 25) | (rank > 0.8)),
            ("low_vol", (vix < 15) & (rank < 0.3)),
            ("iv_expansion", (ratio > 0.9) & (rank > 0.5)),
            ("iv_contraction", (ratio < 0.6) & (rank < 0.5)),
        ]
    done = np.zeros(len(vix), bool)
    for name, c in conds:
        c = c & ~done
        out[c] = name
        done |= c
    return out


def compute_signals(history: ChainHistory, *, lookback: int = 252, min_history: int = 60, hv_window: int = 20,
                    rate: float = 0.0, dividend_yield: float = 0.0) -> SignalSeries:
    iv = atm_iv_series(history, rate=rate, dividend_yield=dividend_yield)
    hv = realized_vol(history.spot, hv_window)
    rank = rolling_rank(iv, lookback, min_history)
    with np.errstate(invalid="ignore", divide="ignore"):
        regime = classify_regime(100.0 * iv, rank, hv / iv)
    return SignalSeries(atm_iv=iv, hv=hv, iv_rank=rank, regime=regime)
