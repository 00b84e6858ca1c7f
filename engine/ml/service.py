"""Training and evaluation as engine jobs, and the registry as the Models panel sees it.

The GUI never trains: it sends :class:`TrainModel` or :class:`EvaluateModel` on the bus; this service runs
:func:`engine.ml.jobs.train_job` / :func:`~engine.ml.jobs.evaluate_job` through the engine's ``run_cpu``
(its worker processes, docs/architecture.md "One loop"), publishes :class:`MLJobProgressed` (stage and
elapsed seconds, once a second — a worker process reports no fraction) and :class:`MLJobFinished`. One job
runs at a time: on a 2-core box a second walk-forward would only slow both. :meth:`MLService.models` is the
registry with each model's validation metrics and the strategies whose ``ml.model`` names it.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, ClassVar

from engine.bus.events import MLJobFinished, MLJobProgressed
from engine.bus.messages import Command
from engine.history.stored import StoredHistorySource
from engine.ml.data import SESSIONS_PER_YEAR
from engine.ml.ensemble_tracker import EnsembleTrackerService
from engine.ml.insight import ExplainModel, ModelInsightReady
from engine.ml.regime_live import StatisticalRegimeService


@dataclass(frozen=True, slots=True, kw_only=True)
class TrainModel(Command):
    """Validate and register a model of ``strategy``'s candidates on ``symbol`` (docs/ml.md)."""

    symbol: str = "SPY"
    model: str = "xgboost"
    years: float = 5.0
    permutations: int = 10
    strategy: str = "iv_rank_put_spread"
    name: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EvaluateModel(Command):
    """Score registered model ``name`` out of sample (:func:`engine.ml.jobs.evaluate_job`)."""

    name: str


class MLJobError(RuntimeError):
    """The service refused a job (one is already running, the engine is stopping)."""


@dataclass
class MLJob:
    job_id: str
    kind: str
    name: str
    stage: str = "queued"
    started: float = field(default_factory=time.monotonic)
    summary: dict[str, Any] | None = None
    error: str = ""


@dataclass(frozen=True)
class ModelRow:
    """One registered model version as the Models panel lists it."""

    name: str
    version: int
    kind: str
    symbol: str
    training_window: tuple[str, str] | None
    metrics: dict[str, Any]
    used_by: tuple[str, ...]
    created_at: str = ""
    calibration: str = ""

    SUMMARY_KEYS: ClassVar[tuple[str, ...]] = ("auc", "auc_ci", "brier", "brier_base_rate", "log_loss", "ece",
                                               "permutation_auc", "deflated_sharpe", "verdict")


def strategies_using(entries: Any, model: str) -> tuple[str, ...]:
    """Ids of the configured strategies whose ML filter names ``model`` (``ml.model`` flat or nested)."""
    out = []
    for e in entries or ():
        params = dict(getattr(e, "params", {}) or {})
        ml = params.get("ml")
        nested = ml if isinstance(ml, dict) else {}
        if params.get("ml.model") == model or nested.get("model") == model:
            out.append(e.id or e.name)
    return tuple(out)


class MLService:
    """See the module docstring. ``run_cpu`` is the engine's ``Engine.run_cpu``; ``history_source()`` gives
    the source and day to train on, ``history_source(independent=True)`` one to evaluate on that the model
    never saw (the simulated market: the next seed's path);
    ``strategies`` the configured strategy entries (for "used by")."""

    def __init__(self, bus: Any, run_cpu: Callable[..., Awaitable[Any]], *, models_dir: Path,
                 history_source: Callable[..., tuple[Any, date]], seed: int = 7,
                 strategies: Callable[[], Any] = lambda: (), cache_dir: Path | None = None,
                 clock: Any = None) -> None:
        self.bus = bus
        self._run_cpu = run_cpu
        self.models_dir = Path(models_dir)
        self._source = history_source
        self.seed = seed
        self._strategies = strategies
        self.cache_dir = cache_dir
        self.clock = clock
        self.jobs: dict[str, MLJob] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self.last_evaluation: dict[str, dict[str, Any]] = {}
        #: each model's newest insight (engine.ml.insight: importance, today's candidate, drift), by name
        self.insights: dict[str, dict[str, Any]] = {}
        self._explaining: set[str] = set()
        self._registered = False
        #: the pricing ensemble's tracker (engine.ml.ensemble_tracker), when composed by the engine
        self.ensemble: EnsembleTrackerService | None = None
        #: the live Gaussian-mixture regime (engine.ml.regime_live), when composed by the engine
        self.regime: StatisticalRegimeService | None = None

    def start(self) -> None:
        self.bus.register(TrainModel, self._train)
        self.bus.register(EvaluateModel, self._evaluate)
        self.bus.register(ExplainModel, self._explain)
        self._registered = True
        if self.ensemble is not None:
            self.ensemble.start()
        if self.regime is not None:
            self.regime.start()

    async def stop(self, timeout: float = 5.0) -> None:
        """Cancel the job watchers and wait for them (bounded); a job already in a worker process ends with
        the engine's pool, which its owner shuts down."""
        if self._registered:  # the commands stop being answered first
            self.bus.unregister(TrainModel)
            self.bus.unregister(EvaluateModel)
            self.bus.unregister(ExplainModel)
            self._registered = False
        if self.ensemble is not None:
            await self.ensemble.stop(timeout)
        if self.regime is not None:
            await self.regime.stop(timeout)
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    # ---- what the panel reads -----------------------------------------------------------------------
    def models(self) -> list[ModelRow]:
        from engine.ml.registry import ModelRegistry

        entries = self._strategies()
        rows = []
        for rec in ModelRegistry(self.models_dir).list():
            m = rec.meta
            metrics = m.get("metrics") or {}
            window = m.get("training_window")
            rows.append(ModelRow(rec.name, rec.version, str(m.get("kind", "")), str(m.get("symbol", "")),
                                 tuple(window) if window else None, dict(metrics), strategies_using(entries, rec.name),
                                 str(m.get("created_at", "")), str(m.get("calibration", ""))))
        return rows

    def ensemble_weights(self, members: tuple[str, ...]) -> dict[str, float] | None:
        """The pricing ensemble's weights in the current regime (None without a tracker: equal weights)."""
        if self.ensemble is None:
            return None
        return self.ensemble.tracker.weights(self.ensemble.regime(), members)

    def running(self) -> MLJob | None:
        return next((j for j in self.jobs.values() if j.stage in ("queued", "running")), None)

    # ---- jobs -----------------------------------------------------------------------------------------
    def _new_job(self, kind: str, name: str) -> MLJob:
        busy = self.running()
        if busy is not None:
            raise MLJobError(f"{busy.kind} of {busy.name} is still running")
        job = MLJob(f"ml-{next(self._ids)}", kind, name)
        self.jobs[job.job_id] = job
        self.bus.publish(MLJobProgressed(job_id=job.job_id, kind=kind, name=name, stage="queued"))
        return job

    async def _train(self, cmd: TrainModel) -> str:
        from engine.ml.jobs import TrainRequest, train_job
        from engine.ml.train import TrainConfig

        source, day = self._source()
        cfg = TrainConfig(model=cmd.model, n_permutations=cmd.permutations, seed=self.seed)
        name = cmd.name or f"{cmd.strategy}-{cmd.symbol}"
        job = self._new_job("train", name)
        created = self.clock.now().isoformat() if self.clock is not None else ""
        req = TrainRequest(source=source, symbol=cmd.symbol, before=day, years=cmd.years, config=asdict(cfg),
                           strategy=cmd.strategy, name=name, models_dir=self.models_dir, cache_dir=self.cache_dir,
                           created_at=created)
        self._spawn(job, train_job, req)
        return job.job_id

    async def _evaluate(self, cmd: EvaluateModel) -> str:
        from engine.ml.jobs import EvaluateRequest, evaluate_job
        from engine.ml.registry import ModelRegistry

        rec = ModelRegistry(self.models_dir).record(cmd.name)
        source, day = self._source(independent=True)
        window = rec.meta.get("training_window")
        years = 5.0
        if window and isinstance(source, StoredHistorySource):
            # one real path: only the days after the training window are out of sample (too few of them
            # and the job finishes with the pipeline's "too few days" error)
            years = max(1.0 / SESSIONS_PER_YEAR, (day - date.fromisoformat(window[1])).days / 365.25)
        elif window:  # as long a history as the model was trained on
            span = (date.fromisoformat(window[1]) - date.fromisoformat(window[0])).days / 365.25
            years = max(1.0, min(30.0, span + 0.5))
        job = self._new_job("evaluate", cmd.name)
        req = EvaluateRequest(models_dir=self.models_dir, name=cmd.name, source=source,
                              symbol=str(rec.meta.get("symbol") or ""), before=day, years=years,
                              seed=self.seed, cache_dir=self.cache_dir)
        self._spawn(job, evaluate_job, req)
        return job.job_id

    async def _explain(self, cmd: ExplainModel) -> bool:
        """Start the insight of ``cmd.name`` in a worker process (False: one is already being computed); the
        answer comes back as :class:`ModelInsightReady`. Not a job: it is seconds, and runs beside training."""
        from engine.ml.insight import InsightRequest, insight_job
        from engine.ml.registry import ModelRegistry

        if cmd.name in self._explaining:
            return False
        rec = ModelRegistry(self.models_dir).record(cmd.name)
        source, day = self._source()
        window = rec.meta.get("training_window")
        years = 5.0
        if window:  # the training window and what came after it, up to the day the service trains before
            span = (day - date.fromisoformat(window[0])).days / 365.25
            years = max(1.0, min(30.0, span + 0.1))
        req = InsightRequest(models_dir=self.models_dir, name=cmd.name, source=source,
                             symbol=str(rec.meta.get("symbol") or ""), before=day, years=years, seed=self.seed,
                             cache_dir=self.cache_dir)
        self._explaining.add(cmd.name)

        async def run() -> None:
            try:
                insight = await self._run_cpu(insight_job, req)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reported to the panel, never raised into the loop
                self.bus.publish(ModelInsightReady(name=cmd.name, version=rec.version,
                                                   error=f"{type(exc).__name__}: {exc}"))
                return
            finally:
                self._explaining.discard(cmd.name)
            self.insights[cmd.name] = insight
            self.bus.publish(ModelInsightReady(name=cmd.name, version=int(insight["version"]), insight=insight))

        task = asyncio.ensure_future(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _spawn(self, job: MLJob, fn: Callable[..., Any], request: Any) -> None:
        task = asyncio.ensure_future(self._run(job, fn, request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job: MLJob, fn: Callable[..., Any], request: Any) -> None:
        job.stage = "running"
        job.started = time.monotonic()
        work = asyncio.ensure_future(self._run_cpu(fn, request))
        try:
            while not work.done():
                self.bus.publish(MLJobProgressed(job_id=job.job_id, kind=job.kind, name=job.name, stage="running",
                                                 elapsed_s=round(time.monotonic() - job.started, 1)))
                await asyncio.wait([work], timeout=1.0)
            report = work.result()
        except asyncio.CancelledError:
            work.cancel()
            job.stage, job.error = "failed", "cancelled"
            raise
        except Exception as exc:  # a job's failure is reported, never raised into the loop
            job.stage, job.error = "failed", f"{type(exc).__name__}: {exc}"
            self.bus.publish(MLJobFinished(job_id=job.job_id, kind=job.kind, name=job.name, error=job.error))
            return
        summary = {k: report.get(k) for k in ("auc", "auc_ci", "brier", "verdict", "samples", "message",
                                              "scope", "seconds")}
        if "registered" in report:
            summary["version"] = report["registered"]["version"]
        if job.kind == "evaluate":
            self.last_evaluation[job.name] = report
        job.stage, job.summary = "finished", summary
        self.bus.publish(MLJobFinished(job_id=job.job_id, kind=job.kind, name=job.name, summary=summary))


def service_for_engine(engine: Any) -> MLService:
    """The ML service over a running :class:`engine.core.Engine`: its bus and worker processes, the app's
    registry (its data folder's ``models/``) and cache folder, the settings' strategies, and the history to
    train on: a broker's stored rows once one is the history service's source, else the simulated market's
    seeded path (the ``ml train`` default) before the engine's simulated start (or today)."""
    from engine.history.service import is_simulated
    from engine.history.simulated import SimulatedHistorySource
    from engine.model.instruments import NEW_YORK
    from engine.paths import cache_dir

    def source(independent: bool = False) -> tuple[Any, date]:
        history = engine.history
        if history is not None and history.source is not None and not is_simulated(history.source.name):
            # a broker's backfilled rows: train, explain and evaluate on them (evaluation keeps to the days
            # after the model's training window, MLService._evaluate)
            return StoredHistorySource(engine.paths.database, origin=history.source.name), history.today()
        settings = engine.settings
        seed = settings.general.seed + (1 if independent else 0)  # evaluation: another path of the same market
        cfg = settings.simulator.model_copy(update={"seed": seed})
        day = date.fromisoformat(cfg.start) if cfg.start else engine.clock.now().astimezone(NEW_YORK).date()
        return SimulatedHistorySource(cfg), day

    svc = MLService(engine.bus, engine.run_cpu, models_dir=engine.paths.models_dir, history_source=source,
                    seed=engine.settings.general.seed, strategies=lambda: list(engine.settings.strategies or ()),
                    cache_dir=cache_dir() / "ml", clock=engine.clock)
    from engine.ml.ensemble_tracker import EnsembleTracker

    def rates(underlying: str) -> tuple[float, float]:
        view = engine.market
        if view is None:
            return float(engine.settings.simulator.risk_free_rate), 0.0
        return float(view.rate), float(view.dividend_yields.get(underlying, 0.0))

    def regime() -> str:
        rs = engine.risk_service
        return (rs.regime if rs is not None else None) or "neutral"

    if engine.store is not None:
        svc.ensemble = EnsembleTrackerService(engine.bus, EnsembleTracker(engine.store), run_cpu=engine.run_cpu,
                                              clock=engine.clock, regime=regime, rate=rates)
    history = engine.history
    if history is not None and history.underlyings:
        symbol = "SPY" if "SPY" in history.underlyings else history.underlyings[0]
        svc.regime = StatisticalRegimeService(engine.bus, run_cpu=engine.run_cpu, closes=history.closes,
                                              today=history.today, symbol=symbol)
    return svc


def attached_service(engine: Any) -> MLService:
    """The running engine's :class:`MLService` (composed and started with the engine, stopped with it)."""
    svc = engine.ml
    if svc is None:
        raise RuntimeError("the engine is not started: it has no ML service")
    return svc
