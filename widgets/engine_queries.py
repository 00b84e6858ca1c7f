"""Read-only, typed lookups of engine state for the panels and the app (no I/O, no trading logic).

Views change the engine only through bus commands (``widgets.base.send_command``) and read it only
through the facade's typed attributes, mostly via these functions. Every one of them accepts
``engine=None`` (a panel shown on its own, a dialog opened before the engine started) and an engine
whose components are not composed yet, and answers with an empty list, None or the settings default.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime
from typing import TYPE_CHECKING

import numpy as np

from engine.bus.commands import SearchSymbols
from engine.facade_types import SessionFeed
from engine.model import AccountSnapshot, OptionChain, OrderGroup, Position
from engine.settings import Settings

if TYPE_CHECKING:
    from engine.analytics.analysis import BetaEstimate
    from engine.chainstore.service import DataCoverage, RootCoverage
    from engine.core import Engine
    from engine.ml.regime_live import StatisticalRegimeUpdated
    from engine.reports.activity import AccountActivity, MarginLine
    from engine.risk.state import TradingStatus
    from engine.strategies.base import StrategyParams
    from engine.strategies.host import StrategyStatus
    from engine.surface.service import SurfaceUpdated
    from engine.surface.surface import VolSurface


def now(engine: Engine | None) -> datetime:
    """Market time: the feed's (simulated) clock, else the engine clock; wall time (UTC) only without an
    engine (a panel shown on its own)."""
    if engine is not None:
        if engine.feed is not None:
            t = engine.feed.now()
            if t is not None:
                return t
        return engine.clock.now()
    from engine.clock import WallClock

    return WallClock().now()


def settings(engine: Engine | None) -> Settings:
    """The settings the engine runs with (one source: ``ApplySettings`` keeps them current), else defaults."""
    return engine.settings if engine is not None else Settings()


def running(engine: Engine | None) -> bool:
    """Started and not stopping: a view may start background work on the engine's pools."""
    return engine is not None and engine.running


def underlyings(engine: Engine | None) -> list[str]:
    if engine is None or engine.feed is None:
        return []
    return list(engine.feed.underlyings())


def last_chain(engine: Engine | None, underlying: str) -> OptionChain | None:
    if engine is None or engine.feed is None or not underlying:
        return None
    return engine.feed.last_chain(underlying)


def last_price(engine: Engine | None, symbol: str) -> float | None:
    if engine is None or engine.feed is None:
        return None
    p = engine.feed.last_price(symbol)
    return float(p) if p is not None and math.isfinite(p) else None


def feed_state(engine: Engine | None) -> tuple[str, bool] | None:
    """(name, connected) of the current market-data feed; None without one."""
    if engine is None or engine.feed is None:
        return None
    return engine.feed.name, bool(engine.feed.connected)


def broker_symbol_search(engine: Engine | None) -> bool:
    """True when the feed is a connected broker's: its ``SearchSymbols`` answer (the broker's symbol search)
    goes beyond :func:`underlyings`, so the watchlist's "add symbol" asks it as the user types."""
    if engine is None or engine.feed is None or engine.bus is None or engine.feed is engine.simulated_feed:
        return False
    return bool(engine.feed.connected) and engine.bus.has_handler(SearchSymbols)


def market_open(engine: Engine | None) -> bool | None:
    """Whether the feed's exchange session is open (None when the feed does not keep a session)."""
    feed = engine.feed if engine is not None else None
    return bool(feed.market_open()) if isinstance(feed, SessionFeed) else None


def rates(engine: Engine | None, underlying: str) -> tuple[float, float]:
    """(risk-free rate, dividend yield) used by the engine's risk view, else the simulator settings."""
    if engine is not None and engine.market is not None:
        view = engine.market
        return float(view.rate), float(view.dividend_yields.get(underlying, 0.0))
    sim = settings(engine).simulator
    q = next((float(u.dividend_yield or 0.0) for u in sim.universe if u.symbol == underlying), 0.0)
    return float(sim.risk_free_rate), q


def ensemble_weights(engine: Engine | None) -> dict[str, float] | None:
    """The pricing ensemble's weights in the current regime from the engine's ensemble tracker (None: equal)."""
    from engine.analytics.chain_metrics import ENSEMBLE_MEMBERS

    svc = engine.ml if engine is not None else None
    return svc.ensemble_weights(ENSEMBLE_MEMBERS) if svc is not None else None


def market_regimes(engine: Engine | None) -> tuple[str | None, StatisticalRegimeUpdated | None]:
    """(the rule-based VIX regime, the newest ``StatisticalRegimeUpdated`` of the live mixture); None for
    either before it has run."""
    if engine is None:
        return None, None
    rules = engine.risk_service.regime if engine.risk_service is not None else None
    stat = engine.ml.regime.latest if engine.ml is not None and engine.ml.regime is not None else None
    return rules, stat


def surface_update(engine: Engine | None, underlying: str) -> SurfaceUpdated | None:
    """The newest surface fit the engine published for ``underlying`` (None before the first)."""
    if engine is None or engine.surfaces is None or not underlying:
        return None
    return engine.surfaces.latest(underlying)


def fitted_surface(engine: Engine | None, underlying: str) -> VolSurface | None:
    """The fitted volatility surface of the newest successful fit (None without one)."""
    ev = surface_update(engine, underlying)
    if ev is None or not ev.fit.ok:
        return None
    surface = ev.fit.surface
    return None if surface is None or surface.empty else surface


def smile_vol_at(engine: Engine | None, underlying: str, T: float) -> Callable[[np.ndarray], np.ndarray] | None:
    """The engine's fitted smile at ``T`` years as a callable ``strikes -> vols`` (None without a surface).

    Used for the probability of profit so that the ticket and the payoff panel quote the same number.
    """
    if not math.isfinite(T) or T <= 0:
        return None
    surface = fitted_surface(engine, underlying)
    if surface is None:
        return None

    def vol_at(strikes: np.ndarray) -> np.ndarray:
        return np.asarray(surface.implied_vol(np.asarray(strikes, float), T), dtype=float)

    return vol_at


def surface_vol(engine: Engine | None, underlying: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray] | None:
    """The fitted surface as ``(strikes, years) -> vols`` (None without one): the analysis panel's date slider
    prices each leg at its remaining time, so it needs the whole surface, not one smile."""
    surface = fitted_surface(engine, underlying)
    if surface is None:
        return None

    def vol(strikes: np.ndarray, years: np.ndarray) -> np.ndarray:
        return np.asarray(surface.implied_vol(np.asarray(strikes, float), np.asarray(years, float)), dtype=float)

    return vol


def beta_estimate(engine: Engine | None, underlyings: list[str], window: int) -> BetaEstimate | None:
    """Betas to the risk engine's benchmark from the stored daily closes over ``window`` sessions (None
    without a store). Underlyings with too little history (``missing``) get the risk engine's beta (settings,
    else 1), the one its delta limit uses. A few small SQLite reads: callers cache it per window and backfill."""
    if engine is None or engine.store is None:
        return None
    from dataclasses import replace

    from engine.analytics.analysis import history_betas

    risk = engine.risk
    est = history_betas(engine.store, underlyings, risk.config.beta_benchmark if risk is not None else "SPY", window)
    fallback = {u: (risk.beta_of(u) if risk is not None else 1.0) for u in est.missing}
    return replace(est, betas={**fallback, **est.betas}) if fallback else est


def risk_level(engine: Engine | None) -> float:
    """The risk level the risk engine runs at (the slider's), else the configured one."""
    if engine is not None and engine.risk is not None:
        return float(engine.risk.profile.level)
    return float(settings(engine).risk.level)


def stress_move(engine: Engine | None) -> float:
    """The risk engine's stress move (0.15 = ±15 %), so views quote the loss the risk check limits."""
    if engine is None or engine.risk is None:
        return 0.15
    v = float(engine.risk.profile.stress_move_pct)
    return v if math.isfinite(v) and 0 < v < 1 else 0.15


def trading_status(engine: Engine | None) -> TradingStatus | None:
    """The kill switch's state, reason and who set it (None without a kill switch)."""
    if engine is None or engine.kill_switch is None:
        return None
    return engine.kill_switch.status


def mode(engine: Engine | None) -> str:
    """``paper`` or ``live``: where orders go now."""
    if engine is None or engine.router is None:
        return "paper"
    return str(engine.router.mode).lower()


def active_broker(engine: Engine | None) -> str | None:
    """The name of the broker the mode router sends orders to (None before the router exists)."""
    if engine is None or engine.router is None:
        return None
    return engine.router.active_name


def approval_required(engine: Engine | None) -> bool:
    """Whether the approval gate holds orders in the current mode (the settings' value before the OMS)."""
    if engine is not None and engine.oms is not None:
        return bool(engine.oms.gate.required(mode(engine)))
    return bool(settings(engine).oms.approval_in_paper)


def open_order_count(engine: Engine | None) -> int:
    if engine is None or engine.oms is None:
        return 0
    return len(engine.oms.open_orders())


def order_group(engine: Engine | None, order_id: str) -> OrderGroup | None:
    """The bracket, OCO pair or profit taker an order belongs to (its entry or a member), if the engine knows."""
    path = engine.order_path if engine is not None else None
    if path is None:
        return None
    return path.groups.group_of(order_id)


def stored_order_group(engine: Engine | None, group_id: str) -> OrderGroup | None:
    """A group by id, ended ones included (from the store: one indexed row)."""
    path = engine.order_path if engine is not None else None
    if path is None:
        return None
    return path.groups.group(group_id)


def positions(engine: Engine | None) -> dict[str, Position]:
    """The active account's positions by symbol (a copy)."""
    if engine is None or engine.portfolio is None:
        return {}
    return dict(engine.portfolio.positions)


def account(engine: Engine | None) -> AccountSnapshot | None:
    """The active account's latest snapshot."""
    if engine is None or engine.portfolio is None:
        return None
    return engine.portfolio.account


def strategy_statuses(engine: Engine | None) -> list[StrategyStatus]:
    """Every strategy of the settings as the host sees it now (empty before the host exists)."""
    if engine is None or engine.strategies is None:
        return []
    return engine.strategies.statuses()


def strategy_log(engine: Engine | None, strategy_id: str) -> list[tuple[datetime, str]]:
    """One strategy's own event log, oldest first, stamped with engine times (empty for an unknown id)."""
    if engine is None or engine.strategies is None:
        return []
    try:
        return engine.strategies.log(strategy_id)
    except KeyError:
        return []


def strategy_live_accounts(engine: Engine | None) -> dict[str, str]:
    """Account id → broker of the live accounts a strategy may be confirmed for (the host's own list)."""
    if engine is None or engine.strategies is None:
        return {}
    return engine.strategies.live_accounts()


def strategy_params_model(name: str) -> type[StrategyParams] | None:
    """The parameter model of the strategy class ``name`` (None for a name no strategy has)."""
    from engine.strategies import registry

    cls = registry().get(name)
    return None if cls is None else cls.Params


def missing_components(engine: Engine | None, *names: str) -> list[str]:
    """Which of the named facade components are not composed (the self-test and the start log say so)."""
    if engine is None:
        return list(names)
    present = {
        "feed": engine.feed, "paper_broker": engine.paper_broker, "oms": engine.oms, "risk": engine.risk,
        "kill_switch": engine.kill_switch, "surfaces": engine.surfaces, "history": engine.history,
        "backtests": engine.backtests, "router": engine.router, "market": engine.market,
        "portfolio": engine.portfolio, "risk_service": engine.risk_service, "store": engine.store,
        "bus": engine.bus,
    }
    unknown = [n for n in names if n not in present]
    if unknown:
        raise KeyError(f"not engine components: {unknown}")
    return [n for n in names if present[n] is None]


def data_coverage(engine: Engine | None) -> DataCoverage | None:
    """What is stored: imported chains per root and daily history per symbol (the engine's snapshot, rebuilt
    off the loop after each import, delete and backfill); None without the data service."""
    if engine is None or engine.data_service is None:
        return None
    return engine.data_service.coverage()


def imported_roots(engine: Engine | None) -> list[RootCoverage]:
    """The imported option roots with their date ranges (the Backtest panel's Imported data)."""
    cov = data_coverage(engine)
    return [r for r in cov.roots if r.days] if cov is not None else []


def chains_dir(engine: Engine | None) -> str | None:
    """The folder of the engine's chain store (a backtest worker process opens the same one)."""
    if engine is None or engine.data_service is None:
        return None
    return str(engine.data_service.chains.base)


def running_import(engine: Engine | None) -> str | None:
    """The job id of the chain import running now (None when idle)."""
    if engine is None or engine.data_service is None:
        return None
    return engine.data_service.importing


def account_activity(engine: Engine | None, start: date, end: date, symbol: str = "") -> AccountActivity | None:
    """Transactions, closed trades with realised P&L, fees and the paper account's margin breakdown for New York
    days ``start``..``end`` (None without a store). Reads the store's fills and orders: a few ms for a
    session's fills, so views call it on a fill or a user's request, not per tick."""
    if engine is None or engine.store is None:
        return None
    from engine.reports.activity import build_activity

    broker = engine.paper_broker
    exchange = broker.exchange if broker is not None else None
    return build_activity(engine.store, start, end, symbol=symbol, exchange=exchange,
                          account=exchange.account() if exchange is not None else account(engine))


def account_margin(engine: Engine | None) -> tuple[list[MarginLine], AccountSnapshot | None]:
    """The paper account's margin breakdown per underlying and its snapshot, without reading the store (cheap
    enough for every account update)."""
    broker = engine.paper_broker if engine is not None else None
    if broker is None:
        return [], account(engine)
    from engine.reports.activity import margin_breakdown

    return margin_breakdown(broker.exchange), broker.exchange.account()


def user_alert_states(engine: Engine | None) -> dict[str, tuple[bool, int, float]]:
    """Per enabled user alert the notifier runs: (armed, times fired, last value seen; NaN before any)."""
    if engine is None or engine.notifier is None:
        return {}
    ev = engine.notifier.user_rules
    return {r.name: (bool(ev.armed[i]), int(ev.fired_count[i]), float(ev.last_value[i]))
            for i, r in enumerate(ev.rules)}
