"""The ``Engine`` facade: composes bus, store, settings, clock, market feed, brokers, order path,
risk and analytics, and owns start/stop. Headless use::

    async with Engine(EngineConfig.for_directory(tmp)) as engine:
        await engine.bus.send(SetRiskLevel(level=30))

``stop()`` cancels and awaits every task the engine started, then closes the store.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from engine.bus import (
    Bus,
    EngineStarted,
    EngineStopping,
    JumpToNextRealSession,
    RestartSimulatedDay,
    SelectUnderlying,
)
from engine.engine_commands import EngineCommands
from engine.engine_state import EngineClock, EngineConfig
from engine.settings import load_settings
from engine.store import Store

__all__ = ["Engine", "EngineConfig", "limit_blas_threads"]

log = logging.getLogger(__name__)


def limit_blas_threads() -> None:
    """One BLAS thread per process: on a 2-core desktop, OpenBLAS's spinning threads made chain
    pricing 2× slower and a small neural layer 16× slower (measured, docs/pricing.md)."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, "blas")
    except Exception:  # threadpoolctl missing or a BLAS it cannot drive: keep the defaults
        log.debug("could not limit BLAS threads", exc_info=True)


class Engine(EngineCommands):
    """The facade: :class:`~engine.engine_state.EngineState` holds what the parts share,
    :class:`~engine.engine_commands.EngineCommands` the commands and connections; this class composes the
    components in dependency order at ``start()`` and stops them in reverse."""

    # ---- lifecycle -------------------------------------------------------------------------------
    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._started:
            return
        self.paths.ensure()
        from engine.instance_lock import InstanceLock

        # one engine per data folder (two would reuse the paper fill ids and fight over the trading state);
        # raises InstanceLocked naming the holder's pid
        lock = InstanceLock(self.paths.database.parent)
        lock.acquire()
        self._instance_lock = lock
        try:  # from here on a failed start releases the lock (stop() does, last)
            limit_blas_threads()
            if not self.config.defer_kernel_warmup:
                self._start_kernel_warmup()
            self.bus = Bus(clock=EngineClock(self))  # messages carry the engine's time, simulated or not
            if self.config.settings is None:
                self.settings_result = load_settings(self.paths.settings_file)
                self.settings = self.settings_result.settings
                for err in self.settings_result.errors:
                    log.warning("settings: %s", err)
            self.store = Store.open(self.paths.database, clock=EngineClock(self))
            await self._compose()
        except BaseException:
            await self.stop()
            raise
        self.spawn(self._clock_loop(), name="engine-clock")
        self._started = True
        self.bus.publish(EngineStarted(mode="paper", details={"database": str(self.paths.database)}))
        if self.settings_result and self.settings_result.errors:
            from engine.bus import Alert

            errs = "; ".join(str(e) for e in self.settings_result.errors)
            self.bus.publish(Alert(level="warning", source="settings",
                                   message=f"settings file has errors, defaults used for: {errs}"))

    def start_kernel_warmup(self) -> bool:
        """Load the compiled pricing kernels (or compile them, on a first run) on a background thread that the
        engine owns and stops; numpy prices until then. Idempotent; True when a thread was started now. Only
        on a running engine (a late first paint must not start a thread that no stop will wait for)."""
        if not self.running:
            return False
        return self._start_kernel_warmup()

    def _start_kernel_warmup(self) -> bool:
        if self._kernel_warmup is not None:
            return False
        from engine.pricing._kernels import WarmUp

        self._kernel_warmup = WarmUp()
        return self._kernel_warmup.start()

    async def _compose(self) -> None:
        """Build the components in dependency order; each registers its stop in reverse order."""
        from engine.brokers.paper import PaperBroker
        from engine.oms.assembly import build_order_path

        assert self.bus is not None and self.store is not None
        bus, store, s = self.bus, self.store, self.settings

        if self.config.feed == "simulated":
            from engine.market.simulated.feed import SimulatedFeed

            sim_cfg = s.simulator
            seed = self.config.seed if self.config.seed is not None else s.general.seed
            if sim_cfg.seed != seed:
                sim_cfg = sim_cfg.model_copy(update={"seed": seed})
            # the XNYS calendar takes ~1.5 s to build: keep the loop (and the GUI) responsive meanwhile
            sim_feed = await asyncio.to_thread(SimulatedFeed, bus, sim_cfg, store=store)  # resumes its path
            self.feed = self.simulated_feed = sim_feed
            self.clock = sim_feed.clock
            # one source of truth: analytics use the simulated world's own rate and dividend yields
            rate = sim_cfg.risk_free_rate
            dividend_yields = {u.symbol: u.dividend_yield for u in sim_cfg.universe}
        else:
            rate = s.risk.risk_free_rate
            dividend_yields = dict(s.risk.dividend_yields)
        risk_cfg = s.risk.model_copy(update={"risk_free_rate": rate, "dividend_yields": dividend_yields})

        engine_clock = EngineClock(self)
        self.paper_broker = PaperBroker(bus, store, s.paper, clock=engine_clock)
        self.brokers = {"paper": self.paper_broker}
        path = build_order_path(bus, store, brokers=dict(self.brokers), feed=self.feed, now=engine_clock.now,
                                risk_config=risk_cfg, oms_config=s.oms)
        self.order_path = path
        self.market, self.portfolio, self.kill_switch = path.market, path.portfolio, path.kill_switch
        self.risk, self.router, self.oms, self.risk_service = path.risk, path.router, path.oms, path.service

        await self.paper_broker.connect()
        self.on_stop(self.paper_broker.disconnect)
        if self.feed is not None:
            await self.feed.start()
            self.on_stop(self.feed.stop)
        await path.start()  # before any view subscribes: the OMS sees broker reports first
        self.on_stop(path.stop)
        self.on_stop(self._disconnect_all_brokers)
        bus.register(SelectUnderlying, self._cmd_select_underlying)
        bus.register(RestartSimulatedDay, self._cmd_restart_simulated_day)
        bus.register(JumpToNextRealSession, self._cmd_jump_to_next_real_session)
        self._register_settings_handlers(bus)

        from engine.surface.service import SurfaceService

        self.surfaces = SurfaceService(bus, rate=rate, config=s.surface, dividend_yields=dividend_yields, store=store)
        if self.config.feed == "simulated":
            self.surfaces.recorded_source = "simulated surface"
        await self.surfaces.start()
        self.on_stop(self.surfaces.stop)
        await self._start_history(bus, store)
        await self._start_strategies()

        from engine.backtest.service import BacktestService

        self.backtests = BacktestService(bus, store)
        self.backtests.register()
        self.on_stop(self.backtests.stop)
        from engine.chainstore.service import DataService

        self.data_service = DataService(bus, store, self.paths.data_dir / "chains", now=engine_clock.now)
        await self.data_service.start()
        self.on_stop(self.data_service.stop)
        from engine.ml.service import service_for_engine

        # ML train/evaluate jobs (the Models panel's commands) run in the engine's worker processes
        self.ml = service_for_engine(self)
        self.ml.start()
        self.on_stop(self.ml.stop)
        self._start_operations()
        await self._start_outside_services()

    def _start_operations(self) -> None:
        """The P&L/Greeks/equity history writer and the backup schedule (docs/operations.md)."""
        from engine.reports.history import HistoryRecorder
        from engine.store.backup import BackupScheduler

        assert self.bus is not None and self.store is not None
        cfg = self.settings.backup
        recorder = self.pnl_history = HistoryRecorder(self.bus, self.store, self.portfolio, self.risk_service,
                                                      interval_s=cfg.history_interval_s)
        recorder.start()

        async def stop_history() -> None:
            recorder.stop()

        self.on_stop(stop_history)
        if cfg.enabled and self.paths.database.is_file():
            folder = Path(cfg.folder).expanduser() if cfg.folder else self.paths.data_dir / "backups"
            self.backups = BackupScheduler(self.paths.database, folder, interval_s=cfg.interval_hours * 3600,
                                           keep=cfg.keep, now=self.wall_clock.now, on_done=self._backup_done,
                                           on_error=self._backup_failed)
            self.backups.start()
            self.on_stop(self.backups.stop)

    def _backup_done(self, result: Any) -> None:
        if self.store is not None:
            self.store.audit.record("engine", "backup", {"path": str(result.path), "bytes": result.bytes})

    def _backup_failed(self, exc: BaseException) -> None:
        if self.bus is not None:
            from engine.bus import Alert

            self.bus.publish(Alert(level="error", source="backup", message=f"scheduled backup failed: {exc}"))

    async def _start_outside_services(self) -> None:
        """Notifications that leave the window and the opt-in metrics endpoint (docs/operations.md)."""
        assert self.bus is not None
        s = self.settings
        if s.notify.enabled:
            from engine.notify.notifier import Notifier

            risk = self.risk
            exposure = None if risk is None else (
                lambda: (risk.position_exposure, risk.position_exposure_by_underlying()))
            self.notifier = Notifier(self.bus, s.notify, secrets=self.secret, now=EngineClock(self).now,
                                     exposure=exposure)
            await self.notifier.start()
            self.on_stop(self.notifier.stop)
        port = self.config.metrics_port if self.config.metrics_port is not None else s.monitoring.metrics_port
        if port is not None:
            from engine.monitoring import MetricsExporter

            self.metrics = MetricsExporter(self, port, sample_interval_s=s.monitoring.sample_interval_s)
            await self.metrics.start()  # MonitoringError (port taken) stops the start: opt-in means wanted
            self.on_stop(self.metrics.stop)

    def secret(self, name: str) -> str | None:
        """A secret from the shared credential store (keyring; blocking: call it from a thread)."""
        if self.credentials is None:
            from engine.credentials import CredentialStore

            self.credentials = CredentialStore()
        return self.credentials.get(name)

    async def _start_history(self, bus: Any, store: Any) -> None:
        """Backfill daily history from the feed's own past (docs/architecture.md, "History from the first
        minute"); readers reload when it lands, so IV rank, regimes and VaR work without waiting for days."""
        from engine.history import HistoryBackfilled, HistoryService, SimulatedHistorySource

        source = None
        underlyings: list[str] = []
        if self.simulated_feed is not None:
            market = self.simulated_feed.market
            source = SimulatedHistorySource(market.config, anchor=market.spots())
            underlyings = list(market.symbols)
        cfg = self.settings.surface
        surfaces, risk_service = self.surfaces, self.risk_service
        assert surfaces is not None and risk_service is not None  # composed before the history (_compose)
        history = self.history = HistoryService(
            bus, store, clock=EngineClock(self), underlyings=underlyings, source=source,
            lookback=cfg.iv_rank_lookback_days, min_history=cfg.iv_rank_min_history_days,
            realized_vol_window=cfg.realized_vol_window_days)

        def reload(ev: HistoryBackfilled) -> None:
            if ev.rows <= 0:
                return
            surfaces.reload_history(ev.underlyings)
            try:
                risk_service.calibrate_from_history()
            except Exception:  # a bus subscriber must not raise: the backfill stands, the old calibration stays
                log.exception("could not recalibrate vols/betas from the backfilled history")

        sub = bus.subscribe(HistoryBackfilled, reload, name="Engine.history_reload")

        async def stop_history() -> None:
            sub.cancel()
            await history.stop()

        await history.start()
        self.on_stop(stop_history)

    async def _start_strategies(self) -> None:
        """The strategy host (docs/strategies.md), after the order path, history and surfaces it reads; a bad
        settings entry is a disabled strategy with an alert, never a failed start."""
        from engine.strategies.config import split_entries
        from engine.strategies.host import StrategyHost

        assert self.bus is not None and self.store is not None
        invalid: dict[str, str] = {}
        if self.settings_result is not None:
            for _, label, key, message in split_entries(self.settings_result.raw.get("strategies"))[1]:
                invalid[label] = "; ".join(filter(None, (invalid.get(label), f"settings {key}: {message}")))
        portfolio = self.portfolio
        self.strategies = StrategyHost(
            self.bus, self.store, clock=EngineClock(self), entries=self.settings.strategies,
            invalid=list(invalid.items()), risk=self.risk, router=self.router, kill_switch=self.kill_switch,
            net_liquidation=lambda: portfolio.net_liquidation if portfolio is not None else float("nan"),
            iv_rank=self._strategy_iv_rank, regime=self._strategy_regime, next_event=self._strategy_next_event,
            models_dir=self.paths.models_dir)
        await self.strategies.start()
        self.on_stop(self.strategies.stop)

    def _strategy_next_event(self, underlying: str) -> Any:
        """The next earnings date on or after today from the simulated market's calendar while it is the feed
        (a broker's feed has no earnings calendar here: None)."""
        feed = self.simulated_feed
        if feed is None or feed is not self.feed:
            return None
        from engine.market.simulated.earnings import EarningsSchedule
        from engine.model.instruments import NEW_YORK

        return EarningsSchedule.for_config(feed.config).next_event(underlying,
                                                                   self.clock.now().astimezone(NEW_YORK).date())

    def _strategy_iv_rank(self, underlying: str) -> float:
        """IV rank for strategies: the latest surface's, else the stored history's (once per day and symbol)."""
        latest = self.surfaces.latest(underlying) if self.surfaces is not None else None
        if latest is not None and latest.iv_rank.ok:
            return float(latest.iv_rank.rank)
        key = (underlying, self.clock.now().date())
        cache = self._ivr_cache
        if key not in cache:
            if self.history is None:
                return float("nan")
            try:
                rank = float(self.history.snapshot(underlying).iv_rank.rank)
            except Exception:  # a strategy asking before the history can answer gets NaN ("not known"), whatever the cause
                log.debug("no IV rank for %s yet", underlying, exc_info=True)
                return float("nan")
            if rank != rank:
                return rank  # not backfilled yet: ask again next time
            cache[key] = rank
        return cache[key]

    def _strategy_regime(self, underlying: str) -> str:
        """The risk service's market regime (classified once at first use when it has not run yet)."""
        rs = self.risk_service
        if rs is not None and rs.regime is None:
            try:
                rs.update_regime()
            except Exception:  # an unclassifiable regime is "neutral" for the strategies, whatever the classifier raised
                log.debug("regime not classified yet", exc_info=True)
        return (rs.regime if rs is not None else None) or "neutral"

    async def stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        try:
            if self.bus is not None:
                self.bus.publish(EngineStopping())
            for stopper in reversed(self._stoppers):
                try:
                    await stopper()
                except Exception:  # one component failing to stop must not keep the others (and the store, the lock) from stopping
                    log.exception("error while stopping a component")
            self._stoppers.clear()
            tasks = [t for t in self._tasks if not t.done()]
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.clear()
            if self.bus is not None:
                await self.bus.close()
            if self._kernel_warmup is not None:  # a compile cannot be interrupted: bounded join, daemon thread
                warmup, self._kernel_warmup = self._kernel_warmup, None
                await asyncio.to_thread(warmup.stop, 2.0)
            if self._thread_pool is not None:
                self._thread_pool.shutdown(wait=False, cancel_futures=True)
                self._thread_pool = None
            if self._process_pool is not None:
                from engine.process_pools import terminate_pool

                pool, self._process_pool = self._process_pool, None
                await asyncio.to_thread(terminate_pool, pool)
            if self.store is not None:
                self.store.close()
        finally:
            if self._instance_lock is not None:  # last: the data folder is free once the store is closed
                self._instance_lock.release()
                self._instance_lock = None
            self._started = False
            self._stopping = False
