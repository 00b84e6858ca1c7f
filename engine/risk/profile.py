"""The risk profile: every pre-trade limit and sizing rule, derived continuously from the 0–100 slider.

``profile_for_level(level, config)`` interpolates linearly between the Low (0), Moderate (50) and High (100)
presets. Integer limits (``max_positions``) round *down*, so a fractional slider position never grants more
than the linear value. With monotone presets every limit is monotone non-decreasing in the slider.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from engine.risk.config import REGIMES, RiskConfig, RiskPreset


@dataclass(frozen=True, slots=True)
class RiskProfile:
    """Limits in force. Percentages are fractions of net liquidation (see :mod:`engine.risk.config`)."""

    level: float
    max_position_pct: float
    max_daily_loss_pct: float
    risk_per_trade_pct: float
    leverage_limit: float
    max_positions: int
    max_delta: float
    max_gamma: float
    max_vega_pct: float
    max_theta_pct: float
    max_drawdown_pct: float
    stress_move_pct: float
    kelly_fraction: float
    regime_multipliers: dict[str, float] = field(default_factory=dict)
    # engine-wide knobs copied from the config so one object answers "what are the limits"
    collar_ticks: int = 10
    collar_pct: float = 0.10
    orders_per_minute: float = 60.0
    order_burst: int = 10
    duplicate_window_s: float = 5.0

    def regime_multiplier(self, regime: str | None) -> float:
        """Size multiplier for a regime (unknown / None → normal)."""
        key = regime if regime in self.regime_multipliers else "normal"
        return self.regime_multipliers.get(key, 1.0)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def limits_in_dollars(self, net_liquidation: float) -> dict[str, float]:
        """The percentage limits turned into dollars for a net liquidation value (for display)."""
        nl = float(net_liquidation)
        return {
            "max_position": self.max_position_pct * nl,
            "max_daily_loss": self.max_daily_loss_pct * nl,
            "max_loss_per_trade": self.risk_per_trade_pct * nl,
            "max_vega": self.max_vega_pct * nl,
            "max_theta": self.max_theta_pct * nl,
            "max_drawdown": self.max_drawdown_pct * nl,
            "max_gross_exposure": self.leverage_limit * nl,
        }


_FLOAT_FIELDS = (
    "max_position_pct", "max_daily_loss_pct", "risk_per_trade_pct", "leverage_limit", "max_delta", "max_gamma",
    "max_vega_pct", "max_theta_pct", "max_drawdown_pct", "kelly_fraction",
)


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def profile_for_level(level: float, config: RiskConfig | None = None) -> RiskProfile:
    """The profile at slider ``level`` (0..100). A level outside [0, 100] or NaN raises ``ValueError``."""
    cfg = config or RiskConfig()
    try:
        lv = float(level)
    except (TypeError, ValueError):
        raise ValueError(f"risk level must be a number 0..100, got {level!r}") from None
    if math.isnan(lv) or not 0.0 <= lv <= 100.0:
        raise ValueError(f"risk level must be within 0..100, got {level!r}")
    lo, hi, t = (cfg.low, cfg.moderate, lv / 50.0) if lv <= 50.0 else (cfg.moderate, cfg.high, (lv - 50.0) / 50.0)
    floats = {name: _lerp(getattr(lo, name), getattr(hi, name), t) for name in _FLOAT_FIELDS}
    return RiskProfile(
        level=lv,
        # integer limit: floor, with a tiny epsilon so exact anchors are not lost to float error
        max_positions=math.floor(_lerp(lo.max_positions, hi.max_positions, t) + 1e-9),
        # the stress move *shrinks* with a higher level in the presets; interpolate it as given
        stress_move_pct=_lerp(lo.stress_move_pct, hi.stress_move_pct, t),
        regime_multipliers={r: _lerp(lo.regime_multipliers[r], hi.regime_multipliers[r], t) for r in REGIMES},
        collar_ticks=cfg.collar_ticks,
        collar_pct=cfg.collar_pct,
        orders_per_minute=cfg.orders_per_minute,
        order_burst=cfg.order_burst,
        duplicate_window_s=cfg.duplicate_window_s,
        **floats,
    )


def check_presets_monotone(config: RiskConfig) -> list[str]:
    """Names of limits that are *not* non-decreasing Low → Moderate → High (empty list: all monotone)."""
    bad = []
    for name in (*_FLOAT_FIELDS, "max_positions"):
        a, b, c = (getattr(p, name) for p in (config.low, config.moderate, config.high))
        if not a <= b <= c:
            bad.append(name)
    return bad


def preset_table(config: RiskConfig | None = None) -> dict[str, RiskPreset]:
    cfg = config or RiskConfig()
    return {"low": cfg.low, "moderate": cfg.moderate, "high": cfg.high}
