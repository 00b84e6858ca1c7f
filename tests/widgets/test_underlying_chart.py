"""The chart of the underlying on a started engine with the simulated market and its backfilled history."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from PySide6 import QtCore, QtGui

from engine.market.bars import Bars
from tests.qt_fixtures import run_async, wait_for_condition
from widgets.underlying_chart import INTRADAY, CandleItem, UnderlyingChartPanel

Qt = QtCore.Qt


@pytest.fixture()
def sim_engine(qtbot, async_cleanup, tmp_path):
    from engine.core import Engine, EngineConfig
    from tests.widgets.conftest import _settings

    eng = Engine(EngineConfig.for_directory(tmp_path, feed="simulated", seed=7, settings=_settings()))
    run_async(qtbot, eng.start(), timeout=60)
    run_async(qtbot, eng.history.wait_ready(30), timeout=35)
    yield eng
    run_async(qtbot, eng.stop(), timeout=30)


def test_chart_when_opened_then_daily_candles_vol_overlays_and_cone_from_history(qtbot, sim_engine, shot) -> None:
    panel = UnderlyingChartPanel(sim_engine)
    qtbot.addWidget(panel)
    panel.resize(1100, 600)
    assert panel.symbol == sim_engine.feed.underlyings()[0]
    assert len(panel.bars) >= 250 and panel.history is not None  # the backfilled year
    assert np.isfinite(panel.history.atm_iv).all() and np.isfinite(panel.history.realized_vol[-1])
    t, hi, lo = panel.cone()
    spot = sim_engine.feed.last_price(panel.symbol)
    iv = panel.current_iv()
    assert t[0] == panel.bars.t[-1] and hi[0] == pytest.approx(spot) and lo[0] == pytest.approx(spot)
    days = len(t) - 1
    assert days > 0 and hi[-1] == pytest.approx(spot * (1 + iv * math.sqrt(days / 365)))
    (x0, x1), _ = panel.vb.viewRange()
    assert x1 >= t[-1] and x1 - x0 < 400 * 86400  # the latest year and the cone
    assert not panel.has_volume and not panel.volume_vb.isVisible()  # no volume stored: no band of zeros
    shot(panel, "panel_chart")


def test_selection_in_a_linked_panel_then_chart_follows(qtbot, sim_engine) -> None:
    panel = UnderlyingChartPanel(sim_engine)
    qtbot.addWidget(panel)
    other = next(s for s in sim_engine.feed.underlyings() if s != panel.symbol)
    panel.links.underlying_selected.emit(other)
    assert panel.symbol == other and panel.bars.symbol == other and len(panel.bars) >= 250


def test_keys_pan_and_zoom_and_crosshair_describes_the_bar(qtbot, sim_engine) -> None:
    panel = UnderlyingChartPanel(sim_engine)
    qtbot.addWidget(panel)
    panel.resize(900, 500)
    panel.show()
    (a0, a1), _ = panel.vb.viewRange()
    qtbot.keyClick(panel, Qt.Key.Key_Left)
    (b0, b1), _ = panel.vb.viewRange()
    assert b0 < a0 and b1 - b0 == pytest.approx(a1 - a0, rel=1e-6)
    qtbot.keyClick(panel, Qt.Key.Key_Plus)
    (c0, c1), _ = panel.vb.viewRange()
    assert c1 - c0 == pytest.approx((b1 - b0) * 0.8, rel=1e-6)
    qtbot.keyClick(panel, Qt.Key.Key_Home)
    i = len(panel.bars) - 10
    panel._mouse_moved(panel.vb.mapViewToScene(QtCore.QPointF(float(panel.bars.t[i]), float(panel.bars.close[i]))))
    assert panel.vline.isVisible() and panel.vline.value() == panel.bars.t[i]
    assert f"C {panel.bars.close[i]:.2f}" in panel.readout.text() and "IV " in panel.readout.text()


def test_intraday_when_ticks_stream_then_bars_aggregate_and_redraw(qtbot, sim_engine) -> None:
    from app.bridge import EventBridge

    panel = UnderlyingChartPanel(sim_engine)
    qtbot.addWidget(panel)
    panel.interval_box.setCurrentText(INTRADAY)
    bridge = EventBridge(sim_engine.bus, interval_ms=100)
    bridge.add_consumer(panel.apply_events, "chart")
    bridge.start()
    try:
        wait_for_condition(qtbot, lambda: len(panel.bars) >= 1, timeout=20)
    finally:
        bridge.stop()
    b = panel.bars
    assert b.interval_s == 300.0 and np.all(b.low <= b.close) and np.all(b.close <= b.high) and b.volume[-1] >= 1
    assert panel.history is None and panel.panel_state()["interval"] == INTRADAY
    assert panel.has_volume and panel.volume_vb.isVisible()  # tick counts


def test_candles_are_one_item_and_ten_years_repaint_fast(qtbot) -> None:
    """10 years of daily bars: one graphics item, and a repaint of the whole span well under a frame."""
    n = 2520
    t = 1.5e9 + np.arange(n) * 86400.0 * 365 / 252
    c = 100 * np.exp(np.cumsum(np.random.default_rng(1).normal(0, 0.01, n)))
    o = np.concatenate([[c[0]], c[:-1]])
    bars = Bars("SPY", 86400.0, t, o, np.maximum(o, c) * 1.005, np.minimum(o, c) * 0.995, c, np.ones(n))
    item = CandleItem()
    item.set_bars(bars)
    assert len(item.childItems()) == 0 and item.dataBounds(1, orthoRange=(t[0], t[9]))[1] == pytest.approx(
        float(bars.high[:10].max()))
    img = QtGui.QImage(1200, 600, QtGui.QImage.Format.Format_RGB32)
    img.fill(0)
    painter = QtGui.QPainter(img)
    r = item.boundingRect()
    painter.setTransform(QtGui.QTransform.fromScale(1200 / r.width(), -600 / r.height())
                         .translate(-r.left(), -r.bottom()))
    t0 = time.perf_counter()
    for _ in range(5):
        item.paint(painter)
    ms = (time.perf_counter() - t0) * 1000 / 5
    painter.end()
    assert ms < 50, f"{ms:.1f} ms per repaint of 10 years"


def test_fills_when_stored_then_marked_on_the_bar_close(qtbot, sim_engine) -> None:
    panel = UnderlyingChartPanel(sim_engine)
    qtbot.addWidget(panel)
    sym = panel.symbol
    day = panel.bars.t[-5]
    from datetime import UTC, datetime

    ts = datetime.fromtimestamp(float(day) + 3600, UTC).isoformat()
    for fid, qty in (("f1", 1), ("f2", -1)):
        sim_engine.store.execute(
            "INSERT INTO fills(fill_id, order_id, symbol, multiplier, quantity, price, fee, ts) "
            "VALUES (?, 'o', ?, 100, ?, '2.50', '0', ?)", (fid, f"{sym}260320C00600000", qty, ts))
    panel.reload(reset_view=False)
    points = panel.fill_marks.points()
    assert len(points) == 2
    assert [p.pos().y() for p in points] == pytest.approx([float(panel.bars.close[-5])] * 2)
    assert sorted(p.symbol() for p in points) == ["t", "t1"]  # sold ▼, bought ▲
