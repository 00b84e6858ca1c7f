from datetime import UTC, datetime
from decimal import Decimal

from engine.bus import Bus, PositionChanged
from engine.model import Option, Position
from engine.risk.state import PortfolioState


async def test_position_update_when_from_another_broker_than_the_active_one_then_ignored():
    bus = Bus()
    portfolio = PortfolioState(bus)
    portfolio.active_broker = "paper"
    spy = Option.from_occ("SPY   261218P00500000")
    qqq = Option.from_occ("QQQ   261218P00400000")
    bus.publish(PositionChanged(position=Position(spy, -1, Decimal("2.10"), opened_at=datetime.now(UTC)),
                                broker="paper"))
    bus.publish(PositionChanged(position=Position(qqq, 5, Decimal("1.00")), broker="tastytrade"))
    assert portfolio.quantity(spy.key) == -1
    assert portfolio.quantity(qqq.key) == 0  # the live account streaming while we paper-trade
    portfolio.active_broker = "tastytrade"
    bus.publish(PositionChanged(position=Position(qqq, 5, Decimal("1.00")), broker="tastytrade"))
    assert portfolio.quantity(qqq.key) == 5
    portfolio.close()
    await bus.close()
