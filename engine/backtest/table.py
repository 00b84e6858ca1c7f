"""The results table: every registered strategy backtested on the same market, beside the put-write benchmark.

A hand-written results table goes stale the day a strategy or the order path changes. This one is generated
(``optiondesk backtest-table --years 5 --seed 7 --out docs/backtest-results.md``): it iterates the strategy
registry — a strategy added later appears without anyone editing a list — and runs each one with its default
parameters on the same seeded history, in a bounded process pool (:mod:`engine.process_pools`). A strategy
that fails is a row with its error, never dropped. The rows say how each run reconciles (total P&L against
Σ trade P&L − fees), so a table that stops adding up says so itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, as_completed
from typing import Any

from engine.backtest.config import BacktestConfig

#: the benchmark every row is compared with (Cboe PUT-style cash-secured put-write)
BENCHMARK = "put_write"


def table_row(config: dict[str, Any], strategy: str, history: Any = None, *, params: dict[str, Any] | None = None,
              ml_scorer: Any = None, label: str | None = None) -> dict[str, Any]:
    """One strategy's row (runs in a worker): its default parameters on ``config``'s market (or ``history``, when
    the caller has it loaded: a small one travels to the workers as the sweep's does). ``params``, ``ml_scorer``
    and ``label`` make a variant's row (the ML-gated twin, :mod:`engine.ml.gated_backtest`)."""
    from engine.backtest.runner import Backtest
    from engine.backtest.sources import restrict
    from engine.backtest.sweep import _cached_history

    cfg = BacktestConfig.model_validate({**config, "strategy": strategy, "run_id": "",
                                         "params": {**config.get("params", {}), **(params or {})}})
    members: dict[str, Any] = {}
    if cfg.members:
        from engine.backtest.sources import load_histories

        history, members = load_histories(cfg)  # an index and its members, from one run of the market
    elif history is None and cfg.intraday_minutes:
        from engine.backtest.sources import load_history

        history = load_history(cfg)  # intraday snapshots: not the daily cache's
    elif history is None:
        history = _cached_history(cfg.data, cfg.symbol, cfg.years, cfg.seed, tuple(sorted(cfg.columns.items())),
                                  cfg.bars, cfg.sim_max_strikes)
    history = restrict(history, cfg.start, cfg.end)
    result = Backtest(cfg, history, ml_scorer=ml_scorer, members=members).run()
    m = result.metrics
    entries = [o for o in result.orders if o["tag"].endswith(":open")]
    rec = result.reconciliation()
    from engine.strategies.spec import describe

    return {
        "strategy": label or strategy, "status": result.status, "error": result.error, "market": describe(cfg),
        "trades": m.trades, "win_rate": _finite(m.win_rate), "total_pnl": _finite(m.total_pnl),
        "cagr": _finite(m.cagr), "sharpe": _finite(m.sharpe), "max_drawdown": _finite(m.max_drawdown),
        "fees": _finite(m.fees), "orders": len(result.orders), "entries": len(entries),
        "denied_entries": sum(1 for o in entries if o["status"] == "denied"),
        "denied": dict(sorted(result.info.get("denied_by_check", {}).items())),
        "difference": str(rec["difference"]), "halted": (result.info.get("halt") or {}).get("reason", ""),
        "risk_limits": dict(result.info.get("risk_limits") or {}),
        "first_day": str(result.dates[0]) if len(result.dates) else "",
        "last_day": str(result.dates[-1]) if len(result.dates) else "",
    }


def _finite(v: float) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def run_table(config: BacktestConfig, names: Sequence[str] | None = None, executor: Executor | None = None, *,
              max_workers: int | None = None, history: Any = None,
              progress: Callable[[int, int], None] | None = None) -> list[dict[str, Any]]:
    """A row per strategy (default: every registered one), the benchmark first, then in registry order. Each runs
    on its own spec (:mod:`engine.strategies.spec`: the market it needs) over ``config``; ``history``, when given,
    is the table's market and goes only to the strategies whose spec keeps it."""
    from engine import strategies
    from engine.strategies.spec import describe, spec_of

    names = list(names) if names is not None else list(strategies.registry())
    if BENCHMARK in names:
        names = [BENCHMARK, *(n for n in names if n != BENCHMARK)]
    own = executor is None
    if executor is None:
        from engine.process_pools import new_process_pool

        executor = new_process_pool(max_workers)
    rows: dict[str, dict[str, Any]] = {}
    try:
        futures: dict[Future[dict[str, Any]], str] = {}
        for n in names:
            spec = spec_of(n)
            own_cfg = spec.apply(config).model_dump(mode="json")
            futures[executor.submit(table_row, own_cfg, n, None if spec.changes_market() else history)] = n
        for done, fut in enumerate(as_completed(futures), start=1):
            name = futures[fut]
            try:
                rows[name] = fut.result()
            except Exception as exc:  # a strategy that cannot even run is a row with its error
                rows[name] = {"strategy": name, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                              "market": describe(spec_of(name).apply(config))}
            if progress is not None:
                progress(done, len(names))
    finally:
        if own:
            from engine.process_pools import shutdown_pool

            shutdown_pool(executor, timeout_s=10.0)
    return [rows[n] for n in names]


def _money(v: Any) -> str:
    return "" if v is None else f"{v:,.2f}"


def _pct(v: Any) -> str:
    return "" if v is None else f"{v:.2%}"


def _num(v: Any) -> str:
    return "" if v is None else f"{v:.2f}"


def render_markdown(rows: Sequence[dict[str, Any]], config: BacktestConfig, command: str) -> str:
    """The table as Markdown, with how it was made and what every column means."""
    bench = next((r for r in rows if r["strategy"] == BENCHMARK and r.get("status") == "completed"), None)
    from engine.strategies.spec import describe

    table_market = describe(config)  # the span in the heading is the table's market's, not a row's own spec's
    span = next(((r["first_day"], r["last_day"]) for r in rows if r.get("first_day")
                 and r.get("market") == table_market), ("", ""))
    out = [
        "# Backtest results",
        "",
        f"Generated by `{command}` — do not edit by hand; run the command again after changing a strategy or "
        "the order path. Every registered strategy with its default parameters, on the simulated "
        f"{config.symbol} market (seed {config.seed}, {span[0]} to {span[1]}) unless its run spec asks for "
        f"another (the *market* column; why, below the table), ${config.initial_cash:,.0f} "
        f"starting cash, risk slider {config.risk_level:g}, `{config.fee_preset}` fees, "
        f"{config.slippage:g} {config.slippage_model} slippage, risk checks "
        f"{'on' if config.risk_checks else 'OFF'}. Orders take the live order path (docs/backtest.md).",
        "",
        f"The benchmark is `{BENCHMARK}` (Cboe PUT-style cash-secured put-write); *vs benchmark* is a row's "
        "P&L minus the benchmark's.",
        "",
        "| strategy | market | trades | win rate | P&L ($) | vs benchmark ($) | CAGR | Sharpe | max drawdown "
        "| fees ($) | denied orders by check | reconciles |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        name = f"{r['strategy']} (benchmark)" if r["strategy"] == BENCHMARK else r["strategy"]
        if r.get("status") != "completed":
            err = (r.get("error") or r.get("status") or "").replace("|", "\\|").replace("\n", " ")
            out.append(f"| {name} | {r.get('market', '')} | **{r.get('status')}**: {err} | | | | | | | | | |")
            continue
        vs = "" if bench is None or r["total_pnl"] is None or bench["total_pnl"] is None \
            else _money(r["total_pnl"] - bench["total_pnl"])
        denied = ", ".join(f"{k} {v}" for k, v in r["denied"].items()) or "none"
        if r["entries"]:
            denied += f" ({r['denied_entries']} of {r['entries']} entries)"
        ok = "yes" if r["difference"] == "0.00" else f"**no: {r['difference']}**"
        out.append(f"| {name} | {r.get('market', '')} | {r['trades']} | {_pct(r['win_rate'])} | {_money(r['total_pnl'])} | {vs} | "
                   f"{_pct(r['cagr'])} | {_num(r['sharpe'])} | {_pct(r['max_drawdown'])} | {_money(r['fees'])} | "
                   f"{denied} | {ok} |")
    from engine import strategies
    from engine.strategies.spec import spec_of

    known = strategies.registry()
    notes = [f"- `{r['strategy']}` runs on its own spec: {spec_of(r['strategy']).why}." for r in rows
             if r["strategy"] in known and spec_of(r["strategy"]).why]
    notes += [f"- `{r['strategy']}` runs with risk limits {r['risk_limits']} (declared by the strategy; see "
             "docs/backtest.md)." for r in rows if r.get("risk_limits")]
    notes += [f"- `{r['strategy']}`: the kill switch halted the run — {r['halted']}" for r in rows if r.get("halted")]
    if notes:
        out += ["", *notes]
    out += ["", "Columns: *trades* are closed round trips; *win rate* their share with a positive net P&L; "
            "*P&L* the change in equity (fees included); *CAGR* and *Sharpe* (daily, annualised, no risk-free "
            "rate) from the daily equity; *max drawdown* from the starting cash's peak; *denied orders by check* "
            "counts the pre-trade checks that said no (an order can fail several); *reconciles*: total P&L equals "
            "Σ trade P&L − fees to the cent.", ""]
    return "\n".join(out)


__all__ = ["BENCHMARK", "render_markdown", "run_table", "table_row"]
