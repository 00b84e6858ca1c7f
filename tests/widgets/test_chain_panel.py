"""Option chain panel on a real chain: renders, streams quotes with one dataChanged, clicks build legs."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engine.bus.events import ChainUpdated, QuotesUpdated, UnderlyingUpdated
from engine.model import Side
from tests.widgets.conftest import priced_chain
from widgets.base import EventBatch
from widgets.chain_table import ChainPanel


@pytest.fixture()
def panel(qtbot, engine):
    p = ChainPanel(engine, strike_window=4)
    qtbot.addWidget(p)
    p.resize(1300, 420)
    p.select_underlying("XYZ")
    p.apply_events(EventBatch.from_events([ChainUpdated(chain=priced_chain())]))
    return p


def test_chain_shows_calls_strike_puts_centred_on_atm(panel, shot) -> None:
    m = panel.model
    assert m.rowCount() == 9  # ATM 100 ± 4 strikes of 5
    assert list(m.keys()) == [80.0, 85.0, 90.0, 95.0, 100.0, 105.0, 110.0, 115.0, 120.0]
    assert panel.expiry_tabs.count() == 2 and "(18d)" in panel.expiry_tabs.tabText(0)
    row = m.row_of(100.0)
    assert m.value(row, "atm") and not m.value(m.row_of(95.0), "atm")
    # engine numbers: IV near the smile used to price the chain (25 % at the money), call delta ~0.5
    assert m.value(row, "c_iv") == pytest.approx(0.25, abs=0.01)
    assert 0.45 < m.value(row, "c_delta") < 0.6 and -0.55 < m.value(row, "p_delta") < -0.4
    assert m.value(row, "c_theta") < 0 and m.value(row, "p_vega") > 0
    # ITM shading: calls below spot, puts above
    assert m.value(m.row_of(90.0), "c_itm") and not m.value(m.row_of(90.0), "p_itm")
    assert m.display_text(row, "c_iv").endswith("%")
    assert "XYZ" in panel.spot_label.text() and "100.00" in panel.spot_label.text()
    shot(panel, "chain")


def test_streamed_quotes_update_cells_with_one_bounding_box(panel) -> None:
    chain = priced_chain()
    r100c = chain.row_of("XYZ260320C00100000")
    r105p = chain.row_of("XYZ260320P00105000")
    emits = panel.model.data_changed_emits
    batch = EventBatch.from_events([
        QuotesUpdated(underlying="XYZ", rows=np.array([r100c]), bid=np.array([9.0]), ask=np.array([9.2])),
        QuotesUpdated(underlying="XYZ", rows=np.array([r105p]), bid=np.array([7.0]), ask=np.array([7.3])),
        QuotesUpdated(underlying="OTHER", rows=np.array([0]), bid=np.array([1.0]), ask=np.array([1.1])),
    ])
    panel.apply_events(batch)
    m = panel.model
    assert m.value(m.row_of(100.0), "c_bid") == 9.0 and m.value(m.row_of(105.0), "p_ask") == 7.3
    assert m.display_text(m.row_of(100.0), "c_mid") == "9.10"
    assert panel.model.data_changed_emits == emits + 1
    top, _left, bottom, _right = panel.model.last_changed_box
    assert (top, bottom) == (m.row_of(100.0), m.row_of(105.0))


def test_spot_move_recentres_the_window(panel) -> None:
    panel.apply_events(EventBatch.from_events([UnderlyingUpdated(symbol="XYZ", price=111.0)]))
    keys = list(panel.model.keys())
    assert keys[4] == 110.0 and panel.model.value(4, "atm")


def test_click_bid_sells_and_ask_buys(panel, qtbot) -> None:
    legs = []
    panel.links.leg_requested.connect(legs.append)
    qtbot.mouseClick(panel.table.viewport(), Qt.MouseButton.LeftButton,
                     pos=panel.cell_rect(105.0, "c_bid").center())
    qtbot.mouseClick(panel.table.viewport(), Qt.MouseButton.LeftButton,
                     pos=panel.cell_rect(95.0, "p_ask").center())
    qtbot.mouseClick(panel.table.viewport(), Qt.MouseButton.LeftButton,
                     pos=panel.cell_rect(95.0, "p_delta").center())  # not a price: no leg
    assert [(leg.side, leg.symbol) for leg in legs] == [
        (Side.SELL, "XYZ260320C00105000"), (Side.BUY, "XYZ260320P00095000")]


def test_second_expiry_tab_shows_its_strikes(panel) -> None:
    panel.expiry_tabs.setCurrentIndex(1)
    m = panel.model
    row = m.row_of(100.0)
    assert str(panel.expiry.astype("datetime64[D]")) == "2026-04-17"
    assert m.value(row, "c_bid") == pytest.approx(priced_chain().bid[priced_chain().row_of("XYZ260417C00100000")])


def test_unknown_underlying_is_refused_with_a_message(qtbot, engine) -> None:
    p = ChainPanel(engine)
    qtbot.addWidget(p)
    p.select_underlying("XYZ")
    assert p.info_label.text() == "waiting for the chain…"


def test_model_edge_from_the_engine_surface(qtbot, engine) -> None:
    from dataclasses import replace

    from tests.qt_fixtures import run_async, wait_for_condition

    chain = priced_chain()
    ev = run_async(qtbot, engine.surfaces.refit(chain), timeout=60)
    assert ev is not None
    # the 100 calls quoted 25 % rich; everything else on the smooth smile the surface was fitted to
    bid, ask = chain.bid.copy(), chain.ask.copy()
    for symbol in ("XYZ260320C00100000", "XYZ260417C00100000"):
        target = chain.row_of(symbol)
        bid[target] += 0.25 * chain.mid[target]
        ask[target] += 0.25 * chain.mid[target]
    rich = replace(chain, bid=bid, ask=ask)
    p = ChainPanel(engine, strike_window=4)
    qtbot.addWidget(p)
    p.select_underlying("XYZ")
    p.apply_events(EventBatch.from_events([ChainUpdated(chain=rich), ev]))
    assert not p.table.isColumnHidden(p.model.column_index("c_edge"))
    m = p.model
    wait_for_condition(qtbot, lambda: np.isfinite(m.value(m.row_of(100.0), "c_edge")), timeout=10)
    # the ensemble's value minus mid shows only beyond the models' band plus half the spread: the rich call
    # (a seller's edge, negative), and blank where the quote sits on the smooth smile
    assert m.value(m.row_of(100.0), "c_edge") < -0.5 * (m.value(m.row_of(100.0), "c_ask") - m.value(m.row_of(100.0), "c_bid"))
    assert np.isnan(m.value(m.row_of(105.0), "c_edge"))
    assert np.isnan(m.value(m.row_of(95.0), "p_edge"))


def test_narrow_dock_scrolls_and_hidden_columns_persist(qtbot, engine) -> None:
    p = ChainPanel(engine, strike_window=4)
    qtbot.addWidget(p)
    p.resize(700, 400)
    p.show()
    qtbot.waitExposed(p)
    oi = p.model.column_index("p_oi")
    assert p.table.columnWidth(oi) == p.model.columns[oi].width  # declared widths, horizontal scroll bar
    assert p.table.horizontalScrollBar().maximum() > 0
    p.set_field_hidden("volume", True)
    p.set_field_hidden("oi", True)
    state = p.panel_state()
    assert sorted(state["hidden"]) == ["oi", "volume"]
    q = ChainPanel(engine)
    qtbot.addWidget(q)
    q.restore_panel_state(state)
    assert q.table.isColumnHidden(q.model.column_index("p_oi")) and not q.table.isColumnHidden(
        q.model.column_index("p_iv"))
    p.resize(1800, 400)
    # wide: no scroll, and the spare width is shared in proportion (no column below its design width)
    qtbot.waitUntil(lambda: p.table.horizontalScrollBar().maximum() == 0, timeout=2000)
    iv = p.model.column_index("p_iv")
    assert p.table.columnWidth(iv) >= p.model.columns[iv].width
    widths = [p.table.columnWidth(i) for i in range(len(p.model.columns)) if not p.table.isColumnHidden(i)]
    assert sum(widths) <= p.table.viewport().width()


def test_american_chain_shows_american_ivs(panel, qtbot) -> None:
    from engine.analytics.chain_metrics import chain_metrics

    chain = priced_chain()
    qtbot.waitUntil(lambda: bool(panel._am_iv), timeout=5000)
    panel._metrics_at = -1e9
    panel.refresh()
    m = panel.model
    row = chain.row_of("XYZ260320P00105000")
    european = chain_metrics(chain, np.array([row]), r=0.04, q=0.0).iv[0]
    shown = m.value(m.row_of(105.0), "p_iv")
    assert shown < european  # an in-the-money American put needs less vol for the same price


def test_a_worker_job_broken_by_the_engine_stop_ends_quietly(qtbot) -> None:
    """At stop the engine terminates its worker processes; a pending chain job then fails with
    BrokenProcessPool. Its exception is retrieved and not reported ("Task exception was never retrieved")."""
    import asyncio
    import gc
    from concurrent.futures.process import BrokenProcessPool

    from tests.qt_fixtures import run_async
    from widgets.chain_table import _outcome

    loop = asyncio.get_event_loop()
    unhandled: list[dict] = []
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, ctx: unhandled.append(ctx))
    try:
        async def job() -> None:
            raise BrokenProcessPool("A process in the process pool was terminated abruptly")

        async def fails() -> None:
            raise ValueError("bad block")

        results = []
        for coro in (job(), fails()):
            task = asyncio.ensure_future(coro)
            task.add_done_callback(lambda f: results.append(_outcome(f)))
            run_async(qtbot, asyncio.wait([task]), timeout=5)
            del task
        gc.collect()
        assert results == [(None, ""), (None, "ValueError: bad block")]
        assert unhandled == []
    finally:
        loop.set_exception_handler(old)
