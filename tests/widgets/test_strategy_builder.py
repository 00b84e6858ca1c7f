"""The Strategy builder panel on a real engine and a real simulated SPY chain: build, refuse, send to ticket."""

from __future__ import annotations

import pytest

from engine.bus.events import ChainUpdated
from engine.model import Side
from widgets.base import EventBatch
from widgets.order_ticket import TicketPanel
from widgets.strategy_builder import StrategyBuilderPanel


@pytest.fixture()
def desk_panels(qtbot, engine, sim_chain):
    builder = StrategyBuilderPanel(engine)
    ticket = TicketPanel(engine)
    for w in (builder, ticket):
        qtbot.addWidget(w)
    builder.resize(900, 460)
    batch = EventBatch.from_events([ChainUpdated(chain=sim_chain)])
    builder.links.underlying_selected.emit("SPY")
    builder.apply_events(batch)
    ticket.apply_events(batch)
    builder.batch = batch  # the chain's next refresh, for the ticket once it follows SPY
    return builder, ticket


def test_iron_condor_builds_by_delta_and_shows_its_figures(desk_panels, shot) -> None:
    builder, _ticket = desk_panels
    builder.set_structure("iron_condor")
    assert builder.target_spin.value() == 16 and builder.width_spin.value() == 0  # 16 Δ, auto wings
    builder.build_button.click()
    b = builder.built
    assert b is not None and builder.send_button.isEnabled()
    assert [leg.side for leg in b.legs] == [Side.BUY, Side.SELL, Side.SELL, Side.BUY]
    assert builder.legs_table.rowCount() == 4
    assert builder.figures["mid"].text().endswith("credit")
    assert builder.figures["max_loss"].text().startswith("$")
    assert builder.figures["pop"].text().endswith("%")
    assert "iron condor" in builder.header.text()
    shot(builder, "strategy_builder")


def test_probability_mode_and_structure_inputs(desk_panels) -> None:
    builder, _ticket = desk_panels
    builder.by_box.setCurrentIndex(builder.by_box.findData("probability"))
    builder.set_structure("strangle")
    assert builder.target_spin.value() == 84 and builder.target_spin.suffix() == " % OTM"
    assert not builder.width_spin.isVisibleTo(builder)
    builder.set_structure("broken_wing_butterfly")
    assert builder.far_width_spin.isVisibleTo(builder) and builder.right_box.isEnabled()
    builder.set_structure("strangle")
    builder.build_button.click()
    assert [leg.side for leg in builder.built.legs] == [Side.SELL, Side.SELL]


def test_bad_input_shows_the_reason_and_nothing_to_send(desk_panels) -> None:
    builder, _ticket = desk_panels
    builder.set_structure("iron_condor")
    builder.width_spin.setValue(900.0)
    builder.build_button.click()
    assert builder.built is None and not builder.send_button.isEnabled()
    assert "beyond the listed puts" in builder.message.text()


def test_send_to_ticket_fills_the_ticket_with_the_legs_and_quantity(desk_panels, qtbot) -> None:
    builder, ticket = desk_panels
    builder.set_structure("vertical")
    builder.qty_spin.setValue(3)
    builder.build_button.click()
    builder.send_button.click()
    assert ticket.legs == list(builder.built.legs)
    assert ticket.qty_spin.value() == 3 and ticket.live.underlying == "SPY"

    def refreshed() -> bool:  # the window's refreshes bring the followed chain (the ticket recomputes ≤ 1/s)
        ticket.apply_events(builder.batch)
        return ticket.limit_price() < 0

    qtbot.waitUntil(refreshed, timeout=5000)
    assert ticket.limit_price() < 0 and ticket.price_kind.text() == "credit"  # priced at mid
    assert float(ticket.limit_price()) == pytest.approx(builder.built.mid, abs=0.011)
    assert "order ticket" in builder.message.text()
