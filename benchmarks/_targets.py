"""The speed targets of one ``python -m benchmarks`` run in one table (issue 22's rows).

Why: the pricing benchmark prints its own rows as it goes, but the SPX-size refit and the Backtest panel
against the CLI come from other benchmarks. Whoever reads ``make bench`` wants every target, its figure,
the warmed peer of the same run (where there is one), the ratio and whether it was met, in one place, with
one verdict at the end.
"""

from __future__ import annotations

from typing import Any

from benchmarks.pricing import _rows, table


def _spx_row(surface: dict[str, Any]) -> dict[str, Any] | None:
    spx = surface.get("spx_size")
    if not isinstance(spx, dict) or "ivs_greeks_refit_ms" not in spx:
        return None
    ours = spx["ivs_greeks_refit_ms"]["min_ms"]
    free = bool(spx.get("arbitrage_free"))
    return {"work": "SPX-size chain (19,968 rows, 48 expiries): IVs + Greeks + arbitrage-free refit",
            "ours": ours, "peer": "none (the numpy path of the same run: "
                                  f"{spx.get('ivs_greeks_refit_numpy_path_ms', {}).get('min_ms', '—')} ms)",
            "peer_figure": None, "ratio_vs_peer": None, "unit": f"ms, arbitrage-free: {'yes' if free else 'NO'}",
            "target": spx.get("target_ms"), "met": ours <= spx.get("target_ms", 0.0) and free,
            "load_average_1min": spx.get("load_average_1min", float("nan"))}


def _panel_row(backtest: dict[str, Any]) -> dict[str, Any] | None:
    cmp_ = backtest.get("panel_vs_cli")
    if not isinstance(cmp_, dict) or "panel_median_s" not in cmp_:
        return None
    panel, cli, limit = cmp_["panel_median_s"], cmp_["cli_median_s"], cmp_["target_ratio"]
    loads = cmp_.get("load_average") or [float("nan")]
    return {"work": "README 5-year backtest in the Backtest panel (median of 3)", "ours": panel,
            "peer": f"the CLI, same parameters (target: panel ≤ {limit:g} × CLI)", "peer_figure": cli,
            "ratio_vs_peer": cli / panel if panel > 0 else None, "unit": "s", "target": round(limit * cli, 3),
            "met": bool(cmp_.get("met")) and bool(cmp_.get("same_result", True)),
            "load_average_1min": max(loads)}


def summary(out: dict[str, Any]) -> dict[str, Any] | None:
    """Every target row of ``out`` (the collected results of ``python -m benchmarks``): the pricing rows, the
    SPX-size refit and the Backtest panel against the CLI; None when the run measured none of them."""
    rows = _rows(out.get("pricing", {}))
    for row in (_spx_row(out.get("surface", {})), _panel_row(out.get("backtest", {}))):
        if row is not None:
            rows.append(row)
    targeted = [r for r in rows if r.get("target") is not None]
    if not targeted:
        return None
    missed = [r["work"] for r in targeted if not r["met"]]
    return {"rows": rows, "targets": len(targeted), "met": len(targeted) - len(missed), "missed": missed,
            "all_met": not missed}


def render(summary_: dict[str, Any]) -> str:
    """The summary as the pricing table's plain text, and its verdict."""
    verdict = ("every target met" if summary_["all_met"]
               else f"{len(summary_['missed'])} target(s) missed: " + "; ".join(summary_["missed"]))
    return (f"targets of this run ({summary_['met']} of {summary_['targets']} met):\n"
            + table({"rows": summary_["rows"]}) + f"\n{verdict}")
