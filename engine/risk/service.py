"""RiskService: wires the risk engine, kill switch and portfolio analytics to the bus.

Command handlers: ``SetRiskLevel`` (→ ``RiskProfileChanged``, level persisted, breaches reported as an alert),
``TripKillSwitch``, ``ResetKillSwitch``. It also refreshes cached position Greeks once per ``ClockTicked`` and
on every ``PositionChanged``.

Read-only API for the GUI and CLI (all cheap, synchronous, from cached state unless noted):
``profile``, ``limits()``, ``trading_status``, ``greeks()`` (per underlying + total), ``breaches()``,
and the heavier ``scenario_grid(...)`` / ``var(...)`` coroutines, which run the revaluation in a thread so the
loop never blocks.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.bus.commands import ResetKillSwitch, SetRiskLevel, TripKillSwitch
from engine.bus.events import Alert, ClockTicked, PositionChanged, RiskProfileChanged
from engine.risk.engine import RiskEngine
from engine.risk.greeks import Exposure, underlying_of
from engine.risk.history import load_returns
from engine.risk.kill_switch import KV_LEVEL, KV_SNAPSHOT, KillSwitch
from engine.risk.profile import RiskProfile
from engine.risk.regime import RegimeChanged, classify_vix, realized_vol, sizing_regime
from engine.risk.scenarios import ScenarioGrid, book_from_legs, only, scenario_grid
from engine.risk.sizing import SizingResult, size_by_kelly, size_by_max_risk
from engine.risk.state import TradingStatus
from engine.risk.var import (
    VarResult,
    book_from_positions,
    covariance,
    delta_gamma_var,
    historical_var,
    monte_carlo_var,
)

if TYPE_CHECKING:
    from engine.bus import Bus
    from engine.model import Order

log = logging.getLogger(__name__)


class RiskService:
    def __init__(self, bus: Bus, risk: RiskEngine, kill_switch: KillSwitch) -> None:
        self.bus = bus
        self.risk = risk
        self.kill_switch = kill_switch
        self._subs: list[Any] = []
        self._registered: list[type] = []
        level = kill_switch.store.kv.get(KV_LEVEL)
        if isinstance(level, int | float) and 0 <= level <= 100:
            risk.set_level(float(level))
        #: current market regime (rules or Gaussian mixture label) feeding the sizing multipliers
        self.regime: str | None = None
        self.snapshot_interval_s = 5.0
        self._prime_task: asyncio.Task[None] | None = None
        self._last_snapshot = -1e18
        #: annualised vol by underlying for VaR (settings default until history is available)
        self.vols: dict[str, float] = {}
        self.correlations: tuple[tuple[str, ...], np.ndarray] | None = None

    def register(self) -> None:
        for cmd, fn in ((SetRiskLevel, self._cmd_level), (TripKillSwitch, self._cmd_trip),
                        (ResetKillSwitch, self._cmd_reset)):
            self.bus.register(cmd, fn)
            self._registered.append(cmd)
        self._subs = [
            self.bus.subscribe(ClockTicked, self._on_tick, name="risk:refresh-clock"),
            self.bus.subscribe(PositionChanged, lambda _ev: self.risk.refresh(), name="risk:refresh-position"),
        ]

    def _on_tick(self, _ev: ClockTicked) -> None:
        """Once per clock tick: imply chain vols and Greeks in a worker thread (never on the loop), then refresh
        the cached position Greeks, and every ``snapshot_interval_s`` write Greeks + delta-gamma VaR to the
        store (``optiondesk risk`` reads it)."""
        if self._prime_task is None or self._prime_task.done():
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # a tick published off the loop (a worker thread): the next on-loop tick primes
                return
            self._prime_task = loop.create_task(self._prime(), name="risk:prime")

    async def _prime(self) -> None:
        # only the underlyings the book holds: pricing every streamed chain each second (tens of
        # thousands of options on a wide listing) would keep a thread on the GIL the GUI needs; an order
        # in another underlying gets its legs' Greeks computed at the check
        held = set(self.positions_by_underlying())
        if held:
            await asyncio.to_thread(self.risk.market.prime_ivs, self.risk.now(), held)
        self.risk.refresh()
        nowm = time.monotonic()
        if nowm - self._last_snapshot >= self.snapshot_interval_s:
            self._last_snapshot = nowm
            try:
                self.update_regime()
                self.write_snapshot()
            except Exception:  # a periodic snapshot must not break the clock tick that drives it
                log.exception("could not write the risk snapshot")

    def write_snapshot(self) -> dict[str, Any]:
        """Greeks, delta-gamma VaR, limits and trading state as JSON in the store (key ``risk.snapshot``)."""
        book, _ = self._book()
        var = None
        if len(book):
            cfg = self.risk.config
            var = delta_gamma_var(book, self.covariance_for(book.underlyings), cfg.var_confidence,
                                  cfg.var_horizon_days).to_dict()
        snap = {"as_of": self._now().isoformat(), "greeks": self.greeks(), "var": var, "regime": self.regime,
                "state": self.kill_switch.state.value, "level": self.risk.profile.level,
                "missing": list(book.missing)}
        self.kill_switch.store.kv.set(KV_SNAPSHOT, snap)
        return snap

    async def start(self) -> None:
        try:
            self.calibrate_from_history()
        except Exception:  # start without calibrated vols/betas rather than not start: the defaults are safe
            log.exception("could not calibrate vols/betas from the stored history")
        self.kill_switch.watch(self.risk)
        await self.kill_switch.start()

    async def stop(self) -> None:
        for s in self._subs:
            s.cancel()
        self._subs.clear()
        if self._prime_task is not None:
            self._prime_task.cancel()
            await asyncio.gather(self._prime_task, return_exceptions=True)
        for cmd in self._registered:
            self.bus.unregister(cmd)
        self._registered.clear()
        await self.kill_switch.stop()

    # ---- commands -------------------------------------------------------------------------------
    async def _cmd_level(self, cmd: SetRiskLevel) -> RiskProfile:
        profile = self.risk.set_level(cmd.level)  # ValueError (to the sender) outside 0..100
        store = self.kill_switch.store
        store.kv.set(KV_LEVEL, profile.level)
        store.audit.record("user", "risk_level", {"level": profile.level})
        self.bus.publish(RiskProfileChanged(level=profile.level, profile=profile))
        breaches = self.risk.breaches()
        if breaches:
            text = "; ".join(f"{b['scope']} {b['check']} {b['value']:,.2f} > {b['limit']:,.2f}" for b in breaches)
            self.bus.publish(Alert(level="warning", source="risk", message=(
                f"existing exposure already exceeds the new limits (positions are not closed; new orders that "
                f"add to it are denied): {text}")))
        return profile

    async def _cmd_trip(self, cmd: TripKillSwitch) -> int:
        return await self.kill_switch.trip(cmd.reason, by=cmd.by, flatten=cmd.flatten)

    async def _cmd_reset(self, cmd: ResetKillSwitch) -> TradingStatus:
        return await self.kill_switch.reset(by=cmd.by, confirmed=cmd.confirmed)

    def set_regime(self, regime: str, source: str = "rules") -> None:
        """Record a regime change (logged; an alert when it turns to high volatility / crisis)."""
        if regime == self.regime:
            return
        previous, self.regime = self.regime, regime
        log.info("regime %s -> %s (%s)", previous, regime, source)
        self.bus.publish(RegimeChanged(regime=regime, previous=previous or "", source=source))
        if sizing_regime(regime) == "high_vol":
            self.bus.publish(Alert(level="warning", source="regime",
                                   message=f"market regime turned {regime}: position sizes shrink "
                                           f"(×{self.risk.profile.regime_multiplier('high_vol'):.2f})"))

    def update_regime(self, vix_symbol: str = "VIX", benchmark: str | None = None) -> str:
        """Rule-based regime from the live VIX level, its 252-day rank and the benchmark's 20-day realized vol
        (daily closes from the store). Missing inputs give ``neutral``, never a guess."""
        bench = benchmark or self.risk.config.beta_benchmark
        store = self.kill_switch.store
        vix = self.risk.market.spot(vix_symbol)
        vix_hist = [float(r["close"]) for r in store.query(
            "SELECT close FROM iv_history WHERE underlying=? AND close IS NOT NULL ORDER BY day DESC LIMIT 252",
            (vix_symbol,))][::-1]
        rank = math.nan
        if len(vix_hist) >= 20 and math.isfinite(vix):
            lo, hi = min([*vix_hist, vix]), max([*vix_hist, vix])
            rank = (vix - lo) / (hi - lo) if hi > lo else 0.5
        closes = [float(r["close"]) for r in store.query(
            "SELECT close FROM iv_history WHERE underlying=? AND close IS NOT NULL ORDER BY day DESC LIMIT 21",
            (bench,))][::-1]
        hv = float(realized_vol(np.array(closes))[-1]) if len(closes) == 21 else math.nan
        regime = classify_vix(vix, rank, hv / (vix / 100.0) if math.isfinite(vix) and vix > 0 else math.nan)
        self.set_regime(regime, source="rules")
        return regime

    def size(self, max_loss_per_contract: float, *, p_win: float | None = None,
             win_per_contract: float | None = None) -> SizingResult:
        """Contracts for a trade at the current profile, account and regime: max-risk sizing, or fractional
        Kelly when a win probability and win amount are given. The result carries its reasoning."""
        nl = self.risk.portfolio.net_liquidation
        regime = sizing_regime(self.regime)
        if p_win is not None and win_per_contract is not None:
            return size_by_kelly(nl, p_win, win_per_contract, max_loss_per_contract, self.risk.profile, regime)
        return size_by_max_risk(nl, max_loss_per_contract, self.risk.profile, regime)

    # ---- read-only API --------------------------------------------------------------------------
    @property
    def profile(self) -> RiskProfile:
        return self.risk.profile

    @property
    def trading_status(self) -> TradingStatus:
        return self.kill_switch.status

    def limits(self) -> dict[str, Any]:
        """Current profile, the limits in dollars for the account, and the headroom under each."""
        nl = self.risk.portfolio.net_liquidation
        return {"level": self.risk.profile.level, "profile": self.risk.profile.to_dict(),
                "dollars": self.risk.profile.limits_in_dollars(nl) if nl == nl else {},
                "headroom": self.risk.headroom()}

    def greeks(self) -> dict[str, Any]:
        """Portfolio Greeks: ``by_underlying`` and ``total`` (positions), ``working`` (open orders)."""
        by = self.risk.position_exposure_by_underlying()
        return {"by_underlying": {k: v.to_dict() for k, v in by.items()},
                "total": self.risk.position_exposure.to_dict(),
                "working": self.risk.working_exposure.to_dict(),
                "beta_weighted_delta": self.risk.position_exposure.beta_delta}

    def exposure(self) -> Exposure:
        return self.risk.position_exposure

    def breaches(self) -> list[dict[str, Any]]:
        return self.risk.breaches()

    def _now(self) -> datetime:
        return self.risk.now()

    def _book(self, underlying: str | None = None, order: Order | None = None) -> tuple[Any, str]:
        now = self._now()
        if order is not None:
            units = [leg.signed_ratio * order.remaining_quantity for leg in order.legs]
            return book_from_legs([leg.instrument for leg in order.legs], units, self.risk.market, now), \
                f"order {order.order_id}"
        book = book_from_positions(list(self.risk.portfolio.positions.values()), self.risk.market, now)
        if underlying is not None:
            return only(book, underlying), underlying
        return book, "portfolio"

    async def scenario_grid(self, *, underlying: str | None = None, order: Order | None = None,
                            spot_moves: Sequence[float] | None = None, vol_shifts: Sequence[float] | None = None,
                            days: Sequence[float] | None = None) -> ScenarioGrid:
        """P&L grid over spot ±20 % × vol ±10 points × days forward (portfolio, one underlying or an order)."""
        book, scope = self._book(underlying, order)
        kw: dict[str, Any] = {"beta_of": self.risk.beta_of if underlying is None and order is None else None,
                              "scope": scope}
        if spot_moves is not None:
            kw["spot_moves"] = spot_moves
        if vol_shifts is not None:
            kw["vol_shifts"] = vol_shifts
        if days is not None:
            kw["days"] = days
        return await asyncio.to_thread(scenario_grid, book, **kw)

    def covariance_for(self, names: Sequence[str]) -> np.ndarray:
        vols = np.array([self.vols.get(u, self.risk.config.default_underlying_vol) for u in names])
        corr = None
        if self.correlations is not None:
            known, mat = self.correlations
            if all(u in known for u in names):
                idx = [known.index(u) for u in names]
                corr = mat[np.ix_(idx, idx)]
        return covariance(vols, corr)

    def calibrate_from_history(self, underlyings: Sequence[str] | None = None, lookback_days: int = 252) -> int:
        """Vols, correlations and betas from the stored daily closes (``iv_history``); returns the days used.

        Settings betas still win over estimated ones; underlyings without enough history keep the defaults.
        """
        names = list(underlyings or {*self.positions_by_underlying(), self.risk.config.beta_benchmark})
        hist = load_returns(self.kill_switch.store, names, lookback_days)
        if len(hist) >= 20:
            self.vols.update(hist.vols())
            self.correlations = (hist.underlyings, hist.correlation())
            self.risk.estimated_betas.update(hist.betas(self.risk.config.beta_benchmark))
        return len(hist)

    async def var(self, method: str = "delta_gamma", *, confidence: float | None = None,
                  horizon_days: float | None = None, returns: np.ndarray | None = None) -> VarResult:
        """VaR/CVaR of the positions: ``historical`` (``returns`` in book order, else the stored daily closes),
        ``delta_gamma``, ``monte_carlo`` (full revaluation, in a thread)."""
        cfg = self.risk.config
        c = confidence or cfg.var_confidence
        h = horizon_days or cfg.var_horizon_days
        book, _ = self._book()
        if len(book) == 0:
            return VarResult(method, c, h, 0.0, 0.0)
        cov = self.covariance_for(book.underlyings)
        if method == "delta_gamma":
            return delta_gamma_var(book, cov, c, h)
        if method == "monte_carlo":
            return await asyncio.to_thread(monte_carlo_var, book, cov, c, h, cfg.var_mc_paths, cfg.var_seed)
        if method == "historical":
            if returns is None:
                hist = load_returns(self.kill_switch.store, book.underlyings)
                if len(hist) < 20:
                    raise ValueError(f"historical VaR needs at least 20 days of stored closes for "
                                     f"{', '.join(book.underlyings)}; have {len(hist)}")
                returns = hist.returns
            return await asyncio.to_thread(historical_var, book, returns, c, h)
        raise ValueError(f"unknown VaR method {method!r}: use historical, delta_gamma or monte_carlo")

    def positions_by_underlying(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for p in self.risk.portfolio.positions.values():
            out.setdefault(underlying_of(p.instrument), []).append(p.symbol)
        return out
