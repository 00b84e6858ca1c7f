"""What-if analysis on top of :mod:`engine.analytics.payoff`: the P&L at a chosen date and vol shift, the
probabilities a trader asks before selling premium, a hypothetical trade added to the book, and the book as
a function of one SPY move.

- **Date and IV.** :func:`pnl_at_date` values the legs ``days_forward`` calendar days from now with each
  leg's vol read off the fitted surface at its strike and its *remaining* time (sticky strike: a 30-day
  option valued 20 days out takes the surface's 10-day vol at that strike), plus a parallel shift in vol
  points. Legs outside the surface keep their own implied vol. At or after a leg's expiry it is worth
  intrinsic, so at the last expiry the curve is :func:`expiry_pnl` exactly.
- **Probability of touch** (:func:`probability_of_touch`) is the lognormal first-passage probability of
  the running maximum (barrier above spot) or minimum (below) under the risk-neutral drift ``r − q`` with
  continuous monitoring: for ``b = ln(H/S)``, ``ν = r − q − σ²/2``,
  ``P = N((−|b| + sνT)/σ√T) + (H/S)^{2ν/σ²}·N((−|b| − sνT)/σ√T)`` with ``s = sign(b)``.
  With ``ν = 0`` it is twice the probability of finishing beyond the barrier, the trader's rule of thumb.
- **P50** (:func:`probability_of_reaching`) has no closed form for a multi-leg position (its P&L before
  expiry depends on time as well as spot), so it is a Monte Carlo over the same lognormal paths: the P&L
  surface is computed once on the spot grid × monitoring dates (vectorized, no per-option loop), each
  path's P&L is interpolated on it, and a path counts when it reaches the target at any monitoring date up
  to expiry. The seed is fixed, so a refresh does not make the figure jitter.
- **Hypothetical trade**: :func:`combine` concatenates two sets of legs (held positions and an order) into
  one, premium included; :func:`with_trade` gives the held and held + trade curves. Nothing is sent anywhere.
- **Beta weighting** (:func:`beta_weighted_curve`): each underlying moves by its beta times the SPY move,
  ``S_i·(1 + β_i·m)``; the book is revalued on that grid (P&L from today's model value) and its delta is
  expressed in SPY shares, ``Σ Δ_i·β_i·S_i / S_SPY`` — the same measure as the risk engine's limit.
  Betas come from the stored daily closes (:func:`history_betas`, OLS on daily returns over a window the
  user picks).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from scipy.special import ndtr

from engine.analytics.payoff import DAYS_PER_YEAR, PayoffLegs, pnl_at
from engine.pricing import bsm
from engine.risk.payoff import CALL, STOCK

#: (strikes, years to expiry) -> implied vols, broadcasting; the fitted surface's ``implied_vol``
SurfaceVol = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: Monte Carlo paths and seed behind :func:`probability_of_reaching`: ±1.6 percentage points (2σ) at 50 %
P50_PATHS = 4000
#: spot points of the P50 P&L surface (evenly spaced over the plotted range)
P50_GRID = 201
P50_SEED = 20260
#: monitoring dates per path at most (daily up to this many days to expiry, then evenly spread)
P50_MAX_STEPS = 64


def leg_vols_at(legs: PayoffLegs, days_forward: float, surface_vol: SurfaceVol | None) -> np.ndarray:
    """Each leg's vol at the valuation date: the surface at its strike and remaining time, else its own IV."""
    vols = np.array(legs.iv, dtype=float, copy=True)
    if surface_vol is None:
        return vols
    t_left = legs.expiry_years - days_forward / DAYS_PER_YEAR
    use = (legs.kind != STOCK) & (t_left > 0) & np.isfinite(legs.strike)
    if use.any():
        with np.errstate(invalid="ignore", divide="ignore"):
            sv = np.asarray(surface_vol(legs.strike[use], t_left[use]), dtype=float)
        ok = np.isfinite(sv) & (sv > 0)
        sub = vols[use]
        sub[ok] = sv[ok]
        vols[use] = sub
    return vols


def pnl_at_date(legs: PayoffLegs, spots: np.ndarray, days_forward: float, r: float, q: float, *,
                vol_shift: float = 0.0, surface_vol: SurfaceVol | None = None) -> np.ndarray:
    """P&L in dollars at each spot, ``days_forward`` calendar days from now, vols off the surface + shift."""
    if not math.isfinite(days_forward) or days_forward < 0:
        raise ValueError(f"the analysis date must be today or later, got {days_forward} days from now")
    if not math.isfinite(vol_shift):
        raise ValueError(f"the vol shift must be finite, got {vol_shift}")
    shifted = replace(legs, iv=leg_vols_at(legs, days_forward, surface_vol))
    return pnl_at(shifted, spots, days_forward, r, q, vol_shift)


def expiry_pnl(legs: PayoffLegs, spots: np.ndarray) -> np.ndarray:
    """P&L when every leg has expired: intrinsic values less the premium (the date slider's right end)."""
    flat = np.asarray(spots, dtype=float).reshape(-1, 1)
    k = legs.strike
    intrinsic = np.where(legs.kind == STOCK, flat,
                         np.where(legs.kind == CALL, np.maximum(flat - k, 0.0), np.maximum(k - flat, 0.0)))
    total = (intrinsic * (legs.units * legs.multiplier)).sum(axis=1) - legs.cost
    return total.reshape(np.shape(spots))


def last_expiry_days(legs: PayoffLegs) -> float:
    """Calendar days from now to the legs' last expiry (NaN for stock only): the date slider's range."""
    opt = legs.expiry_years[legs.kind != STOCK]
    return float(opt.max()) * DAYS_PER_YEAR if len(opt) else math.nan


def probability_of_touch(spot: float, barriers: np.ndarray | Sequence[float], T: float, r: float, q: float,
                         vols: np.ndarray | Sequence[float] | float) -> np.ndarray:
    """P(the spot touches each barrier before ``T`` years): lognormal first passage (module docstring)."""
    if not (math.isfinite(spot) and spot > 0):
        raise ValueError(f"probability of touch needs a positive spot, got {spot}")
    if not (math.isfinite(T) and T >= 0):
        raise ValueError(f"probability of touch needs a time to expiry ≥ 0, got {T}")
    h = np.asarray(barriers, dtype=float)
    sig = np.broadcast_to(np.asarray(vols, dtype=float), h.shape)
    if np.any(~(h > 0)):
        raise ValueError("probability of touch needs positive barriers")
    if np.any(~(sig > 0)):
        raise ValueError("probability of touch needs a positive vol for every barrier")
    b = np.log(h / spot)
    if T == 0:
        return np.where(b == 0, 1.0, 0.0)
    s = np.where(b >= 0, 1.0, -1.0)
    nu = r - q - 0.5 * sig**2
    sd = sig * math.sqrt(T)
    with np.errstate(over="ignore", invalid="ignore"):
        p = ndtr((-np.abs(b) + s * nu * T) / sd) + np.exp(2.0 * nu * b / sig**2) * ndtr((-np.abs(b) - s * nu * T) / sd)
    return np.where(b == 0, 1.0, np.clip(np.nan_to_num(p, nan=1.0), 0.0, 1.0))


def monitoring_days(expiry_days: float, max_steps: int = P50_MAX_STEPS) -> np.ndarray:
    """Monitoring dates in calendar days for P50: daily up to ``max_steps`` days, ending at expiry."""
    if not (math.isfinite(expiry_days) and expiry_days > 0):
        raise ValueError(f"monitoring needs a time to expiry > 0 days, got {expiry_days}")
    n = int(min(max(math.ceil(expiry_days), 1), max_steps))
    return np.linspace(expiry_days / n, expiry_days, n)


def surface_vols(legs: PayoffLegs, days: np.ndarray, surface_vol: SurfaceVol | None) -> np.ndarray:
    """Vols per (date, leg): one surface call for all of them (sticky strike, remaining time); legs outside
    the surface, or without one, keep their own IV. Cheap: computed on the loop, shipped to a worker."""
    d = np.asarray(days, dtype=float)
    t_left = legs.expiry_years[None, :] - d[:, None] / DAYS_PER_YEAR
    vols = np.broadcast_to(legs.iv, t_left.shape).copy()
    if surface_vol is not None:
        use = (legs.kind != STOCK)[None, :] & (t_left > 0) & np.isfinite(legs.strike)[None, :]
        if use.any():
            with np.errstate(invalid="ignore", divide="ignore"):
                sv = np.asarray(surface_vol(np.broadcast_to(legs.strike, t_left.shape)[use], t_left[use]), dtype=float)
            sub = vols[use]
            ok = np.isfinite(sv) & (sv > 0)
            sub[ok] = sv[ok]
            vols[use] = sub
    return vols


def pnl_surface(legs: PayoffLegs, spots: np.ndarray, days: np.ndarray, r: float, q: float, *,
                vol_shift: float = 0.0, vols: np.ndarray | None = None) -> np.ndarray:
    """P&L on (dates × spots) in one vectorized pass over dates × spots × legs; ``vols`` per (date, leg)
    from :func:`surface_vols` (default: the legs' own IVs)."""
    s = np.asarray(spots, dtype=float)
    d = np.asarray(days, dtype=float)
    t_left = legs.expiry_years[None, :] - d[:, None] / DAYS_PER_YEAR  # (dates, legs)
    vols = surface_vols(legs, d, None) if vols is None else np.asarray(vols, dtype=float)
    if vols.shape != t_left.shape:
        raise ValueError(f"vols {vols.shape} do not match dates × legs {t_left.shape}")
    vols = vols + vol_shift
    k = legs.strike
    grid = s[None, :, None]
    intrinsic = np.where(legs.kind == STOCK, grid,
                         np.where(legs.kind == CALL, np.maximum(grid - k, 0.0), np.maximum(k - grid, 0.0)))
    intrinsic = np.broadcast_to(intrinsic, (len(d), len(s), len(legs)))
    live = (legs.kind != STOCK)[None, :] & (t_left > 1e-12) & np.isfinite(vols) & (vols > 0)  # (dates, legs)
    values = np.array(intrinsic, copy=True)
    if live.any():
        di, li = np.nonzero(live)
        priced = bsm.price(legs.kind[li] == CALL, s[:, None], k[li], t_left[di, li], r, q, vols[di, li]).T
        values[di, :, li] = np.where(np.isfinite(priced), priced, intrinsic[di, :, li])
    return (values * (legs.units * legs.multiplier)).sum(axis=2) - legs.cost


def simulate_paths(spot: float, days: np.ndarray, r: float, q: float, vol: float, *, paths: int = P50_PATHS,
                   seed: int = P50_SEED) -> np.ndarray:
    """Risk-neutral lognormal spot paths at ``days`` (calendar days from now): shape (dates, paths).

    Antithetic pairs halve the noise for the same cost; the fixed seed keeps a figure steady between refreshes.
    """
    if not (math.isfinite(vol) and vol > 0):
        raise ValueError(f"simulating paths needs a positive vol, got {vol}")
    t = np.asarray(days, dtype=float) / DAYS_PER_YEAR
    dt = np.diff(np.concatenate([[0.0], t]))
    half = max(paths // 2, 1)
    z = np.random.default_rng(seed).standard_normal((len(t), half))
    z = np.concatenate([z, -z], axis=1)
    steps = (r - q - 0.5 * vol * vol) * dt[:, None] + vol * np.sqrt(dt)[:, None] * z
    return float(spot) * np.exp(np.cumsum(steps, axis=0))


def probability_of_reaching(surface: np.ndarray, spots: np.ndarray, paths: np.ndarray, target: float) -> float:
    """Share of paths whose P&L reaches ``target`` at any monitoring date (``surface``: dates × spots P&L).

    Each path's P&L is interpolated linearly on the spot grid at its date; beyond the grid the edge value
    holds (the grid spans far more than a plausible move). The grid must be evenly spaced: the cell is then
    found by arithmetic (a binary search of half a million path points cost ~80 ms on the GUI loop).
    """
    s = np.asarray(spots, dtype=float)
    if surface.shape != (paths.shape[0], len(s)):
        raise ValueError(f"P&L surface {surface.shape} does not match dates × spots ({paths.shape[0]}, {len(s)})")
    step = (s[-1] - s[0]) / (len(s) - 1) if len(s) > 1 else 0.0
    if not step > 0 or not np.allclose(np.diff(s), step, rtol=1e-6, atol=0.0):
        raise ValueError("probability of reaching needs an evenly spaced ascending spot grid")
    x = np.clip(paths, s[0], s[-1])
    pos = (x - s[0]) / step
    j = np.minimum(pos.astype(np.int64), len(s) - 2)
    w = pos - j
    rows = np.arange(paths.shape[0])[:, None]
    pnl = surface[rows, j] * (1.0 - w) + surface[rows, j + 1] * w
    return float(np.mean(np.any(pnl >= target, axis=0)))


@dataclass(frozen=True)
class Probabilities:
    """The analysis panel's probability line: each figure with how it was computed (for the tooltip)."""

    profit: float  # P(P&L > 0 at the first expiry), smile-consistent (engine.analytics.payoff.profile)
    p50: float  # P(reaching 50 % of max profit before the first expiry); NaN when the max profit is unbounded
    p50_target: float  # dollars
    touch: tuple[tuple[str, float, float], ...]  # (what: "breakeven"/"short call"/…, level, probability)
    vol: float  # the lognormal vol behind P50 (touch uses the smile at each level)
    expiry_days: float
    note: str = ""


@dataclass(frozen=True, eq=False)
class ProbabilityJob:
    """Everything :func:`run_probabilities` needs, as plain arrays: built on the loop from the surface (cheap),
    run in a worker process (the P50 Monte Carlo is tens of milliseconds; picklable, no callables)."""

    legs: PayoffLegs
    spot: float
    r: float
    q: float
    probability_of_profit: float
    expiry_days: float
    levels: tuple[tuple[str, float], ...] = ()
    level_vols: np.ndarray = field(default_factory=lambda: np.zeros(0))
    atm_vol: float = math.nan
    target: float = math.nan  # dollars; NaN: no P50
    grid: np.ndarray = field(default_factory=lambda: np.zeros(0))  # evenly spaced spots of the P&L surface
    days: np.ndarray = field(default_factory=lambda: np.zeros(0))  # monitoring dates
    vols: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))  # (dates, legs)
    note: str = ""


def probability_job(legs: PayoffLegs, spots: np.ndarray, spot: float, r: float, q: float, *,
                    max_profit: float, breakevens: Sequence[float], probability_of_profit: float,
                    vol_at: Callable[[np.ndarray], np.ndarray] | None = None,
                    surface_vol: SurfaceVol | None = None) -> ProbabilityJob:
    """The inputs of PoP, P50 and the touch probabilities of each breakeven and short strike to the first
    expiry. ``vol_at``: the fitted smile at the first expiry (strikes → vols); without it the legs' mean IV."""
    t_exp = legs.first_expiry_years
    exp_days = t_exp * DAYS_PER_YEAR
    if not (math.isfinite(t_exp) and t_exp > 0):
        return ProbabilityJob(legs, spot, r, q, probability_of_profit, exp_days,
                              note="no option time left: no probabilities")
    opt_iv = legs.iv[(legs.kind != STOCK) & np.isfinite(legs.iv) & (legs.iv > 0)]
    fallback = float(opt_iv.mean()) if len(opt_iv) else math.nan

    def vols_for(levels: np.ndarray) -> np.ndarray:
        v = np.full(len(levels), fallback)
        if vol_at is not None and len(levels):
            sv = np.asarray(vol_at(levels), dtype=float)
            v = np.where(np.isfinite(sv) & (sv > 0), sv, v)
        return v

    atm = float(vols_for(np.array([spot]))[0])
    if not (math.isfinite(atm) and atm > 0):
        return ProbabilityJob(legs, spot, r, q, probability_of_profit, exp_days, note="no implied vol: no probabilities")
    levels: list[tuple[str, float]] = [("breakeven", float(b)) for b in breakevens]
    short = (legs.kind != STOCK) & (legs.units < 0) & (np.abs(legs.expiry_years - t_exp) < 1e-9)
    for kind, k in sorted({(int(a), float(b)) for a, b in zip(legs.kind[short], legs.strike[short], strict=True)},
                          key=lambda x: x[1]):
        levels.append(("short call" if kind == CALL else "short put", k))
    lv = np.array([x for _, x in levels], dtype=float)
    job = ProbabilityJob(legs, spot, r, q, probability_of_profit, exp_days, tuple(levels), vols_for(lv), atm)
    if not (math.isfinite(max_profit) and max_profit > 0):
        return replace(job, note="unbounded or no max profit: no P50")
    s = np.asarray(spots, dtype=float)
    days = monitoring_days(exp_days)
    return replace(job, target=0.5 * max_profit, grid=np.linspace(float(s.min()), float(s.max()), P50_GRID),
                   days=days, vols=surface_vols(legs, days, surface_vol))


def run_probabilities(job: ProbabilityJob) -> Probabilities:
    """Touch probabilities (closed form) and P50 (Monte Carlo) of a :class:`ProbabilityJob`."""
    lv = np.array([x for _, x in job.levels], dtype=float)
    touch = probability_of_touch(job.spot, lv, job.expiry_days / DAYS_PER_YEAR, job.r, job.q, job.level_vols) \
        if len(lv) else np.zeros(0)
    p50 = math.nan
    if math.isfinite(job.target):
        surf = pnl_surface(job.legs, job.grid, job.days, job.r, job.q, vols=job.vols)
        p50 = probability_of_reaching(surf, job.grid, simulate_paths(job.spot, job.days, job.r, job.q, job.atm_vol),
                                      job.target)
    return Probabilities(job.probability_of_profit, p50, job.target,
                         tuple((w, x, float(p)) for (w, x), p in zip(job.levels, touch, strict=True)), job.atm_vol,
                         job.expiry_days, job.note)


def analyse_probabilities(legs: PayoffLegs, spots: np.ndarray, spot: float, r: float, q: float, *,
                          max_profit: float, breakevens: Sequence[float], probability_of_profit: float,
                          vol_at: Callable[[np.ndarray], np.ndarray] | None = None,
                          surface_vol: SurfaceVol | None = None) -> Probabilities:
    """:func:`probability_job` then :func:`run_probabilities`, in this thread (tests, the CLI)."""
    return run_probabilities(probability_job(legs, spots, spot, r, q, max_profit=max_profit, breakevens=breakevens,
                                             probability_of_profit=probability_of_profit, vol_at=vol_at,
                                             surface_vol=surface_vol))


def combine(a: PayoffLegs, b: PayoffLegs) -> PayoffLegs:
    """One set of legs from two (held positions + a hypothetical order), each premium kept."""
    return PayoffLegs(
        np.concatenate([a.kind, b.kind]), np.concatenate([a.strike, b.strike]),
        np.concatenate([a.expiry_years, b.expiry_years]), np.concatenate([a.units, b.units]),
        np.concatenate([a.multiplier, b.multiplier]), np.concatenate([a.entry, b.entry]),
        np.concatenate([a.iv, b.iv]), labels=(*a.labels, *b.labels), premium=a.cost + b.cost)


def with_trade(held: PayoffLegs | None, trade: PayoffLegs, spots: np.ndarray, days_forward: float, r: float, q: float,
               *, vol_shift: float = 0.0, surface_vol: SurfaceVol | None = None,
               trade_curve: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray]:
    """(held P&L, held + trade P&L) at the date: P&L adds up over legs, so the sum equals the P&L of
    :func:`combine`; a ``trade_curve`` already priced (the date slider's, when the trade is the analysed
    order) is reused rather than priced again."""
    if trade_curve is None:
        trade_curve = pnl_at_date(trade, spots, days_forward, r, q, vol_shift=vol_shift, surface_vol=surface_vol)
    if held is None:
        return None, np.asarray(trade_curve, dtype=float)
    held_curve = pnl_at_date(held, spots, days_forward, r, q, vol_shift=vol_shift, surface_vol=surface_vol)
    return held_curve, held_curve + trade_curve


@dataclass(frozen=True)
class BetaEstimate:
    """Betas to the benchmark from stored daily closes, and what they rest on (shown beside the curve)."""

    benchmark: str
    betas: dict[str, float]
    window: int  # sessions asked for
    days: int  # aligned daily returns actually used
    missing: tuple[str, ...]  # underlyings without enough history


def history_betas(store: Any, underlyings: Sequence[str], benchmark: str = "SPY", window: int = 120,
                  min_obs: int = 20) -> BetaEstimate:
    """OLS betas of daily returns on the benchmark's over the last ``window`` sessions of stored closes."""
    from engine.risk.history import load_returns

    if window < min_obs:
        raise ValueError(f"the beta window must be at least {min_obs} sessions, got {window}")
    names = list(dict.fromkeys([benchmark, *underlyings]))
    betas: dict[str, float] = {benchmark: 1.0}
    days = 0
    others = [u for u in names if u != benchmark]
    # one underlying at a time: a name with a short history must not shrink everyone's window (inner join)
    for u in others:
        hist = load_returns(store, [benchmark, u], window)
        est = hist.betas(benchmark, min_obs)
        if u in est:
            betas[u] = est[u]
            days = max(days, len(hist))
    missing = tuple(u for u in others if u not in betas)
    return BetaEstimate(benchmark, betas, window, days, missing)


@dataclass(frozen=True, eq=False)
class BetaCurve:
    """The book's P&L against the benchmark's move, and its delta in benchmark shares."""

    moves: np.ndarray  # benchmark move, fraction (0.05 = +5 %)
    pnl: np.ndarray  # dollars from today's model value, at ``days_forward``
    beta_delta: float  # benchmark-share equivalent delta now
    by_underlying: dict[str, float]  # beta-weighted delta per underlying
    benchmark_spot: float


def beta_weighted_curve(legs: PayoffLegs, underlyings: Sequence[str], spots: Mapping[str, float],
                        betas: Mapping[str, float], r: float, dividend_yields: Mapping[str, float],
                        benchmark_spot: float, *, moves: np.ndarray, days_forward: float = 0.0,
                        vol_shift: float = 0.0) -> BetaCurve:
    """Revalue every leg at ``S_i·(1 + β_i·m)`` for each benchmark move ``m`` (vectorized over moves × legs).

    ``underlyings[i]`` names leg ``i``'s underlying; every one needs a spot and a beta (callers name the ones
    they left out).
    """
    n = len(legs)
    if len(underlyings) != n:
        raise ValueError(f"beta weighting needs one underlying per leg ({n}), got {len(underlyings)}")
    if not (math.isfinite(benchmark_spot) and benchmark_spot > 0):
        raise ValueError(f"beta weighting needs the benchmark's price, got {benchmark_spot}")
    m = np.asarray(moves, dtype=float)
    s0 = np.array([spots[u] for u in underlyings], dtype=float)
    beta = np.array([betas[u] for u in underlyings], dtype=float)
    qs = np.array([dividend_yields.get(u, 0.0) for u in underlyings], dtype=float)
    if np.any(~(s0 > 0)):
        raise ValueError("beta weighting needs a positive spot for every underlying")
    S = np.maximum(s0[None, :] * (1.0 + beta[None, :] * m[:, None]), 1e-6)  # (moves, legs)

    def values(grid: np.ndarray, days: float, shift: float) -> np.ndarray:
        t_left = legs.expiry_years - days / DAYS_PER_YEAR
        k = legs.strike
        vol = legs.iv + shift
        intrinsic = np.where(legs.kind == STOCK, grid,
                             np.where(legs.kind == CALL, np.maximum(grid - k, 0.0), np.maximum(k - grid, 0.0)))
        live = (legs.kind != STOCK) & (t_left > 1e-12) & np.isfinite(vol) & (vol > 0)
        out = np.array(intrinsic, copy=True)
        if live.any():
            priced = bsm.price(legs.kind[live] == CALL, grid[:, live], k[live], t_left[live], r, qs[live], vol[live])
            out[:, live] = np.where(np.isfinite(priced), priced, intrinsic[:, live])
        return np.asarray(out * (legs.units * legs.multiplier))

    base = values(s0[None, :], 0.0, 0.0).sum()
    pnl = values(S, days_forward, vol_shift).sum(axis=1) - base
    delta = np.where(legs.kind == STOCK, 1.0, 0.0)
    opt = (legs.kind != STOCK) & (legs.expiry_years > 0) & np.isfinite(legs.iv) & (legs.iv > 0)
    if opt.any():
        g = bsm.greeks(legs.kind[opt] == CALL, s0[opt], legs.strike[opt], legs.expiry_years[opt], r, qs[opt],
                       legs.iv[opt], outputs=("delta",))
        delta[opt] = np.nan_to_num(np.asarray(g.delta, dtype=float))
    expired = (legs.kind != STOCK) & ~opt
    if expired.any():  # at expiry (or without a vol) the delta is the intrinsic's: 1 in the money, else 0
        itm = np.where(legs.kind == CALL, s0 > legs.strike, s0 < legs.strike)
        delta[expired] = np.where(legs.kind[expired] == CALL, 1.0, -1.0) * itm[expired]
    bd = delta * legs.units * legs.multiplier * beta * s0 / benchmark_spot
    names, which = np.unique(np.asarray(underlyings, dtype=str), return_inverse=True)
    per = np.bincount(which, weights=bd, minlength=len(names))
    return BetaCurve(m, pnl, float(bd.sum()), dict(zip(names.tolist(), per.tolist(), strict=True)),
                     float(benchmark_spot))
