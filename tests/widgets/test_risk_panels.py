"""Portfolio Greeks, payoff and P&L panels on the engine's risk engine and paper account."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engine.bus.events import AccountUpdated, ChainUpdated, PositionChanged
from engine.model import AccountSnapshot, Position
from tests.widgets.conftest import NOW, priced_chain
from widgets.base import EventBatch
from widgets.chain_table import ChainPanel
from widgets.greeks_view import GreeksPanel
from widgets.order_ticket import TicketPanel
from widgets.payoff_view import PayoffPanel
from widgets.pnl_view import PnLPanel
from widgets.positions_view import PositionsPanel


def _hold(engine):
    chain = priced_chain()
    pos = [Position(chain.option(chain.row_of("XYZ260320C00100000")), 2, Decimal("2.00"), opened_at=NOW),
           Position(chain.option(chain.row_of("XYZ260320P00095000")), -3, Decimal("0.80"), opened_at=NOW)]
    events = [PositionChanged(position=p) for p in pos]
    for ev in events:
        engine.bus.publish(ev)
    return pos, EventBatch.from_events(events)


def test_greeks_bars_match_the_risk_engine_and_history_grows(qtbot, desk, shot) -> None:
    panel = GreeksPanel(desk)
    qtbot.addWidget(panel)
    panel.resize(1100, 480)
    _, batch = _hold(desk)
    panel.apply_events(batch)
    expected = desk.risk.position_exposure
    assert panel.total["delta"] == pytest.approx(expected.delta)
    assert set(panel.by_underlying) == {"XYZ"}
    heights = panel.bar_items["delta"].opts["height"]
    assert heights[-1] == pytest.approx(expected.delta) and heights[0] == pytest.approx(expected.delta)
    assert panel.axes["theta"].names == ["XYZ", "TOTAL"]
    assert len(panel.history_t) >= 1 and "Δ" in panel.summary.text()
    desk.clock.set(NOW.replace(minute=5))
    panel.refresh(force=True)
    assert len(panel.history_t) == 2
    shot(panel, "greeks")


def test_payoff_of_the_ticket_with_scenarios(qtbot, desk, shot) -> None:
    chain = ChainPanel(desk, strike_window=4)
    ticket = TicketPanel(desk)
    payoff = PayoffPanel(desk)
    for w in (chain, ticket, payoff):
        qtbot.addWidget(w)
    payoff.resize(1150, 520)
    chain.select_underlying("XYZ")
    batch = EventBatch.from_events([ChainUpdated(chain=priced_chain())])
    chain.apply_events(batch)
    ticket.apply_events(batch)
    ticket.template_box.setCurrentIndex(ticket.template_box.findText("Iron condor"))
    ticket.build_button.click()
    assert len(ticket.legs) == 4
    assert payoff.source == "ticket" and payoff.prof is not None, payoff.error
    s = payoff.prof.summary
    assert s.defined_risk and len(s.breakevens) == 2
    assert s.max_profit == pytest.approx(float(-ticket.limit_price() * 100), rel=1e-6)
    assert 0 < payoff.prof.probability_of_profit < 1
    # one number on the desk: the ticket quotes the payoff panel's probability of profit
    assert ticket.pop == pytest.approx(payoff.prof.probability_of_profit, abs=0.01)
    x, y = payoff.curve_expiry.getData()
    assert len(x) > 100 and np.nanmax(y) == pytest.approx(s.max_profit, rel=1e-3)
    # scenario grid from engine.risk: a short condor loses when vol rises
    g = payoff.grid
    centre = g.pnl[0][:, len(g.spot_moves) // 2]
    assert centre[-1] < centre[0]
    assert len(payoff.heat_texts) == g.pnl[0].size
    shown = [t for t in payoff.heat_texts if t.isVisible() and t.toPlainText()]
    assert len(shown) == g.pnl[0].size == 5 * 9  # every column carries its value
    payoff.resize(700, 520)  # a narrow dock: still every cell
    payoff._draw_grid()
    assert sum(1 for t in payoff.heat_texts if t.isVisible() and t.toPlainText()) == 45
    shot(payoff, "payoff")


def test_payoff_of_selected_positions(qtbot, desk) -> None:
    positions = PositionsPanel(desk)
    payoff = PayoffPanel(desk)
    for w in (positions, payoff):
        qtbot.addWidget(w)
    _pos, batch = _hold(desk)
    positions.apply_events(batch)
    positions.analyse_button.click()  # nothing selected: all positions
    assert payoff.source == "positions" and payoff.prof is not None, payoff.error
    assert payoff.prof.cost == pytest.approx(2 * 2.00 * 100 - 3 * 0.80 * 100)
    assert "Positions: 2 in XYZ" in payoff.source_label.text()


def test_payoff_refuses_mixed_underlyings_with_a_reason(qtbot, desk) -> None:
    from datetime import date

    from engine.model import Option

    payoff = PayoffPanel(desk)
    qtbot.addWidget(payoff)
    a = Position(Option("XYZ", date(2026, 3, 20), 100, "C"), 1, Decimal(1))
    b = Position(Option("SPY", date(2026, 3, 20), 600, "C"), 1, Decimal(1))
    payoff.show_positions((a, b))
    assert payoff.prof is None and "one underlying" in payoff.source_label.text()


def test_pnl_panel_plots_equity_and_day_pnl(qtbot, desk, shot) -> None:
    panel = PnLPanel(desk)
    qtbot.addWidget(panel)
    panel.resize(900, 420)
    start = panel.account
    assert start is not None and panel.labels["net_liq"].text().startswith("$")
    snaps = []
    for i, dp in enumerate((120.0, -80.0, 240.0)):
        desk.clock.set(NOW.replace(minute=10 + i))
        snaps.append(AccountSnapshot(account_id=start.account_id, cash=start.cash,
                                     net_liquidation=start.net_liquidation + Decimal(dp),
                                     buying_power=start.buying_power, day_pnl=Decimal(dp)))
        panel.apply_events(EventBatch.from_events([AccountUpdated(account=snaps[-1])]))
    t, eq_ = panel.equity_curve.getData()
    assert len(t) == 4 and eq_[-1] == pytest.approx(float(start.net_liquidation) + 240)
    _, down = panel.pnl_down.getData()
    assert down.min() == pytest.approx(-80.0)
    assert panel.labels["day_pnl"].text() == "+$240.00"  # one money format on the desk
    shot(panel, "pnl")
    assert not math.isnan(t[-1]) and Qt is not None


def test_plots_follow_a_theme_switch(qtbot, desk) -> None:
    from PySide6.QtGui import QColor, QPalette
    from PySide6.QtWidgets import QApplication

    panel = PnLPanel(desk)
    qtbot.addWidget(panel)
    app = QApplication.instance()
    old = app.palette()
    try:
        pal = QPalette(old)
        pal.setColor(QPalette.ColorRole.Base, QColor("#101418"))
        app.setPalette(pal)
        panel.apply_theme("dark")
        assert panel.equity_plot.backgroundBrush().color().name() == "#101418"
    finally:
        app.setPalette(old)


def test_analyse_payoff_shows_positions_and_raises_the_payoff_tab(qtbot, desk) -> None:
    from PySide6 import QtWidgets

    chain = ChainPanel(desk, strike_window=4)
    ticket = TicketPanel(desk)
    positions = PositionsPanel(desk)
    payoff = PayoffPanel(desk)
    win = QtWidgets.QMainWindow()
    qtbot.addWidget(win)
    qtbot.addWidget(chain)
    win.setCentralWidget(positions)
    docks = []
    for w in (payoff, ticket):
        dock = QtWidgets.QDockWidget(w.title, win)
        dock.setWidget(w)
        win.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, dock)
        docks.append(dock)
    win.tabifyDockWidget(docks[0], docks[1])
    win.resize(1400, 700)
    win.show()
    docks[1].raise_()  # the ticket's tab in front
    # a tabified dock behind another keeps isVisible(); its visible region is empty
    qtbot.waitUntil(lambda: payoff.visibleRegion().isEmpty(), timeout=3000)
    chain.select_underlying("XYZ")
    batch = EventBatch.from_events([ChainUpdated(chain=priced_chain())])
    chain.apply_events(batch)
    ticket.apply_events(batch)
    ticket.add_leg(priced_chain().option(priced_chain().row_of("XYZ260320P00095000")), "buy")
    assert payoff.source == "ticket"
    _pos, pbatch = _hold(desk)
    positions.apply_events(pbatch)
    positions.analyse_button.click()
    qtbot.waitUntil(lambda: not payoff.visibleRegion().isEmpty(), timeout=3000)  # the Payoff tab came forward
    assert payoff.source == "positions" and "Positions: 2 in XYZ" in payoff.source_label.text()
    ticket.recompute()  # a quote refresh re-emits the unchanged ticket: the positions stay
    assert payoff.source == "positions" and "Positions" in payoff.source_label.text()
    ticket.qty_spin.setValue(2)  # a real edit on the ticket takes the panel back
    assert payoff.source == "ticket" and "Ticket: 2×" in payoff.source_label.text()
