"""SurfaceService on a real bus: streaming ChainUpdated → executor refits → SurfaceUpdated, IV rank from the store."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import numpy as np
import pytest

from engine.bus import Bus
from engine.bus.events import ChainUpdated
from engine.model.chain import OptionChain
from engine.store import Store
from engine.surface.config import SurfaceConfig
from engine.surface.ivrank import INSUFFICIENT_HISTORY, IVHistoryRepository
from engine.surface.service import SurfaceFitFailed, SurfaceService, SurfaceUpdated
from tests.surface.synthetic import (
    NOW,
    build_chain,
    equity_like_params,
    expiry_dates,
    log_strikes,
    svi_price_fn,
)

R = 0.04


@pytest.fixture(scope="module")
def chain() -> OptionChain:
    return build_chain(spot=100.0, expiries=expiry_dates([14, 45, 90]), underlying="SPY",
                       strikes=log_strikes(-2.0, 1.75, 30, spot=100.0, vol=0.3, r=R, q=0.01),
                       price=svi_price_fn(equity_like_params, spot=100.0, r=R, q=0.01))


def _tick(chain: OptionChain, i: int) -> OptionChain:
    """The same chain a moment later with slightly moved quotes (a new immutable snapshot)."""
    bump = 1.0 + 0.001 * np.sin(i)
    return chain.with_quotes(chain.bid * bump, chain.ask * bump, ts=chain.ts + timedelta(seconds=i))


async def _until(predicate, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(0.01)


class _Recorder:
    def __init__(self) -> None:
        self.updates: list[SurfaceUpdated] = []
        self.failures: list[SurfaceFitFailed] = []

    def __call__(self, event) -> None:
        if isinstance(event, SurfaceUpdated):
            self.updates.append(event)
        elif isinstance(event, SurfaceFitFailed):
            self.failures.append(event)


async def test_a_burst_of_chains_is_conflated_and_the_newest_chain_is_fitted(chain: OptionChain) -> None:
    bus = Bus()
    rec = _Recorder()
    bus.subscribe(SurfaceUpdated, rec)
    pool = ThreadPoolExecutor(max_workers=1)
    svc = SurfaceService(bus, rate=R, config=SurfaceConfig(refit_interval_s=0.05), executor=pool)
    await svc.start()
    try:
        ticks = [_tick(chain, i) for i in range(30)]
        for t in ticks:
            bus.publish(ChainUpdated(chain=t))
        await _until(lambda: any(u.chain_ts == ticks[-1].ts for u in rec.updates))
        assert len(rec.updates) < len(ticks)  # conflated, never a backlog of stale fits
        last = svc.latest("SPY")
        assert last is not None and last.chain_ts == ticks[-1].ts
        assert last.fit.ok and len(last.fit.fitted_slices()) == 3
        assert last.grid.iv.shape == (50, 100)
        assert 0.1 < last.atm_iv < 0.6 and last.tenor_days == 30.0
        assert last.iv_rank.status == INSUFFICIENT_HISTORY  # no store, no history
        assert np.isnan(last.realized_vol) and np.isnan(last.iv_rv_ratio)
    finally:
        await svc.stop()
        pool.shutdown()
        await bus.close()


async def test_streaming_quotes_keep_refreshing_the_surface(chain: OptionChain) -> None:
    bus = Bus()
    rec = _Recorder()
    bus.subscribe(SurfaceUpdated, rec)
    pool = ThreadPoolExecutor(max_workers=1)
    svc = SurfaceService(bus, rate=R, config=SurfaceConfig(refit_interval_s=0.2), executor=pool)
    await svc.start()
    stop = asyncio.Event()

    async def stream() -> None:
        i = 0
        while not stop.is_set():
            bus.publish(ChainUpdated(chain=_tick(chain, i)))
            i += 1
            await asyncio.sleep(0.02)  # a quote stream at ~50 snapshots/s

    task = asyncio.create_task(stream())
    try:
        await _until(lambda: len(rec.updates) >= 4, timeout=30.0)
        times = [u.chain_ts for u in rec.updates]
        assert times == sorted(times) and len(set(times)) == len(times)  # each update is a newer chain
    finally:
        stop.set()
        await task
        await svc.stop()
        pool.shutdown()
        await bus.close()


async def test_the_default_process_pool_fits_off_the_loop(chain: OptionChain) -> None:
    bus = Bus()
    rec = _Recorder()
    bus.subscribe(SurfaceUpdated, rec)
    svc = SurfaceService(bus, rate=R)  # config default: one spawned worker process
    await svc.start()
    try:
        assert svc.executor_info()["executor"] == "ProcessPoolExecutor"
        bus.publish(ChainUpdated(chain=chain))
        await _until(lambda: bool(rec.updates), timeout=120.0)
        assert rec.updates[0].fit.ok
    finally:
        await svc.stop()
        await bus.close()


async def test_iv_rank_uses_stored_history_and_today_is_written_back(chain: OptionChain, tmp_path) -> None:
    store = Store.open(tmp_path / "desk.db")
    repo = IVHistoryRepository(store)
    today = NOW.date()
    closes = 100.0 * np.exp(np.cumsum(np.random.default_rng(5).normal(0.0, 0.01, 120)))
    closes *= 100.0 / closes[-1]  # the most recent stored close sits at today's spot level
    for i in range(1, 121):
        repo.record("SPY", today - timedelta(days=i), 0.15 + 0.001 * (i % 50), close=float(closes[-i]))
    bus = Bus()
    rec = _Recorder()
    bus.subscribe(SurfaceUpdated, rec)
    pool = ThreadPoolExecutor(max_workers=1)
    svc = SurfaceService(bus, rate=R, store=store, executor=pool,
                         config=SurfaceConfig(iv_rank_min_history_days=60, iv_rank_lookback_days=252))
    await svc.start()
    try:
        bus.publish(ChainUpdated(chain=chain))
        await _until(lambda: bool(rec.updates))
        ev = rec.updates[0]
        assert ev.iv_rank.ok and ev.iv_rank.days == 120
        assert 0.0 <= ev.iv_rank.rank <= 1.0 and 0.0 <= ev.iv_rank.percentile <= 1.0
        # realized vol: 20 daily returns of the stored closes followed by today's spot (100)
        from engine.surface.realized import close_to_close

        expected = close_to_close(np.append(closes[-20:], 100.0))
        assert ev.realized_vol == pytest.approx(expected)
        assert ev.iv_rv_ratio == pytest.approx(ev.atm_iv / expected)
    finally:
        await svc.stop()
        pool.shutdown()
        await bus.close()
    days, iv, close = repo.series("SPY")
    assert days[-1] == today and iv[-1] == pytest.approx(ev.atm_iv) and close[-1] == pytest.approx(100.0)
    store.close()


def _broken_curve(T):
    raise RuntimeError("rate curve unavailable")


async def test_a_failing_job_is_published_as_SurfaceFitFailed_and_streaming_continues(chain: OptionChain) -> None:
    bus = Bus()
    rec = _Recorder()
    bus.subscribe(SurfaceFitFailed, rec)
    bus.subscribe(SurfaceUpdated, rec)
    pool = ThreadPoolExecutor(max_workers=1)
    svc = SurfaceService(bus, rate=_broken_curve, executor=pool, config=SurfaceConfig(refit_interval_s=0.05))
    await svc.start()
    try:
        bus.publish(ChainUpdated(chain=chain))
        await _until(lambda: bool(rec.failures))
        assert rec.failures[0].underlying == "SPY" and "rate curve unavailable" in rec.failures[0].error
        svc.rate = R  # the curve comes back: the next chain is fitted
        bus.publish(ChainUpdated(chain=_tick(chain, 1)))
        await _until(lambda: bool(rec.updates))
    finally:
        await svc.stop()
        pool.shutdown()
        await bus.close()


async def test_surface_updated_is_conflated_per_underlying(chain: OptionChain) -> None:
    a = SurfaceUpdated.__dataclass_fields__  # the event is a frozen dataclass
    assert "fit" in a and SurfaceUpdated.conflate
    bus = Bus()
    pool = ThreadPoolExecutor(max_workers=1)
    svc = SurfaceService(bus, rate=R, executor=pool)
    await svc.start()
    try:
        ev = await svc.refit(chain)
        other = await svc.refit(OptionChain.build("QQQ", 400.0, NOW, []))
        assert ev is not None and other is not None
        assert ev.conflation_key() != other.conflation_key()
        assert not other.fit.ok and other.iv_rank.status == "no_current_iv"
        assert svc.underlyings() == ["QQQ", "SPY"]
    finally:
        await svc.stop()
        pool.shutdown()
        await bus.close()


def test_config_rejects_unknown_keys_and_slow_refits() -> None:
    with pytest.raises(ValueError):
        SurfaceConfig(refit_interval_s=5.0)
    with pytest.raises(ValueError):
        SurfaceConfig(colour="blue")
