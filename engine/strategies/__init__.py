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

    return {cls.name: cls for cls in (IVRankPutSpread, IronCondor, PutWrite)}


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
