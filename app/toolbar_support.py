"""What the toolbar's controls share: whether the engine handles a command, dollars, the account in use.

A module of its own so the controls (each in its own module) and the toolbar that assembles them import it
without importing one another.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from widgets import engine_queries as eq

if TYPE_CHECKING:
    from engine.core import Engine


def has_handler(engine: Engine | None, command_type: type) -> bool:
    """A control appears only when the engine component behind its command exists (a control that does
    nothing is never shown)."""
    bus = engine.bus if engine is not None else None
    return bool(bus is not None and bus.has_handler(command_type))


def fmt_money(value: Any, signed: bool = False) -> str:
    """``$12,345`` (or ``+$1,234`` / ``−$1,234`` when signed); ``—`` for None/NaN."""
    if value is None:
        return "—"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "—"
    if math.isnan(v):
        return "—"
    body = f"${abs(v):,.0f}"
    if signed:
        return ("+" if v > 0 else "−" if v < 0 else "") + body
    return ("−" if v < 0 else "") + body


def in_use(engine: Engine | None, account: Any) -> bool:
    """Is ``account`` the one the mode router sends orders to (the paper account in PAPER mode)?"""
    active = eq.active_broker(engine)
    return active is None or getattr(account, "broker", active) == active
