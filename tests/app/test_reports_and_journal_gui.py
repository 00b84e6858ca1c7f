"""The stored P&L/Greeks history in the panels, Reports ▸ Performance report (HTML, PDF) and the journal dialog."""

from __future__ import annotations

import csv
import re
from datetime import timedelta
from decimal import Decimal

from engine.model import Equity, Leg, Order, OrderStatus, OrderType, Side, TimeInForce
from engine.reports.history import HistoryRow, write_row


def _store_history(engine, n: int = 5) -> list:
    now = engine.now()
    account = engine.portfolio.account
    rows = [HistoryRow(account.account_id, "paper", now - timedelta(days=n - i), 100_000.0 + 1_000 * i,
                       day_pnl=10.0 * i, delta=5.0 * i, gamma=0.1, theta=-2.0, vega=30.0 + i, regime="calm")
            for i in range(n)]
    for r in rows:
        write_row(engine.store, r)
    # a row after the engine's present (left by a restarted simulated day) is not drawn ahead of the live curve
    write_row(engine.store, HistoryRow(account.account_id, "paper", now + timedelta(days=1), 1.0))
    write_row(engine.store, HistoryRow("OTHER", "live", now - timedelta(days=1), 7.0))  # another account
    return rows


def test_pnl_and_greeks_panels_start_from_the_stored_history(qtbot, engine):
    from widgets.greeks_view import GreeksPanel
    from widgets.pnl_view import PnLPanel

    rows = _store_history(engine)
    pnl = PnLPanel(engine)
    qtbot.addWidget(pnl)
    assert list(pnl.equity)[:5] == [r.net_liquidation for r in rows]
    assert list(pnl.t)[:5] == [r.ts.timestamp() for r in rows]
    assert 1.0 not in pnl.equity and 7.0 not in pnl.equity
    xs, ys = pnl.equity_curve.getData()
    assert len(xs) >= 5 and ys[0] == 100_000.0
    greeks = GreeksPanel(engine)
    qtbot.addWidget(greeks)
    assert list(greeks.history["vega"])[:5] == [30.0, 31.0, 32.0, 33.0, 34.0]
    assert list(greeks.history_t)[:5] == [r.ts.timestamp() for r in rows]


def test_report_dialog_writes_a_readable_pdf_and_html(qtbot, engine, tmp_path):
    from app.dialogs.report_dialog import ReportDialog

    _store_history(engine)
    dlg = ReportDialog(engine)
    qtbot.addWidget(dlg)
    dlg.start.setDate(dlg.start.date().addDays(-30))
    assert dlg.account.count() >= 3  # "newest", this account, the other
    with qtbot.waitSignal(dlg.written, timeout=30_000):
        pdf = dlg.write(str(tmp_path / "r.pdf"))
    raw = pdf.read_bytes()
    assert raw.startswith(b"%PDF-") and len(re.findall(rb"/Type\s*/Page[^s]", raw)) >= 1
    html = dlg.write(str(tmp_path / "r.html")).read_text(encoding="utf-8")
    assert "Performance report" in html and html.count("<svg") == 6 and "100,000.00" in html  # the first stored row starts the period
    assert dlg.write(str(tmp_path / "missing" / "r.html")) is None
    assert "Could not write the report" in dlg.status.text()


def test_journal_dialog_adds_searches_and_exports(qtbot, engine, tmp_path):
    from app.dialogs.journal_dialog import JournalDialog

    now = engine.now()
    for oid in ("jr-1", "jr-2"):
        engine.store.orders.save(Order(
            order_id=oid, client_order_id=f"c-{oid}", legs=(Leg(Equity("SPY"), Side.BUY, 1),), quantity=1,
            order_type=OrderType.LIMIT, limit_price=Decimal("500"), tif=TimeInForce.DAY, status=OrderStatus.FILLED,
            created_at=now, updated_at=now, filled_quantity=1))
    dlg = JournalDialog(engine)
    qtbot.addWidget(dlg)
    assert dlg.order.findData("jr-1") >= 0
    dlg.order.setCurrentIndex(dlg.order.findData("jr-1"))
    dlg.note.setText("entered on the breakout")
    dlg.tags.setText("breakout, Plan")
    assert dlg.add() is not None
    dlg.order.setCurrentIndex(dlg.order.findData("jr-2"))
    dlg.note.setText("")
    dlg.tags.setText("")
    assert dlg.add() is None and "empty note" in dlg.status.text()
    dlg.note.setText("faded the move")
    assert dlg.add() is not None
    assert dlg.table.rowCount() == 2
    dlg.query.setText("breakout")
    assert dlg.table.rowCount() == 1 and dlg.table.item(0, 3).text() == "#breakout #plan"
    out = dlg.export(str(tmp_path / "j.csv"))
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["order_id"] for r in rows] == ["jr-1"] and rows[0]["note"] == "entered on the breakout"
