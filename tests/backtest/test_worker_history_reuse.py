"""A long-lived backtest worker keeps the last history it loaded, and loads again when the data changed."""

import os
import shutil

import numpy as np

import engine.backtest.sources as sources
from engine.backtest import worker
from engine.backtest.config import BacktestConfig
from engine.backtest.worker import history_key, run_backtest_job, warm_worker


def _config(path, **extra) -> dict:
    return {"data": str(path), "symbol": "SPY", "iv_lookback": 20, "iv_min_history": 10,
            "params": {"iv_rank_entry": 0.5, "dte_min": 20, "dte_max": 50, "rules.dte_exit": 7}, **extra}


def _counting_loads(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = sources.load_history

    def counting(config):
        calls.append(config.data)
        return real(config)

    monkeypatch.setattr(sources, "load_history", counting)
    monkeypatch.setattr(worker, "_HISTORY_CACHE", {})
    return calls


def test_second_run_on_same_data_skips_the_load_and_gives_the_same_result(sim_parquet, tmp_path, monkeypatch):
    data = tmp_path / "spy.parquet"
    shutil.copy(sim_parquet, data)
    calls = _counting_loads(monkeypatch)
    first = run_backtest_job(_config(data), reuse_history=True)
    second = run_backtest_job(_config(data, params={"iv_rank_entry": 0.5, "dte_min": 20, "dte_max": 50,
                                                    "rules.dte_exit": 7, "width": 10.0}), reuse_history=True)
    again = run_backtest_job(_config(data), reuse_history=True)
    assert len(calls) == 1
    assert first.status == second.status == again.status == "completed"
    np.testing.assert_array_equal(first.equity, again.equity)  # a run leaves the cached history as it found it
    assert [o["tag"] for o in first.orders] == [o["tag"] for o in again.orders]


def test_changed_file_or_other_data_is_loaded_again(sim_parquet, tmp_path, monkeypatch):
    data = tmp_path / "spy.parquet"
    shutil.copy(sim_parquet, data)
    calls = _counting_loads(monkeypatch)
    run_backtest_job(_config(data), reuse_history=True)
    st = data.stat()
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # the file was rewritten
    run_backtest_job(_config(data), reuse_history=True)
    other = tmp_path / "other.parquet"
    shutil.copy(sim_parquet, other)
    run_backtest_job(_config(other), reuse_history=True)
    assert calls == [str(data), str(data), str(other)]
    assert len(worker._HISTORY_CACHE) == 1  # only the last history is kept


def test_without_reuse_every_run_loads(sim_parquet, monkeypatch):
    calls = _counting_loads(monkeypatch)
    run_backtest_job(_config(sim_parquet))
    run_backtest_job(_config(sim_parquet))
    assert len(calls) == 2 and worker._HISTORY_CACHE == {}


def test_history_key_names_what_the_load_depends_on(tmp_path, sim_parquet):
    sim = BacktestConfig(years=5, seed=7)
    assert history_key(sim) == history_key(BacktestConfig(years=5, seed=7, params={"width": 10.0}))
    assert history_key(sim) != history_key(BacktestConfig(years=5, seed=8))
    assert history_key(sim) != history_key(BacktestConfig(years=4, seed=7))
    assert history_key(sim) != history_key(BacktestConfig(years=5, seed=7, sim_max_strikes=40))
    assert history_key(sim) != history_key(BacktestConfig(years=5, seed=7, start="2024-01-02"))
    assert history_key(BacktestConfig(data=str(tmp_path))) is None  # a folder: not cached
    assert history_key(BacktestConfig(data=str(tmp_path / "missing.csv"))) is None
    assert history_key(BacktestConfig(data=str(sim_parquet))) != history_key(
        BacktestConfig(data=str(sim_parquet), columns={"bid": "b"}))


def test_warm_worker_imports_the_run_modules():
    import sys

    assert warm_worker() == os.getpid()
    assert {"engine.backtest.runner", "engine.backtest.execution", "pyarrow.parquet"} <= set(sys.modules)
