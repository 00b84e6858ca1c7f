"""Contract selection over one chain snapshot, vectorized: expiry by DTE, strike by delta or by price.

Deltas come from the chain's vendor column when it has one, otherwise from the pricing core
(Black-Scholes-Merton on the mid-price implied vol; ``r`` and ``q`` continuous, explicit inputs).
Delta convention: calls in (0, 1), puts in (−1, 0), per one unit of the underlying.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any

import numpy as np

from engine.model import OptionChain

_DAY_S = 86400


@dataclass(frozen=True, slots=True)
class PremiumSetup:
    """Why a premium-selling entry may go ahead today: the regime, the IV rank and the expiry to sell."""

    regime: str
    iv_rank: float
    expiry: np.datetime64


def premium_setup(ctx: Any, chain: OptionChain, p: Any) -> PremiumSetup | None:
    """The premium sellers' common gate: the regime is one of ``p.regimes``, IV rank is at least
    ``p.iv_rank_entry`` and an expiry lies in [``p.dte_min``, ``p.dte_max``] (nearest ``p.dte_target``).
    ``ctx`` is the strategy context (its ``now``, ``regime`` and ``iv_rank``); None when any gate is shut."""
    from engine.strategies.base import market_date

    regime = ctx.regime(p.underlying)
    if regime not in p.regimes:
        return None
    ivr = ctx.iv_rank(p.underlying)
    if not (math.isfinite(ivr) and ivr >= p.iv_rank_entry):
        return None
    expiry = pick_expiry(chain, market_date(ctx.now()), p.dte_min, p.dte_max, p.dte_target)
    return None if expiry is None else PremiumSetup(regime, ivr, expiry)


def expiry_days(chain: OptionChain, today: date) -> np.ndarray:
    """Calendar days from ``today`` to each row's expiry date (New York date of the expiry instant)."""
    # expiry instants are 13:30–21:00 UTC, which is always the same calendar date in New York
    exp_day = chain.expiry.astype("datetime64[D]")
    return (exp_day - np.datetime64(today, "D")).astype(np.int64)


def pick_expiry(chain: OptionChain, today: date, dte_min: int, dte_max: int, dte_target: int | None = None,
                *, monthly_only: bool = False) -> np.datetime64 | None:
    """The expiry (``datetime64[s]`` instant) with DTE in [dte_min, dte_max] nearest ``dte_target``.

    ``monthly_only`` keeps standard monthly expiries (the third Friday, or the Thursday before it
    when that Friday is a holiday). None when nothing qualifies.
    """
    uniq = np.unique(chain.expiry)
    if len(uniq) == 0:
        return None
    days = (uniq.astype("datetime64[D]") - np.datetime64(today, "D")).astype(np.int64)
    ok = (days >= dte_min) & (days <= dte_max)
    if monthly_only:
        ok &= is_monthly(uniq.astype("datetime64[D]"))
    if not ok.any():
        return None
    target = (dte_min + dte_max) / 2 if dte_target is None else dte_target
    cand = np.nonzero(ok)[0]
    best = cand[np.argmin(np.abs(days[cand] - target))]
    return uniq[best]


def is_monthly(days: np.ndarray) -> np.ndarray:
    """True for third-Friday expiries (day 15–21, Friday) and a Thursday 14–20 standing in for a holiday."""
    d = days.astype("datetime64[D]")
    dom = (d - d.astype("datetime64[M]").astype("datetime64[D]")).astype(np.int64) + 1
    weekday = (d.astype(np.int64) + 3) % 7  # 0 = Monday (1970-01-01 was a Thursday)
    return ((weekday == 4) & (dom >= 15) & (dom <= 21)) | ((weekday == 3) & (dom >= 14) & (dom <= 20))


def deltas(chain: OptionChain, rows: np.ndarray, *, rate: float = 0.0, dividend_yield: float = 0.0) -> np.ndarray:
    """Delta of the given rows: vendor delta when present and finite, else BSM from the mid implied vol."""
    rows = np.asarray(rows, dtype=np.int64)
    out = np.full(len(rows), np.nan)
    vendor = chain.vendor.get("vendor_delta")
    if vendor is not None:
        out = vendor[rows].astype(float).copy()
    missing = ~np.isfinite(out)
    if missing.any():
        r = rows[missing]
        from engine.pricing import bsm  # lazy: the pricing core is only needed without vendor Greeks

        t = chain.time_to_expiry()[r]
        vendor_iv = chain.vendor.get("vendor_iv")
        vol = vendor_iv[r].astype(float) if vendor_iv is not None else np.full(len(r), np.nan)
        need_iv = ~np.isfinite(vol)
        if need_iv.any():
            rr = r[need_iv]
            right = np.where(chain.is_call[rr], "c", "p")
            vol[need_iv] = bsm.implied_vol(chain.mid[rr], right, chain.spot, chain.strike[rr], t[need_iv],
                                           rate, dividend_yield)
        right = np.where(chain.is_call[r], "c", "p")
        g = bsm.greeks(right, chain.spot, chain.strike[r], t, rate, dividend_yield, vol)
        out[missing] = np.asarray(g.delta, float)
    return out


def nearest_delta_row(chain: OptionChain, expiry: np.datetime64, target: float, *, call: bool,
                      rate: float = 0.0, dividend_yield: float = 0.0) -> int | None:
    """Row of the ``call``/put of ``expiry`` whose |delta| is nearest ``|target|`` (usable quotes only)."""
    cand = np.nonzero((chain.expiry == expiry) & (chain.is_call == call) & chain.valid_mask() & (chain.bid > 0))[0]
    if len(cand) == 0:
        return None
    d = np.abs(deltas(chain, cand, rate=rate, dividend_yield=dividend_yield))
    ok = np.isfinite(d)
    if not ok.any():
        return None
    cand, d = cand[ok], d[ok]
    return int(cand[np.argmin(np.abs(d - abs(target)))])


def row_at_strike(chain: OptionChain, expiry: np.datetime64, strike: float, *, call: bool) -> int | None:
    """Row of the exact strike (within a tenth of a cent) with a usable quote, or None."""
    hit = np.nonzero((chain.expiry == expiry) & (chain.is_call == call) & (np.abs(chain.strike - strike) < 1e-3)
                     & chain.valid_mask())[0]
    return int(hit[0]) if len(hit) else None


def atm_row(chain: OptionChain, expiry: np.datetime64, *, call: bool) -> int | None:
    """Row of the strike nearest the spot (usable quote) for ``expiry``."""
    cand = np.nonzero((chain.expiry == expiry) & (chain.is_call == call) & chain.valid_mask())[0]
    if len(cand) == 0:
        return None
    return int(cand[np.argmin(np.abs(chain.strike[cand] - chain.spot))])


def wing_row(chain: OptionChain, expiry: np.datetime64, short_strike: float, width: float, *, call: bool) -> int | None:
    """Row of the long wing ``width`` beyond ``short_strike`` (higher for calls, lower for puts).

    The exact strike when listed with a usable quote; otherwise the listed strike nearest the target
    among those strictly beyond the short strike (the actual width is then ``|long − short|``).
    """
    target = short_strike + width if call else short_strike - width
    cand = np.nonzero((chain.expiry == expiry) & (chain.is_call == call) & chain.valid_mask())[0]
    k = chain.strike[cand]
    beyond = k > short_strike + 1e-9 if call else k < short_strike - 1e-9
    cand, k = cand[beyond], k[beyond]
    if len(cand) == 0:
        return None
    return int(cand[np.argmin(np.abs(k - target))])
