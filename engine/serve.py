"""``optiondesk serve`` and ``optiondesk trade``: the engine without the window, on the simulated market, until
Ctrl+C (or SIGTERM, or ``--duration`` / ``--minutes``).

``serve`` is the headless way to run the notifier and the Prometheus endpoint (``--metrics-port P``): the same
``Engine`` the window runs — order path, kill switch, risk snapshots, alert rules — with no display.
``trade --strategy NAME[,NAME…]`` runs the same engine with those strategies hosted (engine/strategies/host.py)
on the paper account and, at the end, prints per strategy its orders, fills and P&L (``--json`` for machines).
``optiondesk notify-test NAME`` sends a test notification to a destination of the settings file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("serve", help="run the engine headless on the simulated market until Ctrl+C "
                                            "(alerts, optional Prometheus metrics)")
    p.add_argument("--metrics-port", type=int, default=None, metavar="P",
                   help="serve Prometheus metrics on http://127.0.0.1:P/metrics (0: any free port; "
                        "default: settings [monitoring] metrics_port, off when unset)")
    p.add_argument("--home", type=Path, default=None,
                   help="keep the database, settings and logs under this folder (default: the app's folders)")
    p.add_argument("--seed", type=int, default=None, help="seed of the simulated market (default: settings)")
    p.add_argument("--duration", type=float, default=None, metavar="SECONDS",
                   help="stop by itself after this many seconds (scripts, smoke tests)")
    p.set_defaults(func=_cmd_serve)
    tr = subparsers.add_parser("trade", help="run strategies headless on the simulated market (paper account) "
                                             "until Ctrl+C or --minutes; prints orders, fills and P&L per strategy")
    tr.add_argument("--strategy", required=True, metavar="NAME[,NAME...]",
                    help="strategies to run: class names (iron_condor, ...) or ids of [[strategies]] entries of the "
                         "settings, whose parameters and budget then apply")
    tr.add_argument("--paper", action="store_true",
                    help="run strategies enabled for a live account on the paper account instead (without it such a "
                         "strategy is refused: headless trading runs on the simulated market)")
    tr.add_argument("--speed", type=float, default=None, metavar="X",
                    help="simulated market speed, ×1 (real time) to ×10,000 (default: settings)")
    tr.add_argument("--minutes", type=float, default=None, metavar="N", help="stop after N wall-clock minutes")
    tr.add_argument("--seconds", type=float, default=None, metavar="S", help="stop after S wall-clock seconds")
    tr.add_argument("--json", action="store_true", help="print the per-strategy report as JSON on stdout")
    tr.add_argument("--metrics-port", type=int, default=None, metavar="P",
                    help="serve Prometheus metrics on http://127.0.0.1:P/metrics, as `optiondesk serve` does")
    tr.add_argument("--home", type=Path, default=None,
                    help="keep the database, settings and logs under this folder (default: the app's folders)")
    tr.add_argument("--seed", type=int, default=None, help="seed of the simulated market (default: settings)")
    tr.set_defaults(func=_cmd_trade)
    t = subparsers.add_parser("notify-test", help="send a test notification to a destination of the settings")
    t.add_argument("destination", help="destination name from [notify] in the settings")
    t.add_argument("--home", type=Path, default=None, help="the settings under this folder")
    t.set_defaults(func=_cmd_notify_test)


def _paths(home: Path | None) -> Any:
    from engine.paths import AppPaths

    return AppPaths.under(home) if home is not None else AppPaths.default()


def _cmd_serve(args: argparse.Namespace) -> int:
    from engine.cli_errors import CliError

    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise CliError(f"--metrics-port must be 0..65535, got {args.metrics_port}")
    if args.duration is not None and args.duration <= 0:
        raise CliError(f"--duration must be positive, got {args.duration}")
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    from engine.core import EngineConfig

    config = EngineConfig(paths=_paths(args.home), metrics_port=args.metrics_port, seed=args.seed)
    await run_headless(config, duration=args.duration)
    return 0


async def run_headless(config: Any, *, duration: float | None, out: Any = None,
                       started: Callable[[Any], Awaitable[None]] | None = None,
                       finishing: Callable[[Any], None] | None = None) -> None:
    """Run an ``Engine`` without the window until SIGINT/SIGTERM or ``duration`` seconds, then stop it (its own
    bounded stop). ``started(engine)`` runs once it is up (a ``CliError`` from it stops the engine and goes to
    the user); ``finishing(engine)`` runs just before the stop, while every component can still be read.
    Banners and alerts go to ``out`` (stdout by default; stderr when stdout carries JSON)."""
    from engine.cli_errors import CliError
    from engine.core import Engine
    from engine.monitoring import MonitoringError

    out = out or sys.stdout
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    engine = Engine(config)
    try:
        try:
            await engine.start()
        except MonitoringError as exc:
            raise CliError(str(exc)) from exc
        try:
            print(f"engine running on the simulated market (data: {engine.paths.database.parent})", file=out,
                  flush=True)
            if engine.metrics is not None:
                print(f"metrics: http://127.0.0.1:{engine.metrics.port}/metrics", file=out, flush=True)
            if engine.notifier is not None:
                dests = ", ".join(d.name for d in engine.settings.notify.destinations if d.enabled) or "none"
                print(f"alerts: {len(engine.notifier.evaluator.rules)} rules → {dests}", file=out, flush=True)
            print("Ctrl+C stops it.", file=out, flush=True)
            from engine.bus import Alert

            if engine.bus is None:  # start() composes the bus before anything else: without it nothing runs
                raise CliError("the engine started without its message bus")
            # headless, the window's Alerts dock is this terminal
            engine.bus.subscribe(Alert, lambda a: print(f"[{a.level}] {a.source}: {a.message}", file=out,
                                                        flush=True), name="serve:alerts")
            if started is not None:
                await started(engine)
            if duration is not None:
                try:
                    await asyncio.wait_for(stop.wait(), duration)
                except TimeoutError:
                    pass
            else:
                await stop.wait()
            if finishing is not None:
                finishing(engine)
        finally:
            await engine.stop()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print("engine stopped", file=out, flush=True)


def _cmd_trade(args: argparse.Namespace) -> int:
    from engine.cli_errors import CliError
    from engine.core import EngineConfig

    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        raise CliError(f"--metrics-port must be 0..65535, got {args.metrics_port}")
    if args.minutes is not None and args.seconds is not None:
        raise CliError("give --minutes or --seconds, not both")
    duration = args.minutes * 60.0 if args.minutes is not None else args.seconds
    if duration is not None and duration <= 0:
        raise CliError(f"--minutes/--seconds must be positive, got {args.minutes or args.seconds}")
    if args.speed is not None and not 1.0 <= args.speed <= 10_000.0:
        raise CliError(f"--speed must be between 1 and 10000, got {args.speed:g}")
    paths = _paths(args.home)
    settings = trade_settings(paths.settings_file, args.strategy, paper=args.paper, speed=args.speed)
    ids = [e.id for e in settings.strategies]
    out = sys.stderr if args.json else sys.stdout
    reports: dict[str, Any] = {}

    async def started(engine: Any) -> None:
        from engine.bus import StartStrategy
        from engine.strategies.host import StrategyCommandError

        for sid in ids:
            try:
                await engine.bus.send(StartStrategy(strategy_id=sid, by="cli"))
            except StrategyCommandError as exc:
                raise CliError(f"cannot start {sid}: {exc}") from exc
            st = engine.strategies.status(sid)
            print(f"strategy {sid} ({st.name}): {st.state} on the {st.mode} account", file=out, flush=True)

    def finishing(engine: Any) -> None:
        for sid in ids:
            reports[sid] = engine.strategies.report(sid)

    config = EngineConfig(paths=paths, settings=settings, metrics_port=args.metrics_port, seed=args.seed)
    asyncio.run(run_headless(config, duration=duration, out=out, started=started, finishing=finishing))
    if args.json:
        print(json.dumps({"strategies": reports}, indent=2, default=str))
    else:
        for sid, r in reports.items():
            filled = sum(1 for o in r["orders"] if o["status"] == "filled")
            print(f"{sid}: {r['state']}, {len(r['orders'])} orders ({filled} filled), {len(r['fills'])} fills, "
                  f"{r['open_trades']} open trades, P&L today ${r['pnl_today']:,.2f}, total ${r['pnl_total']:,.2f}")
            for o in r["orders"]:
                print(f"  {o['id']} {o['tag']}: {o['status']}" + (f" — {o['reason']}" if o["reason"] else ""))
    return 0


def trade_settings(settings_file: Path, names: str, *, paper: bool, speed: float | None) -> Any:
    """The settings ``trade`` runs with: the file's, hosting exactly the named strategies (their settings entry
    when one has that id or class name, else the class's defaults). Unknown or unusable names raise ``CliError``
    listing what is known."""
    from engine.cli_errors import CliError
    from engine.settings import load_settings
    from engine.strategies import registry
    from engine.strategies.config import StrategyEntry, split_entries

    result = load_settings(settings_file)
    for err in result.errors:
        print(f"settings: {err}", file=sys.stderr)
    settings = result.settings
    classes = registry()
    bad = {label: message for _, label, _, message in split_entries(result.raw.get("strategies"))[1]}
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    if not wanted:
        raise CliError("--strategy needs at least one name")
    known = sorted(set(classes) | {e.id for e in settings.strategies})
    entries: list[StrategyEntry] = []
    for name in wanted:
        if name in bad:
            raise CliError(f"strategy {name!r} has an invalid settings entry: {bad[name]}")
        entry = next((e for e in settings.strategies if e.id == name), None) or \
            next((e for e in settings.strategies if e.name == name), None)
        if entry is None:
            if name not in classes:
                raise CliError(f"unknown strategy {name!r}; known: {', '.join(known)}")
            entry = StrategyEntry(name=name)
        if entry.name not in classes:
            raise CliError(f"strategy {name!r} names class {entry.name!r}, which does not exist; known: "
                           f"{', '.join(sorted(classes))}")
        if entry.mode == "live":
            if not paper:
                raise CliError(f"strategy {entry.id} is enabled for a live account; `optiondesk trade` runs on the "
                               "simulated market: pass --paper to run it on the paper account")
            entry = entry.model_copy(update={"mode": "paper", "live_account": ""})
        if any(e.id == entry.id for e in entries):
            continue
        entries.append(entry.model_copy(update={"enabled": True}))
    sim = settings.simulator
    if speed is not None:
        sim = sim.model_copy(update={"streaming": sim.streaming.model_copy(update={"speed": float(speed),
                                                                                 "fast": False})})
    return settings.model_copy(update={"strategies": entries, "simulator": sim})


def _cmd_notify_test(args: argparse.Namespace) -> int:
    from engine.cli_errors import CliError
    from engine.clock import WallClock
    from engine.credentials import CredentialStore
    from engine.notify.notifier import NotifyError, send_test
    from engine.settings import load_settings

    result = load_settings(_paths(args.home).settings_file)
    for err in result.errors:
        print(f"settings: {err}")
    store = CredentialStore()
    try:
        message = asyncio.run(send_test(result.settings.notify, args.destination, secrets=store.get,
                                        now=WallClock().now))
    except NotifyError as exc:
        raise CliError(f"test notification failed: {exc}") from exc
    print(message)
    return 0
