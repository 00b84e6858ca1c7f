"""``optiondesk backtest`` and ``optiondesk sweep``. Imports stay light here; the work is imported in the handlers.

Examples::

    optiondesk backtest --strategy iv_rank_put_spread --symbol SPY --years 5 --seed 7 --out runs/ivps
    optiondesk backtest --data chains.parquet --map quote_date=date --param width=10 --out runs/mine --json
    optiondesk sweep --strategy iv_rank_put_spread --grid width=5,10 --grid short_delta=0.2,0.25 --out runs/sw
    optiondesk sweep ... --dask tcp://10.0.0.5:8786
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--strategy", default="iv_rank_put_spread", help="strategy name (default: iv_rank_put_spread)")
    p.add_argument("--symbol", default="SPY", help="underlying symbol (default: SPY)")
    p.add_argument("--years", type=float, default=5.0, help="years of simulated history when --data is not given")
    p.add_argument("--seed", type=int, default=7, help="seed of the simulated history (default: 7)")
    p.add_argument("--intraday", type=float, metavar="MINUTES",
                   help="simulated history with a snapshot every MINUTES through each session (keep --years small)")
    p.add_argument("--data", help="historical chains: a CSV/Parquet file or a directory of them")
    p.add_argument("--source", choices=("auto", "simulated", "file", "imported"), default="auto",
                   help="simulated (default), file (--data) or imported (chains from `optiondesk data import`)")
    p.add_argument("--map", action="append", default=[], metavar="FIELD=COLUMN",
                   help="column mapping for --data, e.g. quote_date=date (repeatable)")
    p.add_argument("--bars", help="underlying daily bars CSV/Parquet (date, close) for files without a spot column")
    p.add_argument("--start", help="first quote date (YYYY-MM-DD)")
    p.add_argument("--end", help="last quote date (YYYY-MM-DD)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="strategy parameter, e.g. width=10, rules.stop_multiple=3, rules.regime_exits=none or a "
                        "JSON/TOML list or table: rules.regime_exits='[[\"low_vol\",\"high_vol\"]]' (repeatable)")
    p.add_argument("--cash", type=float, default=100_000.0, help="starting cash in dollars (default: 100000)")
    p.add_argument("--risk-level", type=float, default=50.0, help="risk slider 0–100 (default: 50)")
    p.add_argument("--fees", default="tastytrade",
                   help="fee preset of the paper exchange: tastytrade, ibkr_fixed, flat_065, zero (default: tastytrade)")
    p.add_argument("--no-risk-checks", action="store_true",
                   help="the risk engine's checks only advise: just malformed orders and the trading state (the "
                        "kill switch) deny; the log, audit and summary say the checks were bypassed")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--db", help="also store the results in this SQLite database")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("backtest", help="backtest one strategy; writes trades.csv, equity.csv and report.png")
    _common(p)
    p.add_argument("--walk-forward", metavar="TRAIN,TEST", help="walk-forward windows in trading days, e.g. 504,63")
    p.add_argument("--expanding", action="store_true", help="expanding (not rolling) training windows")
    p.add_argument("--fit", action="append", default=[], metavar="KEY=A,B,C",
                   help="walk-forward optimisation: each training window picks the best of these values (repeatable)")
    p.add_argument("--fit-metric", default="sharpe", help="metric the training window maximises (default: sharpe)")
    p.add_argument("--no-png", action="store_true", help="skip the PNG report")
    p.add_argument("--members", metavar="SYM[,SYM...]",
                   help="more underlyings replayed with --symbol on one clock, from the same simulated market "
                        "(an index's members: --strategy dispersion --symbol DSPX --members DSPA,...,DSPF)")
    p.set_defaults(func=cmd_backtest)
    s = subparsers.add_parser("sweep", help="backtest a parameter grid on a process pool or a Dask cluster")
    _common(s)
    s.add_argument("--grid", action="append", default=[], required=True, metavar="KEY=A,B,C",
                   help="parameter values to sweep (repeatable; every combination runs)")
    s.add_argument("--dask", metavar="ADDRESS", help="Dask scheduler address, e.g. tcp://host:8786")
    s.add_argument("--dask-timeout", type=float, default=10.0, help="seconds to wait for the scheduler (default: 10)")
    s.add_argument("--workers", type=int, default=None, help="local worker processes (default: CPU count)")
    s.set_defaults(func=cmd_sweep)
    t = subparsers.add_parser("backtest-table", help="backtest every registered strategy on one market and write "
                                                     "the results table (Markdown) beside the put-write benchmark")
    t.add_argument("--symbol", default="SPY", help="underlying symbol (default: SPY)")
    t.add_argument("--years", type=float, default=5.0, help="years of simulated history (default: 5)")
    t.add_argument("--seed", type=int, default=7, help="seed of the simulated history (default: 7)")
    t.add_argument("--cash", type=float, default=100_000.0, help="starting cash in dollars (default: 100000)")
    t.add_argument("--risk-level", type=float, default=50.0, help="risk slider 0–100 (default: 50)")
    t.add_argument("--fees", default="tastytrade", help="fee preset of the paper exchange (default: tastytrade)")
    t.add_argument("--strategy", action="append", default=None, metavar="NAME",
                   help="only these strategies (repeatable; default: every registered one)")
    t.add_argument("--workers", type=int, default=None, help="worker processes (default: CPU count)")
    t.add_argument("--out", required=True, help="the Markdown file to write, e.g. docs/backtest-results.md")
    t.add_argument("--json", action="store_true", help="also print the rows as JSON")
    t.add_argument("--no-ml-gate", action="store_true",
                   help="skip the ML-gated iv_rank_put_spread twin (its model is trained in the run: docs/ml.md)")
    t.set_defaults(func=cmd_table)


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"{what} {item!r} must look like key=value")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def param_value(text: str, key: str = "") -> Any:
    """A ``--param`` value: a list or mapping in JSON or TOML syntax (``[["low_vol","high_vol"]]``,
    ``{low_vol = 1.0}``) is parsed; anything else stays text for the strategy's parameter model to convert
    (``10``, ``0.25``, ``none``)."""
    t = text.strip()
    if not t or t[0] not in "[{":
        return t
    try:
        return json.loads(t)
    except ValueError as json_err:
        import tomllib

        try:
            return tomllib.loads(f"value = {t}")["value"]
        except tomllib.TOMLDecodeError as toml_err:
            raise ValueError(f"--param {key}={text}: not a JSON or TOML {'list' if t[0] == '[' else 'table'} "
                             f"(JSON: {json_err}; TOML: {toml_err})") from None


def _params(items: list[str]) -> dict[str, Any]:
    return {k: param_value(v, k) for k, v in _pairs(items, "--param").items()}


def _config(args: argparse.Namespace):
    from engine.backtest.config import BacktestConfig

    return BacktestConfig(
        strategy=args.strategy, params=_params(args.param), symbol=args.symbol.upper(), years=args.years,
        seed=args.seed, data=args.data, source=args.source, columns=_pairs(args.map, "--map"), bars=args.bars,
        start=args.start,
        end=args.end, initial_cash=args.cash, risk_level=args.risk_level, fee_preset=args.fees,
        risk_checks=not args.no_risk_checks, intraday_minutes=args.intraday,
        members=[m.strip().upper() for m in (getattr(args, "members", None) or "").split(",") if m.strip()],
    )


class _Bar:
    """A one-line progress bar on a terminal (nothing when stderr is not a TTY)."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()

    def __call__(self, fraction: float, text: str = "") -> None:
        if not self.tty:
            return
        n = int(fraction * 30)
        sys.stderr.write(f"\r[{'#' * n}{'.' * (30 - n)}] {fraction * 100:5.1f}% {text:<28}")
        sys.stderr.flush()

    def done(self) -> None:
        if self.tty:
            sys.stderr.write("\r" + " " * 72 + "\r")
            sys.stderr.flush()


def format_summary(summary: dict[str, Any], reconciliation: dict[str, Any] | None = None) -> str:
    rows = [
        ("strategy", summary.get("strategy")), ("status", summary.get("status")),
        ("start equity", _money(summary.get("start_equity"))), ("end equity", _money(summary.get("end_equity"))),
        ("total P&L", _money(summary.get("total_pnl"))), ("total return", _pct(summary.get("total_return"))),
        ("CAGR", _pct(summary.get("cagr"))), ("annual vol", _pct(summary.get("ann_vol"))),
        ("Sharpe", _num(summary.get("sharpe"))), ("Sortino", _num(summary.get("sortino"))),
        ("Calmar", _num(summary.get("calmar"))), ("max drawdown", _pct(summary.get("max_drawdown"))),
        ("max DD duration (days)", summary.get("max_drawdown_days")), ("trades", summary.get("trades")),
        ("win rate", _pct(summary.get("win_rate"))), ("profit factor", _num(summary.get("profit_factor"))),
        ("average win", _money(summary.get("avg_win"))), ("average loss", _money(summary.get("avg_loss"))),
        ("expectancy / trade", _money(summary.get("expectancy"))), ("exposure", _pct(summary.get("exposure"))),
        ("premium capture", _pct(summary.get("premium_capture"))), ("fees", _money(summary.get("fees"))),
        ("max buying power used", _pct(summary.get("max_bp_used"))),
    ]
    if reconciliation:
        rows.append(("P&L − (Σ trades − fees)", reconciliation.get("difference")))
    if summary.get("risk_limits"):
        rows.append(("risk limits", ", ".join(f"{k} {v:g}" for k, v in summary["risk_limits"].items())))
    if summary.get("halted"):
        rows.append(("kill switch", f"HALTED {summary['halted'].get('at', '')}: {summary['halted'].get('reason', '')}"))
    if summary.get("warning"):
        rows.insert(0, ("WARNING", summary["warning"]))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {'' if v is None else v}" for k, v in rows)


def _money(v: Any) -> str:
    return "n/a" if v is None else f"${v:,.2f}"


def _pct(v: Any) -> str:
    return "n/a" if v is None else f"{v * 100:.2f}%"


def _num(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def cmd_backtest(args: argparse.Namespace) -> int:
    from engine.backtest.chain_files import DataFileError
    from engine.backtest.report import export_all, summary_json
    from engine.backtest.runner import Backtest
    from engine.backtest.sources import load_histories

    bar = _Bar()
    try:
        config = _config(args)
        bar(0.0, "loading data")
        history, members = load_histories(config)
        if members and args.walk_forward:
            raise ValueError("--walk-forward replays one underlying: not with --members")
        if args.walk_forward:
            from engine.backtest.walkforward import walk_forward

            train, test = (int(x) for x in args.walk_forward.split(","))
            from engine.backtest.sweep import parse_grid

            result = walk_forward(config, history, train_days=train, test_days=test,
                                  mode="expanding" if args.expanding else "rolling",
                                  fit_grid=parse_grid(args.fit) if args.fit else None, fit_metric=args.fit_metric,
                                  progress=lambda f: bar(f, "walk-forward"))
        else:
            result = Backtest(config, history, members=members).run(progress=lambda p: bar(p.fraction, f"{p.day} ETA {p.eta_s:.0f}s"
                                                                           if p.eta_s == p.eta_s else p.day))
    except (DataFileError, ValueError) as exc:
        bar.done()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar.done()
    export_all(result, args.out, png=not args.no_png)
    if args.db:
        _persist(args.db, result)
    if args.json:
        from engine.cli_errors import dumps_json

        print(dumps_json(summary_json(result), indent=2))  # NaN metrics (no trades) become null
    else:
        print(format_summary(result.summary(), {k: str(v) for k, v in result.reconciliation().items()}))
        print(f"\nwrote {args.out}/trades.csv, equity.csv, orders.csv, summary.json"
              + ("" if args.no_png else ", report.png"))
    if result.status == "failed":
        print(f"error: {result.error}", file=sys.stderr)
        return 1
    return 0


def _persist(db: str, result, sweep_id: str | None = None) -> None:
    from engine.backtest.persistence import BacktestRepository
    from engine.store import Store

    store = Store.open(db)
    try:
        BacktestRepository(store).save(result, sweep_id=sweep_id)
    finally:
        store.close()


def cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from engine.backtest.sweep import dask_executor, parse_grid, run_sweep, write_sweep_csv

    bar = _Bar()
    try:
        config = _config(args)
        grid = parse_grid(args.grid)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    client = None
    executor = None
    if args.dask:
        try:
            client, executor = dask_executor(args.dask, timeout=args.dask_timeout)
        except Exception as exc:  # dask/distributed raise OSError, TimeoutError or their own types: any means "no scheduler"
            print(f"error: cannot reach the Dask scheduler at {args.dask}: {exc}", file=sys.stderr)
            return 2
    try:
        rows = run_sweep(config, grid, executor, progress=lambda d, t: bar(d / t, f"{d}/{t} runs"),
                         max_workers=args.workers)
    finally:
        bar.done()
        if client is not None:
            client.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_sweep_csv(rows, out / "sweep.csv")
    if args.json:
        from engine.cli_errors import dumps_json

        print(dumps_json(rows, indent=2))
    else:
        keys = [k for k in rows[0] if k.startswith("param.")] + ["status", "total_return", "sharpe", "max_drawdown",
                                                                  "trades", "win_rate"]
        print("  ".join(f"{k.removeprefix('param.'):>14}" for k in keys))
        for r in rows:
            print("  ".join(f"{_cell(r.get(k)):>14}" for k in keys))
        print(f"\nwrote {out / 'sweep.csv'} ({len(rows)} rows)")
    failed = [r for r in rows if r.get("status") == "failed"]
    for r in failed:
        print(f"error: {r.get('error')}", file=sys.stderr)
    return 1 if failed else 0


def cmd_table(args: argparse.Namespace) -> int:
    """``optiondesk backtest-table``: every strategy of the registry, one row each; a failing one is a row with
    its error (and exit status 1), never left out."""
    import shlex
    from pathlib import Path

    from engine.backtest.config import BacktestConfig
    from engine.backtest.table import render_markdown, run_table

    try:
        config = BacktestConfig(symbol=args.symbol.upper(), years=args.years, seed=args.seed, initial_cash=args.cash,
                                risk_level=args.risk_level, fee_preset=args.fees)
        if args.strategy:
            from engine import strategies

            unknown = sorted(set(args.strategy) - set(strategies.registry()))
            if unknown:
                raise ValueError(f"unknown strategy {', '.join(unknown)} (known: "
                                 f"{', '.join(sorted(strategies.registry()))})")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    bar = _Bar()
    try:
        rows = run_table(config, args.strategy, max_workers=args.workers,
                         progress=lambda d, t: bar(d / t, f"{d}/{t} strategies"))
    finally:
        bar.done()
    gate_note = ""
    if not args.no_ml_gate and any(r["strategy"] == "iv_rank_put_spread" for r in rows):
        rows, gate_note = _with_gated_twin(rows, config)
    command = "optiondesk backtest-table " + " ".join(shlex.quote(a) for a in _table_argv(args))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_markdown(rows, config, command) + gate_note, encoding="utf-8")
    if args.json:
        from engine.cli_errors import dumps_json

        print(dumps_json(rows, indent=2))
    for r in rows:
        line = f"{r['strategy']:>20}  {r['status']:>9}"
        if r["status"] == "completed":
            line += f"  trades {r['trades']:>4}  P&L {r['total_pnl']:>12,.2f}  reconciles {r['difference']}"
        print(line)
    print(f"\nwrote {out} ({len(rows)} strategies)")
    failed = [r for r in rows if r["status"] != "completed"]
    for r in failed:
        print(f"error: {r['strategy']}: {r.get('error')}", file=sys.stderr)
    return 1 if failed else 0


def _with_gated_twin(rows: list[dict[str, Any]], config: Any) -> tuple[list[dict[str, Any]], str]:
    """The ML-gated ``iv_rank_put_spread`` row (:mod:`engine.ml.gated_backtest`: its model trained in this run
    on the history before the backtest window) right after the ungated one, and the table's note on it."""
    from engine.ml.gated_backtest import LABEL, gated_row

    print("training the ML gate on the history before the backtest window…", file=sys.stderr)
    try:
        twin = gated_row(config.model_dump(mode="json"))
    except Exception as exc:  # a gate that cannot be trained is a row with its error, never a crash
        twin = {"strategy": LABEL, "status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    at = next(i for i, r in enumerate(rows) if r["strategy"] == "iv_rank_put_spread") + 1
    rows = [*rows[:at], twin, *rows[at:]]
    m = twin.get("ml_model") or {}
    auc = m.get("auc")
    note = (f"\n`{LABEL}` is `iv_rank_put_spread` with `ml.model` set to a {m.get('kind', '')} model trained in "
            f"the same run on {m.get('years', 0):g} years of the seeded daily history ending before "
            f"{m.get('trained_before', '')} (walk-forward AUC "
            f"{'n/a' if auc is None else f'{auc:.3f}'}, verdict: {m.get('verdict', 'n/a')}); it gates at the "
            "model's own level. On the simulated market the gate's daily path is not the traded chain path, so "
            "the row shows what the filter costs, not an edge (docs/ml.md).\n") if m else ""
    return rows, note


def _table_argv(args: argparse.Namespace) -> list[str]:
    """The options that shape the table, as they would be typed (for the file's header)."""
    out = ["--years", f"{args.years:g}", "--seed", str(args.seed)]
    if args.symbol.upper() != "SPY":
        out += ["--symbol", args.symbol.upper()]
    if args.cash != 100_000.0:
        out += ["--cash", f"{args.cash:g}"]
    if args.risk_level != 50.0:
        out += ["--risk-level", f"{args.risk_level:g}"]
    if args.fees != "tastytrade":
        out += ["--fees", args.fees]
    for name in args.strategy or ():
        out += ["--strategy", name]
    if args.no_ml_gate:
        out.append("--no-ml-gate")
    return [*out, "--out", args.out]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return "" if v is None else str(v)
