"""SurfaceService: refits each underlying's surface off the loop on streaming chains; publishes SurfaceUpdated.

- Subscribes to :class:`engine.bus.events.ChainUpdated` with a plain (inline) handler that only keeps
  the newest chain per underlying and wakes that underlying's refit task.
- The refit task sends the newest chain to an executor, at most once per ``refit_interval_s`` (≤ 2 s)
  and never two fits of one underlying at once; chains that arrive during a fit are conflated to
  the newest. A streaming chain therefore gets a new surface every max(interval, fit time).
- Two stages per chain: the fit without the arbitrage repair is published at once; when its checks
  found arbitrage, the repair runs as a second job and a repaired ``SurfaceUpdated`` follows (the
  first one says ``repair_pending``). A fit the checks pass is published once. Each fit's SVI search
  starts from the previous fit of the same underlying (``WarmStart``) when it has the same expiries,
  and its repair takes the previous repaired slices where they stay clean.
- Executor: a one-worker **process** pool by default. The fit and the repair are CPU-bound numpy on
  small arrays: both hold the GIL much of the time, so in a thread they
  compete with the event loop for it (each switch can cost the loop up to the 5 ms switch interval);
  in a process they run on the other core, the loop only pays for pickling (≈1 ms for a 2,000-row
  chain), a crashing fit cannot take the engine down, and fits never queue behind other CPU work.
  ``benchmarks/surface.py`` measures the loop lag under both (on the shared 2-core box the difference
  is within noise). The pool uses ``spawn`` (forking a process that runs Qt/threads is unsafe). A
  thread pool (``executor = "thread"``) or your own ``Executor`` can be used instead.
- IV rank: the store's ``iv_history`` table (days before today) is read once per day per underlying;
  today's constant-maturity ATM IV and spot are upserted at most every ``history_write_interval_s`` and
  on stop (the last write of a day is its close). Realized vol (close-to-close) and IV/RV come from
  those stored closes plus today's spot.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, ClassVar
from zoneinfo import ZoneInfo

import numpy as np

from engine.bus.events import ChainUpdated
from engine.bus.messages import Event
from engine.surface.config import SurfaceConfig
from engine.surface.fit import SurfaceFit, WarmStart, fit_chain, repair_fit
from engine.surface.ivrank import NO_CURRENT, IVHistoryRepository, IVRank, iv_rank
from engine.surface.quotes import RateInput
from engine.surface.realized import close_to_close, iv_rv_ratio
from engine.surface.views import SurfaceGrid, surface_grid

if TYPE_CHECKING:
    from engine.bus import Bus
    from engine.bus.bus import Subscription
    from engine.model.chain import OptionChain
    from engine.store import Store

log = logging.getLogger(__name__)
NEW_YORK = ZoneInfo("America/New_York")


@dataclass(frozen=True, slots=True, kw_only=True)
class SurfaceUpdated(Event):
    """A new surface for ``underlying`` (conflated per underlying: slow subscribers see the newest).

    ``fit`` holds slices, per-row IVs with drop reasons, the term structure and the arbitrage report;
    ``grid`` a ready (T × k) heatmap grid; ``atm_iv`` the constant-maturity ATM IV at
    ``tenor_days``; ``iv_rank`` its rank/percentile against stored history.
    """

    conflate: ClassVar[bool] = True
    severity: ClassVar[str] = "debug"
    underlying: str
    fit: SurfaceFit
    grid: SurfaceGrid
    atm_iv: float
    tenor_days: float
    iv_rank: IVRank
    fit_ms: float
    chain_ts: datetime
    #: annualised close-to-close realized vol over ``SurfaceConfig.realized_vol_window_days`` from the stored
    #: daily closes and today's spot (NaN without enough closes), and ``atm_iv / realized_vol``
    realized_vol: float = float("nan")
    iv_rv_ratio: float = float("nan")
    #: True for the unrepaired fit of a chain whose arbitrage repair is still running: a repaired
    #: ``SurfaceUpdated`` of the same chain follows (``fit.arbitrage`` lists what it will fix)
    repair_pending: bool = False

    def conflation_key(self) -> object:
        return ("surface", self.underlying)

    def describe(self) -> str:
        n = len(self.fit.fitted_slices())
        pending = ", repair pending" if self.repair_pending else ""
        return (f"SurfaceUpdated {self.underlying}: {n} expiries, ATM {self.atm_iv * 100:.1f} %, "
                f"{self.fit_ms:.0f} ms{pending}")


@dataclass(frozen=True, slots=True, kw_only=True)
class SurfaceFitFailed(Event):
    """The refit job itself failed (worker crash or a defect); market-data problems never land here."""

    severity: ClassVar[str] = "warning"
    underlying: str
    error: str

    def describe(self) -> str:
        return f"Surface fit failed for {self.underlying}: {self.error}"


@dataclass(frozen=True, slots=True)
class FitJobResult:
    fit: SurfaceFit
    grid: SurfaceGrid
    atm_iv: float
    elapsed_ms: float


def run_fit_job(chain: OptionChain, rate: RateInput, dividend_yield: RateInput, config: SurfaceConfig,
                tenor_days: float, repair: bool | None = None, warm: WarmStart | None = None) -> FitJobResult:
    """The executor job (module level so a process pool can pickle it); ``repair``, ``warm`` as in ``fit_chain``."""
    t0 = time.perf_counter()
    fit = fit_chain(chain, rate=rate, dividend_yield=dividend_yield, config=config, repair=repair, warm=warm)
    return _job_result(fit, config, tenor_days, t0)


def run_repair_job(fit: SurfaceFit, chain: OptionChain, config: SurfaceConfig, tenor_days: float,
                   warm: WarmStart | None = None) -> FitJobResult:
    """The second executor job: the arbitrage repair of an unrepaired fit (see :func:`repair_fit`; ``warm``
    carries the previous refit's repaired slices)."""
    t0 = time.perf_counter()
    return _job_result(repair_fit(fit, chain, config, warm), config, tenor_days, t0)


def _job_result(fit: SurfaceFit, config: SurfaceConfig, tenor_days: float, t0: float) -> FitJobResult:
    grid = surface_grid(fit, n_T=config.grid_expiries, n_k=config.grid_strikes)
    T = tenor_days / 365.0
    atm = float(fit.surface.implied_vol_k(0.0, T)) if fit.ok else float("nan")
    return FitJobResult(fit, grid, atm, (time.perf_counter() - t0) * 1e3)


def _needs_repair(fit: SurfaceFit, config: SurfaceConfig) -> bool:
    return config.repair_arbitrage and fit.ok and bool(fit.arbitrage.found) and not fit.arbitrage.repairs


#: the worker process's kernel warm-up (module level: it lives as long as the worker)
_worker_warmup: Any = None


def _warm_worker() -> bool:
    """Import the fit stack in a fresh worker so the first real refit does not pay for it, and load the
    compiled pricing kernels there too: a worker is its own process, so the engine's warm-up does not reach
    it. They load on a daemon thread (it dies with the worker when the pool shuts down); refits use the numpy
    path, which gives the same numbers, until they are in."""
    global _worker_warmup
    import engine.pricing.american
    import engine.pricing.black76
    import engine.surface.fit  # noqa: F401
    from engine.pricing._kernels import WarmUp

    if _worker_warmup is None:
        _worker_warmup = WarmUp()
        _worker_warmup.start()
    return True


@dataclass
class _State:
    underlying: str
    pending: OptionChain | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    last_start: float = -1e18
    latest: SurfaceUpdated | None = None
    history_day: date | None = None
    history: np.ndarray = field(default_factory=lambda: np.array([]))
    closes: np.ndarray = field(default_factory=lambda: np.array([]))
    last_history_write: float = -1e18
    unsaved: tuple[date, float, float] | None = None
    fits: int = 0
    warm: WarmStart | None = None  # the last fit before its repair (where the next SVI search starts) + repaired


class SurfaceService:
    """Owns the per-underlying refit tasks. Create and start it on the engine's loop.

    ``rate``: the risk-free curve (a float or a picklable callable of T in years, e.g.
    :class:`engine.surface.quotes.ZeroCurve`). ``dividend_yields``: per-underlying yield used only
    where parity cannot give the carry (default 0). ``store``: for IV history (optional).
    """

    def __init__(
        self,
        bus: Bus,
        *,
        rate: RateInput,
        config: SurfaceConfig | None = None,
        dividend_yields: Mapping[str, RateInput] | None = None,
        store: Store | None = None,
        executor: Executor | None = None,
        history_write_interval_s: float = 300.0,
        today: Callable[[datetime], date] | None = None,
    ) -> None:
        self.bus = bus
        self.config = config or SurfaceConfig()
        self.rate = rate
        self.dividend_yields = dict(dividend_yields or {})
        self.store = store
        self._history = IVHistoryRepository(store) if store is not None else None
        #: the ``iv_history.source`` of recorded days: the engine says "simulated surface" while the simulated
        #: market is the feed, so a broker's history later replaces those days (engine/history/service.py)
        self.recorded_source = "surface"
        self._executor = executor
        self._own_executor = executor is None
        self._history_write_interval_s = history_write_interval_s
        self._today = today or (lambda ts: ts.astimezone(NEW_YORK).date())
        self._states: dict[str, _State] = {}
        self._sub: Subscription | None = None
        self._running = False

    # ---- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._running:
            return
        if self._executor is None:
            if self.config.executor == "process":
                from engine.process_pools import new_process_pool

                self._executor = new_process_pool(1, background=True)
            else:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="surface-fit")
        # warm the worker in the background (imports numpy/scipy/pricing once)
        self._executor.submit(_warm_worker)
        self._sub = self.bus.subscribe(ChainUpdated, self._on_chain, name="SurfaceService.on_chain")
        self._running = True

    async def stop(self) -> None:
        if not self._running:
            return
        self._running = False
        if self._sub is not None:
            self._sub.cancel()
            self._sub = None
        tasks = [s.task for s in self._states.values() if s.task is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for st in self._states.values():
            self._flush_history(st, force=True)
        if self._own_executor and self._executor is not None:
            ex = self._executor
            self._executor = None
            from engine.process_pools import terminate_pool

            await asyncio.get_running_loop().run_in_executor(None, terminate_pool, ex)

    async def __aenter__(self) -> SurfaceService:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- queries ------------------------------------------------------------------------------------
    def latest(self, underlying: str) -> SurfaceUpdated | None:
        """The newest published update for ``underlying`` (None before the first fit)."""
        st = self._states.get(underlying)
        return st.latest if st else None

    def underlyings(self) -> list[str]:
        return sorted(u for u, s in self._states.items() if s.latest is not None)

    def executor_info(self) -> dict[str, Any]:
        """What runs the fits (for diagnostics and the doctor command)."""
        ex = self._executor
        return {"executor": type(ex).__name__ if ex else None, "configured": self.config.executor,
                "owned": self._own_executor}

    def reload_history(self, underlyings: tuple[str, ...] | None = None) -> None:
        """Re-read stored IV history at the next fit (after a backfill wrote days this service cached as missing)."""
        for und, st in self._states.items():
            if underlyings is None or und in underlyings:
                st.history_day = None

    def fit_count(self, underlying: str) -> int:
        st = self._states.get(underlying)
        return st.fits if st else 0

    # ---- streaming ------------------------------------------------------------------------------------
    def _on_chain(self, event: ChainUpdated) -> None:
        """Inline bus handler: keep the newest chain and wake the refit task (no work here)."""
        if not self._running:
            return
        chain = event.chain
        st = self._states.get(chain.underlying)
        if st is None:
            st = self._states[chain.underlying] = _State(chain.underlying)
        st.pending = chain
        if st.task is None or st.task.done():
            st.task = asyncio.get_running_loop().create_task(self._run(st), name=f"surface:{chain.underlying}")
        st.wake.set()

    async def refit(self, chain: OptionChain) -> SurfaceUpdated | None:
        """Fit ``chain`` now (off the loop), publish and return the update (None if the job failed)."""
        st = self._states.get(chain.underlying)
        if st is None:
            st = self._states[chain.underlying] = _State(chain.underlying)
        return await self._fit_and_publish(st, chain)

    async def _run(self, st: _State) -> None:
        loop = asyncio.get_running_loop()
        interval = self.config.refit_interval_s
        while self._running:
            await st.wake.wait()
            st.wake.clear()
            delay = st.last_start + interval - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)  # rate limit: newer chains keep replacing st.pending meanwhile
            chain, st.pending = st.pending, None
            if chain is None:
                continue
            st.last_start = loop.time()
            await self._fit_and_publish(st, chain)
            if st.pending is not None:
                st.wake.set()

    async def _fit_and_publish(self, st: _State, chain: OptionChain) -> SurfaceUpdated | None:
        """Fit without the arbitrage repair and publish at once; if the fit needs a repair, run it as a
        second job and publish the repaired surface too (the first event says ``repair_pending``)."""
        if self._executor is None:
            raise RuntimeError("SurfaceService is not started")
        loop = asyncio.get_running_loop()
        und = chain.underlying
        cfg = self.config
        try:
            res: FitJobResult = await loop.run_in_executor(
                self._executor, run_fit_job, chain, self.rate, self.dividend_yields.get(und, 0.0), cfg,
                cfg.iv_history_tenor_days, False, st.warm,
            )
            previous = st.warm
            st.warm = WarmStart.from_fit(res.fit)
            pending = _needs_repair(res.fit, cfg)
            event = self._publish(st, chain, res, res.elapsed_ms, pending)
            if not pending:
                return event
            first_ms = res.elapsed_ms
            res = await loop.run_in_executor(self._executor, run_repair_job, res.fit, chain, cfg,
                                             cfg.iv_history_tenor_days, previous)
            if st.warm is not None:
                st.warm = st.warm.with_repaired(res.fit)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a crashed worker or a defect: report it, keep streaming
            log.exception("surface refit for %s failed", und)
            self.bus.publish(SurfaceFitFailed(underlying=und, error=f"{type(exc).__name__}: {exc}"))
            return None
        return self._publish(st, chain, res, first_ms + res.elapsed_ms, False)

    def _publish(self, st: _State, chain: OptionChain, res: FitJobResult, fit_ms: float,
                 repair_pending: bool) -> SurfaceUpdated:
        rank = self._rank(st, chain, res.atm_iv)
        rv = self._realized(st, float(chain.spot))
        event = SurfaceUpdated(
            underlying=chain.underlying, fit=res.fit, grid=res.grid, atm_iv=res.atm_iv,
            tenor_days=self.config.iv_history_tenor_days, iv_rank=rank, fit_ms=fit_ms,
            chain_ts=chain.ts, realized_vol=rv, iv_rv_ratio=float(iv_rv_ratio(res.atm_iv, rv)),
            repair_pending=repair_pending,
        )
        st.latest = event  # cache first, then publish
        if not repair_pending:
            st.fits += 1
        self.bus.publish(event)
        return event

    # ---- IV history and rank ----------------------------------------------------------------------------
    def _rank(self, st: _State, chain: OptionChain, atm: float) -> IVRank:
        cfg = self.config
        today = self._today(chain.ts)
        if st.history_day != today:
            self._flush_history(st, force=True)
            st.history_day = today
            if self._history is not None:
                _, iv, close = self._history.series(st.underlying, until=date.fromordinal(today.toordinal() - 1),
                                                    limit=max(cfg.iv_rank_lookback_days, cfg.realized_vol_window_days + 1))
                st.history = iv[-cfg.iv_rank_lookback_days :]
                st.closes = close
            else:
                st.history = np.array([])
                st.closes = np.array([])
        rank = iv_rank(st.history, atm, lookback=cfg.iv_rank_lookback_days, min_history=cfg.iv_rank_min_history_days)
        if rank.status != NO_CURRENT:
            st.unsaved = (today, atm, float(chain.spot))
            self._flush_history(st, force=False)
        return rank

    def _realized(self, st: _State, spot: float) -> float:
        """Close-to-close vol of the last ``realized_vol_window_days`` returns (stored closes + today's spot)."""
        n = self.config.realized_vol_window_days
        closes = st.closes[np.isfinite(st.closes)]
        if np.isfinite(spot) and spot > 0:
            closes = np.append(closes, spot)
        if len(closes) < n + 1:
            return float("nan")
        return float(close_to_close(closes[-(n + 1) :]))

    def _flush_history(self, st: _State, *, force: bool) -> None:
        if self._history is None or st.unsaved is None:
            return
        now = time.monotonic()
        if not force and now - st.last_history_write < self._history_write_interval_s:
            return
        day, atm, close = st.unsaved
        try:
            self._history.record(st.underlying, day, atm, close=close if np.isfinite(close) else None,
                                 source=self.recorded_source)
        except Exception:  # a failed history write (full disk) must not stop the surface stream
            log.exception("could not store ATM IV history for %s", st.underlying)
            return
        st.unsaved = None
        st.last_history_write = now

