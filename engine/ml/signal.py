"""A registered model's calibrated probability for a strategy's entry, on point-in-time features.

The strategy host (live) and the backtester ask the same :class:`MLScorer`: "what does model M say about
entering U now?". The answer (:class:`engine.strategies.base.MLReading`) uses the latest feature row whose
``available_at`` (that session's close) is not after ``now``: during session *t* that is the row of
*t − 1*; nothing of *t*'s close or later can reach a decision made before it. Building a feature frame
takes a few hundred milliseconds, so it is split from reading:

- :meth:`MLScorer.build` computes the frame for one underlying (heavy: the live host runs it in an
  executor, the backtester — already off the loop — inline);
- :meth:`MLScorer.reading` only looks rows up and runs the model (sub-millisecond), and says "not ready"
  instead of computing.

A frame built for day *d* serves decisions on *d* … *d* + ``horizon_days``: live the horizon is 0 (each
session's new close needs a new frame); a backtest builds from one history that already holds its later
days and relies on the features being causal (``point_in_time_violations``), selecting rows by time only.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from engine.ml.data import MarketHistory
from engine.strategies.base import MLReading, market_date

#: a feature row older than this (calendar days before the decision) is stale: the history stopped
MAX_FEATURE_AGE_DAYS = 5


@dataclass(frozen=True)
class _Frame:
    day: date
    valid_through: date
    frame: pd.DataFrame
    available: np.ndarray  # available_at as UTC nanoseconds
    matrix: np.ndarray  # days × FEATURE_NAMES


class MLScorer:
    """Registered models (``models_dir``) scored on per-underlying feature frames (see the module docstring)."""

    def __init__(self, models_dir: Path, *, seed: int = 7, horizon_days: int = 0,
                 history: Callable[[str, date], MarketHistory] | None = None) -> None:
        self.models_dir = Path(models_dir)
        self.seed = seed
        self.horizon_days = horizon_days
        #: where :meth:`ensure` reads history: (underlying, day) → rows at least up to the day before ``day``
        self.history = history
        self._failed: dict[str, tuple[date, str]] = {}
        self._frames: dict[str, _Frame] = {}
        self._models: dict[str, tuple[Any, Any]] = {}
        self._lock = threading.Lock()

    # ---- heavy part: the feature frame ----------------------------------------------------------------
    def ready(self, underlying: str, now: datetime) -> bool:
        """True when a frame serves decisions at ``now`` (no build needed)."""
        f = self._frames.get(underlying)
        d = market_date(now)
        return f is not None and f.day <= d <= f.valid_through

    def build(self, underlying: str, now: datetime, history: MarketHistory) -> None:
        """Compute ``underlying``'s feature frame from ``history`` for decisions from ``now``'s session on.
        Thread-safe (an executor may run it); replaces the previous frame in one assignment."""
        from engine.ml.features import FEATURE_NAMES, build_features

        frame = build_features(history, seed=self.seed)
        d = market_date(now)
        avail = np.array([pd.Timestamp(x).value for x in frame["available_at"]], np.int64)  # UTC ns
        f = _Frame(d, d + timedelta(days=self.horizon_days), frame, avail,
                   frame[list(FEATURE_NAMES)].to_numpy(float))
        with self._lock:
            self._frames[underlying] = f

    def ensure(self, underlying: str, now: datetime) -> str | None:
        """Build inline when needed, from :attr:`history` (for callers already off the event loop: the
        backtester). Returns why it could not, or None. A failure is remembered for its horizon."""
        from engine.ml.data import MLDataError

        d = market_date(now)
        if self.ready(underlying, now):
            return None
        failed = self._failed.get(underlying)
        if failed is not None and failed[0] >= d:
            return failed[1]
        if self.history is None:
            return "no history reader"
        try:
            self.build(underlying, now, self.history(underlying, d + timedelta(days=self.horizon_days + 1)))
        except (MLDataError, ValueError) as exc:
            self._failed[underlying] = (d + timedelta(days=self.horizon_days), str(exc))
            return str(exc)
        return None

    # ---- light part: a reading -------------------------------------------------------------------------
    def _model(self, name: str) -> tuple[Any, Any]:
        from engine.ml.features import FEATURE_NAMES
        from engine.ml.registry import ModelRegistry

        if name not in self._models:  # loaded once per run; a retrained version is picked up at the next start
            self._models[name] = ModelRegistry(self.models_dir).load(name, features=FEATURE_NAMES)
        return self._models[name]

    def feature_row(self, underlying: str, now: datetime) -> tuple[int, date] | None:
        """Index and day of the latest row known at ``now`` (its close at or before ``now``), or None."""
        f = self._frames.get(underlying)
        if f is None:
            return None
        i = int(np.searchsorted(f.available, pd.Timestamp(now).value, side="right")) - 1
        if i < 0:
            return None
        day = f.frame.index[i]
        return i, day if isinstance(day, date) else pd.Timestamp(day).date()

    def reading(self, underlying: str, model: str, now: datetime) -> MLReading:
        """The model's calibrated P(win) for an entry in ``underlying`` at ``now``; NaN with the reason when
        the frame is not built, the row is stale or still warming up, or the model cannot be loaded."""
        from engine.ml.models import MLDependencyError
        from engine.ml.registry import RegistryError

        if not self.ready(underlying, now):
            return MLReading(math.nan, model=model, reason=f"features for {underlying} not computed yet")
        try:
            clf, rec = self._model(model)
        except (RegistryError, MLDependencyError) as exc:
            return MLReading(math.nan, model=model, reason=str(exc))
        if rec.meta.get("symbol") not in (None, underlying):
            return MLReading(math.nan, model=model,
                             reason=f"model {model} was trained on {rec.meta.get('symbol')}, not {underlying}")
        level = rec.meta.get("min_confidence")
        if level is None:
            level = rec.meta.get("positive_rate")
        gate = math.nan if level is None else float(level)
        row = self.feature_row(underlying, now)
        if row is None:
            return MLReading(math.nan, gate, model=model, reason=f"no feature row of {underlying} before {now:%Y-%m-%d}")
        i, day = row
        if (market_date(now) - day).days > MAX_FEATURE_AGE_DAYS:
            return MLReading(math.nan, gate, model=model, feature_day=day.isoformat(),
                             reason=f"features of {underlying} end {day}: stale")
        f = self._frames[underlying]
        if clf.kind == "lstm":
            from engine.ml.lstm import sequences

            length = int(rec.meta.get("sequence_length") or 20)
            x = sequences(f.matrix, np.array([i]), length)
            if not np.isfinite(x[0, -1]).all():
                return MLReading(math.nan, gate, model=model, feature_day=day.isoformat(),
                                 reason=f"features of {underlying} on {day} still warming up")
        else:
            x = f.matrix[i:i + 1]
            if not np.isfinite(x).all():
                return MLReading(math.nan, gate, model=model, feature_day=day.isoformat(),
                                 reason=f"features of {underlying} on {day} still warming up")
        p = float(clf.predict_proba(x)[0])
        verdict = (rec.meta.get("metrics") or {}).get("verdict", "")
        return MLReading(p, gate, model=model, version=rec.version, feature_day=day.isoformat(),
                         reason=f"{model} v{rec.version} P(win) {p:.0%} on features of {day}"
                         + (f" (validation: {verdict})" if verdict else ""))


#: a backtest builds one frame per this many calendar days (features are causal; rows are picked by time)
BACKTEST_HORIZON_DAYS = 365


def default_backtest_scorer() -> MLScorer:
    """The backtester's scorer: the app's registry, and the history ``optiondesk ml train`` trains on by
    default — the simulated market's seeded history path (settings' seed). That path is not the one a
    simulated-chain backtest trades on, so there the filter exercises the plumbing, not an edge; a caller with
    the traded path's daily rows passes its own ``history`` to an :class:`MLScorer` instead."""
    from engine.history.simulated import SimulatedHistorySource
    from engine.ml.data import load_history
    from engine.paths import AppPaths
    from engine.settings.loader import load_settings

    paths = AppPaths.default()
    settings = load_settings(paths.settings_file).settings
    sim = settings.simulator.model_copy(update={"seed": settings.general.seed})

    def history(underlying: str, before: date) -> MarketHistory:
        return load_history(SimulatedHistorySource(sim), underlying, before, 6.0)

    return MLScorer(paths.models_dir, seed=settings.general.seed, horizon_days=BACKTEST_HORIZON_DAYS,
                    history=history)


def backtest_reading(scorer: MLScorer | None, underlying: str, model: str, now: datetime,
                     ) -> tuple[MLScorer, MLReading]:
    """The BacktestContext's answer: (the scorer to keep, the reading); builds frames inline (the backtest
    runs off the loop)."""
    if scorer is None:
        scorer = default_backtest_scorer()
    why = scorer.ensure(underlying, now)
    if why is not None:
        return scorer, MLReading(math.nan, model=model, reason=f"no features for {underlying}: {why}")
    return scorer, scorer.reading(underlying, model, now)




class LiveMLSignals:
    """The strategy host's ``ml_probability``: readings from an :class:`MLScorer` over the history service's
    stored rows. A missing or stale frame is never built on the loop: the day's rows are read (one indexed
    query, milliseconds), the features are built in the loop's executor, and until then the reading says
    "not computed yet" (the filtered strategy skips that snapshot's entry and sees the probability on the next)."""

    def __init__(self, store: Any, clock: Any, *, models_dir: Path | None = None, seed: int = 7) -> None:
        from engine.paths import AppPaths

        self.store = store
        self.clock = clock
        self.scorer = MLScorer(models_dir if models_dir is not None else AppPaths.default().models_dir,
                               seed=seed, horizon_days=0)
        self._pending: dict[str, Any] = {}  # underlying -> the build's future
        self._failed: dict[str, tuple[date, str]] = {}

    def __call__(self, underlying: str, model: str) -> MLReading:
        import asyncio

        from engine.ml.data import MLDataError, history_from_store

        now = self.clock.now()
        d = market_date(now)
        if not self.scorer.ready(underlying, now):
            failed = self._failed.get(underlying)
            if failed is not None and failed[0] == d:
                return MLReading(math.nan, model=model, reason=f"no features for {underlying}: {failed[1]}")
            fut = self._pending.get(underlying)
            if fut is not None and fut.done() and not fut.cancelled() and fut.exception() is not None:
                self._failed[underlying] = (d, str(fut.exception()))
                self._pending.pop(underlying, None)
                return MLReading(math.nan, model=model, reason=f"no features for {underlying}: {fut.exception()}")
            if fut is None or fut.done():
                try:
                    h = history_from_store(self.store, underlying, until=d - timedelta(days=1))
                except MLDataError as exc:
                    self._failed[underlying] = (d, str(exc))
                    return MLReading(math.nan, model=model, reason=f"no features for {underlying}: {exc}")
                loop = asyncio.get_running_loop()
                self._pending[underlying] = loop.run_in_executor(None, self.scorer.build, underlying, now, h)
            return MLReading(math.nan, model=model, reason=f"features for {underlying} are being computed")
        return self.scorer.reading(underlying, model, now)

    async def wait(self) -> None:
        """Await the builds in flight (tests; and a stop that wants them finished)."""
        import asyncio

        pending = [f for f in self._pending.values() if not f.done()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
