"""Builds a broker adapter (connection, broker, feed) by name — one place for the check and the engine."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.brokers.config import BrokersConfig
    from engine.bus import Bus
    from engine.credentials import CredentialStore

BROKER_NAMES = ("tastytrade", "ibkr")


@dataclass
class Adapter:
    name: str
    connection: Any
    broker: Any  # engine.brokers.base.Broker
    feed: Any  # engine.market.feed.Feed
    endpoint: str

    def history_source(self, loop: Any) -> Any:
        """The broker's daily history as an :class:`~engine.history.source.HistorySource` (None when the
        broker has none here); ``loop`` is the engine loop the connection lives on."""
        if self.name == "tastytrade":
            from engine.history.tastytrade import TastytradeHistorySource

            return TastytradeHistorySource(self.connection, loop)
        if self.name == "ibkr":
            from engine.history.ibkr import IbkrHistorySource

            return IbkrHistorySource(self.connection, loop, clock=self.broker.clock)
        return None


def build_adapter(name: str, config: BrokersConfig, bus: Bus, *, credentials: CredentialStore | None = None,
                  underlyings: list[str] | None = None) -> Adapter:
    """The SDKs are imported here, lazily; nothing connects until ``broker.connect()``."""
    feed_kw: dict[str, Any] = {} if not underlyings else {"underlyings": list(underlyings)}
    if name == "tastytrade":
        from engine.brokers.tastytrade import TastytradeBroker, TastytradeConnection
        from engine.market.tastytrade import TastytradeFeed

        tt = TastytradeConnection(config.tastytrade, credentials=credentials, bus=bus,
                                  breaker=config.circuit_breaker, reconnect=config.reconnect)
        endpoint = tt.api_url + (" (sandbox)" if config.tastytrade.sandbox else "")
        return Adapter(name, tt, TastytradeBroker(tt, bus), TastytradeFeed(tt, bus, **feed_kw), endpoint)
    if name == "ibkr":
        from engine.brokers.ibkr import IbkrBroker, IbkrConnection
        from engine.market.ibkr import IbkrFeed

        ib = IbkrConnection(config.ibkr, bus=bus, breaker=config.circuit_breaker, reconnect=config.reconnect)
        c = config.ibkr
        endpoint = f"{c.host}:{c.port} client {c.client_id}" + (" (paper port)" if c.is_paper_port else "")
        return Adapter(name, ib, IbkrBroker(ib, bus), IbkrFeed(ib, bus, **feed_kw), endpoint)
    raise ValueError(f"unknown broker {name!r}; choose one of {', '.join(BROKER_NAMES)}")
