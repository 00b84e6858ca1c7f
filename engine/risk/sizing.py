"""Position sizing helpers. Each returns a number of contracts together with the reasoning.

- :func:`size_by_max_risk`: contracts = floor(net_liq × risk_per_trade × regime multiplier ÷ max loss per
  contract), capped by the max position size (trading-rules.md).
- :func:`size_by_kelly`: Kelly fraction f* = (p·W − (1−p)·L) / W for a trade that wins ``W`` with probability
  ``p`` and loses ``L`` otherwise, applied at ``kelly_fraction`` (quarter Kelly by default) of net liquidation,
  then divided by the max loss per contract and capped like the above.

``max_loss_per_contract`` is in dollars for one unit of the order (already × multiplier).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.risk.profile import RiskProfile


@dataclass(frozen=True, slots=True)
class SizingResult:
    contracts: int
    reasoning: tuple[str, ...]
    budget: float  # dollars of risk the result was sized to
    kelly_f: float | None = None

    def explain(self) -> str:
        return "; ".join(self.reasoning)


def _validate(net_liquidation: float, max_loss_per_contract: float) -> None:
    if not (math.isfinite(net_liquidation) and net_liquidation > 0):
        raise ValueError(f"net liquidation must be a positive number, got {net_liquidation!r}")
    if not (math.isfinite(max_loss_per_contract) and max_loss_per_contract > 0):
        raise ValueError(f"max loss per contract must be a positive number of dollars, got {max_loss_per_contract!r}")


def _cap(contracts: int, reasons: list[str], net_liquidation: float, max_loss_per_contract: float,
         profile: RiskProfile) -> int:
    cap_dollars = profile.max_position_pct * net_liquidation
    cap = int(cap_dollars // max_loss_per_contract)
    if contracts > cap:
        reasons.append(f"capped at {cap} by max position size {profile.max_position_pct:.1%} of net liq "
                       f"(${cap_dollars:,.0f})")
        return cap
    return contracts


def size_by_max_risk(net_liquidation: float, max_loss_per_contract: float, profile: RiskProfile,
                     regime: str | None = None) -> SizingResult:
    """Contracts such that the order's max loss stays within risk-per-trade × the regime multiplier."""
    _validate(net_liquidation, max_loss_per_contract)
    mult = profile.regime_multiplier(regime)
    budget = net_liquidation * profile.risk_per_trade_pct * mult
    contracts = int(budget // max_loss_per_contract)
    reasons = [
        f"risk per trade {profile.risk_per_trade_pct:.2%} of ${net_liquidation:,.0f} × regime "
        f"{regime or 'normal'} multiplier {mult:.2f} = ${budget:,.2f}",
        f"${budget:,.2f} ÷ max loss ${max_loss_per_contract:,.2f}/contract = {contracts}",
    ]
    contracts = _cap(contracts, reasons, net_liquidation, max_loss_per_contract, profile)
    if contracts == 0:
        reasons.append("one contract would exceed the risk budget: no trade")
    return SizingResult(contracts=contracts, reasoning=tuple(reasons), budget=budget)


def kelly_fraction(p_win: float, win: float, loss: float) -> float:
    """Full Kelly f* = (p·W − (1−p)·L) / W; negative means the trade has no edge."""
    if not 0.0 <= p_win <= 1.0:
        raise ValueError(f"win probability must be within 0..1, got {p_win!r}")
    if not (win > 0 and loss > 0):
        raise ValueError(f"win and loss must be positive amounts, got win={win!r} loss={loss!r}")
    return (p_win * win - (1.0 - p_win) * loss) / win


def size_by_kelly(net_liquidation: float, p_win: float, win_per_contract: float, max_loss_per_contract: float,
                  profile: RiskProfile, regime: str | None = None) -> SizingResult:
    """Fractional Kelly sizing (``profile.kelly_fraction``; 0.25 = quarter Kelly at the Moderate anchor)."""
    _validate(net_liquidation, max_loss_per_contract)
    f = kelly_fraction(p_win, win_per_contract, max_loss_per_contract)
    if f <= 0:
        return SizingResult(0, (f"Kelly f* = {f:.3f} ≤ 0: no edge, no trade",), 0.0, kelly_f=f)
    mult = profile.regime_multiplier(regime)
    budget = net_liquidation * f * profile.kelly_fraction * mult
    contracts = int(budget // max_loss_per_contract)
    reasons = [
        f"Kelly f* = (p·W − (1−p)·L)/W = ({p_win:.3f}·{win_per_contract:,.2f} − {1 - p_win:.3f}·"
        f"{max_loss_per_contract:,.2f})/{win_per_contract:,.2f} = {f:.4f}",
        f"× Kelly fraction {profile.kelly_fraction:.2f} × regime {regime or 'normal'} multiplier {mult:.2f} "
        f"× ${net_liquidation:,.0f} = ${budget:,.2f} at risk",
        f"${budget:,.2f} ÷ max loss ${max_loss_per_contract:,.2f}/contract = {contracts}",
    ]
    contracts = _cap(contracts, reasons, net_liquidation, max_loss_per_contract, profile)
    return SizingResult(contracts=contracts, reasoning=tuple(reasons), budget=budget, kelly_f=f)
