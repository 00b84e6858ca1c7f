"""DXLink on the loopback tastytrade: the market-data websocket (SETUP → AUTH → CHANNEL_REQUEST → FEED_SETUP in
COMPACT format → FEED_SUBSCRIPTION → FEED_DATA rows honouring ``acceptEventFields``), a ticker that moves quotes,
and daily ``Candle`` snapshots (newest first, ``SNAPSHOT_BEGIN`` … ``SNAPSHOT_END``) for the history source.

A mixin of :class:`~tests.brokers.fakes.tastytrade_server.FakeTastytrade`, whose state (subscriptions, fields,
candles, the model's prices) it reads.
"""

from __future__ import annotations

import asyncio
import json
import math
from datetime import UTC, datetime
from typing import Any

DXLINK_TOKEN_PREFIX = "dxlink-token-"
# Channel numbers fixed per event type in SDK 13.x (MAP_EVENTS order × 2 + 1).
CHANNELS = {"Candle": 1, "Greeks": 3, "Profile": 5, "Quote": 7, "Summary": 9, "TheoPrice": 11,
            "TimeAndSale": 13, "Trade": 15, "Underlying": 17}


class DxLinkServer:
    """The fake's DXLink half (see the module docstring)."""

    def _quote_values(self, symbol: str) -> dict[str, Any]:
        ts = int(datetime.now(UTC).timestamp() * 1000)
        price, _ = self._model(symbol)
        half = 0.01 if symbol == self.underlying else 0.05
        return {"eventType": "Quote", "eventSymbol": symbol, "eventTime": 0, "sequence": 0, "timeNanoPart": 0,
                "bidTime": ts, "bidExchangeCode": "Q", "askTime": ts, "askExchangeCode": "Q",
                "bidPrice": round(max(price - half, 0.0), 2), "askPrice": round(price + half, 2),
                "bidSize": 10, "askSize": 12}

    def _greeks_values(self, symbol: str) -> dict[str, Any]:
        price, delta = self._model(symbol)
        return {"eventType": "Greeks", "eventSymbol": symbol, "eventTime": 0, "eventFlags": 0, "index": 0,
                "time": 0, "sequence": 0, "price": round(price, 4), "volatility": 0.18, "delta": round(delta, 4),
                "gamma": 0.02, "theta": -0.05, "rho": 0.01, "vega": 0.3}

    def _trade_values(self, symbol: str) -> dict[str, Any]:
        price, _ = self._model(symbol)
        return {"eventSymbol": symbol, "eventTime": 0, "time": 0, "timeNanoPart": 0, "sequence": 0,
                "exchangeCode": "C", "dayId": 0, "tickDirection": "UP", "extendedTradingHours": False,
                "price": round(price, 2), "change": 0.1, "size": 1, "dayVolume": 1234, "dayTurnover": 0}

    def _summary_values(self, symbol: str) -> dict[str, Any]:
        return {"eventSymbol": symbol, "eventTime": 0, "dayId": 0, "dayClosePriceType": "REGULAR", "prevDayId": 0,
                "prevDayClosePriceType": "FINAL", "openInterest": 4321, "dayOpenPrice": 1.0, "dayHighPrice": 1.2,
                "dayLowPrice": 0.9, "dayClosePrice": "NaN", "prevDayClosePrice": 1.1, "prevDayVolume": 1000}

    def _model(self, symbol: str) -> tuple[float, float]:
        if symbol == self.underlying:
            return self.spot, 1.0
        # ".SPY260619C600"
        body = symbol[1 + len(self.underlying):]
        right, strike = body[6], float(body[7:])
        intrinsic = max(self.spot - strike, 0.0) if right == "C" else max(strike - self.spot, 0.0)
        price = intrinsic + 4.0 * math.exp(-abs(strike - self.spot) / 15.0)
        delta = 0.5 * math.exp(-(strike - self.spot) / 20.0) if right == "C" else -0.5 * math.exp((strike - self.spot) / 20.0)
        return price, max(-1.0, min(1.0, delta))

    def _rows(self, ws: Any, kind: str, symbols: list[str]) -> list[Any]:
        fields = self._dx_fields.get(ws, {}).get(kind)
        if not fields:
            return []
        flat: list[Any] = []
        for s in symbols:
            if s != self.underlying and not s.startswith(f".{self.underlying}"):
                continue  # like DXLink: a symbol it does not list gets no data (the stream stays up)
            vals = {"Quote": self._quote_values, "Greeks": self._greeks_values, "Trade": self._trade_values,
                    "Summary": self._summary_values}[kind](s)
            flat.extend(vals.get(f, 0) for f in fields)
        return flat

    async def _send_feed(self, ws: Any, kind: str, symbols: list[str]) -> None:
        rows = self._rows(ws, kind, symbols)
        if rows:
            await ws.send(json.dumps({"type": "FEED_DATA", "channel": CHANNELS[kind], "data": [kind, rows]}))

    async def _send_candles(self, ws: Any, symbol: str, from_ms: int) -> None:
        """A daily-candle snapshot for ``SPY{=1d,...}``: newest first, SNAPSHOT_BEGIN on the first event and
        SNAPSHOT_END on the last (DXLink's indexed-event snapshot protocol)."""
        fields = self._dx_fields.get(ws, {}).get("Candle")
        base = symbol.split("{", 1)[0]
        rows = sorted(((d, c, iv) for d, c, iv in self.candles.get(base, [])
                       if datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000 >= from_ms), reverse=True)
        if not fields or not rows:
            return
        flat: list[Any] = []
        for i, (d, close, iv) in enumerate(rows):
            flags = 0
            if self.candle_snapshot_flags:
                flags = (0x4 if i == 0 else 0) | (0x8 if i == len(rows) - 1 else 0)
            ms = int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() * 1000)
            values = {"eventType": "Candle", "eventSymbol": symbol, "eventTime": 0, "eventFlags": flags,
                      "index": ms << 22, "time": ms, "sequence": 0, "count": 1, "volume": 1_000_000, "vwap": close,
                      "bidVolume": "NaN", "askVolume": "NaN", "impVolatility": "NaN" if iv is None else iv,
                      "openInterest": "NaN", "open": close, "high": close, "low": close, "close": close}
            flat.extend(values.get(f, 0) for f in fields)
        await ws.send(json.dumps({"type": "FEED_DATA", "channel": CHANNELS["Candle"], "data": ["Candle", flat]}))

    async def _ticker(self, ws: Any) -> None:
        while True:
            await asyncio.sleep(self.tick_interval)
            for kind, syms in list(self._dx_subs.get(ws, {}).items()):
                if syms:
                    await self._send_feed(ws, kind, sorted(syms))

    async def _dxlink(self, ws: Any) -> None:
        self.dx_connections += 1
        self._dx_subs[ws] = {}
        self._dx_fields[ws] = {}
        ticker: asyncio.Task[None] | None = None
        try:
            async for raw in ws:
                msg = json.loads(raw)
                t = msg.get("type")
                if t == "SETUP":
                    await ws.send(json.dumps({"type": "SETUP", "channel": 0, "version": "1.0-fake",
                                              "keepaliveTimeout": 60, "acceptKeepaliveTimeout": 60}))
                    await ws.send(json.dumps({"type": "AUTH_STATE", "channel": 0, "state": "UNAUTHORIZED"}))
                elif t == "AUTH":
                    if msg.get("token") != self.dx_token:
                        await ws.send(json.dumps({"type": "ERROR", "channel": 0, "error": "UNAUTHORIZED",
                                                  "message": "invalid token"}))
                        continue
                    self._dx_conns.add(ws)
                    await ws.send(json.dumps({"type": "AUTH_STATE", "channel": 0, "state": "AUTHORIZED",
                                              "userId": "fake"}))
                    ticker = asyncio.get_running_loop().create_task(self._ticker(ws))
                elif t == "CHANNEL_REQUEST":
                    await ws.send(json.dumps({"type": "CHANNEL_OPENED", "channel": msg["channel"], "service": "FEED",
                                              "parameters": msg.get("parameters", {})}))
                elif t == "FEED_SETUP":
                    self._dx_fields[ws].update(msg.get("acceptEventFields", {}))
                    await ws.send(json.dumps({"type": "FEED_CONFIG", "channel": msg["channel"],
                                              "dataFormat": "COMPACT",
                                              "eventFields": msg.get("acceptEventFields", {})}))
                elif t == "FEED_SUBSCRIPTION":
                    for item in msg.get("remove", []):
                        self._dx_subs[ws].get(item["type"], set()).discard(item["symbol"])
                    added: dict[str, list[str]] = {}
                    for item in msg.get("add", []):
                        self._dx_subs[ws].setdefault(item["type"], set()).add(item["symbol"])
                        added.setdefault(item["type"], []).append(item["symbol"])
                    for kind, syms in added.items():
                        self.subscribe_log.append((kind, tuple(syms)))
                        if kind == "Candle":
                            starts = {i["symbol"]: int(i.get("fromTime", 0)) for i in msg.get("add", [])
                                      if i["type"] == "Candle"}
                            for sym in syms:
                                await self._send_candles(ws, sym, starts.get(sym, 0))
                            self._dx_subs[ws].pop("Candle", None)  # history only: no ticking updates
                        else:
                            await self._send_feed(ws, kind, syms)
                elif t == "KEEPALIVE":
                    await ws.send(json.dumps({"type": "KEEPALIVE", "channel": 0}))
        except Exception:
            pass
        finally:
            if ticker is not None:
                ticker.cancel()
            self._dx_conns.discard(ws)
            self._dx_subs.pop(ws, None)
            self._dx_fields.pop(ws, None)

    def subscribed(self, kind: str = "Quote") -> set[str]:
        out: set[str] = set()
        for subs in self._dx_subs.values():
            out |= subs.get(kind, set())
        return out
