"""The ML gate on a strategy's entries: a registered model's reading and the filter that acts on it.

Split from :mod:`engine.strategies.base` (which still exports these names): the gate is a small decision of
its own, shared by the live scorer (:mod:`engine.ml.signal`), the strategy contexts that answer
``ml_probability`` and :class:`~engine.strategies.base.ManagedStrategy`, which applies it to each entry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field


@dataclass(frozen=True, slots=True)
class MLReading:
    """A model's answer for one entry: the calibrated probability (NaN: none), the model's own gate level
    (its training base rate or the gate it was trained with; NaN: unknown) and why, in words."""

    probability: float
    gate: float = math.nan
    model: str = ""
    version: int | None = None
    feature_day: str = ""
    reason: str = ""


class MLFilter(BaseModel):
    """The ML filter stage of a strategy's entries (``ml.model`` = a registered model's name).

    ``min_probability`` gates: an entry goes out only when P(win) ≥ it (None: the model's own gate level).
    ``size_by_probability`` scales the strategy's size from half at the gate to full at P(win) = 1 — the
    model can only shrink a trade the strategy's risk sizing already allowed, never enlarge it.
    ``when_unavailable``: ``skip`` the entry when no probability can be had (model missing, features not
    ready), or ``allow`` it ungated.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    min_probability: float | None = Field(None, ge=0, le=1)
    size_by_probability: bool = False
    when_unavailable: str = Field("skip", pattern="^(skip|allow)$")


def ml_decision(flt: MLFilter, reading: MLReading, quantity: int) -> tuple[int, str]:
    """(quantity to trade, reason): 0 means skip. See :class:`MLFilter`."""
    p = reading.probability
    if not math.isfinite(p):
        if flt.when_unavailable == "allow":
            return quantity, f"ML filter open (no probability: {reading.reason})"
        return 0, f"ML filter: no probability ({reading.reason})"
    level = flt.min_probability if flt.min_probability is not None else reading.gate
    if level is None or not math.isfinite(level):
        level = 0.5
    if p < level:
        return 0, f"ML filter: P(win) {p:.0%} < {level:.0%} ({reading.reason})"
    if flt.size_by_probability:
        frac = 0.5 + 0.5 * min(1.0, (p - level) / max(1e-9, 1.0 - level))
        quantity = max(1, math.floor(quantity * frac))
    return quantity, f"ML filter: P(win) {p:.0%} ≥ {level:.0%} ({reading.reason})"
