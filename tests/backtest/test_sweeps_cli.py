"""Sweeps on a process pool and a Dask LocalCluster give identical rows; the GUI worker hook; the CLI."""

from __future__ import annotations

import json
import queue
from concurrent.futures import ProcessPoolExecutor

import pytest

from engine.backtest.sweep import expand_grid, parse_grid, run_sweep
from engine.backtest.worker import BacktestProgressed, run_backtest_job
from engine.cli import main

GRID = {"width": [5.0, 10.0], "short_delta": [0.2, 0.3]}


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "run_id"} for r in rows]


def test_grid_parsing_and_expansion():
    grid = parse_grid(["width=5,10", "rules.stop_multiple=2,3"])
    assert grid == {"width": ["5", "10"], "rules.stop_multiple": ["2", "3"]}
    assert expand_grid(grid)[1] == {"width": "5", "rules.stop_multiple": "3"}
    with pytest.raises(ValueError, match="key=a,b,c"):
        parse_grid(["width"])


@pytest.fixture(scope="module")
def pool_rows(sim_parquet):
    import engine.backtest.execution  # noqa: F401  (imported before forking: workers inherit it)
    from engine.backtest.config import BacktestConfig

    cfg = BacktestConfig(data=str(sim_parquet), symbol="SPY", iv_lookback=20, iv_min_history=10,
                         params={"iv_rank_entry": 0.5, "dte_min": 20, "dte_max": 50})
    with ProcessPoolExecutor(max_workers=2) as pool:
        rows = run_sweep(cfg, GRID, pool)
    return cfg, rows


def test_sweep_on_process_pool_then_one_row_per_combination_in_grid_order(pool_rows):
    _, rows = pool_rows
    assert [(r["param.width"], r["param.short_delta"]) for r in rows] == [(5.0, 0.2), (5.0, 0.3), (10.0, 0.2),
                                                                          (10.0, 0.3)]
    assert all(r["status"] == "completed" for r in rows), rows
    assert len({(r["total_return"], r["trades"]) for r in rows}) > 1  # parameters matter


def test_sweep_on_dask_local_cluster_then_identical_rows(pool_rows):
    distributed = pytest.importorskip("distributed")
    cfg, rows = pool_rows
    # in-process workers keep the suite fast; the scheduler/worker protocol and Client.get_executor() are the real ones
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        dask_rows = run_sweep(cfg, GRID, client.get_executor())
    assert _strip(dask_rows) == _strip(rows)


def test_sweep_cancel_then_remaining_cells_marked_cancelled(sim_history):
    from concurrent.futures import ThreadPoolExecutor

    from engine.backtest.config import BacktestConfig
    from engine.backtest.runner import CancelToken

    token = CancelToken()
    token.cancel()
    with ThreadPoolExecutor(1) as pool:
        rows = run_sweep(BacktestConfig(), GRID, pool, history=sim_history, cancel=token)
    assert [r["status"] for r in rows] == ["cancelled"] * 4


def test_worker_job_reports_progress_and_returns_the_result(sim_parquet):
    q: queue.Queue = queue.Queue()
    cfg = {"data": str(sim_parquet), "symbol": "SPY", "iv_lookback": 20, "iv_min_history": 10, "run_id": "gui-1"}
    result = run_backtest_job(cfg, q)
    events = []
    while not q.empty():
        events.append(q.get_nowait())
    assert all(isinstance(e, BacktestProgressed) and e.run_id == "gui-1" for e in events)
    assert events[0].stage == "loading" and events[-1].stage == "done" and events[-1].fraction == 1.0
    fr = [e.fraction for e in events if e.stage == "running"]
    assert fr == sorted(fr) and len(fr) >= 3
    assert result.status == "completed" and len(result.equity) == 80 and len(result.daily_pnl) == 80


def test_worker_job_when_file_is_bad_then_failed_result_names_row_and_column(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("underlying,quote_date,expiration,strike,option_type,bid,ask,underlying_price\n"
                   "SPY,2024-01-02,2024-01-19,470,C,5.10,5.20,472.0\nSPY,2024-01-02,2024-01-19,470,Q,3.0,3.1,472.0\n")
    result = run_backtest_job({"data": str(bad)}, None)
    assert result.status == "failed" and "row 3" in result.error and "option_type" in result.error


def test_cli_backtest_writes_files_and_json(sim_parquet, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["backtest", "--data", str(sim_parquet), "--symbol", "SPY", "--param", "iv_rank_entry=0.5",
                 "--param", "rules.dte_exit=7", "--out", str(out), "--json", "--no-png", "--db",
                 str(tmp_path / "db.sqlite")])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["summary"]["status"] == "completed" and payload["reconciliation"]["difference"] == "0.00"
    assert {p.name for p in out.iterdir()} >= {"trades.csv", "equity.csv", "orders.csv", "summary.json"}


def test_cli_backtest_bad_param_or_file_then_exit_2_with_message(tmp_path, capsys):
    assert main(["backtest", "--data", str(tmp_path / "none.csv"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["backtest", "--data", str(tmp_path / "none.csv"), "--param", "widht=5", "--out", str(tmp_path)]) == 2


def test_cli_sweep_writes_one_row_per_combination(sim_parquet, tmp_path, capsys):
    out = tmp_path / "sweep"
    code = main(["sweep", "--data", str(sim_parquet), "--symbol", "SPY", "--grid", "width=5,10", "--workers", "1",
                 "--out", str(out)])
    assert code == 0
    lines = (out / "sweep.csv").read_text().splitlines()
    assert lines[0].startswith("param.width,status") and len(lines) == 3
    assert "wrote" in capsys.readouterr().out


def test_cli_sweep_on_a_dask_scheduler_address(sim_parquet, tmp_path):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        code = main(["sweep", "--data", str(sim_parquet), "--grid", "short_delta=0.2,0.3", "--dask",
                     cluster.scheduler_address, "--out", str(tmp_path), "--json"])
    assert code == 0
    assert len((tmp_path / "sweep.csv").read_text().splitlines()) == 3


def test_cli_sweep_when_scheduler_unreachable_then_exit_2(tmp_path, capsys):
    assert main(["sweep", "--grid", "width=5", "--dask", "tcp://127.0.0.1:9", "--dask-timeout", "1", "--out", str(tmp_path)]) == 2
    assert "cannot reach the Dask scheduler" in capsys.readouterr().err


def test_cli_walk_forward(sim_parquet, tmp_path, capsys):
    code = main(["backtest", "--data", str(sim_parquet), "--walk-forward", "30,25", "--out", str(tmp_path), "--json",
                 "--no-png"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["info"]["windows"]) == 2
