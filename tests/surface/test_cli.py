"""``optiondesk surface SYMBOL``: fits the simulated market's chain and prints the term structure."""

from __future__ import annotations

import json

from engine.cli import main


def test_surface_command_prints_a_json_term_structure(capsys) -> None:
    assert main(["surface", "SPY", "--seed", "7", "--date", "2026-03-02", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["underlying"] == "SPY" and out["expiries"]
    fitted = [e for e in out["expiries"] if e["status"] == "fitted"]
    assert fitted and all(0.02 < e["atm_iv"] < 2.0 for e in fitted)
    assert out["arbitrage"]["free"] is True


def test_surface_command_table_and_unknown_symbol(capsys) -> None:
    assert main(["surface", "SPY", "--date", "2026-03-02"]) == 0
    text = capsys.readouterr().out
    assert "ATM IV" in text and "dropped quotes" in text
    assert main(["surface", "NOPE"]) == 2
    assert "not simulated" in capsys.readouterr().err
