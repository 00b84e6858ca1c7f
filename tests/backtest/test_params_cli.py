"""``--param`` takes lists and mappings (JSON or TOML syntax), and ``none`` switches any rule off."""

from __future__ import annotations

import json

import pytest

from engine.backtest.cli import param_value
from engine.cli import main
from engine.strategies.base import ManagementRules


def test_param_value_parses_json_and_toml_lists_and_tables_and_leaves_scalars() -> None:
    assert param_value('[["low_vol","high_vol"]]') == [["low_vol", "high_vol"]]
    assert param_value("[['low_vol', 'neutral']]") == [["low_vol", "neutral"]]  # TOML literal strings
    assert param_value('{"low_vol": 1.0}') == {"low_vol": 1.0}
    assert param_value("{ low_vol = 1.0, high_vol = 0.5 }") == {"low_vol": 1.0, "high_vol": 0.5}
    assert param_value("10") == "10" and param_value("none") == "none"  # the parameter model converts these
    with pytest.raises(ValueError, match=r"--param rules.regime_exits=\[oops: not a JSON or TOML list"):
        param_value("[oops", "rules.regime_exits")


def test_regime_exits_none_is_no_pairs() -> None:
    assert ManagementRules(regime_exits=None).regime_exits == ()
    assert ManagementRules(regime_exits=[["low_vol", "neutral"]]).regime_exits == (("low_vol", "neutral"),)


@pytest.mark.parametrize(("value", "expected"), [("none", []), ('[["low_vol","neutral"]]', [["low_vol", "neutral"]])])
def test_cli_backtest_when_regime_exits_set_then_the_run_uses_it(sim_parquet, tmp_path, capsys, value, expected):
    out = tmp_path / "run"
    code = main(["backtest", "--data", str(sim_parquet), "--symbol", "SPY", "--param", f"rules.regime_exits={value}",
                 "--out", str(out), "--json", "--no-png", "--db", str(tmp_path / "db.sqlite")])
    assert code == 0, capsys.readouterr().err
    payload = json.loads(capsys.readouterr().out)
    assert payload["params"]["rules"]["regime_exits"] == expected


def test_cli_backtest_when_param_list_is_malformed_then_exit_2_naming_it(sim_parquet, tmp_path, capsys):
    code = main(["backtest", "--data", str(sim_parquet), "--param", "rules.regime_exits=[oops", "--out",
                 str(tmp_path / "run")])
    assert code == 2
    assert "rules.regime_exits=[oops: not a JSON or TOML list" in capsys.readouterr().err
