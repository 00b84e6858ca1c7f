"""The simulated market: the embedded default feed, what paper mode fills against and the backtester replays.

- :class:`SimulatedMarket` — synchronous, deterministic market (dynamics, listing, quotes, clock);
- :class:`SimulatedFeed` — streams it on the bus through the :class:`~engine.market.feed.Feed` interface;
- :func:`generate_history` / :func:`load_history` — reproducible daily (and intraday) chain snapshots.
"""

from engine.market.simulated.calendar import MarketCalendar
from engine.market.simulated.feed import ExDividendAhead, MarketRegimeChanged, SimClock, SimulatedFeed
from engine.market.simulated.market import SimulatedMarket, market_calendar, market_calendar_for

__all__ = [
    "ExDividendAhead", "MarketCalendar", "MarketRegimeChanged", "SimClock", "SimulatedFeed", "SimulatedMarket", "market_calendar",
    "market_calendar_for",
]
