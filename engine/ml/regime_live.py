"""The statistical market regime, live: a Gaussian mixture refitted daily beside the VIX rules.

The VIX rules (:mod:`engine.risk.regime`) read one day's levels against fixed thresholds; the mixture learns
the states from the benchmark's own history, so the two can disagree and a trader sees both (status bar).

**Features** (per day, from the history service's stored closes): the 20-day trend strength
``z = Σ log returns / (σ_daily · √20)`` — a t-statistic of the 20-day drift, about N(0, 1) when there is no
trend — and the log of the 20-day realized vol (annualised; the log spreads calm days apart and keeps a
crisis's wide vol range from splitting into two components). The existing 3-state detector
(:class:`engine.risk.regime.GaussianMixtureRegime`) uses the *daily* return instead, whose day-to-day noise
hides any drift; a trend only shows over a window.

**States.** A 4-component mixture is fitted (numpy EM, :mod:`engine.analytics.gmm`). Components are named by
mean realized vol (``calm`` < ``volatile`` < ``crisis``), except that the component of the three lower-vol
ones with the largest mean |z| is ``trending`` when that mean |z| is at least :data:`TREND_Z` and the
component holds at least :data:`TREND_WEIGHT` of the days. The 20-day windows overlap, so a driftless walk's z
wanders in long excursions a mixture happily gives a component of its own; the two thresholds are what
separated them on simulated paths (20 seeds each): driftless calm/volatile/crisis paths named a trend 0 times
out of 20, paths with a 200-day drift of half their daily vol 16 times out of 20. When no component clears
them the features do not support a trend state and the plain 3-state fit (same features) is used: the detector never names a state the
data does not show. The fit runs in the engine's worker processes once per New York day and after a history
backfill; the answer comes back as :class:`StatisticalRegimeUpdated`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar

import numpy as np

from engine.bus.messages import Event
from engine.risk.regime import realized_vol

log = logging.getLogger(__name__)

#: minimum mean |trend z| of a component to call it trending (1.5 standard errors of the 20-day drift) ...
TREND_Z = 1.5
#: ... and the minimum share of the days it must hold (shorter excursions of a driftless walk do not count)
TREND_WEIGHT = 0.08
WINDOW = 20
#: days of closes the fit reads (about four years: several vol cycles, few enough for a sub-second fit)
FIT_DAYS = 1000
SEED = 7


@dataclass(frozen=True, slots=True, kw_only=True)
class StatisticalRegimeUpdated(Event):
    """The mixture's regime of ``symbol`` on ``as_of`` (the last close it saw) and each state's probability."""

    severity: ClassVar[str] = "info"
    symbol: str
    regime: str
    probabilities: tuple[tuple[str, float], ...]
    as_of: date | None = None
    trending_supported: bool = False
    days: int = 0
    error: str = ""

    def describe(self) -> str:
        if self.error:
            return f"Statistical regime of {self.symbol} unavailable: {self.error}"
        return f"Statistical regime of {self.symbol}: {self.regime} ({self.probability:.0%})"

    @property
    def probability(self) -> float:
        return dict(self.probabilities).get(self.regime, float("nan"))


def regime_features(closes: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """(trend z, log realized vol) per day once ``window`` returns exist; rows with a NaN dropped (vectorized)."""
    c = np.asarray(closes, float)
    r = np.diff(np.log(c))
    if len(r) < window:
        return np.empty((0, 2))
    csum = np.concatenate([[0.0], np.cumsum(r)])
    drift = csum[window:] - csum[:-window]  # sum of the last `window` returns, one per day from day `window`
    rv = realized_vol(c, window)[window:]  # annualised, aligned with `drift`
    with np.errstate(all="ignore"):
        z = drift / (rv / np.sqrt(252.0) * np.sqrt(window))
        x = np.column_stack([z, np.log(rv)])
    return x[np.all(np.isfinite(x), axis=1)]


@dataclass(frozen=True)
class RegimeFit:
    regime: str
    probabilities: tuple[tuple[str, float], ...]
    trending_supported: bool
    days: int
    labels: tuple[str, ...]  # one per feature row (for tests and the docs' reading)


def fit_regime(closes: np.ndarray, *, seed: int = SEED, trend_z: float = TREND_Z) -> RegimeFit:
    """Fit the mixture on ``closes`` and classify the last day (the worker-process job; see the docstring)."""
    from engine.analytics.gmm import GaussianMixture

    x = regime_features(closes)
    if len(x) < 120:
        raise ValueError(f"need at least 120 days of features to fit the regime mixture, got {len(x)}")
    four = GaussianMixture(4, seed=seed, n_init=2).fit(x)
    weights4, means4, _ = four.fitted()
    by_vol = [int(k) for k in np.argsort(means4[:, 1])]
    lower = by_vol[:3]
    trend_k = max(lower, key=lambda k: abs(means4[k, 0]))
    if abs(means4[trend_k, 0]) >= trend_z and weights4[trend_k] >= TREND_WEIGHT:
        rest = [k for k in by_vol if k != trend_k]
        names = {rest[0]: "calm", rest[1]: "volatile", rest[2]: "crisis", trend_k: "trending"}
        model, supported = four, True
    else:
        model, supported = GaussianMixture(3, seed=seed, n_init=2).fit(x), False
        order = [int(k) for k in np.argsort(model.fitted()[1][:, 1])]
        names = dict(zip(order, ("calm", "volatile", "crisis"), strict=True))
    proba = model.predict_proba(x[-1:])[0]
    per_state: dict[str, float] = {}
    for k, name in names.items():
        per_state[name] = per_state.get(name, 0.0) + float(proba[k])
    labels = tuple(names[int(k)] for k in model.predict(x))
    return RegimeFit(labels[-1], tuple(sorted(per_state.items(), key=lambda kv: -kv[1])), supported, len(x), labels)


class StatisticalRegimeService:
    """Refits the mixture on ``symbol``'s stored closes once per New York day (and after a backfill) in the
    engine's worker processes and publishes :class:`StatisticalRegimeUpdated`. ``closes(symbol, n)``: the
    history service's closes (days, values); ``today()``: the engine clock's New York date."""

    def __init__(self, bus: Any, *, run_cpu: Any, closes: Any, today: Any, symbol: str = "SPY") -> None:
        self.bus = bus
        self._run_cpu = run_cpu
        self._closes = closes
        self._today = today
        self.symbol = symbol
        self.latest: StatisticalRegimeUpdated | None = None
        self._fitted_for: date | None = None
        self._task: asyncio.Task[Any] | None = None
        self._subs: list[Any] = []
        self._stopping = False

    def start(self) -> None:
        from engine.bus.events import ClockTicked
        from engine.history import HistoryBackfilled

        self._subs = [self.bus.subscribe(ClockTicked, self._on_tick, name="StatisticalRegime.tick"),
                      self.bus.subscribe(HistoryBackfilled, self._on_backfill, name="StatisticalRegime.backfill")]
        self.refresh()

    async def stop(self, timeout: float = 5.0) -> None:
        self._stopping = True
        for sub in self._subs:
            sub.cancel()
        self._subs = []
        if self._task is not None and not self._task.done():
            self._task.cancel()
            await asyncio.wait([self._task], timeout=timeout)

    def _on_tick(self, _event: Any) -> None:
        if self._today() != self._fitted_for:
            self.refresh()

    def _on_backfill(self, event: Any) -> None:
        if self.symbol in getattr(event, "underlyings", ()) and not getattr(event, "error", ""):
            self._fitted_for = None
            self.refresh()

    def refresh(self) -> None:
        """Start a refit unless one is running (the newest day's fit follows the running one's tick)."""
        if self._stopping or (self._task is not None and not self._task.done()):
            return
        self._fitted_for = self._today()
        self._task = asyncio.ensure_future(self._refit(self._fitted_for))

    async def _refit(self, day: date) -> None:
        try:
            days, values = self._closes(self.symbol, FIT_DAYS)
            if len(values) < WINDOW + 120:
                return  # no history yet: the backfill's event triggers the first fit
            fit = await self._run_cpu(functools.partial(fit_regime, np.asarray(values, float)))
            ev = StatisticalRegimeUpdated(symbol=self.symbol, regime=fit.regime, probabilities=fit.probabilities,
                                          as_of=days[-1] if days else None,
                                          trending_supported=fit.trending_supported, days=fit.days)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a failed fit is reported; the rules keep working
            log.warning("statistical regime fit of %s failed", self.symbol, exc_info=True)
            ev = StatisticalRegimeUpdated(symbol=self.symbol, regime="", probabilities=(),
                                          error=f"{type(exc).__name__}: {exc}")
        self.latest = ev
        self.bus.publish(ev)
