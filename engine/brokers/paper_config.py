"""Paper trading settings (pure pydantic; mounted by the lead as the ``[paper]`` settings section).

Money amounts are dollars; fee presets are named here and defined in :mod:`engine.brokers.fees`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from engine.brokers.margin import (
    DEFAULT_INDEX_SYMBOLS,
    NAKED_EQUITY_PCT,
    NAKED_INDEX_PCT,
    NAKED_MIN_PCT,
    STOCK_MARGIN,
    MarginRules,
)

#: the option tick schedules the simulated venue knows (engine.market.simulated.ticks)
TickScheme = Literal["penny_pilot", "all_penny", "standard"]
DEFAULT_TICK_SCHEMES: dict[str, TickScheme] = {
    "SPY": "all_penny", "QQQ": "all_penny", "IWM": "all_penny", "SPX": "standard", "SPXW": "standard",
    "NDX": "standard", "NDXP": "standard", "RUT": "standard", "RUTW": "standard", "XSP": "all_penny"}


class SlippageConfig(BaseModel):
    """Extra cost against the touch for marketable orders (never past a limit price).

    ``ticks``: ``value`` ticks per leg; ``spread_fraction``: ``value`` × the leg's bid/ask spread;
    ``percent``: ``value`` percent of the leg's price (the original backtester used 0.1 %).
    """

    model_config = ConfigDict(extra="forbid")
    model: Literal["none", "ticks", "spread_fraction", "percent"] = "none"
    value: float = Field(0.0, ge=0.0, le=100.0)


class PaperConfig(BaseModel):
    """The simulated exchange and account."""

    model_config = ConfigDict(extra="forbid")
    account_id: str = Field("PAPER", min_length=1, max_length=40)
    starting_cash: float = Field(100_000.0, gt=0)
    #: fee preset: tastytrade | ibkr_fixed | flat_065 | zero (see docs/simulated-market.md for sources)
    fees: Literal["tastytrade", "ibkr_fixed", "flat_065", "zero"] = "tastytrade"
    slippage: SlippageConfig = Field(default_factory=SlippageConfig)
    #: fill at most the displayed size at the touch per market update (the rest keeps working)
    partial_fills: bool = False
    #: reg_t: margin account (naked options by the Reg-T formula, 50 % stock); cash: no margin, no naked shorts
    account_type: Literal["reg_t", "cash"] = "reg_t"
    naked_equity_pct: float = Field(NAKED_EQUITY_PCT, gt=0, le=1)
    naked_index_pct: float = Field(NAKED_INDEX_PCT, gt=0, le=1)
    naked_min_pct: float = Field(NAKED_MIN_PCT, gt=0, le=1)
    stock_margin: float = Field(STOCK_MARGIN, gt=0, le=1)
    #: reject orders that would leave buying power negative
    check_buying_power: bool = True
    #: assign deep ITM short calls whose time value is below an upcoming dividend (flagged in the fill log)
    early_assignment: bool = False
    #: option tick schedules by underlying/root (see engine.market.simulated.ticks); others use the default
    tick_schemes: dict[str, TickScheme] = Field(default_factory=lambda: dict(DEFAULT_TICK_SCHEMES))
    default_tick_scheme: Literal["penny_pilot", "all_penny", "standard"] = "penny_pilot"
    #: underlyings whose options are broad-based index options (15 % naked requirement, cash settled)
    index_symbols: list[str] = Field(default_factory=lambda: list(DEFAULT_INDEX_SYMBOLS))

    def margin_rules(self) -> MarginRules:
        """The margin model's numbers from these settings: the paper exchange margins with them and the risk
        engine estimates buying power with them (one model, docs/architecture.md §4)."""
        return MarginRules(naked_equity_pct=self.naked_equity_pct, naked_index_pct=self.naked_index_pct,
                           naked_min_pct=self.naked_min_pct, stock_margin=self.stock_margin,
                           cash_account=self.account_type == "cash", index_symbols=frozenset(self.index_symbols))
