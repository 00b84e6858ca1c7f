"""Settings of the simulated market (pure pydantic; mounted by the lead as the ``[simulator]`` section).

Units: spot in dollars, volatilities and rates annualised (0.20 = 20 %), jump intensity per year,
time in seconds unless a field name says otherwise.
"""

from __future__ import annotations

from datetime import date
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: the expiry cycles a root can list (RootSpec.cycles)
Cycle = Literal["monthly", "weekly", "mon_wed", "daily", "quarterly", "vix"]
DEFAULT_CYCLES: tuple[Cycle, ...] = ("monthly", "weekly")


class RootSpec(BaseModel):
    """One OCC option root of an underlying (SPX has two: ``SPX`` AM-settled monthlies, ``SPXW`` PM)."""

    model_config = ConfigDict(extra="forbid")
    root: str
    #: which expiries this root lists: monthly (3rd Friday), weekly (Fridays), mon_wed (Mon/Wed weeklies),
    #: daily (every session: 0DTE), quarterly (last session of Mar/Jun/Sep/Dec), vix (Wednesday 30 days before
    #: the next month's 3rd Friday)
    cycles: list[Cycle] = Field(default_factory=lambda: list(DEFAULT_CYCLES))
    settlement: Literal["physical", "cash_pm", "cash_am"] = "physical"
    style: Literal["american", "european"] = "american"
    multiplier: int = Field(100, gt=0)
    #: how many monthly expiries to list (LEAPS-like far months come from this); weeklies are listed
    #: ``weeks_ahead`` weeks out, Mon/Wed and dailies ``days_ahead`` sessions out.
    months_ahead: int = Field(6, ge=1, le=36)
    weeks_ahead: int = Field(5, ge=0, le=12)
    days_ahead: int = Field(5, ge=0, le=20)


class EarningsSpec(BaseModel):
    """An underlying's earnings calendar: explicit dates, or a generated quarterly schedule, or both.

    Announcements come after the close of the date: the options price the move as event variance from the
    listing until that close (so front expiries spanning it trade at a higher IV, more so as it nears), the stock
    gaps at the next open by a seeded draw of ``move`` (std of the log gap), and the event variance is gone —
    the IV collapses — from that open (:mod:`engine.market.simulated.earnings`).
    """

    model_config = ConfigDict(extra="forbid")
    dates: list[date] = Field(default_factory=list)
    #: generate one event a year in each of these months, on the last ``weekday`` (0 = Monday) of the month
    quarterly_months: list[int] = Field(default_factory=list)
    weekday: int = Field(3, ge=0, le=4)
    move: float = Field(0.05, gt=0, le=0.5)

    @model_validator(mode="after")
    def _some_events(self) -> EarningsSpec:
        if not self.dates and not self.quarterly_months:
            raise ValueError("earnings needs dates or quarterly_months")
        bad = [m for m in self.quarterly_months if not 1 <= m <= 12]
        if bad:
            raise ValueError(f"quarterly_months must be months 1-12, got {bad}")
        return self


class UnderlyingSpec(BaseModel):
    """A simulated underlying and how its options are listed and quoted."""

    model_config = ConfigDict(extra="forbid")
    symbol: str
    kind: Literal["equity", "etf", "index", "vol_index"] = "etf"
    spot: float = Field(gt=0)
    #: sensitivity of log returns to the common market factor (the market factor is SPX-like)
    beta: float = 1.0
    #: idiosyncratic volatility added on top of the market factor, annualised
    idio_vol: float = Field(0.0, ge=0, le=3)
    dividend_yield: float = Field(0.0, ge=0, le=0.2)
    #: months with a (quarterly) ex-dividend date: the 3rd Friday for ETFs, the 2nd Friday for stocks.
    #: Prices carry the continuous yield; the dates drive early assignment of deep ITM short calls.
    ex_dividend_months: list[int] = Field(default_factory=list)
    #: option price ticks: ``penny_pilot`` ($0.01 under $3, $0.05 above), ``all_penny`` ($0.01 everywhere:
    #: SPY, QQQ, IWM), ``standard`` ($0.05 under $3, $0.10 above: SPX and most non-pilot classes)
    tick_scheme: Literal["penny_pilot", "all_penny", "standard"] = "penny_pilot"
    #: strike increments by distance from spot: near (|K/S-1| < near_band), mid (< mid_band), far
    strike_steps: tuple[float, float, float] = (1.0, 5.0, 10.0)
    near_band: float = Field(0.05, gt=0)
    mid_band: float = Field(0.20, gt=0)
    #: strikes listed out to ± this fraction of spot scaled by √(T in years) (minimum 4 %)
    strike_range: float = Field(0.6, gt=0, le=3)
    #: max strikes per expiry and right (the far wings are thinned beyond it)
    max_strikes: int = Field(60, ge=4, le=400)
    #: liquidity scale: 1 = SPY-like; lower widens spreads and shrinks sizes / open interest
    liquidity: float = Field(1.0, gt=0, le=5)
    roots: list[RootSpec] = Field(default_factory=list)
    #: ATM skew slope ρ of the SSVI smile in calm markets (negative: put skew; positive for vol indices)
    skew_rho: float = Field(-0.65, ge=-0.99, le=0.99)
    #: multiplier on the ATM implied variance over the expected variance (variance risk premium)
    variance_premium: float = Field(1.15, gt=0.5, le=3)
    #: earnings events (single stocks): None = none
    earnings: EarningsSpec | None = None
    #: a synthetic index: shares of each component (symbols of this universe); its level is Σ shares × price at
    #: every step (:mod:`engine.market.simulated.index`). Empty: an ordinary underlying
    components: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _default_root(self) -> UnderlyingSpec:
        if not self.roots:
            self.roots = [RootSpec(root=self.symbol)]
        return self


class RegimeSpec(BaseModel):
    """A market regime: long-run variance level and jump behaviour of the market factor."""

    model_config = ConfigDict(extra="forbid")
    name: str
    #: long-run annualised volatility of the market factor (√θ of the Heston variance)
    vol: float = Field(gt=0, le=3)
    #: mean reversion speed of the variance (per year) and vol of variance
    kappa: float = Field(gt=0, le=100)
    vol_of_vol: float = Field(gt=0, le=5)
    #: correlation of variance and price shocks (leverage effect)
    rho: float = Field(ge=-0.99, le=0.99)
    #: jumps per year, mean and std of the log jump size
    jump_intensity: float = Field(0.0, ge=0, le=100)
    jump_mean: float = Field(0.0, ge=-0.5, le=0.5)
    jump_std: float = Field(0.0, ge=0, le=0.5)
    #: how many times steeper the smile skew is than calm (1 = calm)
    skew_multiplier: float = Field(1.0, gt=0, le=5)
    #: spread widening factor on top of the vol effect
    spread_multiplier: float = Field(1.0, gt=0, le=20)
    #: expected time in this regime before switching, in trading days
    mean_duration_days: float = Field(60.0, gt=0)


def _default_regimes() -> list[RegimeSpec]:
    return [
        RegimeSpec(name="calm", vol=0.13, kappa=4.0, vol_of_vol=0.45, rho=-0.7, jump_intensity=0.5,
                   jump_mean=-0.02, jump_std=0.02, skew_multiplier=1.0, spread_multiplier=1.0,
                   mean_duration_days=120),
        RegimeSpec(name="volatile", vol=0.24, kappa=3.0, vol_of_vol=0.7, rho=-0.75, jump_intensity=2.0,
                   jump_mean=-0.03, jump_std=0.03, skew_multiplier=1.3, spread_multiplier=1.5,
                   mean_duration_days=40),
        RegimeSpec(name="crisis", vol=0.50, kappa=2.0, vol_of_vol=1.0, rho=-0.8, jump_intensity=6.0,
                   jump_mean=-0.05, jump_std=0.05, skew_multiplier=1.7, spread_multiplier=3.0,
                   mean_duration_days=15),
    ]


def default_universe() -> list[UnderlyingSpec]:
    """SPY, QQQ, IWM, AAPL, SPX (AM ``SPX`` + PM ``SPXW`` roots) and the VIX-like index ``VIX``."""
    return [
        UnderlyingSpec(symbol="SPY", kind="etf", tick_scheme="all_penny", spot=600.0, beta=1.0, idio_vol=0.0, dividend_yield=0.012,
                       ex_dividend_months=[3, 6, 9, 12],
                       roots=[RootSpec(root="SPY", cycles=["monthly", "weekly", "mon_wed", "daily", "quarterly"],
                                       months_ahead=4, weeks_ahead=3, days_ahead=3)],
                       strike_steps=(1.0, 5.0, 10.0), max_strikes=36, strike_range=0.5),
        UnderlyingSpec(symbol="QQQ", kind="etf", tick_scheme="all_penny", spot=520.0, beta=1.2, idio_vol=0.08, dividend_yield=0.006,
                       ex_dividend_months=[3, 6, 9, 12],
                       roots=[RootSpec(root="QQQ", cycles=["monthly", "weekly"], months_ahead=3,
                                       weeks_ahead=3)],
                       strike_steps=(1.0, 5.0, 10.0), max_strikes=28, strike_range=0.5),
        UnderlyingSpec(symbol="IWM", kind="etf", tick_scheme="all_penny", spot=230.0, beta=1.15, idio_vol=0.10, dividend_yield=0.011,
                       ex_dividend_months=[3, 6, 9, 12],
                       roots=[RootSpec(root="IWM", cycles=["monthly", "weekly"], months_ahead=3, weeks_ahead=3)],
                       strike_steps=(1.0, 2.5, 5.0), max_strikes=24, strike_range=0.5, liquidity=0.7),
        UnderlyingSpec(symbol="AAPL", kind="equity", spot=230.0, beta=1.1, idio_vol=0.20, dividend_yield=0.0045,
                       ex_dividend_months=[2, 5, 8, 11],
                       roots=[RootSpec(root="AAPL", cycles=["monthly", "weekly"], months_ahead=4, weeks_ahead=3)],
                       strike_steps=(2.5, 5.0, 10.0), max_strikes=24, strike_range=0.6, liquidity=0.8,
                       skew_rho=-0.5, earnings=EarningsSpec(quarterly_months=[1, 4, 7, 10], move=0.045)),
        UnderlyingSpec(symbol="SPX", kind="index", spot=6000.0, beta=1.0, idio_vol=0.0, dividend_yield=0.013,
                       tick_scheme="standard",
                       roots=[RootSpec(root="SPX", cycles=["monthly"], settlement="cash_am", style="european",
                                       months_ahead=4),
                              RootSpec(root="SPXW", cycles=["weekly", "mon_wed", "daily"],
                                       settlement="cash_pm", style="european", weeks_ahead=2, days_ahead=3)],
                       strike_steps=(5.0, 25.0, 50.0), max_strikes=32, strike_range=0.4, liquidity=0.9),
        UnderlyingSpec(symbol="VIX", kind="vol_index", spot=14.0, beta=0.0, idio_vol=0.0, dividend_yield=0.0,
                       tick_scheme="penny_pilot",
                       roots=[RootSpec(root="VIX", cycles=["vix"], settlement="cash_am", style="european",
                                       months_ahead=4)],
                       strike_steps=(1.0, 2.5, 5.0), near_band=0.3, mid_band=1.0, max_strikes=20,
                       strike_range=1.2, liquidity=0.6, skew_rho=0.55, variance_premium=1.0),
    ]


class StreamingConfig(BaseModel):
    """How the feed streams: rates are in wall-clock time."""

    model_config = ConfigDict(extra="forbid")
    #: ×1 real time .. ×10,000; ``fast`` = as fast as possible (ignores ``speed``)
    speed: float = Field(1.0, ge=1.0, le=10_000.0)
    fast: bool = False
    #: market-time resolution of the dynamics (seconds of market time per sub-step, at most)
    step_seconds: float = Field(1.0, gt=0, le=3600)
    #: cap on dynamics sub-steps per tick (bigger sub-steps beyond it keep the loop responsive)
    max_substeps: int = Field(200, ge=1, le=100_000)
    #: wall-clock ticks per second (each tick advances the market and requotes)
    tick_hz: float = Field(10.0, gt=0, le=200)
    #: conflated ``ChainUpdated`` per underlying per second (wall clock)
    chain_hz: float = Field(2.0, gt=0, le=50)
    #: cap on option quotes per second published as ``QuotesUpdated`` (all underlyings together)
    quotes_per_second: int = Field(5000, ge=0, le=1_000_000)
    #: when closed (nights, weekends, holidays) jump to the next open instead of idling
    skip_closed: bool = True


class SimulatorConfig(BaseModel):
    """The ``[simulator]`` settings section: universe, regimes, rates and streaming."""

    model_config = ConfigDict(extra="forbid")
    #: numpy's generators take only non-negative seeds: -1 would pass here and fail at the start
    seed: int = Field(7, ge=0)
    #: market start (ISO date, a session day is picked from it); None = today's date in New York
    start: str | None = None
    risk_free_rate: float = Field(0.04, ge=-0.05, le=0.25)
    universe: list[UnderlyingSpec] = Field(default_factory=default_universe)
    regimes: list[RegimeSpec] = Field(default_factory=_default_regimes)
    initial_regime: str = "calm"
    #: market seconds between full reprices of the surface (in between: delta-gamma-vega-theta updates)
    full_reprice_seconds: float = Field(60.0, gt=0, le=86400)
    #: rows whose American early-exercise premium (ALO pricer) is refreshed per full reprice, in rotation
    american_rows_per_reprice: int = Field(50, ge=1, le=100_000)
    #: a spot move (fraction) or a variance change (fraction) that forces a full reprice at once
    full_reprice_move: float = Field(0.0025, gt=0, le=1)
    #: overnight variance as a share of a 6.5 h session's variance (close-to-open gaps)
    overnight_variance_share: float = Field(0.25, ge=0, le=2)
    streaming: StreamingConfig = Field(default_factory=StreamingConfig)

    @model_validator(mode="after")
    def _check(self) -> SimulatorConfig:
        names = [r.name for r in self.regimes]
        if len(set(names)) != len(names):
            raise ValueError(f"regime names must be unique, got {names}")
        if self.initial_regime not in names:
            raise ValueError(f"initial_regime {self.initial_regime!r} is not one of the regimes {names}")
        syms = [u.symbol for u in self.universe]
        if len(set(syms)) != len(syms):
            raise ValueError(f"universe symbols must be unique, got {syms}")
        if not syms:
            raise ValueError("universe must contain at least one underlying")
        for u in self.universe:
            missing = [c for c in u.components if c not in syms or c == u.symbol]
            if missing:
                raise ValueError(f"index {u.symbol}: components {missing} are not other underlyings of the universe")
            if any(w <= 0 for w in u.components.values()):
                raise ValueError(f"index {u.symbol}: component shares must be positive")
        return self

    def underlying(self, symbol: str) -> UnderlyingSpec:
        for u in self.universe:
            if u.symbol == symbol:
                return u
        raise KeyError(symbol)

    def restricted_to(self, symbols: list[str]) -> SimulatorConfig:
        """A copy whose universe holds only ``symbols`` (plus the market and VIX references the dynamics need)."""
        known = {u.symbol for u in self.universe}
        unknown = [s for s in symbols if s not in known]
        if unknown:
            raise ValueError(f"unknown simulated symbol(s) {unknown}; available: {sorted(known)}")
        keep = set(symbols)
        keep |= {c for u in self.universe if u.symbol in keep for c in u.components}  # an index needs its members
        return self.model_copy(update={"universe": [u for u in self.universe if u.symbol in keep]})
