"""Whole runs on the simulated market's history: determinism, P&L reconciliation, exports, store, walk-forward."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from engine.backtest.persistence import BacktestRepository
from engine.backtest.report import export_all
from engine.backtest.runner import Backtest
from engine.backtest.walkforward import walk_forward, windows
from engine.store import Store


def _orders(result):
    return [(o["tag"], o["legs"], o["quantity"], o["limit_price"], o["status"], o["avg_fill_price"])
            for o in result.orders]


@pytest.fixture(scope="module")
def two_runs(sim_history):
    from engine.backtest.config import BacktestConfig

    cfg = BacktestConfig(strategy="iv_rank_put_spread", symbol="SPY", iv_lookback=20, iv_min_history=10,
                         params={"iv_rank_entry": 0.5, "dte_min": 20, "dte_max": 50, "rules.dte_exit": 7})
    return Backtest(cfg, sim_history).run(), Backtest(cfg, sim_history).run()


def test_same_config_and_seed_then_identical_results(two_runs):
    a, b = two_runs
    assert a.status == b.status == "completed"
    assert len(a.orders) >= 2, "the fixture must trade for this test to mean anything"
    assert _orders(a) == _orders(b)
    assert np.array_equal(a.equity, b.equity)
    assert [t.as_row() for t in a.trades] == [t.as_row() for t in b.trades]


def test_total_pnl_equals_trade_pnl_minus_fees_to_the_cent(two_runs):
    r, _ = two_runs
    assert r.fees > 0
    rec = r.reconciliation()
    assert rec["difference"] == Decimal("0.00")
    # and the exchange's own cash agrees with the ledger's cash flows when nothing is held at the end
    # the ledger's cash flows (fills incl. fees) equal the exchange's change in cash
    assert Decimal(repr(float(r.cash[-1]))).quantize(Decimal("0.01")) == (
        Decimal("100000") + Decimal(r.info["ledger_cash_flow"])).quantize(Decimal("0.01"))


def test_equity_is_marked_every_day_not_only_at_trade_close(two_runs):
    r, _ = two_runs
    held = np.abs(r.greeks["delta"]) > 0
    assert held.any()
    moves = np.diff(r.equity)[held[1:]]
    assert (np.abs(moves) > 0).mean() > 0.5  # equity moves on most days a position is held
    assert r.metrics.exposure > 0


def test_exports_png_and_store_round_trip(two_runs, tmp_path):
    r, _ = two_runs
    paths = export_all(r, tmp_path / "out")
    trades_csv = paths["trades"].read_text().splitlines()
    assert trades_csv[0].startswith("trade_no,tag,") and len(trades_csv) == 1 + len(r.trades)
    equity_csv = paths["equity"].read_text().splitlines()
    assert len(equity_csv) == 1 + len(r.equity)
    png = paths["report"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    from matplotlib.image import imread

    img = imread(paths["report"])
    assert img.shape[0] == 900 and img.shape[1] == 1200 and float(img[..., :3].std()) > 0.05  # not blank
    store = Store.open(tmp_path / "bt.sqlite")
    try:
        repo = BacktestRepository(store)
        repo.save(r, sweep_id="s1")
        [run] = repo.runs(sweep_id="s1")
        assert run["run_id"] == r.run_id and run["status"] == "completed"
        assert run["metrics"]["trades"] == r.metrics.trades
        assert len(repo.trades(r.run_id)) == len(r.trades)
        eq = repo.equity(r.run_id)
        assert len(eq) == len(r.equity) and eq[-1]["equity"] == pytest.approx(r.equity[-1])
        repo.save(r)  # saving again replaces, never duplicates
        assert len(repo.equity(r.run_id)) == len(r.equity)
    finally:
        store.close()


def test_walk_forward_windows_rolling_and_expanding():
    w = windows(100, 40, 20)
    assert [(x.train, x.test) for x in w] == [((0, 40), (40, 60)), ((20, 60), (60, 80)), ((40, 80), (80, 100))]
    w = windows(100, 40, 30, mode="expanding")
    assert [(x.train, x.test) for x in w] == [((0, 40), (40, 70)), ((0, 70), (70, 100))]
    with pytest.raises(ValueError, match="cannot hold"):
        windows(30, 40, 20)
    with pytest.raises(ValueError, match="mode"):
        windows(100, 40, 20, mode="sideways")


def test_walk_forward_stitches_out_of_sample_windows(sim_history, sim_config):
    r = walk_forward(sim_config, sim_history, train_days=30, test_days=25)
    assert r.status == "completed"
    assert len(r.equity) == sim_history.n_days - 30
    assert str(r.dates[0]) == str(sim_history.dates[30])
    assert len(r.info["windows"]) == 2
    # each window starts with the previous window's ending equity: the stitched curve has no jump
    first_len = 25
    assert r.equity[first_len] - r.equity[first_len - 1] == pytest.approx(r.daily_pnl[first_len])


def test_walk_forward_optimisation_picks_the_in_sample_best_for_each_window(sim_history, sim_config):
    from engine.backtest.signals import compute_signals
    from engine.backtest.walkforward import _slice_signals

    grid = {"short_delta": [0.15, 0.3], "width": [5.0, 10.0]}
    r = walk_forward(sim_config, sim_history, train_days=40, test_days=20, fit_grid=grid, fit_metric="total_return")
    assert r.status == "completed" and len(r.info["windows"]) == 2
    # the first window's choice is the best total return on its training days, recomputed here
    signals = compute_signals(sim_history, lookback=sim_config.iv_lookback, min_history=sim_config.iv_min_history)
    train = sim_history.slice_days(0, 40)
    scores = {}
    for d in grid["short_delta"]:
        for wd in grid["width"]:
            res = Backtest(sim_config.with_params(short_delta=d, width=wd), train,
                           signals=_slice_signals(signals, 0, 40)).run()
            scores[(d, wd)] = res.metrics.total_return
    chosen = r.info["windows"][0]["params"]
    assert scores[(chosen["short_delta"], chosen["width"])] == max(scores.values())
    with pytest.raises(ValueError, match="not a metric"):
        walk_forward(sim_config, sim_history, train_days=40, test_days=20, fit_grid=grid, fit_metric="luck")
