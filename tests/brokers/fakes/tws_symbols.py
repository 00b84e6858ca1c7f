"""``reqMatchingSymbols`` (81) on the loopback TWS, answered by ``symbolSamples`` (79) in the server-176 layout
``ib_async.decoder.symbolSamples`` reads: per contract conId, symbol, secType, primary exchange, currency, the
derivative security types (count, then each), description and issuer id."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.brokers.fakes.tws_server import FakeTws, _Conn

#: (conId, symbol, secType, primary exchange, derivative sec types, description)
LISTED: list[tuple[int, str, str, str, tuple[str, ...], str]] = [
    (756733, "SPY", "STK", "ARCA", ("OPT", "WAR"), "SPDR S&P 500 ETF TRUST"),
    (416904, "SPX", "IND", "CBOE", ("OPT", "FUT"), "S&P 500 Stock Index"),
    (44652000, "SPXL", "STK", "ARCA", ("OPT",), "DIREXION DAILY S&P 500 BULL 3X"),
    (76792991, "SPOT", "STK", "NYSE", ("OPT",), "SPOTIFY TECHNOLOGY SA"),
    (12087792, "SPY", "CASH", "IDEALPRO", (), "not a stock: left out by the adapter"),
    (265598, "AAPL", "STK", "NASDAQ", ("OPT", "IOPT"), "APPLE INC"),
]


@dataclass
class TwsSymbols:
    fake: FakeTws
    listed: list[tuple[int, str, str, str, tuple[str, ...], str]] = field(default_factory=lambda: list(LISTED))
    patterns: list[str] = field(default_factory=list)

    def request(self, conn: _Conn, f: list[str]) -> None:
        req_id, pattern = f[1], f[2].upper()
        self.patterns.append(pattern)
        hits = [x for x in self.listed if x[1].startswith(pattern) or x[5].upper().startswith(pattern)][:16]
        fields: list[Any] = []
        for con_id, symbol, sec_type, exchange, derivs, description in hits:
            fields += [con_id, symbol, sec_type, exchange, "USD", len(derivs), *derivs, description, ""]
        self.fake._send(conn, 79, req_id, len(hits), *fields)
