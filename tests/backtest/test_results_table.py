"""The results table: every registered strategy on one market, the put-write benchmark beside them, and a
strategy that fails listed with its error rather than dropped."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from engine.backtest.config import BacktestConfig
from engine.backtest.table import BENCHMARK, render_markdown, run_table
from engine.cli import main


def test_backtest_table_command_then_markdown_rows_for_each_strategy_with_benchmark(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OPTIONDESK_CACHE_DIR", str(tmp_path / "cache"))  # the workers' history cache
    out = tmp_path / "docs" / "results.md"
    code = main(["backtest-table", "--years", "0.3", "--seed", "7", "--strategy", "iron_condor", "--strategy",
                 "put_write", "--workers", "2", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| strategy")]
    # the benchmark comes first and every other row is measured against it
    assert rows[0].startswith(f"| {BENCHMARK} (benchmark) |") and rows[1].startswith("| iron_condor |")
    assert "optiondesk backtest-table --years 0.3 --seed 7 --strategy iron_condor --strategy put_write" in text
    cells = [c.strip() for c in rows[0].split("|")[1:-1]]
    assert cells[1] == "SPY daily, 0.3 y"  # the market the row ran on
    assert cells[5] == "0.00" and cells[-1] == "yes"  # vs itself; reconciles to the cent
    assert "risk_per_trade_pct" in text  # the limits the benchmark runs with are named


def test_unknown_strategy_for_the_table_then_usage_error(tmp_path, capsys):
    assert main(["backtest-table", "--strategy", "no_such", "--out", str(tmp_path / "r.md")]) == 2
    assert "unknown strategy no_such" in capsys.readouterr().err
    assert not (tmp_path / "r.md").exists()


def test_a_strategy_that_fails_then_listed_with_its_error(sim_history):
    config = BacktestConfig(symbol="SPY", years=0.3, seed=3, iv_lookback=20, iv_min_history=10)
    with ThreadPoolExecutor(2) as pool:
        rows = run_table(config, ["put_write", "not_registered"], pool, history=sim_history)
    assert [r["strategy"] for r in rows] == ["put_write", "not_registered"]
    assert rows[0]["status"] == "completed" and rows[1]["status"] == "failed"
    assert "unknown strategy 'not_registered'" in rows[1]["error"]
    text = render_markdown(rows, config, "optiondesk backtest-table --years 0.3 --seed 3 --out x.md")
    assert "| not_registered | SPY daily, 0.3 y | **failed**: ValueError: unknown strategy 'not_registered'" in text


def test_each_strategy_runs_on_its_own_spec_and_the_row_names_it(tmp_path, monkeypatch):
    """earnings_crush declares the simulated AAPL (SPY does not report): its row runs there and trades, beside a
    strategy on the table's own SPY market; the notes say why the spec differs."""
    monkeypatch.setenv("OPTIONDESK_CACHE_DIR", str(tmp_path / "cache"))
    config = BacktestConfig(symbol="SPY", years=1.0, seed=7)
    with ThreadPoolExecutor(2) as pool:
        rows = run_table(config, ["iron_condor", "earnings_crush"], pool)
    by = {r["strategy"]: r for r in rows}
    assert by["iron_condor"]["market"] == "SPY daily, 1 y"
    assert by["earnings_crush"]["market"] == "AAPL daily, 1 y"
    assert by["earnings_crush"]["status"] == "completed" and by["earnings_crush"]["trades"] >= 1
    assert by["earnings_crush"]["difference"] == "0.00"
    text = render_markdown(rows, config, "optiondesk backtest-table --years 1 --seed 7 --out x.md")
    assert "| earnings_crush | AAPL daily, 1 y |" in text
    assert "`earnings_crush` runs on its own spec: an earnings trade needs a stock that reports" in text


def test_every_registered_spec_makes_a_valid_run_config():
    """A spec is data checked against the run's config: a typo in one (a bad symbol, bars, parameters) fails here,
    not after minutes of the table."""
    from engine import strategies
    from engine.strategies.spec import BacktestSpec, describe, spec_of

    config = BacktestConfig(symbol="SPY", years=5, seed=7)
    for name in strategies.registry():
        spec = spec_of(name)
        assert isinstance(spec, BacktestSpec)
        cfg = spec.apply(config)
        strategies.create(name, {"underlying": cfg.symbol, **cfg.params})  # its parameters are the strategy's
        assert describe(cfg).startswith(cfg.symbol)
        assert not spec.changes_market() or spec.why, f"{name}: a spec that moves the market says why"
    assert spec_of("zero_dte").apply(config).intraday_minutes == 30
    assert spec_of("delta_hedge").apply(config).params == {"child": "put_write"}
    assert spec_of("no_such") == BacktestSpec()
