"""What every part of the :class:`~engine.core.Engine` shares: its configuration, its components (None until
``start()`` composes them), the tasks and worker pools it owns and stops, and its clock.

Why apart: the engine's construction (:mod:`engine.core`) and its commands (:mod:`engine.engine_commands`)
both work on this state; each reads it from one class instead of from the other."""

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

from engine.bus import Bus, ClockTicked
from engine.clock import Clock, WallClock
from engine.paths import AppPaths
from engine.settings import LoadResult, Settings
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

log = logging.getLogger("engine.core")  # the name its records had before the module was split off
T = TypeVar("T")


class EngineNotRunning(RuntimeError):
    """Work was asked of an engine that is stopping or stopped (a late job is dropped, not an error)."""


class EngineClock:
    """The engine's current clock, whatever feed drives it (components keep this one object)."""

    def __init__(self, engine: EngineState) -> None:
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
    #: wait for :meth:`Engine.start_kernel_warmup` instead of loading the compiled pricing kernels at start: the
    #: window calls it after its first paint (loading numba holds the GIL for about a second, which would
    #: delay that paint); pricing runs on numpy until then, as it does on any start until they are loaded
    defer_kernel_warmup: bool = False

    @classmethod
    def for_directory(cls, base: str | os.PathLike[str], **kw: Any) -> EngineConfig:
        """Everything (db, settings, logs) under one folder: tests and portable installs."""
        return cls(paths=AppPaths.under(Path(base)), **kw)

    def with_(self, **kw: Any) -> EngineConfig:
        return replace(self, **kw)


class EngineState:
    """The engine's state and the services every part of it uses (tasks, pools, clock, session status)."""

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

    # ---- lifecycle state -------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._started

    @property
    def running(self) -> bool:
        """Started and not stopping: new background work may be submitted."""
        return self._started and not self._stopping

    def on_stop(self, stopper: Callable[[], Awaitable[None]]) -> None:
        """Register an async cleanup; run in reverse order on stop()."""
        self._stoppers.append(stopper)

    # ---- tasks and executors ---------------------------------------------------------------------
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
            raise EngineNotRunning("the engine is not running")
        pool = self.process_pool
        future = await asyncio.to_thread(pool.submit, fn, *args)
        return await asyncio.wrap_future(future)

    # ---- clock and session -----------------------------------------------------------------------
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
