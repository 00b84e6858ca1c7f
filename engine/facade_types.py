"""The types the ``Engine`` facade (engine/core.py) declares for components with several implementations.

A market feed is the simulated market, tastytrade's or IBKR's streamer; a broker is the paper exchange or a
real account. The facade and the GUI depend on these contracts, never on one implementation, so a feed swap
(a broker connected, paper on live data) changes no caller. ``Feed`` and ``Broker`` are the abstract bases
every implementation already derives from; the protocols below describe what only some implementations
offer, so a caller asks ``isinstance(feed, SessionFeed)`` instead of probing attribute names.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol, runtime_checkable

from engine.brokers.base import Broker
from engine.market.feed import Feed

__all__ = ["Broker", "Feed", "SessionFeed"]


@runtime_checkable
class SessionFeed(Protocol):
    """A feed that knows its exchange session (the simulated market runs a calendar of its own; a broker's
    streamer follows the real one and does not say)."""

    def market_open(self) -> bool: ...

    def now(self) -> datetime | None: ...

