"""The live statistical regime: a Gaussian mixture on (20-day trend strength, realized vol), with a trending
state only where the data show one, refitted off the loop and published as an event."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from engine.ml.regime_live import StatisticalRegimeUpdated, fit_regime, regime_features


def _closes(*segments: tuple[float, float, int], seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    r = np.concatenate([rng.normal(mu, sd, n) for mu, sd, n in segments])
    return 100.0 * np.exp(np.cumsum(r))


def test_a_sustained_drift_is_named_trending_and_calm_volatile_crisis_stay_ordered_by_vol() -> None:
    closes = _closes((0.0, 0.006, 300), (0.004, 0.008, 200), (0.0, 0.015, 250), (-0.002, 0.04, 150))
    fit = fit_regime(closes)
    assert fit.trending_supported
    labels = fit.labels  # one per day from day 20
    mode = lambda a, b: max(set(labels[a:b]), key=labels[a:b].count)  # noqa: E731
    assert mode(300, 480) == "trending"  # the drift segment (features start 20 days in)
    assert mode(520, 720) == "volatile" and mode(760, 880) == "crisis"
    assert fit.regime == "crisis" and dict(fit.probabilities)["crisis"] > 0.5
    assert abs(sum(p for _, p in fit.probabilities) - 1.0) < 1e-9


def test_without_a_drift_there_is_no_trending_state() -> None:
    closes = _closes((0.0, 0.006, 400), (0.0, 0.015, 300), (0.0, 0.04, 200))
    fit = fit_regime(closes)
    assert not fit.trending_supported
    assert "trending" not in fit.labels and set(fit.labels) <= {"calm", "volatile", "crisis"}
    z = regime_features(closes)[:, 0]
    assert abs(float(np.mean(z))) < 0.5  # the trend feature of a driftless path is centred near zero


async def test_the_engine_publishes_the_statistical_regime_from_its_history(tmp_path: Path) -> None:
    from engine.core import Engine, EngineConfig
    from engine.settings import Settings
    from engine.surface.config import SurfaceConfig
    from tests.sim_start import pinned_settings

    settings = pinned_settings(Settings(surface=SurfaceConfig(executor="thread")))
    got: list[StatisticalRegimeUpdated] = []
    async with Engine(EngineConfig.for_directory(tmp_path, settings=settings)) as engine:
        engine.bus.subscribe(StatisticalRegimeUpdated, got.append)
        svc = engine.ml.regime
        assert svc is not None and svc.symbol == "SPY"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60.0
        while svc.latest is None and loop.time() < deadline:
            await asyncio.sleep(0.05)
        ev = svc.latest
        assert ev is not None, "no statistical regime within 60 s of start"
        assert not ev.error, ev.error
        assert ev.regime in {"calm", "volatile", "crisis", "trending"}
        assert ev.as_of is not None and ev.as_of < settings_start(engine) and ev.days >= 120
        assert 0.0 < ev.probability <= 1.0
        while not got and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert got and got[-1] == ev


def settings_start(engine: object) -> object:
    from datetime import date

    return date.fromisoformat(engine.settings.simulator.start)  # type: ignore[attr-defined]


async def test_the_mixture_is_refitted_once_per_new_york_day_of_the_engine_clock() -> None:
    from datetime import UTC, date, datetime, timedelta

    from engine.bus.bus import Bus
    from engine.bus.events import ClockTicked
    from engine.ml.regime_live import StatisticalRegimeService

    closes = _closes((0.0, 0.006, 300), (0.004, 0.008, 200), (0.0, 0.015, 250))
    day = {"today": date(2026, 3, 2)}
    fits: list[int] = []

    async def run_cpu(fn):  # the engine's worker processes, inline: the fit itself is the real one
        fits.append(1)
        return fn()

    def history(symbol: str, sessions: int):
        n = 600 + 10 * len(fits)  # one more day of closes by each refit
        days = [date(2024, 1, 1) + timedelta(days=i) for i in range(n)]
        return days, closes[:n]

    bus = Bus()
    got: list[StatisticalRegimeUpdated] = []
    bus.subscribe(StatisticalRegimeUpdated, got.append)
    svc = StatisticalRegimeService(bus, run_cpu=run_cpu, closes=history, today=lambda: day["today"], symbol="SPY")
    svc.start()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30.0

    async def until(cond) -> None:
        while not cond() and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert cond()

    await until(lambda: len(got) == 1)
    tick = ClockTicked(now=datetime(2026, 3, 2, 15, 0, tzinfo=UTC))
    for _ in range(5):  # ticks on the same day: no refit
        bus.publish(tick)
    for _ in range(20):  # give a (wrong) refit every chance to start
        await asyncio.sleep(0)
    assert len(fits) == 1 and len(got) == 1
    day["today"] = date(2026, 3, 3)
    bus.publish(ClockTicked(now=datetime(2026, 3, 3, 15, 0, tzinfo=UTC)))
    await until(lambda: len(got) == 2)
    assert len(fits) == 2 and got[1].days == got[0].days + 10
    await svc.stop()
