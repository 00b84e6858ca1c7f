"""Trading hotkeys on the real window and engine: keys fill the ticket from the chain's selected contract, flip
it, submit it through the order path; Cancel all asks first; the shortcuts sheet lists every shortcut."""

from __future__ import annotations

import math

import pytest
from PySide6 import QtCore, QtWidgets

from engine.model import OrderStatus, Side
from tests.qt_fixtures import wait_for_condition

Qt = QtCore.Qt


@pytest.fixture()
def desk(qtbot, window):
    """The window with its chain showing quotes and a call cell near the money selected."""
    window.build_all_panels()
    chain = window.panels["chain"]
    wait_for_condition(qtbot, lambda: chain.chain is not None and chain.row_count() > 5, timeout=30)
    col = chain.model.column_index("c_bid")
    rows = [r for r in range(chain.row_count())
            if math.isfinite(float(chain.model.value(r, "c_bid") or math.nan))
            and float(chain.model.value(r, "c_bid")) > 0.5 and int(chain.model.value(r, "c_row")) >= 0]
    assert rows, "no quoted call in the chain"
    r = rows[len(rows) // 2]
    chain.table.setFocus()
    chain.table.setCurrentIndex(chain.model.index(r, col))
    symbol = chain.chain.option(int(chain.model.value(r, "c_row"))).key
    return window, chain, window.panels["ticket"], symbol


def _press(qtbot, window, key, modifier=Qt.KeyboardModifier.NoModifier):
    target = QtWidgets.QApplication.focusWidget() or window
    qtbot.keyClick(target, key, modifier)


def test_buy_and_sell_keys_fill_the_ticket_and_flip_reverses_it(qtbot, desk):
    window, _chain, ticket, symbol = desk
    _press(qtbot, window, Qt.Key.Key_F5)  # buy at bid
    assert [(leg.symbol, leg.side) for leg in ticket.legs] == [(symbol, Side.BUY)]
    bid, ask = float(ticket.prices.leg_bid[0]), float(ticket.prices.leg_ask[0])
    assert float(ticket.limit_price()) == pytest.approx(bid)
    _press(qtbot, window, Qt.Key.Key_F7, Qt.KeyboardModifier.ShiftModifier)  # sell at ask: a credit
    assert [(leg.symbol, leg.side) for leg in ticket.legs] == [(symbol, Side.SELL)]
    assert float(ticket.limit_price()) == pytest.approx(-ask)
    _press(qtbot, window, Qt.Key.Key_F6)  # buy at mid
    assert float(ticket.limit_price()) == pytest.approx(float(ticket.prices.leg_mid[0]), abs=0.011)
    limit = float(ticket.limit_price())
    _press(qtbot, window, Qt.Key.Key_F8)  # flip
    assert ticket.legs[0].side is Side.SELL and float(ticket.limit_price()) == pytest.approx(-limit)
    assert "flipped" in window.hotkeys.last_message


def test_a_strike_cell_is_not_a_contract(qtbot, desk):
    window, chain, ticket, _symbol = desk
    chain.table.setCurrentIndex(chain.model.index(0, chain.model.column_index("strike")))
    _press(qtbot, window, Qt.Key.Key_F5)
    assert ticket.legs == [] and "Select a call or put cell" in window.hotkeys.last_message


def test_submit_key_sends_the_ticket_and_cancel_all_asks_before_cancelling(qtbot, desk):
    window, _chain, ticket, _symbol = desk
    engine = window.engine
    _press(qtbot, window, Qt.Key.Key_F5)  # a buy at the bid rests on the paper exchange
    _press(qtbot, window, Qt.Key.Key_Return, Qt.KeyboardModifier.ControlModifier)
    wait_for_condition(qtbot, lambda: ticket.last_result is not None and bool(engine.oms.open_orders()), timeout=10)
    [order] = engine.oms.open_orders()
    order_id = order.order_id

    _press(qtbot, window, Qt.Key.Key_X, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    box = window.hotkeys.cancel_box
    assert box is not None and box.isVisible() and "Cancel all 1 working order?" in box.text()
    assert not engine.oms.order(order_id).status.is_terminal  # asked, nothing cancelled yet
    next(b for b in box.buttons() if b.text() == "Keep them").click()
    wait_for_condition(qtbot, lambda: window.hotkeys.cancel_box is None)
    assert not engine.oms.order(order_id).status.is_terminal

    _press(qtbot, window, Qt.Key.Key_X, Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    box = window.hotkeys.cancel_box
    next(b for b in box.buttons() if b.text() == "Cancel them").click()
    wait_for_condition(qtbot, lambda: engine.oms.order(order_id).status is OrderStatus.CANCELLED, timeout=10)


def test_the_shortcuts_sheet_lists_every_shortcut_from_the_actions(qtbot, window):
    from app.shortcuts import HOTKEYS

    sheet = window.hotkeys.open_sheet()
    qtbot.addWidget(sheet)
    rows = {(text, keys) for _where, text, keys in sheet.rows}
    for hk in HOTKEYS:
        act = window.hotkeys.actions[hk.key]
        assert (hk.text, act.shortcut().toString(act.shortcut().SequenceFormat.NativeText)) in rows
    texts = {text for _w, text, _k in sheet.rows}
    assert {"Settings…", "Trip kill switch", "Keyboard shortcuts…"} <= texts  # the window's own, not only ours
    keys = [k for _w, _t, k in sheet.rows]
    assert len(keys) == len(set(keys)), "two actions share a shortcut"
    sheet.grab().save("/tmp/shortcuts_sheet.png")


def test_a_clashing_shortcut_is_refused_with_the_reason():
    from pydantic import ValidationError

    from engine.settings.model import ShortcutsConfig

    with pytest.raises(ValidationError, match="Ctrl\\+Shift\\+K is already the shortcut of the kill switch"):
        ShortcutsConfig(cancel_all="Ctrl+Shift+K")
    with pytest.raises(ValidationError, match="flip: F5 is already the shortcut of buy_bid"):
        ShortcutsConfig(flip="F5")
