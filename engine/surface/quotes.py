"""Per-expiry forwards and per-strike implied vols (bid, mid, ask) of a chain, with a reason per dropped row.

Only out-of-the-money options enter the smile: puts with K < F, calls with K ≥ F (F the implied
forward of the expiry). European chains use Black-76 on the implied forward and the discount rate of
the parity fit; American chains (equity/ETF) use the pricing core's American implied vol on the spot
with the curve rate and the implied carry, so early exercise is accounted for (solved at the mid; the
bid/ask vols carry the mid's early-exercise premium over their European vols).

Reason codes (``ChainIVs.reason``; empty string = the row is a smile point):
``expired``, ``expiry_too_close``, ``missing_quote``, ``crossed``, ``stale``, ``zero_bid``,
``wide_spread``, ``in_the_money`` (the other side of the forward is used), ``no_iv:<pricing reason>``,
``insufficient_strikes`` (its expiry has fewer valid strikes than the minimum), and from the fit
``outlier`` (mid IV far outside its own bid/ask from the first fit).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

import numpy as np

from engine.model.chain import OptionChain
from engine.model.instruments import ExerciseStyle
from engine.surface.config import SurfaceConfig
from engine.surface.forward import ForwardEstimate, estimate_forwards

log = logging.getLogger(__name__)

RateInput = float | Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class ZeroCurve:
    """Continuously compounded zero rates at tenors (years), linear in between, flat beyond the ends.

    Callable on T arrays and picklable (safe to send to a process pool).
    """

    tenors: tuple[float, ...]
    rates: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.tenors) != len(self.rates) or not self.tenors:
            raise ValueError("ZeroCurve needs matching, non-empty tenors and rates")
        if any(b <= a for a, b in zip(self.tenors, self.tenors[1:], strict=False)):
            raise ValueError("ZeroCurve tenors must be strictly increasing")

    def __call__(self, T: np.ndarray) -> np.ndarray:
        return np.interp(np.asarray(T, dtype=float), self.tenors, self.rates)


def curve_value(curve: RateInput, T: np.ndarray) -> np.ndarray:
    """Evaluate a flat rate or a callable curve ``T (years) -> continuously compounded rate``."""
    T = np.asarray(T, dtype=float)
    if callable(curve):
        return np.broadcast_to(np.asarray(curve(T), dtype=float), T.shape).astype(float)
    return np.full(T.shape, float(curve))


@dataclass(frozen=True, eq=False)
class ChainIVs:
    """Implied vols and diagnostics for every row of a chain (arrays in the chain's row order).

    ``k = ln(K/F)`` uses the row's expiry forward; vols are annualised (0.2 = 20 %); ``used`` marks the
    smile points (OTM, quotes clean, vol found, expiry fitted); ``reason`` says why any other row is not.
    ``expiry_index`` maps each row to ``expiries``/``forwards``; ``american`` tells which IV model ran.
    """

    expiries: np.ndarray  # datetime64[s], ascending, one per distinct chain expiry
    T_expiry: np.ndarray  # years to each expiry
    forwards: tuple[ForwardEstimate, ...]
    expiry_index: np.ndarray  # int per row
    T: np.ndarray
    k: np.ndarray
    iv_bid: np.ndarray
    iv_mid: np.ndarray
    iv_ask: np.ndarray
    otm: np.ndarray
    used: np.ndarray
    reason: np.ndarray  # object array of str
    american: bool
    notes: tuple[str, ...] = ()

    def reason_counts(self) -> dict[str, int]:
        vals, counts = np.unique(self.reason[~self.used].astype(str), return_counts=True)
        return {str(v): int(c) for v, c in zip(vals, counts, strict=True)}


def _reason_name(code: int) -> str:
    from engine.pricing.inputs import Reason

    try:
        return Reason(int(code)).name.lower()
    except ValueError:
        return f"code_{int(code)}"


def _american_pricer() -> ModuleType | None:
    """engine.pricing.american, or None where it cannot be imported (the European fallback is noted)."""
    try:
        from engine.pricing import american
    except ImportError:
        return None
    return american


def _implied_vols(
    price: np.ndarray, is_call: np.ndarray, S: float, F: np.ndarray, K: np.ndarray, T: np.ndarray,
    r: np.ndarray, q: np.ndarray, american: bool,
) -> tuple[np.ndarray, np.ndarray, str]:
    """(vol, reason code, note). American chains use engine.pricing.american when it is available."""
    if american:
        am = _american_pricer()
        if am is not None:
            # ``price`` is [bid, mid, ask] stacked: the American IV is solved for the mids; bid/ask vols
            # are their European vols shifted by the mid's early-exercise vol premium (first order in
            # the spread; exact at the mid, which is what the fit uses).
            m = len(price) // 3
            sl = slice(m, 2 * m)
            from engine.pricing import bsm

            eu = np.asarray(bsm.implied_vol(price, is_call, S, K, T, r, q), float)
            am_mid, reason_mid = am.implied_vol(price[sl], is_call[sl], S, K[sl], T[sl], r[sl], q[sl],
                                                return_reason=True)
            am_mid = np.asarray(am_mid, float)
            premium = am_mid - eu[sl]
            vol = np.concatenate([eu[:m] + premium, am_mid, eu[2 * m :] + premium])
            reason = np.concatenate([np.zeros(m, np.int8), np.asarray(reason_mid, np.int8), np.zeros(m, np.int8)])
            return vol, reason, ""
        note = "American IV model unavailable; European Black-76 vols used (early exercise ignored)"
    else:
        note = ""
    from engine.pricing import black76

    vol, reason = black76.implied_vol(price, is_call, F, K, T, r, return_reason=True)
    return np.asarray(vol, float), np.asarray(reason), note


def _all_set(forwards: list[ForwardEstimate | None]) -> tuple[ForwardEstimate, ...]:
    """The per-expiry forwards once every expiry has one (a carry fallback at worst)."""
    out = tuple(f for f in forwards if f is not None)
    if len(out) != len(forwards):
        raise RuntimeError("an expiry was left without a forward estimate")
    return out


def expiry_strike_columns(eidx: np.ndarray, n_exp: int, K: np.ndarray, is_call: np.ndarray, clean: np.ndarray,
                    mid: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """(5, E, M) NaN-padded columns per expiry of its distinct strikes (ascending), call and put mids and
    call and put spreads (rows where ``clean``), as :func:`estimate_forwards` and the term structure's
    straddles take them.

    Why one pass over the sorted chain: a loop with ``np.unique`` per expiry cost ~0.1 ms an expiry, a
    few ms on an SPX chain, at every refit.
    """
    n = len(eidx)
    de = np.diff(eidx)
    if n and bool(np.all((de > 0) | ((de == 0) & (np.diff(K) >= 0)))):
        order = np.arange(n)  # OptionChain.build already sorts by expiry, then strike: no sort needed
    else:
        order = np.lexsort((K, eidx))  # by expiry, then strike
    ek, kk = eidx[order], K[order]
    new = np.ones(len(order), dtype=bool)
    new[1:] = (ek[1:] != ek[:-1]) | (kk[1:] != kk[:-1])
    slot = np.cumsum(new) - 1  # id of each distinct (expiry, strike)
    first = np.searchsorted(ek, np.arange(n_exp))
    present = first < len(ek)
    start = np.zeros(n_exp, dtype=int)
    start[present] = slot[first[present]]
    pos = slot - start[ek]  # the strike's place within its expiry
    width = int(pos.max()) + 1 if len(pos) else 0
    cols = np.full((5, n_exp * width), np.nan)
    flat = ek * width + pos  # 1-D fancy indexing: several times faster than (row, column) pairs
    cols[0, flat[new]] = kk[new]
    sel = clean[order]
    calls = sel & is_call[order]
    puts = sel & ~is_call[order]
    m, sp = mid[order], spread[order]
    cols[1, flat[calls]] = m[calls]
    cols[2, flat[puts]] = m[puts]
    cols[3, flat[calls]] = sp[calls]
    cols[4, flat[puts]] = sp[puts]
    return cols.reshape(5, n_exp, width)


def chain_ivs(
    chain: OptionChain,
    *,
    rate: RateInput,
    dividend_yield: RateInput = 0.0,
    config: SurfaceConfig | None = None,
    now=None,
    quote_age: np.ndarray | None = None,
) -> ChainIVs:
    """Forwards per expiry and implied vols per row, with the reason each unused row is dropped.

    ``quote_age`` (seconds, per row, optional) enables the stale-quote filter.
    """
    cfg = config or SurfaceConfig()
    n = len(chain)
    american = cfg.iv_exercise == "american" or (cfg.iv_exercise == "auto" and chain.style is ExerciseStyle.AMERICAN)
    reason = np.full(n, "", dtype=object)
    nan = np.full(n, np.nan)
    if n == 0:
        e = np.array([], dtype="datetime64[s]")
        return ChainIVs(e, np.array([]), (), np.array([], int), nan, nan, nan, nan, nan,
                        np.zeros(0, bool), np.zeros(0, bool), reason, american)
    T = chain.time_to_expiry(now)
    expiries, eidx = np.unique(chain.expiry, return_inverse=True)
    first_row = np.unique(eidx, return_index=True)[1]
    T_exp = T[first_row] if len(expiries) else np.array([])
    r_exp = curve_value(rate, np.maximum(T_exp, 0.0))
    q_exp = curve_value(dividend_yield, np.maximum(T_exp, 0.0))
    K = chain.strike.astype(float)
    bid, ask = chain.bid.astype(float), chain.ask.astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mid = 0.5 * (bid + ask)
        spread = ask - bid
        missing = ~(np.isfinite(bid) & np.isfinite(ask)) | (ask <= 0) | (bid < 0) | ~(K > 0)
        crossed = ~missing & (bid > ask)
        rel_spread = np.where(mid > 0, spread / mid, np.inf)
    spot = float(chain.spot)
    min_T = cfg.min_time_to_expiry_days / 365.0

    # row-level quote filters, first failing reason wins
    checks: list[tuple[np.ndarray, str]] = [
        (T <= 0, "expired"),
        (T < min_T, "expiry_too_close"),
        (missing, "missing_quote"),
        (crossed, "crossed"),
    ]
    if quote_age is not None:
        age = np.asarray(quote_age, dtype=float)
        if age.shape != (n,):
            raise ValueError(f"quote_age has shape {age.shape}, expected ({n},)")
        checks.append((~(age <= cfg.max_quote_age_s), "stale"))
    if cfg.drop_zero_bid:
        checks.append((~missing & (bid <= 0), "zero_bid"))
    checks.append((rel_spread > cfg.max_spread_fraction, "wide_spread"))
    clean = np.ones(n, dtype=bool)  # a bool mask: comparing the object array of reasons costs ~1 ms a pass
    for bad, code in checks:
        hit = clean & bad
        reason[hit] = code
        clean &= ~hit

    # forwards per expiry from parity on clean pairs (ITM rows count here), all expiries in one batch
    forwards: list[ForwardEstimate | None] = [None] * len(expiries)
    good_spot = np.isfinite(spot) and spot > 0
    for i in range(len(expiries)):
        Ti = float(T_exp[i])
        if Ti <= 0 or not good_spot:
            forwards[i] = ForwardEstimate(Ti, float("nan"), float("nan"), float(r_exp[i]), float(q_exp[i]),
                                          "carry_fallback", 0, float("nan"),
                                          "expired" if Ti <= 0 else "no usable spot price")
    idx = np.array([i for i, f in enumerate(forwards) if f is None], dtype=int)
    if len(idx):
        cols = expiry_strike_columns(eidx, len(expiries), K, chain.is_call, clean, mid, spread)[:, idx]
        est = estimate_forwards(cols[0], cols[1], cols[2], cols[3], cols[4], spot=spot, T=T_exp[idx], rate=r_exp[idx],
                                dividend_yield=q_exp[idx], american=american, max_pairs=cfg.forward_max_pairs,
                                min_pairs=cfg.forward_min_pairs, max_rate_deviation=cfg.forward_max_rate_deviation)
        for i, f in zip(idx, est, strict=True):
            forwards[int(i)] = f
    fw = _all_set(forwards)
    F_exp = np.array([f.forward for f in fw]) if fw else np.array([])
    r_used = np.array([f.rate for f in fw]) if fw else np.array([])
    q_used = np.array([f.implied_yield for f in fw]) if fw else np.array([])
    F = F_exp[eidx]
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.log(K / F)
    otm = np.where(chain.is_call, K >= F, K < F)
    open_ = clean.copy()
    for bad, code in ((~np.isfinite(F), "no_forward"), (~otm, "in_the_money")):
        hit = open_ & bad
        reason[hit] = code
        open_ &= ~hit

    iv_bid, iv_mid, iv_ask = nan.copy(), nan.copy(), nan.copy()
    notes: list[str] = []
    cand = np.nonzero(open_)[0]
    if len(cand):
        m = len(cand)
        prices = np.concatenate([bid[cand], mid[cand], ask[cand]])
        tile = lambda a: np.tile(a[cand], 3)  # noqa: E731
        vol, iv_code, iv_note = _implied_vols(
            prices, tile(chain.is_call), spot, tile(F), tile(K), tile(T),
            tile(r_used[eidx]), tile(q_used[eidx]), american,
        )
        if iv_note:
            notes.append(iv_note)
        iv_bid[cand] = vol[:m]
        iv_mid[cand] = vol[m : 2 * m]
        iv_ask[cand] = vol[2 * m :]
        mid_code = iv_code[m : 2 * m]
        failed = ~np.isfinite(iv_mid[cand])
        if failed.any():
            failed_reasons = np.empty(int(failed.sum()), dtype=object)
            failed_reasons[:] = [f"no_iv:{_reason_name(int(c))}" for c in mid_code[failed]]
            reason[cand[failed]] = failed_reasons
            open_[cand[failed]] = False

    # expiries with too few clean strikes are not fitted
    ok_rows = open_
    counts = np.bincount(eidx, weights=ok_rows.astype(float), minlength=len(expiries))
    thin = counts < cfg.min_strikes
    reason[ok_rows & thin[eidx]] = "insufficient_strikes"
    used = ok_rows & ~thin[eidx]
    for thin_i in np.nonzero(thin & (counts > 0))[0]:
        notes.append(f"{np.datetime_as_string(expiries[thin_i], unit='D')}: {int(counts[thin_i])} valid strikes "
                     f"(need {cfg.min_strikes}); not fitted")
    return ChainIVs(
        expiries=expiries, T_expiry=T_exp, forwards=fw, expiry_index=eidx.astype(int), T=T, k=k,
        iv_bid=iv_bid, iv_mid=iv_mid, iv_ask=iv_ask, otm=otm, used=used, reason=reason, american=american,
        notes=tuple(notes),
    )
