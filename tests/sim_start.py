"""The pinned simulated start of every test engine and feed.

A simulated market without a start opens on today's New York session, so a test that leaves it
unpinned sees a different market on a Saturday night, a holiday or an expiry Friday than on a
Tuesday morning. Tests build their markets from here instead (tests/conftest.py refuses the rest).
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from engine.settings import Settings

#: a Monday session with no holiday or expiry nearby that changes the listing
SIM_START = date(2026, 3, 2)


def pinned_settings(settings: Settings | None = None, *, start: date = SIM_START) -> Settings:
    """``settings`` (default settings when None) with the simulated market starting at ``start``."""
    from engine.settings import Settings

    s = settings if settings is not None else Settings()
    return s.model_copy(update={"simulator": s.simulator.model_copy(update={"start": start.isoformat()})})
