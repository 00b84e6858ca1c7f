"""What the pre-trade check answers: one :class:`CheckResult` per check and the :class:`RiskDecision` that
gathers them. Kept apart from :mod:`engine.risk.engine` so the checks (:mod:`engine.risk.checks`), the order
manager and the strategy host can build and read results without the engine's state."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.risk.greeks import Exposure
from engine.risk.payoff import PayoffSummary

#: the stages of :meth:`engine.risk.engine.RiskEngine.check`, in order
STAGES = ("validate", "trading_state", "order_risk", "portfolio_risk", "throttle")


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's outcome with its numbers (``value`` vs ``limit`` in ``unit``).

    ``stage`` is the stage that ran it; ``code`` names a validation problem (``quantity_too_large``,
    ``contract_expired``, ...) so a denial can be told apart without parsing the message."""

    name: str
    passed: bool
    value: float | None = None
    limit: float | None = None
    unit: str = ""
    message: str = ""
    stage: str = ""
    code: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "passed": self.passed, "value": self.value, "limit": self.limit,
                "unit": self.unit, "message": self.message, "stage": self.stage, "code": self.code}


@dataclass(frozen=True, slots=True)
class RiskDecision:
    order_id: str
    passed: bool
    results: tuple[CheckResult, ...]
    reducing: bool = False
    payoff: PayoffSummary | None = None
    order_exposure: Exposure = field(default_factory=Exposure)
    projected: Exposure = field(default_factory=Exposure)
    current: Exposure = field(default_factory=Exposure)
    buying_power_required: float = 0.0

    @property
    def failed(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if not r.passed)

    @property
    def stage(self) -> str:
        """The first stage that said no ("" when the order passed)."""
        failed = {r.stage for r in self.failed}
        return next((s for s in STAGES if s in failed), next(iter(failed), ""))

    def summary(self) -> str:
        if not self.failed:
            return "all checks passed"
        return f"{self.stage}: " + "; ".join(r.message for r in self.failed)
