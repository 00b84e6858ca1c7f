"""P&L/Greeks/equity history, the performance report (HTML; PDF through the CLI) and the trade journal."""

from __future__ import annotations

import asyncio
import csv
import re
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from engine.cli import main as cli_main
from engine.core import Engine, EngineConfig
from engine.journal import JournalError, add_note, export_csv, normalize_tags, search
from engine.model import Equity, Fill, Leg, Option, Order, OrderStatus, OrderType, Side, TimeInForce
from engine.reports.data import ReportError, build_report
from engine.reports.history import HistoryRow, load_history, write_row
from engine.reports.html import render_html
from engine.settings import Settings
from engine.store import Store
from engine.store.config import BackupConfig
from tests.sim_start import pinned_settings

ROOT = Path(__file__).resolve().parents[2]
D0 = datetime(2026, 3, 2, 14, 30, tzinfo=UTC)
CALL = "SPY   260320C00500000"


def _order(oid: str, inst: object, strategy: str | None = None) -> Order:
    return Order(order_id=oid, client_order_id=f"cl-{oid}", legs=(Leg(inst, Side.BUY, 1),), quantity=1,
                 order_type=OrderType.LIMIT, limit_price=Decimal("1"), tif=TimeInForce.DAY,
                 status=OrderStatus.FILLED, created_at=D0, updated_at=D0, strategy_id=strategy, account_id="PAPER",
                 filled_quantity=1)


def _fill(fid: str, oid: str, inst: object, qty: int, price: str, fee: str, ts: datetime) -> Fill:
    return Fill(fill_id=fid, order_id=oid, client_order_id=f"cl-{oid}", instrument=inst, quantity=qty,
                price=Decimal(price), fee=Decimal(fee), ts=ts)


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    s = Store.open(tmp_path / "data" / "optiondesk.db")
    spy, call = Equity("SPY"), Option.from_occ(CALL)
    # equity 100k → 103k (peak) → 97.85k (−5 % from the peak) → 99k, Greeks moving, regime changing mid-way
    for i, (nl, regime) in enumerate([(100_000, "calm"), (103_000, "calm"), (97_850, "high_vol"), (99_000, "high_vol")]):
        write_row(s, HistoryRow("PAPER", "paper", D0 + timedelta(days=i), float(nl), delta=10.0 * i, gamma=0.5,
                                theta=-3.0 * i, vega=12.0, regime=regime))
    write_row(s, HistoryRow("LIVE-9", "live", D0, 5_000.0))  # another account: not in the paper report
    for oid, inst, strat in (("o-pre", spy, None), ("o-sell1", spy, None), ("o-sell2", spy, None),
                             ("o-opt1", call, "wheel"), ("o-opt2", call, "wheel")):
        s.orders.save(_order(oid, inst, strat))
    # bought before the period at 500; sold 4 at 510 (+40) in a calm day, 6 at 495 (−30) in high vol
    s.fills.add(_fill("f0", "o-pre", spy, 10, "500", "1.00", D0 - timedelta(days=5)))
    s.fills.add(_fill("f1", "o-sell1", spy, -4, "510", "0.50", D0 + timedelta(hours=2)))
    s.fills.add(_fill("f2", "o-sell2", spy, -6, "495", "0.50", D0 + timedelta(days=2, hours=1)))
    # an option sold short at 2.00 and bought back at 1.25: +0.75 × 2 × 100 = +150
    s.fills.add(_fill("f3", "o-opt1", call, -2, "2.00", "1.30", D0 + timedelta(days=1)))
    s.fills.add(_fill("f4", "o-opt2", call, 2, "1.25", "1.30", D0 + timedelta(days=3)))
    yield s
    s.close()


def test_history_rows_round_trip_with_missing_values_as_nan(store):
    rows = load_history(store, "PAPER", "paper")
    assert [r.net_liquidation for r in rows] == [100_000, 103_000, 97_850, 99_000]
    assert rows[2].regime == "high_vol" and rows[3].theta == -9.0
    live = load_history(store, "LIVE-9", "live")
    assert len(live) == 1 and live[0].delta != live[0].delta  # NaN when never written
    assert load_history(store, "PAPER", "paper", start=D0 + timedelta(days=1), end=D0 + timedelta(days=2))[0].ts \
        == D0 + timedelta(days=1)


def test_report_when_built_then_realised_pnl_fees_drawdown_and_attribution_are_right(store):
    data = build_report(store, date(2026, 3, 2), date(2026, 3, 5), now=D0)
    assert (data.account_id, data.mode) == ("PAPER", "paper")  # the newest history
    s = data.summary()
    assert s["start_equity"] == 100_000 and s["end_equity"] == 99_000
    assert s["max_drawdown_pct"] == pytest.approx(-5.0)
    assert s["realized"] == pytest.approx(40 - 30 + 150)
    assert s["fees"] == pytest.approx(0.5 + 0.5 + 1.3 + 1.3)  # the fill before the period is not counted
    assert s["fills"] == 4 and s["orders"] == 4
    by_u = data.attribution["underlying"]
    assert set(by_u) == {"SPY"} and by_u["SPY"]["realized"] == pytest.approx(160)
    by_s = data.attribution["strategy"]
    assert by_s["wheel"]["realized"] == pytest.approx(150) and by_s["manual"]["realized"] == pytest.approx(10)
    by_r = data.attribution["regime"]
    assert by_r["calm"]["realized"] == pytest.approx(40)
    assert by_r["high_vol"]["realized"] == pytest.approx(-30 + 150)


def test_report_when_dates_are_bad_then_clear_errors(store):
    with pytest.raises(ReportError, match=r"ends .* before it starts"):
        build_report(store, date(2026, 3, 5), date(2026, 3, 1))
    with pytest.raises(ReportError, match="not paper or live"):
        build_report(store, date(2026, 3, 1), date(2026, 3, 5), mode="demo")
    assert cli_main(["report", "--from", "2026-13-01", "--to", "2026-03-05", "--out", "/tmp/x.html",
                     "--db", str(store.path)]) == 2
    assert cli_main(["report", "--from", "2026-03-01", "--to", "2026-03-05", "--out", "/tmp/x.txt",
                     "--db", str(store.path)]) == 2


def test_report_html_has_every_section_charts_and_the_journal(store, tmp_path):
    add_note(store, "o-opt1", "sold premium into the earnings pop", ["earnings", "Wheel"], ts=D0 + timedelta(days=1))
    out = tmp_path / "r.html"
    assert cli_main(["report", "--from", "2026-03-02", "--to", "2026-03-05", "--out", str(out),
                     "--db", str(store.path)]) == 0
    text = out.read_text(encoding="utf-8")
    for heading in ("Summary", "Equity and drawdown", "Greeks over time", "Attribution of realised P&amp;L",
                    "By underlying", "By strategy", "By market regime", "Trades and fees", "Journal"):
        assert f">{heading}<" in text, heading
    assert text.count("<svg") == 6 and text.count("<polyline") == 6
    assert "sold premium into the earnings pop" in text and "#earnings" in text and "#wheel" in text
    assert "-5.00%" in text and "+160.00" in text


def test_report_html_when_no_history_then_says_so_instead_of_blank_charts(tmp_path):
    s = Store.open(tmp_path / "empty.db")
    try:
        html = render_html(build_report(s, date(2026, 3, 2), date(2026, 3, 2), now=D0))
    finally:
        s.close()
    assert "not enough history in this period" in html and "No fills in this period." in html


def test_report_pdf_through_the_cli_has_pages(store, tmp_path):
    out = tmp_path / "r.pdf"
    env = {"PATH": "/usr/bin:/bin", "QT_QPA_PLATFORM": "offscreen", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "report", "--from", "2026-03-02", "--to",
                           "2026-03-05", "--out", str(out), "--db", str(store.path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    raw = out.read_bytes()
    assert raw.startswith(b"%PDF-")
    pages = len(re.findall(rb"/Type\s*/Page[^s]", raw))
    assert 2 <= pages <= 6
    assert not list(tmp_path.glob(".*partial"))


def test_journal_add_search_tags_and_csv_export(store, tmp_path):
    n1 = add_note(store, "o-sell1", "took profit at the 510 level", ["exit", "plan"], ts=D0)
    add_note(store, "cl-o-opt1", "wheel entry", ["#Wheel", "earnings"], ts=D0 + timedelta(days=1))
    with pytest.raises(JournalError, match="matches several orders"):
        add_note(store, "o-opt", "ambiguous")
    with pytest.raises(JournalError, match="no order 'nope'"):
        add_note(store, "nope", "x")
    with pytest.raises(JournalError, match="empty note"):
        add_note(store, "o-sell1", "   ")
    with pytest.raises(JournalError, match="tag 'two words' is not valid"):
        add_note(store, "o-sell1", "x", ["two words"])
    assert normalize_tags(["A,b", "#a"]) == ("a", "b")
    assert [n.id for n in search(store, "PROFIT")] == [n1]
    assert [n.order_id for n in search(store, tags=["wheel"])] == ["o-opt1"]
    assert [n.order_id for n in search(store, "spy260320c")] == ["o-opt1"]  # by the order's symbol
    assert [n.order_id for n in search(store, "wheel")] == ["o-opt1"]  # strategy and tag
    assert search(store, tags=["wheel", "exit"]) == []
    out = export_csv(search(store), tmp_path / "j.csv")
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["order_id"] for r in rows] == ["o-sell1", "o-opt1"]
    assert rows[0]["tags"] == "exit plan" and rows[0]["symbols"] == "SPY" and rows[1]["strategy"] == "wheel"


def test_journal_cli_add_search_export_and_bad_input(store, tmp_path, capsys):
    db = str(store.path)
    assert cli_main(["journal", "add", "o-sell1", "scaled out", "--tag", "exit", "--db", db]) == 0
    assert cli_main(["journal", "add", "o-sell2", "stopped out", "-t", "exit,stop", "--db", db]) == 0
    capsys.readouterr()
    assert cli_main(["journal", "search", "--tag", "stop", "--db", db]) == 0
    text = capsys.readouterr().out
    assert "stopped out" in text and "scaled out" not in text and "1 note(s)" in text
    out = tmp_path / "j.csv"
    assert cli_main(["journal", "export", "--tag", "exit", "--out", str(out), "--db", db]) == 0
    assert len(list(csv.DictReader(out.open(encoding="utf-8")))) == 2
    assert cli_main(["journal", "add", "zzz", "x", "--db", db]) == 2
    assert "no order 'zzz'" in capsys.readouterr().err
    assert cli_main(["journal", "trades", "--db", db]) == 0
    assert "o-sell1" in capsys.readouterr().out


async def test_engine_writes_pnl_history_on_its_clock_and_owns_the_backup_schedule(tmp_path):
    settings = pinned_settings(Settings(backup=BackupConfig(history_interval_s=1.0)))
    async with Engine(EngineConfig.for_directory(tmp_path, settings=settings, clock_interval_s=0.05)) as engine:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while engine.pnl_history.rows_written < 2 and loop.time() < deadline:
            await asyncio.sleep(0.05)
        rows = load_history(engine.store, "PAPER", "paper")
        assert len(rows) >= 2 and rows[0].net_liquidation > 0
        assert rows[1].ts - rows[0].ts >= timedelta(seconds=1)  # the cadence is engine (market) time
        assert rows[0].ts.date() == date(2026, 3, 2)  # the pinned simulated day, not the wall clock
        assert engine.backups is not None
    assert [t for t in asyncio.all_tasks() if t.get_name() == "backup-scheduler"] == []


def test_report_and_journal_when_database_is_missing_then_clear_error_and_nothing_created(tmp_path, capsys):
    missing = tmp_path / "nope.db"
    assert cli_main(["report", "--from", "2026-03-01", "--to", "2026-03-02", "--out", str(tmp_path / "r.html"),
                     "--db", str(missing)]) == 2
    assert "no database at" in capsys.readouterr().err
    assert cli_main(["journal", "search", "--db", str(missing)]) == 2
    assert "no database at" in capsys.readouterr().err
    assert not missing.exists() and not (tmp_path / "r.html").exists()


def test_chart_of_a_long_history_is_thinned_but_keeps_every_extreme():
    from engine.reports.html import line_chart

    pts = [(D0 + timedelta(minutes=i), 100.0 + (i % 997) * 0.01) for i in range(100_000)]
    pts[54_321] = (pts[54_321][0], 10.0)  # one deep trough
    pts[77_777] = (pts[77_777][0], 500.0)  # one spike
    svg = line_chart(pts, title="t", width=720)
    coords = re.search(r'<polyline points="([^"]+)"', svg).group(1).split()
    assert 100 < len(coords) <= 2 * 720 + 1
    ys = [float(c.split(",")[1]) for c in coords]
    # the axis spans the trough and the spike: both survive the thinning (top and bottom of the plot area)
    assert min(ys) == pytest.approx(28.0, abs=0.2) and max(ys) == pytest.approx(220 - 26, abs=0.2)
    assert ">500.00<" not in svg and ">500<" in svg and ">10.00<" in svg
