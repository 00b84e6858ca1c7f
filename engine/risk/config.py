"""Risk settings: the Low / Moderate / High presets the risk slider interpolates, and engine knobs.

Pure pydantic (no heavy imports). The lead mounts :class:`RiskConfig` as the ``[risk]`` section of the
settings file. Defaults come from docs/trading-rules.md (Moderate is the original specification;
Low and High are our monotone extrapolation).

Units:
- every ``*_pct`` is a fraction of net liquidation (0.02 = 2 %);
- ``max_delta`` is beta-weighted SPY shares; ``max_gamma`` is beta-weighted SPY share-delta per $1 move of SPY;
- ``max_vega_pct``: |portfolio vega| in dollars per 1 vol point as a fraction of net liquidation;
- ``max_theta_pct``: |portfolio theta| in dollars per calendar day as a fraction of net liquidation.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: regime names the profile's size multipliers are keyed by (see :mod:`engine.risk.regime`)
REGIMES = ("low_vol", "normal", "high_vol")


class RiskPreset(BaseModel):
    """One anchor of the risk slider. The slider interpolates every field linearly between anchors."""

    model_config = ConfigDict(extra="forbid")

    max_position_pct: float = Field(gt=0, le=1)
    max_daily_loss_pct: float = Field(gt=0, le=1)
    risk_per_trade_pct: float = Field(gt=0, le=1)
    leverage_limit: float = Field(gt=0)
    max_positions: int = Field(ge=1)
    max_delta: float = Field(gt=0)
    max_gamma: float = Field(gt=0)
    max_vega_pct: float = Field(gt=0, le=1)
    max_theta_pct: float = Field(gt=0, le=1)
    max_drawdown_pct: float = Field(gt=0, le=1)
    #: stress move of the underlying used as the loss of undefined-risk orders (0.15 = 15 %)
    stress_move_pct: float = Field(gt=0, le=1)
    #: position-size multipliers by regime (low_vol / normal / high_vol)
    regime_multipliers: dict[str, float]
    #: Kelly fraction used by the Kelly sizing helper (0.25 = quarter Kelly)
    kelly_fraction: float = Field(gt=0, le=1)

    @model_validator(mode="after")
    def _regimes_complete(self) -> RiskPreset:
        missing = [r for r in REGIMES if r not in self.regime_multipliers]
        if missing:
            raise ValueError(f"regime_multipliers is missing {missing}")
        bad = {k: v for k, v in self.regime_multipliers.items() if not v > 0}
        if bad:
            raise ValueError(f"regime_multipliers must be positive, got {bad}")
        return self


LOW = RiskPreset(
    max_position_pct=0.10, max_daily_loss_pct=0.02, risk_per_trade_pct=0.01, leverage_limit=1.0,
    max_positions=3, max_delta=50, max_gamma=25, max_vega_pct=0.005, max_theta_pct=0.002,
    max_drawdown_pct=0.15, stress_move_pct=0.20,
    regime_multipliers={"low_vol": 1.5, "normal": 1.0, "high_vol": 0.3}, kelly_fraction=0.15,
)
MODERATE = RiskPreset(
    max_position_pct=0.25, max_daily_loss_pct=0.05, risk_per_trade_pct=0.02, leverage_limit=2.0,
    max_positions=5, max_delta=100, max_gamma=50, max_vega_pct=0.01, max_theta_pct=0.004,
    max_drawdown_pct=0.25, stress_move_pct=0.15,
    regime_multipliers={"low_vol": 2.0, "normal": 1.0, "high_vol": 0.5}, kelly_fraction=0.25,
)
HIGH = RiskPreset(
    max_position_pct=0.35, max_daily_loss_pct=0.08, risk_per_trade_pct=0.03, leverage_limit=2.5,
    max_positions=10, max_delta=200, max_gamma=100, max_vega_pct=0.02, max_theta_pct=0.008,
    max_drawdown_pct=0.35, stress_move_pct=0.12,
    regime_multipliers={"low_vol": 2.5, "normal": 1.5, "high_vol": 0.7}, kelly_fraction=0.35,
)


#: preset fields where a larger value is a looser limit (all but the stress move, where a *smaller* move
#: understates the loss of undefined-risk orders)
LOOSER_WHEN_LARGER = (
    "max_position_pct", "max_daily_loss_pct", "risk_per_trade_pct", "leverage_limit", "max_positions", "max_delta",
    "max_gamma", "max_vega_pct", "max_theta_pct", "max_drawdown_pct", "kelly_fraction",
)
LOOSER_WHEN_SMALLER = ("stress_move_pct",)


def preset_order_problems(low: RiskPreset, moderate: RiskPreset, high: RiskPreset) -> list[str]:
    """Each limit that does not loosen (or stay) from Low to Moderate to High, with its three values.

    The slider interpolates between the anchors: a Low looser than High would make moving the slider to
    Low *raise* every limit, the opposite of what the user asked for."""
    out = []
    for name in (*LOOSER_WHEN_LARGER, *LOOSER_WHEN_SMALLER):
        a, b, c = (getattr(p, name) for p in (low, moderate, high))
        if not (a <= b <= c if name in LOOSER_WHEN_LARGER else a >= b >= c):
            out.append(f"{name} (low {a:g}, moderate {b:g}, high {c:g})")
    for regime in REGIMES:
        a, b, c = (p.regime_multipliers[regime] for p in (low, moderate, high))
        if not a <= b <= c:
            out.append(f"regime_multipliers.{regime} (low {a:g}, moderate {b:g}, high {c:g})")
    return out


class RiskConfig(BaseModel):
    """The ``[risk]`` settings section."""

    model_config = ConfigDict(extra="forbid")

    #: slider position 0..100 at start (the last value set is remembered in the store)
    level: float = Field(default=50.0, ge=0, le=100)
    low: RiskPreset = LOW
    moderate: RiskPreset = MODERATE
    high: RiskPreset = HIGH

    # price collar: an order may be at most this much *worse* than mid (the larger of the two)
    collar_ticks: int = Field(default=10, ge=0)
    collar_pct: float = Field(default=0.10, ge=0)
    # order rate: token bucket (original rule: ≤ 60 orders/minute at the broker)
    orders_per_minute: float = Field(default=60.0, gt=0)
    order_burst: int = Field(default=10, ge=1)
    #: identical order (same legs, quantity, price, side) from the same source within this window is denied
    duplicate_window_s: float = Field(default=5.0, ge=0)
    # kill switch
    #: circuit breaker open longer than this trips the kill switch (REDUCING before that)
    breaker_open_halt_s: float = Field(default=30.0, ge=0)
    #: how often the engine polls the store for a kill switch tripped by another process (CLI): one indexed
    #: read; 0.1 s keeps `optiondesk kill` acted on within 200 ms
    kill_switch_poll_s: float = Field(default=0.1, gt=0, le=1.0)
    #: flatten orders are marketable limits this many ticks through the touch
    flatten_through_ticks: int = Field(default=2, ge=0)
    # market inputs for Greeks / VaR (explicit, never hidden constants)
    risk_free_rate: float = Field(default=0.04, ge=-0.05, le=0.5)
    dividend_yields: dict[str, float] = Field(default_factory=dict)
    #: beta to SPY by underlying; estimated from returns when absent (1.0 until enough history)
    betas: dict[str, float] = Field(default_factory=dict)
    beta_benchmark: str = "SPY"
    # VaR
    var_confidence: float = Field(default=0.95, gt=0.5, lt=1)
    var_horizon_days: float = Field(default=1.0, gt=0)
    var_mc_paths: int = Field(default=10_000, ge=100)
    var_seed: int = 7
    #: annualised vol used for an underlying with no return history (VaR / MC only), per underlying
    default_underlying_vol: float = Field(default=0.25, gt=0)

    @model_validator(mode="after")
    def _presets_monotone(self) -> RiskConfig:
        bad = preset_order_problems(self.low, self.moderate, self.high)
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            raise ValueError("the presets must loosen from low to moderate to high; they do not for "
                             + "; ".join(bad[:3]) + more)
        return self
