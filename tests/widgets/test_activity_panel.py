"""Account activity panel on a real engine: paper fills through the order path, trades grouped by the ledger,
the paper exchange's margin, filters and CSV export."""

from __future__ import annotations

import csv
from datetime import timedelta
from decimal import Decimal

import pytest

from engine.bus.commands import SubmitOrder
from engine.bus.events import OrderFilled
from engine.model import Leg, OpenClose, OrderIntent, OrderStatus, Side
from engine.model.instruments import NEW_YORK
from tests.qt_fixtures import run_async, wait_for_condition
from tests.widgets.conftest import NOW, XYZ_CHAIN, XYZ_FRONT, xyz_put
from widgets.activity_panel import ActivityPanel
from widgets.base import EventBatch

CHAIN, FRONT, _put = XYZ_CHAIN, XYZ_FRONT, xyz_put




def _fill(qtbot, eng, legs, limit: Decimal):
    """Submit through the one order path and wait until the paper exchange filled it."""
    order = run_async(qtbot, eng.bus.send(SubmitOrder(intent=OrderIntent(legs=tuple(legs), quantity=1,
                                                                         limit_price=limit))))
    wait_for_condition(qtbot, lambda: eng.oms.order(order.order_id).status in (
        OrderStatus.FILLED, OrderStatus.REJECTED, OrderStatus.DENIED), timeout=10)
    assert eng.oms.order(order.order_id).status is OrderStatus.FILLED, eng.oms.order(order.order_id).reason
    return order


def _open_and_close_spread(qtbot, eng):
    short, sb, _ = _put(95.0)
    long_, _, la = _put(90.0)
    credit = Decimal(str(round(sb - la - 0.05, 2)))  # inside natural: a marketable credit
    opened = _fill(qtbot, eng, [Leg(short, Side.SELL), Leg(long_, Side.BUY)], -credit)
    _, _, sa = _put(95.0)
    _, lb, _ = _put(90.0)
    debit = Decimal(str(round(sa - lb + 0.05, 2)))
    closed = _fill(qtbot, eng, [Leg(short, Side.BUY, open_close=OpenClose.CLOSE),
                                Leg(long_, Side.SELL, open_close=OpenClose.CLOSE)], debit)
    return opened, closed


def test_fills_become_transactions_and_one_closed_trade_with_its_pnl(qtbot, paper, shot) -> None:
    panel = ActivityPanel(paper)
    qtbot.addWidget(panel)
    panel.resize(1100, 420)
    _open_and_close_spread(qtbot, paper)
    panel.refresh()

    act = panel.activity
    assert act is not None
    assert len(act.transactions) == 4  # two legs in, two legs out
    fills = paper.store.query("SELECT price, quantity, fee, multiplier FROM fills")
    cash = sum(-Decimal(r["price"]) * int(r["quantity"]) * int(r["multiplier"]) - Decimal(r["fee"]) for r in fills)
    assert act.net_cash == cash
    assert act.fees == sum(Decimal(r["fee"]) for r in fills) > 0
    assert len(act.trades) == 1 and act.open_trades == 0  # the manual close ends the trade the open began
    trade = act.trades[0]
    assert trade.net_pnl == cash  # a round trip's P&L is its cash
    assert trade.entry_price is not None and trade.entry_price < 0 and trade.exit_price > 0
    assert panel.tx_model.rowCount() == 4 and panel.trade_model.rowCount() == 1
    assert panel.tx_model.display_text(0, "time").endswith(("EST", "EDT"))
    assert "1 closed trade" in panel.summary.text() and "4 fills" in panel.summary.text()
    panel.tabs.setCurrentIndex(1)
    shot(panel, "activity_trades")


def test_margin_breakdown_is_the_paper_exchanges(qtbot, paper, shot) -> None:
    panel = ActivityPanel(paper)
    qtbot.addWidget(panel)
    panel.resize(1100, 420)
    short, sb, _ = _put(95.0)
    _fill(qtbot, paper, [Leg(short, Side.SELL)], -Decimal(str(round(sb - 0.05, 2))))
    panel.refresh()
    act = panel.activity
    ex = paper.paper_broker.exchange
    [line] = act.margin
    assert line.underlying == "XYZ" and line.positions[0][0] == short.key and line.positions[0][1] == -1
    assert line.option_requirement == pytest.approx(ex.requirement()) and line.option_requirement > 0
    assert float(act.account.maintenance_requirement) == pytest.approx(line.total, abs=0.01)
    assert panel.margin_model.rowCount() == 2  # the underlying and its position
    assert "buying power" in panel.account_label.text()
    panel.tabs.setCurrentIndex(2)
    shot(panel, "activity_margin")


def test_filters_and_csv_export(qtbot, paper, tmp_path) -> None:
    panel = ActivityPanel(paper)
    qtbot.addWidget(panel)
    _open_and_close_spread(qtbot, paper)
    day = NOW.astimezone(NEW_YORK).date()
    panel.set_filter(start=day, end=day, symbol="")
    assert len(panel.activity.transactions) == 4
    panel.set_filter(symbol="SPY")
    assert panel.activity.transactions == [] and panel.activity.trades == []
    panel.set_filter(symbol="xyz")
    assert len(panel.activity.transactions) == 4
    panel.set_filter(start=day + timedelta(days=1), end=day + timedelta(days=2))
    assert panel.activity.transactions == [] and panel.tx_model.rowCount() == 0
    panel.set_filter(start=day, end=day - timedelta(days=1))
    assert "ends" in panel.message.text()

    panel.set_filter(start=day, end=day)
    out = tmp_path / "tx.csv"
    assert panel.export_csv(out, "transactions") == 4
    rows = list(csv.DictReader(out.open()))
    assert {r["side"] for r in rows} == {"BUY", "SELL"}
    assert sum(Decimal(r["net_cash"]) for r in rows) == panel.activity.net_cash
    assert panel.export_csv(tmp_path / "trades.csv", "trades") == 1
    assert "Wrote 1 row" in panel.message.text()
    assert panel.export_csv(tmp_path / "missing-dir" / "x.csv") == 0
    assert "Could not write" in panel.message.text()


def test_a_fill_event_refreshes_the_panel(qtbot, paper) -> None:
    panel = ActivityPanel(paper)
    qtbot.addWidget(panel)
    short, sb, _ = _put(95.0)
    order = _fill(qtbot, paper, [Leg(short, Side.SELL)], -Decimal(str(round(sb - 0.05, 2))))
    assert panel.tx_model.rowCount() == 0  # not re-read until told
    panel.apply_events(EventBatch.from_events([OrderFilled(order=paper.oms.order(order.order_id))]))
    assert panel.tx_model.rowCount() == 1


def test_an_account_update_refreshes_the_margin_without_rereading_fills(qtbot, paper) -> None:
    from engine.bus.events import AccountUpdated

    panel = ActivityPanel(paper)
    qtbot.addWidget(panel)
    panel.min_account_interval_s = 0.0
    short, sb, _ = _put(95.0)
    _fill(qtbot, paper, [Leg(short, Side.SELL)], -Decimal(str(round(sb - 0.05, 2))))
    assert panel.activity.margin == []
    snap = paper.paper_broker.exchange.account()
    panel.apply_events(EventBatch.from_events([AccountUpdated(account=snap)]))
    assert [m.underlying for m in panel.activity.margin] == ["XYZ"]
    assert panel.activity.transactions == []  # fills are re-read on a fill event, not on account updates
    assert f"{float(snap.buying_power):,.2f}" in panel.account_label.text()
