"""The pricing CLI subcommands, driven through argparse like the real console script."""

from __future__ import annotations

import argparse
import json

import pytest

from engine.pricing import bsm
from engine.pricing import cli as pricing_cli


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    pricing_cli.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


def test_price_prints_greeks_and_american_value_as_json(capsys):
    code = _run(["price", "--right", "p", "--spot", "100", "--strike", "105", "--days", "182.5", "--rate", "0.05",
                 "--vol", "0.25", "--american", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert out["price"] == pytest.approx(float(bsm.price("p", 100, 105, 0.5, 0.05, 0.0, 0.25)), rel=1e-12)
    assert out["american_price"] > out["price"] and out["exercise_boundary"] < 100


def test_iv_round_trips_and_reports_the_reason_for_a_bad_price(capsys):
    p = float(bsm.price("c", 100, 105, 30 / 365, 0.045, 0.0, 0.3))
    assert _run(["iv", "--right", "c", "--spot", "100", "--strike", "105", "--days", "30", "--rate", "0.045",
                 "--price", repr(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["implied_vol"] == pytest.approx(0.3, abs=1e-12)
    assert _run(["iv", "--right", "c", "--spot", "100", "--strike", "105", "--days", "30", "--price", "150",
                 "--json"]) == 2
    assert json.loads(capsys.readouterr().out)["reason"] == "ABOVE_MAXIMUM"
