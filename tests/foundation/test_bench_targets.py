"""The benchmarks' closing table (benchmarks/_targets.py): every target of a run in one place, and a verdict
that no missed row can hide from (an arbitrage left in the SPX-size refit, a slow Backtest panel)."""

from __future__ import annotations

import copy

from benchmarks._targets import render, summary


def _run() -> dict:
    pricing_row = {"work": "implied vol, normal book", "ours": 4.5, "peer": "py_vollib_vectorized",
                   "peer_figure": 1.1, "unit": "M options/s", "ratio_vs_peer": 4.1, "target": 4.0, "met": True,
                   "load_average_1min": 0.9}
    untargeted = {**pricing_row, "work": "implied vol + Greeks, chain", "target": None, "met": None}
    return {
        "pricing": {"bsm": {"iv_normal": pricing_row, "chain": untargeted}},
        "surface": {"spx_size": {"ivs_greeks_refit_ms": {"min_ms": 71.5, "median_ms": 74.0}, "target_ms": 100.0,
                                 "arbitrage_free": True, "ivs_greeks_refit_numpy_path_ms": {"min_ms": 103.0},
                                 "load_average_1min": 1.1}},
        "backtest": {"panel_vs_cli": {"panel_median_s": 1.6, "cli_median_s": 2.4, "target_ratio": 1.2, "met": True,
                                      "same_result": True, "load_average": [1.0, 1.3]}},
    }


def test_a_run_meeting_every_target_says_so_and_lists_every_row() -> None:
    s = summary(_run())
    assert s is not None
    assert (s["targets"], s["met"], s["all_met"], s["missed"]) == (3, 3, True, [])
    text = render(s)
    assert text.splitlines()[0] == "targets of this run (3 of 3 met):"
    assert text.endswith("every target met")
    for work in ("implied vol, normal book", "SPX-size chain", "README 5-year backtest"):
        assert work in text
    spx = next(r for r in s["rows"] if r["work"].startswith("SPX"))
    assert (spx["ours"], spx["target"]) == (71.5, 100.0)
    panel = next(r for r in s["rows"] if r["work"].startswith("README"))
    assert panel["target"] == 2.88 and abs(panel["ratio_vs_peer"] - 1.5) < 1e-12


def test_a_fast_refit_with_arbitrage_left_or_a_slow_panel_is_a_miss() -> None:
    run = _run()
    run["surface"]["spx_size"]["arbitrage_free"] = False
    s = summary(run)
    assert s is not None and not s["all_met"]
    assert len(s["missed"]) == 1 and s["missed"][0].startswith("SPX-size chain")
    assert "1 target(s) missed: SPX-size chain" in render(s)

    run = _run()
    run["surface"]["spx_size"]["ivs_greeks_refit_ms"]["min_ms"] = 100.5
    run["backtest"]["panel_vs_cli"]["met"] = False
    s = summary(run)
    assert s is not None and s["met"] == 1 and len(s["missed"]) == 2


def test_a_run_of_other_benchmarks_has_no_target_table() -> None:
    assert summary({"bus": {"publish": {"per_s": 1e6}}}) is None
    partial = copy.deepcopy(_run())
    del partial["pricing"], partial["backtest"]
    s = summary(partial)
    assert s is not None and s["targets"] == 1
