"""The chain's optional columns (computed by the engine's chain metrics), the column chooser saved with the layout,
the expected move on each expiry tab, stacked expiries, all strikes on demand and keyboard trading."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engine.analytics.chain_metrics import chain_columns, chain_metrics, expected_moves
from engine.bus.events import ChainUpdated
from engine.model import Side
from tests.widgets.conftest import priced_chain
from widgets.base import EventBatch
from widgets.chain_table import OPTIONAL_FIELDS, ChainPanel
from widgets.order_ticket import TicketPanel


# ---- the engine's numbers -------------------------------------------------------------------------
def test_chain_columns_follow_their_definitions(sim_chain, spy_surface) -> None:
    c = sim_chain
    e = c.expiries()[3]
    rows = np.flatnonzero(c.expiry == e)
    m = chain_metrics(c, rows, r=0.04)
    cols = chain_columns(c, m, r=0.04, surface=spy_surface.fit.surface)
    k, call, s = c.strike[rows], c.is_call[rows], c.spot
    mid = 0.5 * (c.bid[rows] + c.ask[rows])
    intrinsic = np.where(call, np.maximum(s - k, 0), np.maximum(k - s, 0))
    ok = np.isfinite(mid)
    np.testing.assert_allclose(cols.extrinsic[ok], (mid - intrinsic)[ok])
    np.testing.assert_allclose(cols.pct_otm, np.where(call, k - s, s - k) / s * 100)
    np.testing.assert_allclose(cols.prob_itm + cols.prob_otm, 1.0)
    np.testing.assert_array_equal(cols.bid_size, c.bid_size[rows])
    calls = np.flatnonzero(call & np.isfinite(cols.prob_itm))
    assert np.all(np.diff(cols.prob_itm[calls][np.argsort(k[calls])]) <= 1e-12)  # higher strike, less likely ITM
    deep = calls[np.argmin(k[calls])]
    assert cols.prob_itm[deep] > 0.9 and cols.pct_otm[deep] < 0
    # theo: BSM at the fitted smile, close to the market for liquid near-the-money contracts
    near = np.flatnonzero(np.abs(k - s) < 0.02 * s)
    assert np.all(np.isfinite(cols.theo[near]))
    assert np.all(np.abs(cols.theo[near] - mid[near]) < 0.1 * mid[near] + 0.10)
    assert np.all(np.isnan(chain_columns(c, m, r=0.04).theo))  # no surface, no theo: unknown, not zero


def test_expected_move_is_the_at_the_money_straddle(sim_chain) -> None:
    c = sim_chain
    em = expected_moves(c)
    assert list(em) == list(c.expiries())
    for e in c.expiries()[:4]:
        rows = np.flatnonzero(c.expiry == e)
        k = c.strike[rows][np.argmin(np.abs(c.strike[rows] - c.spot))]
        straddle = [0.5 * (c.bid[i] + c.ask[i]) for i in rows if c.strike[i] == k]
        assert len(straddle) == 2 and em[e] == pytest.approx(sum(straddle))
    values = [em[e] for e in c.expiries()]
    assert values[-1] > values[0] > 0  # more time, a larger move


# ---- the panel -------------------------------------------------------------------------------------
@pytest.fixture()
def panel(qtbot, engine):
    p = ChainPanel(engine, strike_window=2)
    qtbot.addWidget(p)
    p.resize(1300, 420)
    p.select_underlying("XYZ")
    p.apply_events(EventBatch.from_events([ChainUpdated(chain=priced_chain())]))
    return p


def test_optional_columns_are_chosen_and_saved_with_the_layout(qtbot, engine, panel, shot) -> None:
    assert set(OPTIONAL_FIELDS).isdisjoint(panel.shown_fields())  # the default set fits a 1920-px screen
    for key in OPTIONAL_FIELDS:
        assert panel.table.isColumnHidden(panel.model.column_index(f"p_{key}"))
    panel.set_field_hidden("prob_itm", False)
    panel.set_field_hidden("extrinsic", False)
    panel.set_field_hidden("gamma", True)
    m = panel.model
    row = m.row_of(100.0)
    chain = priced_chain()
    rows = np.array([int(m.value(row, "c_row")), int(m.value(row, "p_row"))])
    want = chain_columns(chain, chain_metrics(chain, rows, r=engine_rates(engine)[0], q=engine_rates(engine)[1]),
                         r=engine_rates(engine)[0], q=engine_rates(engine)[1])
    assert m.value(row, "c_prob_itm") == pytest.approx(want.prob_itm[0], abs=0.02)
    assert m.value(row, "p_extrinsic") == pytest.approx(want.extrinsic[1])
    assert m.display_text(row, "c_prob_itm").endswith("%")
    assert not panel.table.isColumnHidden(m.column_index("p_prob_itm"))
    state = panel.panel_state()
    assert {"prob_itm", "extrinsic"} <= set(state["columns"]) and "gamma" not in state["columns"]
    shot(panel, "chain-optional-columns")

    other = ChainPanel(engine, strike_window=2)
    qtbot.addWidget(other)
    other.restore_panel_state(state)
    assert other.shown_fields() == panel.shown_fields()
    # a layout saved before the optional columns existed keeps them hidden
    legacy = ChainPanel(engine, strike_window=2)
    qtbot.addWidget(legacy)
    legacy.restore_panel_state({"hidden": ["oi"]})
    assert "oi" not in legacy.shown_fields() and set(OPTIONAL_FIELDS).isdisjoint(legacy.shown_fields())
    legacy.default_columns()
    assert "oi" in legacy.shown_fields()


def engine_rates(engine):
    from widgets import engine_queries as eq

    return eq.rates(engine, "XYZ")


def test_each_expiry_tab_names_its_expected_move(panel) -> None:
    em = expected_moves(priced_chain())
    for i, e in enumerate(priced_chain().expiries()):
        assert panel.expiry_tabs.tabText(i).endswith(f"±{em[e]:,.2f}")
        assert "(" in panel.expiry_tabs.tabText(i)  # the days to expiry stay
    assert panel.expected_move == em


def test_stacked_expiries_and_all_strikes(panel, shot) -> None:
    m = panel.model
    assert m.rowCount() == 5 and panel.table.isColumnHidden(m.expiry_column)
    panel.all_strikes_check.setChecked(True)
    assert m.rowCount() == 9 and not panel.window_spin.isEnabled()  # 80 … 120, every listed strike
    panel.all_strikes_check.setChecked(False)
    panel.stack_spin.setValue(2)
    assert m.rowCount() == 10 and not panel.table.isColumnHidden(m.expiry_column)
    labels = [m.value(r, "expiry") for r in range(m.rowCount())]
    assert labels[0] == "20 Mar 26" and labels[5] == "17 Apr 26" and labels.count("") == 8
    assert [m.value(r, "block") for r in (0, 4, 5, 9)] == [0, 0, 1, 1]
    assert m.value(2, "atm") and m.value(7, "atm")  # each block centred on its own at-the-money strike
    chain = priced_chain()
    assert chain.expiry[int(m.value(7, "c_row"))] == chain.expiries()[1]
    assert "2 expiries stacked" in panel.info_label.text()
    shot(panel, "chain-stacked")


def test_keyboard_moves_the_cursor_and_enter_b_s_add_to_the_ticket(qtbot, engine, panel) -> None:
    ticket = TicketPanel(engine)
    qtbot.addWidget(ticket)
    ticket.apply_events(EventBatch.from_events([ChainUpdated(chain=priced_chain())]))
    m, t = panel.model, panel.table
    panel.show()
    t.setFocus()
    t.setCurrentIndex(m.index(m.row_of(100.0), m.column_index("c_bid")))
    assert m.cell_background(m.row_of(100.0), m.column_index("c_bid")) == m._cursor_bg
    qtbot.keyClick(t, Qt.Key.Key_Down)
    assert t.currentIndex().row() == m.row_of(105.0) and m.cursor == (m.row_of(105.0), m.column_index("c_bid"))
    qtbot.keyClick(t, Qt.Key.Key_Return)  # on a bid: sell, as a click would
    assert [(leg.side, leg.symbol) for leg in ticket.legs] == [(Side.SELL, "XYZ260320C00105000")]
    for _ in range(40):  # → across the strike to the put mid (hidden columns are skipped)
        if m.columns[t.currentIndex().column()].key == "p_mid":
            break
        qtbot.keyClick(t, Qt.Key.Key_Right)
    assert m.columns[t.currentIndex().column()].key == "p_mid" and t.currentIndex().row() == m.row_of(105.0)
    qtbot.keyClick(t, Qt.Key.Key_B)
    qtbot.keyClick(t, Qt.Key.Key_Up)
    qtbot.keyClick(t, Qt.Key.Key_S)
    assert [(leg.side, leg.symbol) for leg in ticket.legs] == [
        (Side.SELL, "XYZ260320C00105000"), (Side.BUY, "XYZ260320P00105000"), (Side.SELL, "XYZ260320P00100000")]
    t.setCurrentIndex(m.index(0, m.strike_column))
    qtbot.keyClick(t, Qt.Key.Key_B)  # not on a contract: nothing is added
    assert len(ticket.legs) == 3
