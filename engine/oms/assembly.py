"""Builds the order path and risk components in the right order for the engine (``engine/core.py``).

    path = build_order_path(bus, store, brokers={"paper": paper_broker}, feed=feed, now=engine_now,
                            risk_config=settings.risk, oms_config=settings.oms)
    await path.start()      # registers command handlers, loads the account, reconciles, starts the kill switch
    ...
    await path.stop()

``start()`` must run before the GUI bridge subscribes to order events, so the OMS's inline handlers update its
state before any view sees a broker report.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from engine.brokers.paper_config import PaperConfig
from engine.oms.config import OmsConfig
from engine.oms.groups import OrderGroupManager
from engine.oms.manager import OrderManager
from engine.oms.price_walk import PriceWalker
from engine.oms.router import ModeRouter
from engine.risk.config import RiskConfig
from engine.risk.engine import RiskEngine
from engine.risk.kill_switch import KillSwitch
from engine.risk.market_view import MarketView
from engine.risk.service import RiskService
from engine.risk.state import PortfolioState

if TYPE_CHECKING:
    from engine.brokers.base import Broker
    from engine.bus import Bus
    from engine.store import Store


@dataclass
class OrderPath:
    market: MarketView
    portfolio: PortfolioState
    kill_switch: KillSwitch
    risk: RiskEngine
    router: ModeRouter
    oms: OrderManager
    service: RiskService
    groups: OrderGroupManager
    started: bool = False
    walker: PriceWalker | None = None

    async def start(self, *, reconcile: bool = True) -> None:
        self.oms.register()
        self.service.register()
        self.groups.register()  # after the OMS: a member's event reaches the groups once the OMS applied it
        if self.walker is not None:
            self.walker.register()  # after the OMS too: it reads the OMS's view of the order it walks
        await self.oms.load_portfolio()
        await self.oms.start(reconcile=reconcile)
        await self.service.start()
        await self.groups.start()
        self.started = True

    async def stop(self) -> None:
        if not self.started:
            return
        if self.walker is not None:
            await self.walker.stop()
        await self.groups.stop()
        await self.service.stop()
        await self.oms.stop()
        self.market.close()
        self.portfolio.close()
        self.started = False


def build_order_path(bus: Bus, store: Store, *, brokers: dict[str, Broker], breakers: dict[str, Any] | None = None,
                     now: Callable[[], datetime], feed: Any = None,
                     risk_config: RiskConfig | None = None, oms_config: OmsConfig | None = None,
                     on_persisted: Callable[[Any, str], None] | None = None) -> OrderPath:
    """Compose MarketView, PortfolioState, KillSwitch, RiskEngine, ModeRouter, OrderManager and RiskService.

    ``brokers`` must contain the paper broker under ``"paper"``; live adapters may be added later with
    ``path.router.add_broker(broker, breaker)``. ``now`` is market time (the simulated clock when one runs).
    """
    if "paper" not in brokers:
        raise ValueError("the order path needs the paper broker under the name 'paper'")
    rcfg = risk_config or RiskConfig()
    clock = now
    market = MarketView(bus, feed, rate=rcfg.risk_free_rate, dividend_yields=rcfg.dividend_yields)
    portfolio = PortfolioState(bus)
    kill_switch = KillSwitch(store, bus, rcfg)
    paper_config = getattr(brokers["paper"], "config", None)  # one margin model: the paper broker's numbers
    margin = paper_config.margin_rules() if isinstance(paper_config, PaperConfig) else None
    risk = RiskEngine(rcfg, market=market, portfolio=portfolio, trading_state=lambda: kill_switch.state, now=clock,
                      margin=margin)
    router = ModeRouter(brokers, breakers=breakers)
    oms = OrderManager(bus, store, router, risk, kill_switch, config=oms_config, now=clock, on_persisted=on_persisted)
    service = RiskService(bus, risk, kill_switch)
    groups = OrderGroupManager(bus, store, oms, now=clock)
    walker = PriceWalker(bus, oms, market.bid_ask, now=clock)
    return OrderPath(market, portfolio, kill_switch, risk, router, oms, service, groups, walker=walker)
