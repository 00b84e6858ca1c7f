"""What market a strategy's own backtest needs: its run spec, declared as data beside the strategy.

The results table (``optiondesk backtest-table``) runs every registered strategy for the same years and seed.
One market does not fit them all: an earnings strategy needs a stock that reports, a same-day strategy needs
intraday snapshots (a daily close comes after its expiry has gone), an overlay needs something to hedge, and a
dispersion trade needs an index and its members on one clock. A strategy class says so with a class attribute
``backtest_spec = BacktestSpec(...)``; a strategy without one runs on the table's market with its defaults.
The table names the spec each row ran on, so a row's numbers are never read against the wrong market.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from engine.backtest.config import BacktestConfig


class BacktestSpec(BaseModel):
    """A strategy's own run in the results table. Every field left None takes the table's value.

    - ``symbol``: the underlying replayed (``AAPL`` for the simulated stock that reports earnings);
    - ``members``: more underlyings replayed on the same clock (an index's members; the multi-underlying replay
      of :mod:`engine.backtest.runner`); their chains reach the strategy before ``symbol``'s on every step;
    - ``years``: a shorter span where the data is dear (intraday snapshots cost a simulated session each);
    - ``intraday_minutes``: snapshots every this many minutes of each session, plus its close;
    - ``params``: parameters over the strategy's defaults (an overlay's child strategy);
    - ``initial_cash``: an account the trade fits in whole contracts;
    - ``why``: one line for the table's notes.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    symbol: str | None = None
    members: tuple[str, ...] = ()
    years: float | None = Field(None, gt=0, le=30)
    intraday_minutes: float | None = Field(None, gt=0, le=390)
    params: dict[str, Any] = Field(default_factory=dict)
    initial_cash: float | None = Field(None, gt=0)
    why: str = ""

    def apply(self, config: BacktestConfig) -> BacktestConfig:
        """``config`` (the table's market) with this spec's choices over it."""
        update: dict[str, Any] = {"params": {**config.params, **self.params}}
        if self.symbol is not None:
            update["symbol"] = self.symbol
        if self.members:
            update["members"] = list(self.members)
        if self.years is not None:
            update["years"] = self.years
        if self.intraday_minutes is not None:
            update["intraday_minutes"] = self.intraday_minutes
        if self.initial_cash is not None:
            update["initial_cash"] = self.initial_cash
        return config.model_validate({**config.model_dump(), **update})

    def changes_market(self) -> bool:
        """True when the run needs another history than the table's (symbol, members, span or snapshots)."""
        return bool(self.symbol or self.members or self.years or self.intraday_minutes)


def describe(config: BacktestConfig) -> str:
    """The market a run used, in a table cell: ``SPY daily, 5 y``, ``SPY 30-min, 0.25 y``, ``DSPX + 6 members``."""
    what = config.symbol + (f" + {len(config.members)} members" if config.members else "")
    bars = f"{config.intraday_minutes:g}-min" if config.intraday_minutes else "daily"
    out = f"{what} {bars}, {config.years:g} y"
    if config.params:
        out += ", " + ", ".join(f"{k}={v}" for k, v in sorted(config.params.items()) if k != "underlying")
    if config.initial_cash != 100_000.0:
        out += f", ${config.initial_cash:,.0f}"
    return out


def spec_of(name: str) -> BacktestSpec:
    """The registered strategy ``name``'s spec (the table's market, defaults, when it declares none or ``name`` is
    not registered: that row then fails on its own, with the reason)."""
    from engine import strategies

    spec = getattr(strategies.registry().get(name), "backtest_spec", None)
    return spec if isinstance(spec, BacktestSpec) else BacktestSpec()


__all__ = ["BacktestSpec", "describe", "spec_of"]
