"""Covered calls and collars on the ticket: the shares count per contract share (100 shares + 1 call is quoted as
stock − call, e.g. 495.00), so the builder's "Send to ticket" arrives with a mid, a natural and sane figures."""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.analytics.ticket import leg_quotes, net_prices, ticket_prices
from engine.bus.events import ChainUpdated
from engine.model import Equity, Leg, Side
from widgets.base import EventBatch
from widgets.order_ticket import TicketPanel
from widgets.strategy_builder import StrategyBuilderPanel


def test_share_legs_weigh_one_hundredth_of_a_contract(sim_chain) -> None:
    calls = np.nonzero(sim_chain.is_call & (sim_chain.expiry == sim_chain.expiries()[3]))[0]
    row = int(calls[np.argmin(np.abs(sim_chain.strike[calls] - sim_chain.spot * 1.02))])
    legs = [Leg(Equity("SPY"), Side.BUY, 100), Leg(sim_chain.option(row), Side.SELL)]
    bid, ask = leg_quotes(legs, sim_chain)
    assert bid[0] == ask[0] == sim_chain.spot  # no two-sided stock quote: the spot
    p = net_prices(legs, bid, ask)
    cmid = 0.5 * (sim_chain.bid[row] + sim_chain.ask[row])
    assert p.mid == pytest.approx(sim_chain.spot - cmid)  # ~595, not 60,000 − 5
    assert p.natural == pytest.approx(sim_chain.spot - sim_chain.bid[row])
    assert ticket_prices(legs, sim_chain).mid == pytest.approx(p.mid)
    bid, ask = leg_quotes(legs, sim_chain, underlying_bid=599.9, underlying_ask=600.1)
    assert net_prices(legs, bid, ask).natural == pytest.approx(600.1 - sim_chain.bid[row])


@pytest.fixture()
def desk_panels(qtbot, engine, sim_chain):
    builder = StrategyBuilderPanel(engine)
    ticket = TicketPanel(engine)
    for w in (builder, ticket):
        qtbot.addWidget(w)
    builder.resize(900, 460)
    ticket.resize(760, 620)
    batch = EventBatch.from_events([ChainUpdated(chain=sim_chain)])
    builder.links.underlying_selected.emit("SPY")
    builder.apply_events(batch)
    ticket.apply_events(batch)
    return builder, ticket, batch


@pytest.mark.parametrize("structure", ["covered_call", "collar"])
def test_send_to_ticket_gives_a_covered_call_or_collar_its_mid(desk_panels, qtbot, shot, structure) -> None:
    builder, ticket, batch = desk_panels
    builder.set_structure(structure)
    builder.build_button.click()
    built = builder.built
    assert built is not None and any(isinstance(leg.instrument, Equity) for leg in built.legs)
    builder.send_button.click()
    assert ticket.legs == list(built.legs)

    def priced() -> bool:
        ticket.apply_events(batch)
        return ticket.prices is not None and math.isfinite(ticket.prices.mid)

    qtbot.waitUntil(priced, timeout=5000)
    assert ticket.prices.mid == pytest.approx(built.mid, abs=0.011)  # the builder's net: stock − call (+ put)
    assert 400 < ticket.prices.mid < 700 and ticket.prices.natural >= ticket.prices.mid
    assert float(ticket.limit_price()) == pytest.approx(built.mid, abs=0.011) and ticket.price_kind.text() == "debit"
    s = ticket.summary
    assert s is not None and math.isfinite(s.max_loss) and 0 < s.max_loss < 70_000  # a share position's risk
    assert 0 < ticket.greeks["delta"] < 100  # 100 shares less the short call's delta (and plus the put's)
    assert ticket.figure_labels["mid"].text().endswith("debit")
    if structure == "covered_call":
        shot(ticket, "ticket-covered-call")
