"""``optiondesk serve``: the engine without the window, on the simulated market, until Ctrl+C.

The headless way to run the notifier and the Prometheus endpoint (``--metrics-port P``): the same
``Engine`` the window runs — order path, kill switch, risk snapshots, alert rules — with no display.
``optiondesk notify-test NAME`` sends a test notification to a destination of the settings file.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
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
    from engine.cli_errors import CliError
    from engine.core import Engine, EngineConfig
    from engine.monitoring import MonitoringError

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    engine = Engine(EngineConfig(paths=_paths(args.home), metrics_port=args.metrics_port, seed=args.seed))
    try:
        await engine.start()
    except MonitoringError as exc:
        raise CliError(str(exc)) from exc
    try:
        print(f"engine running on the simulated market (data: {engine.paths.database.parent})", flush=True)
        if engine.metrics is not None:
            print(f"metrics: http://127.0.0.1:{engine.metrics.port}/metrics", flush=True)
        if engine.notifier is not None:
            dests = ", ".join(d.name for d in engine.settings.notify.destinations if d.enabled) or "none"
            print(f"alerts: {len(engine.notifier.evaluator.rules)} rules → {dests}", flush=True)
        print("Ctrl+C stops it.", flush=True)
        from engine.bus import Alert

        # headless, the window's Alerts dock is this terminal
        engine.bus.subscribe(Alert, lambda a: print(f"[{a.level}] {a.source}: {a.message}", flush=True),
                             name="serve:alerts")
        if args.duration is not None:
            try:
                await asyncio.wait_for(stop.wait(), args.duration)
            except TimeoutError:
                pass
        else:
            await stop.wait()
    finally:
        await engine.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    print("engine stopped", flush=True)
    return 0


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
