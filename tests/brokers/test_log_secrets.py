"""A whole broker session's log output, captured at DEBUG everywhere, must not contain a token, a secret
or a full account number (only the last 4 digits)."""

from __future__ import annotations

import logging
from decimal import Decimal

from engine.brokers.config import CircuitBreakerConfig, IbkrConfig, ReconnectConfig, TastytradeConfig
from engine.brokers.ibkr import IbkrBroker, IbkrConnection
from engine.brokers.tastytrade import TastytradeBroker, TastytradeConnection
from engine.bus.events import OrderAccepted, OrderFilled, OrderRejected
from engine.credentials import CredentialStore
from engine.market.ibkr import IbkrFeed
from engine.market.tastytrade import TastytradeFeed
from tests.brokers.conftest import wait_until
from tests.brokers.fakes.tastytrade_server import PROVIDER_SECRET, REFRESH_TOKEN, FakeTastytrade
from tests.brokers.fakes.tws_server import FakeTws
from tests.brokers.helpers import put_spread

FAST = ReconnectConfig(initial_delay_s=0.05, max_delay_s=0.2, jitter=0.1)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("fakes."):  # the loopback servers' own logs are not the app's
            self.lines.append(self.format(record))


async def test_session_logs_contain_no_secrets_tokens_or_full_account_numbers(bus, recorder):
    root = logging.getLogger()
    cap = _Capture()
    old_level = root.level
    root.addHandler(cap)
    root.setLevel(logging.DEBUG)
    try:
        async with FakeTastytrade() as tt, FakeTws() as tws:
            # ---- tastytrade: connect, stream, order, fill, rejection, replace, cancel, reconnect ----
            store = CredentialStore(backend=None, env={"OPTIONDESK_TT_PROVIDER_SECRET": PROVIDER_SECRET,
                                                       "OPTIONDESK_TT_REFRESH_TOKEN": REFRESH_TOKEN})
            conn = TastytradeConnection(TastytradeConfig(api_url=tt.api_url, streamer_url=tt.streamer_url,
                                                         call_timeout_s=3), credentials=store, bus=bus,
                                        reconnect=FAST, env={})
            broker = TastytradeBroker(conn, bus)
            feed = TastytradeFeed(conn, bus)
            await broker.connect()
            await feed.start()
            assert logging.getLogger("tastytrade").getEffectiveLevel() == logging.WARNING
            await feed.subscribe("SPY", [tt.expirations[0]], (595.0, 605.0))
            broker.arm_live(tt.account)
            await broker.submit(put_spread("SPY", tt.expirations[0], 590, 585, "-1.10", account=tt.account))
            acc = await recorder.wait_for(OrderAccepted)
            tt.fill(int(acc.order.broker_order_id))
            await recorder.wait_for(OrderFilled)
            tt.reject_orders_with = "Insufficient buying power"
            await broker.submit(put_spread("SPY", tt.expirations[0], 590, 585, "-1.10", account=tt.account))
            await recorder.wait_for(OrderRejected)
            await tt.close_streams()
            await wait_until(lambda: feed.connects >= 2 and broker.stream_connects >= 2, timeout=10)
            await feed.stop()
            await broker.disconnect()
            # ---- IBKR: connect, window, whatIf, BAG order, fill, reconnect ----
            iconn = IbkrConnection(IbkrConfig(port=tws.port, call_timeout_s=3, connect_timeout_s=3), bus=bus,
                                   reconnect=FAST, breaker=CircuitBreakerConfig())
            ib = IbkrBroker(iconn, bus)
            ifeed = IbkrFeed(iconn, bus)
            await ib.connect()
            await ifeed.start()
            await ifeed.subscribe("SPY", [tws.expirations[0]], (595.0, 605.0))
            order = put_spread("SPY", tws.expirations[0], 590, 585, "-1.10", account=tws.account)
            await ib.preview(order)
            ib.arm_live(tws.account)
            await ib.submit(order)
            acc = await recorder.wait_for(OrderAccepted, lambda e: e.order.broker == "ibkr")
            await ib.replace(acc.order, Decimal("-1.00"))
            await wait_until(lambda: len([f for f in tws.requests if f[0] == "3"]) == 3)  # whatIf, place, modify
            tws.fill(int(acc.order.broker_order_id))
            await recorder.wait_for(OrderFilled, lambda e: e.order.broker == "ibkr")
            await tws.close_all()
            await wait_until(lambda: tws.connections == 2 and iconn.connected, timeout=10)
            await ifeed.stop()
            await ib.disconnect()
            tokens = list(tt.issued_tokens)
    finally:
        root.removeHandler(cap)
        root.setLevel(old_level)
    text = "\n".join(cap.lines)
    assert len(cap.lines) > 20, "the session should have produced log output"
    for secret in (PROVIDER_SECRET, REFRESH_TOKEN, *tokens, "5WT00042", "DU1234567"):
        assert secret not in text, f"{secret[:6]}… leaked into the logs"
    assert "****0042" in text or "****4567" in text  # masked forms are what we log
