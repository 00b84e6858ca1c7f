"""The watchlist panel on a started engine with the simulated market and its backfilled history."""

from __future__ import annotations

import math

import pytest
from PySide6 import QtCore

from engine.watchlist import COLUMN_KEYS
from tests.qt_fixtures import run_async, wait_for_condition
from widgets.watchlist import WatchlistPanel

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


def _col(key: str) -> int:
    return COLUMN_KEYS.index(key)


def test_watchlist_when_opened_then_lists_the_simulated_symbols_with_history_values(qtbot, sim_engine, shot) -> None:
    panel = WatchlistPanel(sim_engine)
    qtbot.addWidget(panel)
    panel.resize(1100, 300)
    assert panel.symbols == sim_engine.feed.underlyings()
    spy = next(r for r in panel.model.rows if r.symbol == "SPY")
    assert spy.last > 0 and 0.03 < spy.iv < 1.5
    assert 0.0 <= spy.iv_rank <= 1.0 and 0.0 <= spy.iv_percentile <= 1.0  # a full year backfilled
    assert spy.hv30 > 0 and spy.expected_move > 0
    row = panel.model.rows.index(spy)
    assert panel.model.data(panel.model.index(row, _col("iv_rank"))) == f"{spy.iv_rank * 100:.0f}"
    shot(panel, "panel_watchlist")


def test_sort_when_header_clicked_then_numeric_order_with_unknown_values_last(qtbot, sim_engine) -> None:
    panel = WatchlistPanel(sim_engine)
    qtbot.addWidget(panel)
    panel.add_symbol("ZZZ")  # no price from the feed: its values are unknown
    panel.table.sortByColumn(_col("last"), Qt.SortOrder.AscendingOrder)
    lasts = [r.last for r in panel.model.rows]
    assert math.isnan(lasts[-1]) and panel.model.rows[-1].symbol == "ZZZ"
    assert lasts[:-1] == sorted(lasts[:-1])  # by value: "600.00" after "99.00" only numerically
    panel.table.sortByColumn(_col("iv_rank"), Qt.SortOrder.DescendingOrder)
    ranks = [r.iv_rank for r in panel.model.rows if not math.isnan(r.iv_rank)]
    assert ranks == sorted(ranks, reverse=True) and panel.model.rows[-1].symbol == "ZZZ"
    panel.refresh(force=True)  # new values keep the chosen order
    again = [r.iv_rank for r in panel.model.rows if not math.isnan(r.iv_rank)]
    assert again == sorted(again, reverse=True)
    assert panel.model.rows[-1].symbol == "ZZZ"


def test_add_symbol_when_bad_or_duplicate_then_reported_and_not_added(qtbot, sim_engine) -> None:
    panel = WatchlistPanel(sim_engine)
    qtbot.addWidget(panel)
    before = list(panel.symbols)
    assert not panel.add_symbol("1 bad")
    assert "'1 bad' is not a symbol" in panel.last_error
    assert not panel.add_symbol(before[0].lower())
    assert "already in Default" in panel.last_error
    assert panel.symbols == before
    assert panel.add_symbol("zzz")
    assert panel.symbols[-1] == "ZZZ" and "does not list it" in panel.last_error
    row = next(r for r in panel.model.rows if r.symbol == "ZZZ")
    assert row.note == "no price from the running feed"


def test_row_selected_then_chain_and_linked_panels_follow(qtbot, sim_engine) -> None:
    from widgets.chain_table import ChainPanel

    chain = ChainPanel(sim_engine, strike_window=6)
    panel = WatchlistPanel(sim_engine)
    for w in (chain, panel):
        qtbot.addWidget(w)
    seen: list[str] = []
    panel.links.underlying_selected.connect(seen.append)
    target = next(s for s in panel.symbols if s != chain.underlying)
    panel.select_row(next(i for i, r in enumerate(panel.model.rows) if r.symbol == target))
    assert chain.underlying == target and panel.links.underlying == target and seen[-1] == target
    wait_for_condition(qtbot, lambda: chain.chain is not None and chain.chain.underlying == target, timeout=20)


def test_lists_columns_and_sort_when_restored_then_as_saved(qtbot, sim_engine) -> None:
    panel = WatchlistPanel(sim_engine)
    qtbot.addWidget(panel)
    panel.new_list("Tech")
    assert panel.current == "Tech" and panel.symbols == []
    panel.add_symbol("QQQ")
    panel.add_symbol("SPY")
    panel.set_column_hidden("volume", True)
    panel.table.sortByColumn(_col("last"), Qt.SortOrder.DescendingOrder)
    state = panel.panel_state()
    assert state["hidden"] == ["volume"] and state["sort"] == ["last", "desc"]

    other = WatchlistPanel(sim_engine)
    qtbot.addWidget(other)
    other.restore_panel_state(state)
    assert other.lists["Tech"] == ["QQQ", "SPY"] and other.current == "Tech"
    assert other.table.isColumnHidden(_col("volume"))
    assert [r.symbol for r in other.model.rows] == [r.symbol for r in panel.model.rows]
    # a damaged state loses only what is bad
    other.restore_panel_state({"lists": {"Mine": ["SPY", "1 bad", "SPY"]}, "current": "nope", "sort": ["x", "y"]})
    assert other.lists == {"Mine": ["SPY"]} and other.current == "Mine"
    other.delete_list("Mine")
    assert other.lists == {"Mine": ["SPY"]} and "cannot be deleted" in other.last_error
