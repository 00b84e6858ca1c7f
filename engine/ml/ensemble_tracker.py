"""How well each pricing model predicts the market, per regime, and the ensemble weights that follow.

The chain's Edge column compares the mid with the pricing ensemble's fair value
(:func:`engine.analytics.chain_metrics.ensemble_fair_values`). Equal weights treat a model that keeps missing
the market like one that keeps hitting it. The tracker scores every member against what the market did:
each sample's model values for a block of contracts are kept until the first chain at least ``horizon_s``
later, then each member's mean absolute error against those contracts' later mids (per share, matched by OCC
symbol, vectorized) updates that member's error in the regime of the sample by exponential decay
(``error ← (1 − decay)·error + decay·batch``), so the weights follow a market that changes character without
forgetting it after one bad day. A member's weight is proportional to ``1 / error²`` (inverse-variance
weighting), normalised to sum to 1 over the members scored in that regime; a regime with no scores yet gives
equal weights. The later mid also carries the market's move over the horizon, the same for every member: it
adds noise to all errors but does not favour one model.

Errors persist in the store (table ``ensemble_tracker``, migration 80) so weights survive a restart. The
:class:`EnsembleTrackerService` samples each underlying's near-the-money block on its surface updates (at most
once per horizon, pricing off the loop through the engine's worker processes) and the chain table passes
:meth:`EnsembleTracker.weights` of the current regime to the ensemble.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: error floor (dollars per share) so a member that matched a few mids exactly cannot take all the weight
ERROR_FLOOR = 0.005


@dataclass
class _Pending:
    underlying: str
    regime: str
    ts: datetime
    keys: np.ndarray  # OCC symbols
    values: np.ndarray  # (contracts × members) model values per share
    members: tuple[str, ...]


@dataclass(frozen=True)
class MemberScore:
    """One member's decayed mean absolute error (per share) in one regime and how many contracts scored it."""

    regime: str
    model: str
    error: float
    observations: int
    weight: float


class EnsembleTracker:
    """See the module docstring. ``store``: an :class:`engine.store.Store` (None: in memory only)."""

    def __init__(self, store: Any = None, *, decay: float = 0.1, horizon_s: float = 900.0) -> None:
        if not 0.0 < decay <= 1.0:
            raise ValueError(f"decay must be in (0, 1], got {decay}")
        self.store = store
        self.decay = decay
        self.horizon = timedelta(seconds=horizon_s)
        self._errors: dict[str, dict[str, tuple[float, int]]] = {}
        self._pending: list[_Pending] = []
        self._load()

    # ---- persistence -----------------------------------------------------------------------------
    def _load(self) -> None:
        if self.store is None:
            return
        for row in self.store.query("SELECT regime, model, error, observations FROM ensemble_tracker"):
            self._errors.setdefault(row["regime"], {})[row["model"]] = (float(row["error"]), int(row["observations"]))

    def _save(self, regime: str, ts: datetime) -> None:
        if self.store is None:
            return
        with self.store.transaction() as conn:
            for model, (err, n) in self._errors.get(regime, {}).items():
                conn.execute("INSERT INTO ensemble_tracker(regime, model, error, observations, updated_at) "
                             "VALUES (?, ?, ?, ?, ?) ON CONFLICT(regime, model) DO UPDATE SET "
                             "error=excluded.error, observations=excluded.observations, "
                             "updated_at=excluded.updated_at", (regime, model, err, n, ts.isoformat()))

    # ---- scoring ---------------------------------------------------------------------------------
    def record(self, underlying: str, regime: str, ts: datetime, keys: Iterable[str], values: np.ndarray,
               members: Iterable[str]) -> None:
        """Keep a sample of model values (``values``: contracts × members) until a chain ``horizon`` later."""
        k = np.asarray(list(keys), dtype=object).astype(str)
        v = np.asarray(values, dtype=float)
        if v.ndim != 2 or v.shape[0] != len(k):
            raise ValueError(f"values must be (contracts × members), got {v.shape} for {len(k)} contracts")
        self._pending.append(_Pending(underlying, regime, ts, k, v, tuple(members)))

    def pending(self, underlying: str | None = None) -> int:
        return sum(1 for p in self._pending if underlying is None or p.underlying == underlying)

    def score(self, underlying: str, ts: datetime, keys: Iterable[str], mids: np.ndarray) -> dict[str, float]:
        """Score the samples of ``underlying`` taken at least ``horizon`` before ``ts`` against these mids
        (contracts missing from this chain or without a mid are skipped); returns each member's batch error
        of the last sample scored (empty when none was due)."""
        k = np.asarray(list(keys), dtype=object).astype(str)
        m = np.asarray(mids, dtype=float)
        due = [p for p in self._pending if p.underlying == underlying and ts - p.ts >= self.horizon]
        batch: dict[str, float] = {}
        for p in due:
            self._pending.remove(p)
            _, i_pred, i_now = np.intersect1d(p.keys, k, assume_unique=False, return_indices=True)
            if len(i_pred) == 0:
                continue
            later = m[i_now]
            err = np.abs(p.values[i_pred] - later[:, None])  # contracts × members
            ok = np.isfinite(err)
            counts = ok.sum(axis=0)
            with np.errstate(all="ignore"):
                mae = np.where(counts > 0, np.where(ok, err, 0.0).sum(axis=0) / np.maximum(counts, 1), np.nan)
            batch = {}
            regime = self._errors.setdefault(p.regime, {})
            for j, name in enumerate(p.members):
                if counts[j] == 0:
                    continue
                e = float(mae[j])
                prev = regime.get(name)
                new = e if prev is None else (1.0 - self.decay) * prev[0] + self.decay * e
                regime[name] = (new, (prev[1] if prev else 0) + int(counts[j]))
                batch[name] = e
            self._save(p.regime, ts)
        return batch

    # ---- what the ensemble and the panel read ----------------------------------------------------
    def weights(self, regime: str | None, members: Iterable[str] | None = None) -> dict[str, float]:
        """Weights (sum 1) of the members scored in ``regime`` ∝ 1/error²; members named in ``members`` but
        not scored yet get the mean weight of the scored ones (or all equal when none is scored)."""
        scored = self._errors.get(regime or "", {})
        names = list(members) if members is not None else list(scored)
        if not names:
            return {}
        inv = {n: 1.0 / max(scored[n][0], ERROR_FLOOR) ** 2 for n in names if n in scored
               and math.isfinite(scored[n][0])}
        fill = (sum(inv.values()) / len(inv)) if inv else 1.0
        raw = {n: inv.get(n, fill) for n in names}
        total = sum(raw.values())
        return {n: v / total for n, v in raw.items()}

    def regimes(self) -> list[str]:
        return sorted(self._errors)

    def table(self) -> list[MemberScore]:
        """Every (regime, member) error with its weight in that regime (the Models panel's table)."""
        out = []
        for regime in self.regimes():
            w = self.weights(regime)
            for model, (err, n) in sorted(self._errors[regime].items()):
                out.append(MemberScore(regime, model, err, n, w.get(model, float("nan"))))
        return out


# ---- the live sampler --------------------------------------------------------------------------------
#: contracts per sample: the nearest expiries at least a week out, strikes within ±12% of spot
SAMPLE_EXPIRIES = 2
SAMPLE_MAX_CONTRACTS = 48
SAMPLE_MONEYNESS = 0.12


def sample_rows(chain: Any, now: datetime) -> np.ndarray:
    """The near-the-money rows of the nearest expiries a week or more out, quoted on both sides (vectorized):
    where the models are compared on prices that matter and the mids are tight enough to score against."""
    years = np.asarray(chain.time_to_expiry(now), dtype=float)
    bid, ask = np.asarray(chain.bid, float), np.asarray(chain.ask, float)
    with np.errstate(invalid="ignore"):
        ok = (years >= 7 / 365) & np.isfinite(bid) & np.isfinite(ask) & (bid > 0) & (ask >= bid)
        ok &= np.abs(np.asarray(chain.strike, float) / float(chain.spot) - 1.0) <= SAMPLE_MONEYNESS
    if not ok.any():
        return np.array([], dtype=int)
    expiries = np.unique(years[ok])[:SAMPLE_EXPIRIES]
    rows = np.flatnonzero(ok & np.isin(years, expiries))
    if len(rows) > SAMPLE_MAX_CONTRACTS:  # closest to the money first
        dist = np.abs(np.log(chain.strike[rows] / float(chain.spot)))
        rows = np.sort(rows[np.argsort(dist, kind="stable")[:SAMPLE_MAX_CONTRACTS]])
    return rows


def chain_mids(chain: Any) -> np.ndarray:
    bid, ask = np.asarray(chain.bid, float), np.asarray(chain.ask, float)
    with np.errstate(invalid="ignore"):
        good = np.isfinite(bid) & np.isfinite(ask) & (bid >= 0) & (ask >= bid) & (ask > 0)
        return np.where(good, 0.5 * (bid + ask), np.nan)


class EnsembleTrackerService:
    """Feeds the tracker from the engine: on each ``SurfaceUpdated`` it scores the due samples against the
    newest chain's mids, and at most once per horizon per underlying prices a new sample off the loop
    (``run_cpu``: the engine's worker processes). ``regime()`` is the rule-based market regime."""

    def __init__(self, bus: Any, tracker: EnsembleTracker, *, run_cpu: Callable[..., Awaitable[Any]],
                 clock: Any, regime: Callable[[], str], rate: Callable[[str], tuple[float, float]]) -> None:
        self.bus = bus
        self.tracker = tracker
        self._run_cpu = run_cpu
        self.clock = clock
        self.regime = regime
        self._rate = rate
        self._chains: dict[str, Any] = {}
        self._last: dict[str, datetime] = {}
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._subs: list[Any] = []

    def start(self) -> None:
        from engine.bus.events import ChainUpdated
        from engine.surface.service import SurfaceUpdated

        self._subs = [self.bus.subscribe(ChainUpdated, self._on_chain, name="EnsembleTracker.chain"),
                      self.bus.subscribe(SurfaceUpdated, self._on_surface, name="EnsembleTracker.surface")]

    async def stop(self, timeout: float = 5.0) -> None:
        for sub in self._subs:
            sub.cancel()
        self._subs = []
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    def _on_chain(self, event: Any) -> None:
        self._chains[event.chain.underlying] = event.chain

    def _on_surface(self, event: Any) -> None:
        chain = self._chains.get(event.underlying)
        if chain is None or not event.fit.ok or event.fit.surface is None or event.fit.surface.empty:
            return
        now = self.clock.now()
        if self.tracker.pending(event.underlying):
            self.tracker.score(event.underlying, now, chain.symbol, chain_mids(chain))
        last = self._last.get(event.underlying)
        if event.underlying in self._busy or (last is not None and now - last < self.tracker.horizon):
            return
        rows = sample_rows(chain, now)
        if len(rows) == 0:
            return
        self._last[event.underlying] = now
        self._busy.add(event.underlying)
        task = asyncio.ensure_future(self._sample(event.underlying, chain.take(rows), event.fit.surface, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sample(self, underlying: str, block: Any, surface: Any, now: datetime) -> None:
        from engine.analytics.chain_metrics import ENSEMBLE_MEMBERS, ensemble_fair_values
        from engine.engine_state import EngineNotRunning

        try:
            r, q = self._rate(underlying)
            job = functools.partial(ensemble_fair_values, block, np.arange(len(block)), surface, now=now, r=r, q=q)
            values = await self._run_cpu(job)
            members = ENSEMBLE_MEMBERS
            self.tracker.record(underlying, self.regime() or "neutral", now, block.symbol,
                                values[:, 2:2 + len(members)], members)
        except asyncio.CancelledError:
            raise
        except (EngineNotRunning, BrokenProcessPool):  # the engine stopped under a late sample: nothing to score
            log.debug("ensemble tracker: sample of %s dropped, the engine is stopping", underlying)
        except Exception:  # a failed sample only skips one score; the chain table reports pricing errors
            log.warning("ensemble tracker: sample of %s failed", underlying, exc_info=True)
        finally:
            self._busy.discard(underlying)
