"""An order path on the real paper broker, a real SQLite store and a real bus (no mocks of our classes)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import numpy as np
from risk_kit import EXPIRY, NOW, RATE, SPOT, VOL, opt

from engine.brokers.paper import PaperBroker
from engine.brokers.paper_config import PaperConfig
from engine.bus import Bus
from engine.bus.events import ChainUpdated, Event
from engine.clock import ManualClock
from engine.model import Leg, OptionChain, OrderIntent, OrderType, Side
from engine.oms.config import OmsConfig
from engine.oms.manager import OrderManager
from engine.oms.router import ModeRouter
from engine.pricing import bsm
from engine.risk.config import RiskConfig
from engine.risk.engine import RiskEngine
from engine.risk.kill_switch import KillSwitch
from engine.risk.market_view import MarketView
from engine.risk.service import RiskService
from engine.risk.state import PortfolioState
from engine.store import Store

STRIKES = (570, 580, 590, 600, 610, 620, 630)


def spy_chain(spot: float = SPOT, half_spread: float = 0.05) -> OptionChain:
    options = [opt(k, r) for k in STRIKES for r in ("C", "P")]
    calls = np.array([o.is_call for o in options])
    k = np.array([float(o.strike) for o in options])
    t = np.array([o.time_to_expiry(NOW) for o in options])
    px = np.asarray(bsm.price(calls, spot, k, t, RATE, 0.0, VOL))
    bid = np.round(np.maximum(px - half_spread, 0.01), 2)
    ask = np.round(px + half_spread, 2)
    return OptionChain.build("SPY", spot, NOW, options, bid=bid, ask=ask, bid_size=np.full(len(options), 500.0),
                             ask_size=np.full(len(options), 500.0))


class Harness:
    def __init__(self, path: Path, *, risk_config: RiskConfig | None = None, oms_config: OmsConfig | None = None,
                 on_persisted=None, paper_config: PaperConfig | None = None) -> None:
        self.path = path
        self.paper_config = paper_config or PaperConfig(fees="zero")
        self.risk_config = risk_config or RiskConfig(duplicate_window_s=0.0)
        self.oms_config = oms_config or OmsConfig()
        self.on_persisted = on_persisted
        self.events: list[Event] = []

    async def start(self, *, publish_chain: bool = True) -> Harness:
        self.store = Store.open(self.path)
        self.bus = Bus()
        self.bus.subscribe(Event, self.events.append, name="test:all")
        self.clock = ManualClock(NOW)
        self.paper = PaperBroker(self.bus, self.store, self.paper_config, clock=self.clock)
        self.market = MarketView(self.bus, rate=RATE)
        self.portfolio = PortfolioState(self.bus)
        self.kill_switch = KillSwitch(self.store, self.bus, self.risk_config)
        self.risk = RiskEngine(self.risk_config, market=self.market, portfolio=self.portfolio,
                               trading_state=lambda: self.kill_switch.state, now=lambda: NOW)
        self.router = ModeRouter({"paper": self.paper})
        self.oms = OrderManager(self.bus, self.store, self.router, self.risk, self.kill_switch,
                                config=self.oms_config, now=lambda: NOW, on_persisted=self.on_persisted)
        self.service = RiskService(self.bus, self.risk, self.kill_switch)
        self.oms.register()  # first: its inline broker-report handlers run before other subscribers
        self.service.register()
        await self.paper.connect()
        if publish_chain:
            self.bus.publish(ChainUpdated(chain=spy_chain()))
        await self.oms.load_portfolio()
        await self.oms.start()
        await self.service.start()
        return self

    async def stop(self) -> None:
        await self.service.stop()
        await self.oms.stop()
        await self.paper.disconnect()
        await self.bus.close()
        self.store.close()

    def of(self, etype: type) -> list:
        return [e for e in self.events if isinstance(e, etype)]

    def mid(self, inst) -> float:
        return self.market.mid(inst)

    def put_spread(self, qty: int = 1, *, credit: float | None = None, source: str = "gui",
                   client_order_id: str | None = None, natural: bool = False) -> OrderIntent:
        """Short 590 / long 580 put spread at mid, at ``credit``, or at the natural (marketable) price."""
        short, long_ = opt(590, "P"), opt(580, "P")
        if natural:
            c = round(self.market.bid_ask(short)[0] - self.market.bid_ask(long_)[1], 2)
        else:
            c = credit if credit is not None else round(self.mid(short) - self.mid(long_), 2)
        return OrderIntent(legs=(Leg(short, Side.SELL), Leg(long_, Side.BUY)), quantity=qty,
                           limit_price=Decimal(f"{-c:.2f}"), source=source, client_order_id=client_order_id)

    def resting_call(self, qty: int = 1, *, below_mid: float = 1.0, strike: int = 610, source: str = "gui") -> OrderIntent:
        """A buy limit below the bid: rests (working) at the paper exchange."""
        c = opt(strike, "C")
        return OrderIntent(legs=(Leg(c, Side.BUY),), quantity=qty, order_type=OrderType.LIMIT,
                           limit_price=Decimal(f"{self.mid(c) - below_mid:.2f}"), source=source)

    def marketable_call(self, qty: int = 1, strike: int = 610) -> OrderIntent:
        c = opt(strike, "C")
        _, ask = self.market.bid_ask(c)
        return OrderIntent(legs=(Leg(c, Side.BUY),), quantity=qty, limit_price=Decimal(f"{ask:.2f}"))


async def wait_for(pred, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not pred():
        if loop.time() > end:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.005)


__all__ = ["EXPIRY", "Harness", "spy_chain", "wait_for"]
