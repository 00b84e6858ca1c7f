"""Paper on live data: the tastytrade / IBKR feed drives the simulated exchange (tastytrade has no paper
trading), so paper orders fill against the broker's real quotes — and nothing reaches the broker."""

from __future__ import annotations

from decimal import Decimal

import numpy as np

from engine.brokers.config import IbkrConfig, TastytradeConfig
from engine.brokers.ibkr import IbkrConnection
from engine.brokers.paper import PaperBroker
from engine.brokers.tastytrade import TastytradeConnection
from engine.bus.events import OrderFilled
from engine.credentials import CredentialStore
from engine.market.ibkr import IbkrFeed
from engine.market.tastytrade import TastytradeFeed
from engine.model import Right, Side
from tests.brokers.conftest import wait_until
from tests.brokers.fakes.tastytrade_server import PROVIDER_SECRET, REFRESH_TOKEN, FakeTastytrade
from tests.brokers.fakes.tws_server import FakeTws
from tests.brokers.helpers import single


async def _fill_against_feed(feed, bus, recorder, expiry) -> None:
    paper = PaperBroker(bus)
    await paper.connect()
    try:
        await feed.subscribe("SPY", [expiry], (595.0, 605.0))
        key = f"SPY{expiry:%y%m%d}C00600000"
        await wait_until(lambda: np.isfinite(feed.last_chain("SPY").ask[feed.last_chain("SPY").row_of(key)]),
                         what="a live ask for the 600 call")
        chain = feed.last_chain("SPY")
        ask = chain.ask[chain.row_of(key)]
        order = single("SPY", expiry, 600, Right.CALL, Side.BUY, f"{ask + 0.50:.2f}", account=paper.account_id)
        await paper.submit(order)
        filled = await recorder.wait_for(OrderFilled, lambda e: e.order.order_id == order.order_id)
        (fill,) = filled.fills
        assert fill.quantity == 1 and abs(fill.price - Decimal(str(ask))) <= Decimal("0.05")
        assert filled.order.broker == "paper" or filled.order.status.value == "filled"
    finally:
        await paper.disconnect()


async def test_paper_fills_on_tastytrade_quotes(bus, recorder):
    async with FakeTastytrade() as fake:
        store = CredentialStore(backend=None, env={"OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET,
                                                   "OPTIONDESK_TT_REFRESH_TOKEN": REFRESH_TOKEN})
        conn = TastytradeConnection(TastytradeConfig(api_url=fake.api_url, streamer_url=fake.streamer_url,
                                                     call_timeout_s=3), credentials=store, bus=bus, env={})
        feed = TastytradeFeed(conn, bus)
        await feed.start()
        try:
            await _fill_against_feed(feed, bus, recorder, fake.expirations[0])
        finally:
            await feed.stop()
            await conn.disconnect()
        assert not [r for r in fake.requests if r[0] in ("POST", "PUT", "DELETE") and "/orders" in r[1]]


async def test_paper_fills_on_ibkr_quotes(bus, recorder):
    async with FakeTws() as tws:
        conn = IbkrConnection(IbkrConfig(port=tws.port, call_timeout_s=3, connect_timeout_s=3), bus=bus)
        feed = IbkrFeed(conn, bus)
        await feed.start()
        try:
            await _fill_against_feed(feed, bus, recorder, tws.expirations[0])
        finally:
            await feed.stop()
            await conn.disconnect()
        assert not [f for f in tws.requests if f[0] == "3"]
