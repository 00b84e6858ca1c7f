"""The ``Engine`` facade: composes bus, store, settings, clock, market feed, brokers, order path,
risk and analytics, and owns start/stop. Headless use::

    async with Engine(EngineConfig.for_directory(tmp)) as engine:
        await engine.bus.send(SetRiskLevel(level=30))

``stop()`` cancels and awaits every task the engine started, then closes the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from engine.bus import (
    ApplySettings,
    Bus,
    ClockTicked,
    EngineStarted,
    EngineStopping,
    JumpToNextRealSession,
    ListExpirations,
    RestartSimulatedDay,
    SelectUnderlying,
    SettingsApplied,
)
from engine.clock import Clock, WallClock
from engine.paths import AppPaths
from engine.settings import LoadResult, Settings, load_settings
from engine.store import Store

if TYPE_CHECKING:
    from engine.backtest.service import BacktestService
    from engine.brokers.adapters import Adapter
    from engine.brokers.paper import PaperBroker
    from engine.chainstore.service import DataService
    from engine.credentials import CredentialStore
    from engine.facade_types import Broker, Feed
    from engine.history import HistoryService
    from engine.instance_lock import InstanceLock
    from engine.market.simulated.feed import SimulatedFeed
    from engine.ml.service import MLService
    from engine.monitoring import MetricsExporter
    from engine.notify.notifier import Notifier
    from engine.oms.assembly import OrderPath
    from engine.oms.manager import OrderManager
    from engine.oms.router import ModeRouter
    from engine.reports.history import HistoryRecorder
    from engine.risk.engine import RiskEngine
    from engine.risk.kill_switch import KillSwitch
    from engine.risk.market_view import MarketView
    from engine.risk.service import RiskService
    from engine.risk.state import PortfolioState
    from engine.store.backup import BackupScheduler
    from engine.strategies.host import StrategyHost
    from engine.surface.service import SurfaceService

log = logging.getLogger(__name__)
T = TypeVar("T")


def limit_blas_threads() -> None:
    """One BLAS thread per process: on a 2-core desktop, OpenBLAS's spinning threads made chain
    pricing 2× slower and a small neural layer 16× slower (measured, docs/pricing.md)."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1, "blas")
    except Exception:  # threadpoolctl missing or a BLAS it cannot drive: keep the defaults
        log.debug("could not limit BLAS threads", exc_info=True)


class _EngineClock:
    """The engine's current clock, whatever feed drives it (components keep this one object)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def now(self) -> Any:
        return self._engine.clock.now()


@dataclass(frozen=True)
class EngineConfig:
    paths: AppPaths = field(default_factory=AppPaths.default)
    seed: int | None = None  # None: settings.general.seed
    feed: str = "simulated"  # simulated | none
    clock_interval_s: float = 1.0
    settings: Settings | None = None  # given: used instead of the settings file
    process_workers: int = 2
    #: the real world's clock, for "is the real market open?" (tests pin it; None: the machine's clock)
    wall_clock: Clock | None = None
    #: serve Prometheus metrics on 127.0.0.1:PORT (None: settings.monitoring.metrics_port; off when both unset)
    metrics_port: int | None = None

    @classmethod
    def for_directory(cls, base: str | os.PathLike[str], **kw: Any) -> EngineConfig:
        """Everything (db, settings, logs) under one folder: tests and portable installs."""
        return cls(paths=AppPaths.under(Path(base)), **kw)

    def with_(self, **kw: Any) -> EngineConfig:
        return replace(self, **kw)


class Engine:
    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.paths = self.config.paths
        self.bus: Bus | None = None
        self.store: Store | None = None
        self.settings_result: LoadResult | None = None
        self.settings: Settings = self.config.settings or Settings()
        self.clock: Clock = WallClock()
        self.wall_clock: Clock = self.config.wall_clock or WallClock()
        # components exist once start() has composed them; None before, or when switched off
        self.feed: Feed | None = None  # the current feed: simulated, or a connected broker's live data
        self.brokers: dict[str, Broker] = {}
        self.paper_broker: PaperBroker | None = None
        self.oms: OrderManager | None = None
        self.risk: RiskEngine | None = None
        self.kill_switch: KillSwitch | None = None
        self.surfaces: SurfaceService | None = None
        self.history: HistoryService | None = None
        self.backtests: BacktestService | None = None
        self.data_service: DataService | None = None  # imported chains and stored-data coverage (docs/data.md)
        self.ml: MLService | None = None  # model training and evaluation jobs (docs/ml.md)
        self.router: ModeRouter | None = None
        self.market: MarketView | None = None
        self.portfolio: PortfolioState | None = None
        self.risk_service: RiskService | None = None
        self.order_path: OrderPath | None = None
        self.simulated_feed: SimulatedFeed | None = None  # kept while a broker's feed replaces it
        self.adapters: dict[str, Adapter] = {}
        #: shared by the GUI and broker connections (created on first use)
        self.credentials: CredentialStore | None = None
        self.notifier: Notifier | None = None  # settings.notify.enabled
        self.metrics: MetricsExporter | None = None  # opt-in
        self.strategies: StrategyHost | None = None  # docs/strategies.md
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stoppers: list[Callable[[], Awaitable[None]]] = []
        self._thread_pool: ThreadPoolExecutor | None = None
        self._process_pool: ProcessPoolExecutor | None = None
        self._kernel_warmup: Any = None  # engine.pricing._kernels.WarmUp, started with the engine
        #: (underlying, day) -> the stored history's IV rank, for strategies before the first surface of the day
        self._ivr_cache: dict[tuple[str, Any], float] = {}
        self._started = False
        self._stopping = False
        self._instance_lock: InstanceLock | None = None
        self.pnl_history: HistoryRecorder | None = None  # None when off
        self.backups: BackupScheduler | None = None

    # ---- lifecycle ----------------------------------------------------------------------------
    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def started(self) -> bool:
        return self._started

    @property
    def running(self) -> bool:
        """Started and not stopping: new background work may be submitted."""
        return self._started and not self._stopping

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
            from engine.pricing._kernels import WarmUp

            # compiled pricing kernels load (or compile, on a first run) off the loop; numpy until then
            self._kernel_warmup = WarmUp()
            self._kernel_warmup.start()
            self.bus = Bus(clock=_EngineClock(self))  # messages carry the engine's time, simulated or not
            if self.config.settings is None:
                self.settings_result = load_settings(self.paths.settings_file)
                self.settings = self.settings_result.settings
                for err in self.settings_result.errors:
                    log.warning("settings: %s", err)
            self.store = Store.open(self.paths.database, clock=_EngineClock(self))
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
            self.feed = await asyncio.to_thread(SimulatedFeed, bus, sim_cfg, store=store)  # resumes its path
            self.clock = self.feed.clock
            # one source of truth: analytics use the simulated world's own rate and dividend yields
            rate = sim_cfg.risk_free_rate
            dividend_yields = {u.symbol: u.dividend_yield for u in sim_cfg.universe}
        else:
            rate = s.risk.risk_free_rate
            dividend_yields = dict(s.risk.dividend_yields)
        risk_cfg = s.risk.model_copy(update={"risk_free_rate": rate, "dividend_yields": dividend_yields})

        self.simulated_feed = self.feed
        engine_clock = _EngineClock(self)
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
        self.pnl_history = HistoryRecorder(self.bus, self.store, self.portfolio, self.risk_service,
                                           interval_s=cfg.history_interval_s)
        self.pnl_history.start()

        async def stop_history() -> None:
            self.pnl_history.stop()

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
            self.notifier = Notifier(self.bus, s.notify, secrets=self.secret, now=_EngineClock(self).now,
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
        self.history = HistoryService(bus, store, clock=_EngineClock(self), underlyings=underlyings, source=source,
                                      lookback=cfg.iv_rank_lookback_days, min_history=cfg.iv_rank_min_history_days,
                                      realized_vol_window=cfg.realized_vol_window_days)

        def reload(ev: HistoryBackfilled) -> None:
            if ev.rows <= 0:
                return
            self.surfaces.reload_history(ev.underlyings)
            try:
                self.risk_service.calibrate_from_history()
            except Exception:
                log.exception("could not recalibrate vols/betas from the backfilled history")

        sub = bus.subscribe(HistoryBackfilled, reload, name="Engine.history_reload")

        async def stop_history() -> None:
            sub.cancel()
            await self.history.stop()

        await self.history.start()
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
            self.bus, self.store, clock=_EngineClock(self), entries=self.settings.strategies,
            invalid=list(invalid.items()), risk=self.risk, router=self.router, kill_switch=self.kill_switch,
            net_liquidation=lambda: portfolio.net_liquidation if portfolio is not None else float("nan"),
            iv_rank=self._strategy_iv_rank, regime=self._strategy_regime, next_event=self._strategy_next_event)
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
            try:
                rank = float(self.history.snapshot(underlying).iv_rank.rank)  # type: ignore[union-attr]
            except Exception:
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
            except Exception:
                log.debug("regime not classified yet", exc_info=True)
        return (rs.regime if rs is not None else None) or "neutral"

    def on_stop(self, stopper: Callable[[], Awaitable[None]]) -> None:
        """Register an async cleanup; run in reverse order on stop()."""
        self._stoppers.append(stopper)

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
                except Exception:
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

    # ---- broker connections ---------------------------------------------------------------------
    async def connect_broker(self, name: str, *, credentials: Any = None, config: Any = None,
                             use_live_data: bool = True) -> Any:
        """Connect tastytrade or IBKR and make it routable; by default its quotes replace the simulated
        market (paper trading on live data: the paper broker fills on whatever feed publishes).
        ``config``: a ``BrokersConfig`` to use instead of the settings (the credentials dialog's fields).

        The broker is *not* live: only ``SwitchMode(mode="live", confirmed_account_id=...)`` arms it.
        Raises ``BrokerError``/``CredentialsMissing`` with a readable message when it cannot connect.
        """
        from engine.brokers.adapters import build_adapter
        from engine.bus import FeedChanged

        assert self.bus is not None
        if name in self.adapters:
            return self.adapters[name].broker
        if credentials is None:
            if self.credentials is None:
                from engine.credentials import CredentialStore

                self.credentials = await asyncio.to_thread(CredentialStore)  # reads the env once, probes the keyring
            credentials = self.credentials
        symbols = self.simulated_feed.underlyings() if self.simulated_feed is not None else ["SPY"]
        adapter = build_adapter(name, config or self.settings.brokers, self.bus, credentials=credentials,
                                underlyings=[s for s in symbols if s != "VIX"])
        try:
            await adapter.broker.connect()
        except BaseException:
            with contextlib.suppress(Exception):
                await adapter.broker.disconnect()
            raise
        self.adapters[name] = adapter
        self.brokers[name] = adapter.broker
        self.router.add_broker(adapter.broker)  # no router breaker: the adapter wraps every call in its own
        if use_live_data:
            await adapter.feed.start()
            if self.feed is self.simulated_feed and self.feed is not None:
                await self.feed.stop()
            self.feed = adapter.feed
            self.market.feed = adapter.feed
            self.clock = self.wall_clock  # live data: the engine clock is the real one
            self.bus.publish(FeedChanged(feed=adapter.feed.name, underlyings=tuple(adapter.feed.underlyings())))
            if self.surfaces is not None:
                self.surfaces.recorded_source = "surface"
            source = adapter.history_source(asyncio.get_running_loop())
            if self.history is not None and source is not None:  # IV rank from the broker's own history
                await self.history.use_source(source, [u for u in adapter.feed.underlyings() if u != "VIX"])
        return adapter.broker

    async def disconnect_broker(self, name: str) -> None:
        """Disconnect a broker; refused while the engine is live on it. The simulated market resumes."""
        from engine.bus import FeedChanged
        from engine.oms.router import ModeSwitchError

        assert self.bus is not None
        adapter = self.adapters.get(name)
        if adapter is None:
            return
        if self.router.is_live and self.router.active_name == name:
            raise ModeSwitchError(f"switch to paper before disconnecting {name}")
        self.adapters.pop(name)
        self.brokers.pop(name, None)
        self.router.brokers.pop(name, None)
        if self.feed is adapter.feed:
            await adapter.feed.stop()
            self.feed = self.simulated_feed
            self.market.feed = self.simulated_feed
            if self.simulated_feed is not None:
                self.clock = self.simulated_feed.clock
                await self.simulated_feed.start()
                self.bus.publish(FeedChanged(feed=self.simulated_feed.name,
                                             underlyings=tuple(self.simulated_feed.underlyings())))
                if self.surfaces is not None:
                    self.surfaces.recorded_source = "simulated surface"
                if self.history is not None and self.history.source is not None \
                        and self.history.source.name == name:
                    from engine.history import SimulatedHistorySource

                    market = self.simulated_feed.market
                    await self.history.use_source(SimulatedHistorySource(market.config, anchor=market.spots()),
                                                  list(market.symbols))
        else:
            await adapter.feed.stop()
        await adapter.broker.disconnect()

    async def _cmd_select_underlying(self, cmd: SelectUnderlying) -> None:
        """Stream the visible window of a chain from whichever feed is current (it survives feed swaps)."""
        from engine.market.feed import FeedError

        if self.feed is None:
            raise FeedError("no market-data feed is running")
        await self.feed.subscribe(cmd.symbol, list(cmd.expiries) or None, cmd.strikes)

    async def _cmd_list_expirations(self, cmd: ListExpirations) -> list[Any]:
        from engine.market.feed import FeedError

        if self.feed is None:
            raise FeedError("no market-data feed is running")
        return sorted(await self.feed.expirations(cmd.symbol))

    # ---- settings: one source ---------------------------------------------------------------------
    def _register_settings_handlers(self, bus: Bus) -> None:
        """``ApplySettings`` and ``ListExpirations``; and ``engine.settings`` follows the level and approval
        mode the components run at (the store's persisted values win over the file at start, and the
        slider and the approval toggle change them later), so every reader sees one value."""
        from engine.bus import ApprovalModeChanged, RiskProfileChanged

        bus.register(ApplySettings, self._cmd_apply_settings)
        bus.register(ListExpirations, self._cmd_list_expirations)
        self._sync_settings_from_components()
        subs = [bus.subscribe(RiskProfileChanged, lambda _ev: self._sync_settings_from_components(),
                              name="Engine.settings_risk_level"),
                bus.subscribe(ApprovalModeChanged, lambda _ev: self._sync_settings_from_components(),
                              name="Engine.settings_approval")]

        async def unsubscribe() -> None:
            for sub in subs:
                sub.cancel()

        self.on_stop(unsubscribe)

    def _sync_settings_from_components(self) -> None:
        s = self.settings
        risk = s.risk
        if self.risk is not None and risk.level != self.risk.profile.level:
            risk = risk.model_copy(update={"level": self.risk.profile.level})
        oms = s.oms
        if self.oms is not None:
            gate = self.oms.gate.enabled
            oms = oms.model_copy(update={"approval_in_paper": bool(gate.get("paper", oms.approval_in_paper)),
                                         "approval_in_live": bool(gate.get("live", oms.approval_in_live))})
        if risk is not s.risk or oms != s.oms:
            self.settings = s.model_copy(update={"risk": risk, "oms": oms})

    async def _cmd_apply_settings(self, cmd: ApplySettings) -> SettingsApplied:
        """Save, swap, then let each running component take what it owns: the risk level through the
        slider's ``SetRiskLevel``, manual approval through the gate (``SetApprovalMode`` for the current
        mode), notification rules and destinations by reconfiguring the notifier. Everything else was
        wired into components at start and is reported as taking effect at the next start."""
        from engine.bus import SetApprovalMode, SetRiskLevel
        from engine.settings import Settings, save_settings

        assert self.bus is not None
        new = cmd.settings
        if not isinstance(new, Settings):
            raise TypeError(f"ApplySettings needs engine.settings.Settings, not {type(new).__name__}")
        changed = _changed_keys(self.settings, new)
        path: str | None = None
        if cmd.save:
            path = str(await asyncio.to_thread(save_settings, new, self.paths.settings_file))
        self.settings = new
        applied: set[str] = set()
        if self.risk is not None and new.risk.level != self.risk.profile.level:
            await self.bus.send(SetRiskLevel(level=float(new.risk.level)))
            applied.add("risk.level")
        elif "risk.level" in changed:
            applied.add("risk.level")  # already the running level
        if self.oms is not None and self.router is not None:
            from engine.oms.manager import KV_APPROVAL

            gate = self.oms.gate
            for mode, wanted in (("paper", new.oms.approval_in_paper), ("live", new.oms.approval_in_live)):
                key = f"oms.approval_in_{mode}"
                if gate.enabled.get(mode) != wanted:
                    if mode == self.router.mode:
                        await self.bus.send(SetApprovalMode(enabled=wanted, by=cmd.by))
                    else:
                        gate.set_enabled(mode, wanted, cmd.by)
                        if self.store is not None:
                            self.store.kv.set(KV_APPROVAL, gate.enabled)
                    applied.add(key)
                elif key in changed:
                    applied.add(key)
        notify_keys = {k for k in changed if k.startswith("notify.") and k != "notify.enabled"}
        if notify_keys and self.notifier is not None and new.notify.enabled:
            await self.notifier.reconfigure(new.notify)
            applied |= notify_keys
        self._sync_settings_from_components()
        if self.store is not None:
            self.store.audit.record(cmd.by, "settings", {"changed": sorted(changed), "path": path})
        return SettingsApplied(path=path, applied=tuple(sorted(applied)),
                               at_restart=tuple(sorted(set(changed) - applied)))

    # ---- the simulated clock ------------------------------------------------------------------------
    def _running_simulation(self) -> Any:
        from engine.market.feed import FeedError

        if self.simulated_feed is None or self.feed is not self.simulated_feed:
            raise FeedError("the simulated market is not running (a broker's live data is the feed): "
                            "its clock cannot be moved")
        return self.simulated_feed

    async def _cmd_restart_simulated_day(self, cmd: RestartSimulatedDay) -> Any:
        """Back to the open of the simulated day, its path replayed; audited. Returns the new market time."""
        feed = self._running_simulation()
        before = feed.now()
        now = await feed.restart_day()
        self._clock_moved("restart_day", before, now, cmd.by)
        return now

    async def _cmd_jump_to_next_real_session(self, cmd: JumpToNextRealSession) -> Any:
        """The simulated market to the open of the real session running now or opening next; audited."""
        feed = self._running_simulation()
        wall = self.wall_clock.now()
        cal = feed.market.calendar
        session = cal.current_or_next_session(wall)
        target, _ = cal.open_close(session)
        before = feed.now()
        now = await feed.jump_to(target)
        self._clock_moved("jump_to_real_session", before, now, cmd.by, wall=wall)
        return now

    def _clock_moved(self, action: str, before: Any, now: Any, by: str, **detail: Any) -> None:
        from engine.bus import SimulatedClockMoved

        assert self.store is not None and self.bus is not None
        self.store.audit.record(by, f"simulated_clock:{action}", {
            "from": before.isoformat(), "to": now.isoformat(), **{k: v.isoformat() for k, v in detail.items()}})
        self.bus.publish(SimulatedClockMoved(action=action, previous=before, now=now, by=by))
        self._publish_session()

    def session_status(self) -> Any:
        """The engine's market time and session, and whether the real (wall-clock) market is open."""
        from engine.bus import SessionStatus

        feed_now = self.feed.now() if self.feed is not None else None
        now = feed_now or self.clock.now()
        market_open = False
        is_open = getattr(self.feed, "market_open", None)
        if callable(is_open):
            with contextlib.suppress(Exception):
                market_open = bool(is_open())
        simulated = self.feed is not None and self.feed is self.simulated_feed
        real_open: bool | None = None
        real_next: Any = None
        cal = getattr(getattr(self.simulated_feed, "market", None), "calendar", None)
        if cal is not None:
            wall = self.wall_clock.now()
            with contextlib.suppress(ValueError):  # a wall clock beyond the calendar: unknown
                real_open = cal.is_open(wall)
                real_next = None if real_open else cal.next_open(wall)
        return SessionStatus(now=now, market_open=market_open, simulated=simulated, real_open=real_open,
                             real_next_open=real_next)

    def _publish_session(self) -> None:
        if self.bus is not None:
            status = self.session_status()
            self.bus.publish(status)

    async def _disconnect_all_brokers(self) -> None:
        for name in list(self.adapters):
            adapter = self.adapters.pop(name)
            for step in (adapter.feed.stop, adapter.broker.disconnect):
                try:
                    await asyncio.wait_for(step(), 10)
                except Exception:
                    log.exception("error while disconnecting %s", name)

    # ---- tasks and executors --------------------------------------------------------------------
    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Start a task the engine owns: cancelled and awaited on stop; a crash is logged, not lost."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("engine task %s crashed", task.get_name(), exc_info=exc)
            if self.bus is not None:
                from engine.bus import Alert

                self.bus.publish(Alert(level="error", source=task.get_name(), message=f"{type(exc).__name__}: {exc}"))

    @property
    def thread_pool(self) -> Executor:
        if self._thread_pool is None:
            self._thread_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="optiondesk")
        return self._thread_pool

    @property
    def process_pool(self) -> Executor:
        """CPU-bound work (calibrations, surface fits over many expiries, backtests)."""
        if self._process_pool is None:
            from engine.process_pools import new_process_pool

            self._process_pool = new_process_pool(self.config.process_workers, background=True)
        return self._process_pool

    async def run_cpu(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the engine's worker processes (CPU-bound analytics off the loop and off
        its GIL). Submitted from a thread: the first submit spawns the workers, tens of milliseconds the
        loop must not wait for."""
        if not self.running:  # never spawn a fresh pool that stop() will not reap
            raise RuntimeError("the engine is not running")
        pool = self.process_pool
        future = await asyncio.to_thread(pool.submit, fn, *args)
        return await asyncio.wrap_future(future)

    # ---- clock ----------------------------------------------------------------------------------
    def now(self) -> Any:
        return self.clock.now()

    async def _clock_loop(self) -> None:
        while True:
            assert self.bus is not None
            market_open = False
            feed_now = self.feed.now() if self.feed is not None else None
            is_open = getattr(self.feed, "market_open", None)
            if callable(is_open):
                with contextlib.suppress(Exception):
                    market_open = bool(is_open())
            self.bus.publish(ClockTicked(now=feed_now or self.clock.now(), market_open=market_open))
            self._publish_session()
            await asyncio.sleep(self.config.clock_interval_s)


def _changed_keys(old: Any, new: Any) -> set[str]:
    """Dotted keys whose values differ between two settings models (mappings compared key by key,
    lists as a whole: a rule list is one setting)."""
    changed: set[str] = set()

    def walk(a: Any, b: Any, prefix: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in set(a) | set(b):
                walk(a.get(k), b.get(k), f"{prefix}.{k}" if prefix else str(k))
        elif a != b:
            changed.add(prefix)

    walk(old.model_dump(mode="json"), new.model_dump(mode="json"), "")
    return changed
