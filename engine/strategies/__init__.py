"""Strategies: one API for live and backtest (:mod:`engine.strategies.base`) and the strategies themselves."""

from __future__ import annotations

from typing import Any

from engine.strategies.base import (
    ManagedStrategy,
    ManagementRules,
    OpenTrade,
    SizingLimits,
    Strategy,
    StrategyContext,
    StrategyParams,
)


def registry() -> dict[str, type[Strategy]]:
    """Strategy classes by name (``--strategy`` on the CLI)."""
    from engine.strategies.iron_condor import IronCondor
    from engine.strategies.iv_rank_put_spread import IVRankPutSpread
    from engine.strategies.put_write import PutWrite

    classes: list[type[Strategy]] = [IVRankPutSpread, IronCondor, PutWrite]
    classes += _option_set()
    classes += _share_set()
    return {cls.name: cls for cls in classes}


def _share_set() -> list[type[Strategy]]:
    """The strategies that trade shares: gamma scalping and the delta-hedge overlay."""
    from engine.strategies.delta_hedge import DeltaHedge
    from engine.strategies.gamma_scalping import GammaScalping

    return [GammaScalping, DeltaHedge]


def _option_set() -> list[type[Strategy]]:
    """The option-only strategies of the set (short premium, spreads, calendars, same-day, the router)."""
    from engine.strategies.butterfly import Butterfly
    from engine.strategies.calendar import Calendar
    from engine.strategies.iv_rank_debit import IVRankDebit
    from engine.strategies.momentum_debit import MomentumDebit
    from engine.strategies.regime_router import RegimeRouter
    from engine.strategies.short_strangle import ShortStrangle
    from engine.strategies.zero_dte import ZeroDTE

    return [ShortStrangle, Butterfly, Calendar, MomentumDebit, IVRankDebit, ZeroDTE, RegimeRouter, *_event_set()]


def _event_set() -> list[type[Strategy]]:
    """The strategies of the later set: earnings events, model mispricing, index against components."""
    from engine.strategies.dispersion import Dispersion
    from engine.strategies.earnings_crush import EarningsCrush
    from engine.strategies.vol_arb import VolArb

    return [EarningsCrush, VolArb, Dispersion]


def create(name: str, params: dict[str, Any] | None = None, *, strategy_id: str | None = None) -> Strategy:
    """A strategy by name with validated parameters; unknown names or parameters raise ValueError."""
    classes = registry()
    if name not in classes:
        raise ValueError(f"unknown strategy {name!r} (known: {', '.join(sorted(classes))})")
    from pydantic import ValidationError

    try:
        return classes[name](params, strategy_id=strategy_id)
    except ValidationError as exc:
        raise ValueError(f"bad parameters for {name}: {exc}") from None


__all__ = ["ManagedStrategy", "ManagementRules", "OpenTrade", "SizingLimits", "Strategy", "StrategyContext",
           "StrategyParams", "create", "registry"]
