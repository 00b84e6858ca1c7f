"""Volatility-surface benchmarks: the SPX-size chain (IVs + Greeks + arbitrage-free refit), SVI fit of 12 expiries
× 80 strikes, 50 × 100 grid query, full chain refits, Heston-surface fit accuracy, and event-loop lag of the
SurfaceService with a process vs a thread pool.

Targets: SPX-size chain (19,968 rows, 48 expiries) IVs + Greeks + refit ≤ 100 ms and arbitrage-free (issue 22);
fit 12 × 80 ≤ 30 ms total; query a 50 × 100 grid ≤ 2 ms (issue 4). Timings are min and median of repeated runs
on this machine (2 cores shared with other work: the median carries that noise; the load average is printed).

    python -m benchmarks.surface          # everything
    python -m benchmarks.surface spx      # the SPX-size row only
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from engine.model.chain import OptionChain
from engine.model.instruments import ExerciseStyle, Option, Right, Settlement

FIT_TARGET_MS = 30.0
QUERY_TARGET_MS = 2.0
SPX_TARGET_MS = 100.0
NOW = datetime(2026, 3, 2, 15, 0, tzinfo=UTC)
S0, R, Q = 100.0, 0.03, 0.01
DAYS_12 = [7, 14, 21, 30, 45, 60, 90, 120, 180, 270, 365, 540]
HESTON_SETS = {
    "index_typical": (0.02, 2.0, 0.04, 0.4, -0.75),
    "steep_equity_skew": (0.04, 1.5, 0.05, 0.6, -0.7),
    "high_vol_short_dated": (0.09, 3.0, 0.06, 0.6, -0.6),
    "stressed_fast_reverting": (0.09, 3.0, 0.06, 0.5, -0.7),
    "upward_skew": (0.04, 1.0, 0.04, 0.5, 0.3),
    # outside what raw SVI can follow (reported, not a target): very strong correlation
    "extreme_rho_-0.9": (0.04, 1.5, 0.05, 0.5, -0.9),
}


def _timeit(fn, repeat: int) -> dict[str, float]:
    fn()  # warm-up
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e3)
    return {"min_ms": round(min(ts), 3), "median_ms": round(statistics.median(ts), 3)}


def heston_chain(params: tuple[float, ...], days: list[int], n_strikes: int, *, american: bool = False,
                 lo_sd: float = -2.0, hi_sd: float = 1.75) -> OptionChain:
    """Calls and puts at ``n_strikes`` strikes per expiry; bid/ask = model price ∓ max(0.005, 1 %).

    European chains use Heston prices; the American chain uses the pricing core's American price at the
    Heston ATM vol (a flat smile) since Heston has no American pricer here.
    """
    from engine.pricing import american as am
    from engine.pricing import heston

    style = ExerciseStyle.AMERICAN if american else ExerciseStyle.EUROPEAN
    settlement = Settlement.PHYSICAL if american else Settlement.CASH_PM
    opts: list[Option] = []
    bids: list[np.ndarray] = []
    asks: list[np.ndarray] = []
    vol = float(np.sqrt(params[0]))
    for d in days:
        exp = (NOW + timedelta(days=d)).date()
        probe = Option("BENCH", exp, 1, Right.CALL, style=style, settlement=settlement)
        T = probe.time_to_expiry(NOW)
        F = S0 * np.exp((R - Q) * T)
        K = np.round(F * np.exp(np.linspace(lo_sd, hi_sd, n_strikes) * vol * np.sqrt(T)), 3)
        is_call = np.concatenate([np.ones(n_strikes, bool), np.zeros(n_strikes, bool)])
        KK = np.concatenate([K, K])
        if american:
            p = am.price(is_call, S0, KK, T, R, Q, vol)
        else:
            p = heston.price(is_call, S0, KK, T, R, Q, *params)
        h = np.maximum(0.005, 0.01 * p)
        bids.append(np.maximum(p - h, 0.0))
        asks.append(p + h)
        opts += [Option("BENCH", exp, k, Right.CALL if c else Right.PUT, style=style, settlement=settlement)
                 for c, k in zip(is_call, KK, strict=True)]
    return OptionChain.build("BENCH", S0, NOW, opts, bid=np.concatenate(bids), ask=np.concatenate(asks))


def _fit_and_query() -> dict[str, Any]:
    from engine.pricing import bsm, heston
    from engine.surface.config import SurfaceConfig
    from engine.surface.fit import fit_chain
    from engine.surface.svi import fit_svi_batch
    from engine.surface.views import delta_grid, smile_view, surface_grid

    # SVI input: exactly 12 expiries × 80 OTM points of Heston implied vols (±2.5 ATM standard deviations)
    params = HESTON_SETS["steep_equity_skew"]
    vol = float(np.sqrt(params[0]))
    K = np.zeros((12, 80))
    W = np.zeros((12, 80))
    OM = np.ones((12, 80))
    for i, d in enumerate(DAYS_12):
        T = d / 365.0
        F = S0 * np.exp((R - Q) * T)
        k = np.linspace(-2.5, 2.5, 80) * vol * np.sqrt(T)
        strikes = F * np.exp(k)
        right = np.where(k >= 0, "c", "p")
        iv = bsm.implied_vol(heston.price(right, S0, strikes, T, R, Q, *params), right, S0, strikes, T, R, Q)
        K[i], W[i] = k, iv**2 * T
    assert np.isfinite(W).all()
    chain = heston_chain(params, DAYS_12, 80, lo_sd=-2.5, hi_sd=2.5)
    fit = fit_chain(chain, rate=R)
    points = int(np.count_nonzero(OM))
    svi = _timeit(lambda: fit_svi_batch(K, W, OM), 15)
    full = _timeit(lambda: fit_chain(chain, rate=R), 7)
    no_repair = _timeit(lambda: fit_chain(chain, rate=R, config=SurfaceConfig(repair_arbitrage=False)), 7)
    surf = fit.surface
    Tq = np.linspace(surf.T[0], surf.T[-1], 50)
    kq = np.linspace(-0.5, 0.5, 100)
    query = _timeit(lambda: surf.grid(Tq, kq), 50)
    strikes = _timeit(lambda: surf.strike_grid(Tq, np.linspace(70, 130, 100)), 50)
    dgrid = _timeit(lambda: delta_grid(surf, T=Tq), 20)
    smile = _timeit(lambda: smile_view(fit, 5), 50)
    grid_view = _timeit(lambda: surface_grid(fit, n_T=50, n_k=100), 50)

    am_chain = heston_chain(HESTON_SETS["steep_equity_skew"], DAYS_12, 80, american=True)
    am_full = _timeit(lambda: fit_chain(am_chain, rate=R, dividend_yield=Q), 3)
    return {
        "svi_fit_12x80": {**svi, "points": points, "target_ms": FIT_TARGET_MS,
                          "met": svi["min_ms"] <= FIT_TARGET_MS},
        "query_50x100": {**query, "target_ms": QUERY_TARGET_MS, "met": query["min_ms"] <= QUERY_TARGET_MS},
        "query_50x100_by_strike": strikes,
        "fit_chain_12x80_european": {**full, "rows": len(chain),
                                     "note": "parity forwards + Black-76 IVs (bid/mid/ask) + SVI + outlier pass "
                                             "+ arbitrage check/repair + analytics"},
        "fit_chain_12x80_european_without_repair": no_repair,
        "fit_chain_12x80_american": {**am_full, "rows": len(am_chain), "note": "as above with American IVs"},
        "delta_grid_50x19": dgrid,
        "smile_view": smile,
        "surface_grid_view_50x100": grid_view,
        "fit_rmse_bp_max": round(max(s.rmse_bp for s in fit.slices), 3),
        "arbitrage_free": fit.arbitrage.arbitrage_free,
    }


def _spx_chain():
    """The SPX-size synthetic chain of the surface tests (tests/surface/synthetic.py), loaded by path: the
    benchmark and the tests measure the same chain without making ``tests`` an importable package."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tests" / "surface" / "synthetic.py"
    spec = importlib.util.spec_from_file_location("_surface_synthetic", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.spx_like_chain()


def spx_size(repeat: int = 7) -> dict[str, Any]:
    """IVs + Greeks + arbitrage-free refit of the SPX-size chain, and the parts of it.

    ``first_surface`` is what the service publishes at once (the fit before the repair); the repaired
    surface follows after ``repair`` more. ``streaming_refit_warm`` is the next snapshot of a streaming
    chain, its SVI search started from the previous fit and its repair from the previous repaired
    slices. Greeks are price, delta, gamma, vega and theta of every row at
    the fitted surface's vol (what the chain shows).
    """
    import os

    from engine.pricing import _kernels, bsm
    from engine.surface.arbitrage import check_grids, check_slices
    from engine.surface.fit import fit_chain, repair_fit

    # the engine loads the compiled pricing kernels at start (engine/pricing/_kernels.py); so does this run,
    # before timing, as benchmarks/pricing.py does (the numpy path's figure is printed beside it)
    t_load = time.perf_counter()
    _kernels.warm_up()
    t_load = time.perf_counter() - t_load
    chain = _spx_chain()
    T_rows = None

    def greeks(fit):
        nonlocal T_rows
        ivs = fit.ivs
        r = np.array([f.rate for f in ivs.forwards])[ivs.expiry_index]
        q = np.array([f.implied_yield for f in ivs.forwards])[ivs.expiry_index]
        vol = fit.surface.implied_vol(chain.strike, ivs.T)
        return bsm.greeks(chain.is_call, chain.spot, chain.strike, ivs.T, r, q, vol,
                          outputs=("price", "delta", "gamma", "vega", "theta"))

    def whole():
        fit = fit_chain(chain, rate=R)
        greeks(fit)
        return fit

    fit = whole()
    first = fit_chain(chain, rate=R, repair=False)
    total = _timeit(whole, repeat)
    cpu = []  # CPU time of this process: less inflated than wall time when other work shares the 2 cores
    for _ in range(repeat):
        c0 = time.process_time()
        whole()
        cpu.append((time.process_time() - c0) * 1e3)
    # a streaming refit: the next snapshot (every quote moved by ~0.2 %), SVI search warm-started from the
    # previous fit before its repair and the repair from its repaired slices (what the service does), then
    # the Greeks
    from engine.surface.fit import WarmStart

    warm = WarmStart.from_fit(first).with_repaired(fit)
    bump = 1.0 + 0.002 * np.random.default_rng(1).standard_normal(len(chain))
    moved = chain.with_quotes(chain.bid * bump, chain.ask * bump)

    def streaming():
        nxt = fit_chain(moved, rate=R, warm=warm)
        greeks(nxt)
        return nxt

    nxt = streaming()
    stream = _timeit(streaming, repeat)
    stream_cpu = []
    for _ in range(repeat):
        c0 = time.process_time()
        streaming()
        stream_cpu.append((time.process_time() - c0) * 1e3)
    with _kernels.numpy_only():  # what runs where numba is missing or switched off
        numpy_path = _timeit(whole, max(3, repeat // 2))
    unrepaired = _timeit(lambda: fit_chain(chain, rate=R, repair=False), repeat)
    repair = _timeit(lambda: repair_fit(first, chain), repeat)
    greek = _timeit(lambda: greeks(fit), repeat)
    # the judge: the existing checks on their grids, and a denser grid (2,001 points per slice)
    K = [s.params for s in fit.slices if s.params is not None]
    ranges = []
    for i, s in enumerate(fit.slices):
        if s.params is not None:
            rows = fit.ivs.used & (fit.ivs.expiry_index == i)
            ranges.append((fit.ivs.k[rows].min(), fit.ivs.k[rows].max()))
    dense = check_slices(np.array([p.as_array() for p in K]), check_grids(np.array(ranges), n=2001))
    rm = np.array([s.rmse_bp for s in fit.fitted_slices()])
    rm0 = np.array([s.rmse_bp for s in first.fitted_slices()])
    rs = np.array([s.rmse_bp for s in nxt.fitted_slices()])
    med = total["median_ms"]
    return {
        "rows": len(chain), "expiries": len(fit.fitted_slices()),
        "ivs_greeks_refit_ms": total, "ivs_greeks_refit_cpu_ms_min": round(min(cpu), 1), "target_ms": SPX_TARGET_MS,
        "target_over_measured_min": round(SPX_TARGET_MS / total["min_ms"], 2),
        "target_over_measured_median": round(SPX_TARGET_MS / med, 2),
        "met": total["min_ms"] <= SPX_TARGET_MS,
        "arbitrage_free": fit.arbitrage.arbitrage_free,
        "flagged_slices_after": sum(not c.ok for c in fit.arbitrage.checks),
        "flagged_slices_dense_grid": sum(not c.ok for c in dense),
        "flagged_slices_before_repair": sum(not c.ok for c in first.arbitrage.checks),
        "slices_repaired": len(fit.arbitrage.repairs), "unresolved": len(fit.arbitrage.unresolved),
        "rmse_bp_max_before_after": [round(float(rm0.max()), 2), round(float(rm.max()), 2)],
        "rmse_bp_mean_before_after": [round(float(rm0.mean()), 2), round(float(rm.mean()), 2)],
        "parts_ms": {"first_surface_unrepaired": unrepaired, "repair": repair, "greeks_5_outputs": greek},
        "streaming_refit_warm_ms": {**stream, "cpu_ms_min": round(min(stream_cpu), 1),
                                    "arbitrage_free": nxt.arbitrage.arbitrage_free,
                                    "rmse_bp_max_mean": [round(float(rs.max()), 2), round(float(rs.mean()), 2)],
                                    "met": stream["min_ms"] <= SPX_TARGET_MS},
        "pricing_kernels": {**{k: v for k, v in _kernels.status().items() if k in ("in_use", "failure")},
                            "warm_up_s_this_run": round(t_load, 2)},
        "ivs_greeks_refit_numpy_path_ms": numpy_path,
        "load_average_1min": round(os.getloadavg()[0], 2),
    }


def _heston_accuracy() -> dict[str, Any]:
    from engine.surface.fit import fit_chain

    out: dict[str, Any] = {}
    for name, p in HESTON_SETS.items():
        chain = heston_chain(p, [3, 7, 14, 30, 60, 90, 180, 365, 730], 40)
        fit = fit_chain(chain, rate=R)
        rm = [s.rmse_bp for s in fit.slices]
        out[name] = {
            "params_v0_kappa_theta_xi_rho": p,
            "max_rmse_bp": round(max(rm), 3),
            "median_rmse_bp": round(float(np.median(rm)), 3),
            "slices_repaired": len(fit.arbitrage.repairs),
            "arbitrage_free": fit.arbitrage.arbitrage_free,
            "met_5bp": max(rm) <= 5.0,
        }
    return out


async def _loop_lag(executor_kind: str, seconds: float = 4.0) -> dict[str, Any]:
    from engine.bus import Bus
    from engine.bus.events import ChainUpdated
    from engine.surface.config import SurfaceConfig
    from engine.surface.service import SurfaceService, SurfaceUpdated

    chain = heston_chain(HESTON_SETS["steep_equity_skew"], DAYS_12, 80)
    bus = Bus()
    updates: list[float] = []
    bus.subscribe(SurfaceUpdated, lambda e: updates.append(time.perf_counter()))
    pool = ThreadPoolExecutor(max_workers=1) if executor_kind == "thread" else None
    svc = SurfaceService(bus, rate=R, executor=pool,
                         config=SurfaceConfig(refit_interval_s=0.25, executor="process"))
    await svc.start()
    loop = asyncio.get_running_loop()
    # first fit (process start-up and imports) is not part of the steady state
    bus.publish(ChainUpdated(chain=chain))
    while not updates:
        await asyncio.sleep(0.01)
    updates.clear()
    lags: list[float] = []
    stop = loop.time() + seconds
    i = 0
    while loop.time() < stop:
        if i % 4 == 0:
            bump = 1.0 + 1e-4 * (i % 7)
            bus.publish(ChainUpdated(chain=chain.with_quotes(chain.bid * bump, chain.ask * bump)))
        t = loop.time()
        await asyncio.sleep(0.005)
        lags.append((loop.time() - t - 0.005) * 1e3)
        i += 1
    await svc.stop()
    if pool:
        pool.shutdown()
    await bus.close()
    gaps = np.diff(updates) if len(updates) > 1 else np.array([np.nan])
    return {
        "refits": len(updates),
        "max_gap_between_updates_s": round(float(np.max(gaps)), 3),
        "loop_lag_p50_ms": round(float(np.percentile(lags, 50)), 3),
        "loop_lag_p99_ms": round(float(np.percentile(lags, 99)), 3),
        "loop_lag_max_ms": round(float(np.max(lags)), 3),
    }


def run() -> dict[str, Any]:
    out: dict[str, Any] = {"targets": {"spx_size_ms": SPX_TARGET_MS, "fit_12x80_ms": FIT_TARGET_MS,
                                       "query_50x100_ms": QUERY_TARGET_MS}}
    out["spx_size"] = spx_size()
    out.update(_fit_and_query())
    out["heston_surfaces"] = _heston_accuracy()
    out["service_loop_lag"] = {
        "process_pool": asyncio.run(_loop_lag("process")),
        "thread_pool": asyncio.run(_loop_lag("thread")),
        "note": "chain of 1,920 rows streamed every 20 ms, refit interval 0.25 s, ticker every 5 ms",
    }
    return out


if __name__ == "__main__":
    import sys

    print(json.dumps(spx_size() if sys.argv[1:] == ["spx"] else run(), indent=2, default=str))
