"""With a broker's history backfilled, the ML service trains on the stored (real) rows, not on the simulated
market's seeded path; the stored source is what a worker process can receive (picklable, read-only)."""

from __future__ import annotations

import asyncio
import pickle
from datetime import date
from pathlib import Path

import numpy as np

from engine.history.service import write_series
from engine.history.simulated import SimulatedHistorySource
from engine.history.source import DailySeries
from engine.history.stored import StoredHistorySource
from engine.market.config import SimulatorConfig
from engine.store.database import Store


def _series(sym: str, days: list[date], close: list[float], iv: list[float]) -> DailySeries:
    return DailySeries(sym, tuple(days), np.array(close, dtype=float), np.array(iv, dtype=float))


def test_the_stored_source_reads_the_last_sessions_before_a_day_and_pickles(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "od.sqlite")
    try:
        days = [date(2026, 2, d) for d in (2, 3, 4, 5, 6, 9)]
        write_series(store, {"SPY": _series("SPY", days, [600, 601, 602, 603, 604, 605],
                                            [0.2, 0.21, 0.0, 0.22, 0.23, 0.24])},
                     "tastytrade candles", "2026-02-10T00:00:00+00:00")
        source = pickle.loads(pickle.dumps(StoredHistorySource(tmp_path / "od.sqlite", origin="tastytrade candles")))
        assert source.name == "stored tastytrade candles"
        got = source.daily(["SPY", "QQQ"], date(2026, 2, 9), 3)
        assert set(got) == {"SPY"}  # a symbol with no rows is left out, as a broker does
        spy = got["SPY"]
        # Feb 4 has no ATM IV (not stored), Feb 9 is not strictly before the day: the last three before it
        assert spy.days == (date(2026, 2, 3), date(2026, 2, 5), date(2026, 2, 6))
        assert spy.close.tolist() == [601.0, 603.0, 604.0] and spy.atm_iv.tolist() == [0.21, 0.22, 0.23]
        try:
            source.daily(["SPY"], date(2026, 2, 9), 0)
        except ValueError as exc:
            assert "sessions must be positive" in str(exc)
        else:
            raise AssertionError("zero sessions accepted")
    finally:
        store.close()


class _RecordedBroker(SimulatedHistorySource):
    """A broker's daily history as recorded: another seeded path than the engine's own simulated market,
    under a real (non-simulated) source name, so its rows supersede the simulated backfill."""

    def __init__(self) -> None:
        super().__init__(SimulatorConfig(seed=1234))
        self.name = "recorded broker"


async def test_with_a_broker_history_the_service_trains_on_the_stored_rows(tmp_path: Path) -> None:
    from engine.bus.events import MLJobFinished
    from engine.core import Engine, EngineConfig
    from engine.ml.registry import ModelRegistry
    from engine.ml.service import TrainModel
    from engine.settings import Settings
    from engine.surface.config import SurfaceConfig
    from tests.sim_start import pinned_settings

    settings = pinned_settings(Settings(surface=SurfaceConfig(executor="thread")))
    async with Engine(EngineConfig.for_directory(tmp_path, settings=settings)) as engine:
        history, ml = engine.history, engine.ml
        assert history is not None and ml is not None
        broker = _RecordedBroker()
        # four years of the broker's days stored (the start-up backfill keeps 300 sessions; a user's longer
        # backfill or import adds more), then the broker becomes the history's source
        write_series(engine.store, broker.daily(["SPY", "VIX"], history.today(), 1000), broker.name,
                     engine.clock.now().isoformat())
        await history.use_source(broker, ["SPY", "VIX"])
        assert await history.wait_ready(60.0) and not history.last_error, history.last_error
        finished: list[MLJobFinished] = []
        engine.bus.subscribe(MLJobFinished, finished.append)
        await engine.bus.send(TrainModel(model="logistic", permutations=0, years=3.9))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120.0
        while not finished and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert finished, "no training result within 120 s"
        assert finished[0].error == "", finished[0].error
        meta = ModelRegistry(engine.paths.models_dir).record("iv_rank_put_spread-SPY").meta
        assert meta["source"] == "stored recorded broker"
        # the window lies inside the broker's stored days, which are not the simulated market's
        stored = StoredHistorySource(engine.paths.database, origin="x").daily(["SPY"], history.today(), 1000)["SPY"]
        window = [date.fromisoformat(d) for d in meta["training_window"]]
        assert stored.days[0] <= window[0] < window[1] <= stored.days[-1]
        own = SimulatedHistorySource(settings.simulator).daily(["SPY"], history.today(), 5)["SPY"]
        assert not np.allclose(stored.close[-5:], own.close)
