"""Symbol search and market metrics on the loopback tastytrade: ``GET /symbols/search/{prefix}`` (symbols whose
ticker or description starts with the prefix, ``{"data": {"items": [{"symbol", "description"}]}}``) and
``GET /market-metrics?symbols=A,B`` (one item per known symbol with ``earnings.expected-report-date`` where set).
Shapes as the ``tastytrade`` SDK 13.2.3 parses them (``SymbolData``, ``MarketMetricInfo``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote

if TYPE_CHECKING:
    from tests.brokers.fakes.tastytrade_server import FakeTastytrade

LISTED = {"SPY": "SPDR S&P 500 ETF TRUST", "SPXL": "DIREXION DAILY S&P 500 BULL 3X", "SPOT": "SPOTIFY TECHNOLOGY SA",
          "QQQ": "INVESCO QQQ TRUST SERIES 1", "AAPL": "APPLE INC", "AMZN": "AMAZON.COM INC",
          "BRK/B": "BERKSHIRE HATHAWAY INC CL B"}


@dataclass
class TastytradeSymbols:
    fake: FakeTastytrade
    listed: dict[str, str] = field(default_factory=lambda: dict(LISTED))
    earnings: dict[str, date] = field(default_factory=dict)  # symbol -> expected report date
    metrics_requests: list[list[str]] = field(default_factory=list)

    def route(self, method: str, path: str, query: str) -> tuple[int, Any] | None:
        if method == "GET" and path.startswith("/symbols/search/"):
            prefix = unquote(path[len("/symbols/search/"):]).upper()
            items = [{"symbol": s, "description": d} for s, d in sorted(self.listed.items())
                     if s.startswith(prefix) or d.startswith(prefix)]
            return 200, {"data": {"items": items}}
        if method == "GET" and path == "/market-metrics":
            wanted = [s for part in parse_qs(query).get("symbols", []) for s in part.split(",") if s]
            self.metrics_requests.append(wanted)
            return 200, {"data": {"items": [self._metrics(s) for s in wanted if s in self.listed]}}
        return None

    def _metrics(self, symbol: str) -> dict[str, Any]:
        out: dict[str, Any] = {"symbol": symbol, "updated-at": "2026-03-02T15:00:00.000+00:00",
                               "market-cap": "1000000000", "implied-volatility-index": "0.18"}
        if symbol in self.earnings:
            out["earnings"] = {"estimated": True, "late-flag": 0, "visible": True,
                               "expected-report-date": self.earnings[symbol].isoformat(), "time-of-day": "AMC"}
        return out
