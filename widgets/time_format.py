"""Times in the GUI: one format, New York time with the zone named, from the engine's clock.

Every panel that shows a timestamp (orders, approvals, event log, status bar, chain and surface
headers, backtest trades) writes it with :func:`format_market_time`, so one instant reads the same
everywhere, and orders rows by the ``datetime`` itself (:func:`time_sort_key`), never by the text.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import TYPE_CHECKING

from engine.clock import MARKET_TIME_FORMAT, MARKET_ZONE, format_market_time

if TYPE_CHECKING:
    from engine.core import Engine

__all__ = ["MARKET_TIME_FORMAT", "MARKET_ZONE", "engine_now", "format_market_time", "time_sort_key"]


def engine_now(engine: Engine | None) -> datetime:
    """The engine's market time (the simulated clock in paper-on-simulation), as the panels must use it."""
    from widgets.engine_queries import now

    return now(engine)


def time_sort_key(ts: datetime | None) -> float:
    """A number that orders instants (None first): the epoch seconds of the aware datetime."""
    return -math.inf if ts is None else ts.timestamp()
