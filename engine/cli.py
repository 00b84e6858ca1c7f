"""`optiondesk` console script. No subcommand opens the GUI.

Subcommands live with their areas: each module in ``COMMAND_MODULES`` has ``register(subparsers)``
adding its parsers with ``set_defaults(func=handler)``; ``handler(args) -> int`` is the exit code.
Those modules keep imports light; heavy work is imported inside the handler. Every handler runs under
one error policy (:mod:`engine.cli_errors`): a handler raises ``CliError`` (or lets a ``StoreError``
through) for a problem the user can fix, and never prints tracebacks itself.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES: list[str] = [
    "engine.pricing.cli",
    "engine.surface.cli",
    "engine.brokers.cli",
    "engine.market.cli",
    "engine.backtest.cli",
    "engine.risk.cli",
    "engine.store.cli",
    "engine.reports.cli",
    "engine.journal.cli",
    "engine.serve",
    "engine.history.cli",
    "engine.history.importer",
    "engine.chainstore.cli",
    "engine.ml.cli",
    "app.cli",
]


def _cmd_doctor(args: argparse.Namespace) -> int:
    from engine.doctor import format_report, run_doctor

    report = run_doctor()
    print(report.to_json() if args.json else format_report(report))
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    import engine

    parser = argparse.ArgumentParser(prog="optiondesk", description="Optiondesk options-trading workstation.")
    parser.add_argument("--version", action="version", version=f"optiondesk {engine.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser("doctor", help="check this installation (versions, keyring, folders, database, OpenGL)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=_cmd_doctor)
    # listed for --help only: main() hands `gui ...` to the window's own parser (--home, --theme, ...)
    p = sub.add_parser("gui", help="open the workstation window (the default); `optiondesk gui --help` for its options")
    p.set_defaults(func=_cmd_gui)
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def _cmd_gui(args: argparse.Namespace) -> int:
    return _run_gui([])


def _run_gui(gui_args: list[str]) -> int:
    app_main = importlib.import_module("app.__main__").main
    return int(app_main(gui_args) or 0)


def main(argv: Sequence[str] | None = None) -> int:
    """Parse and run one command under the shared error policy (:mod:`engine.cli_errors`)."""
    from engine.cli_errors import run_guarded

    argv_list = list(argv) if argv is not None else sys.argv[1:]
    if argv_list[:1] == ["gui"]:  # the window parses its own options
        return run_guarded("gui", lambda: _run_gui(argv_list[1:]))
    parser = build_parser()
    args = parser.parse_args(argv_list)
    func = getattr(args, "func", None) or _cmd_gui
    return run_guarded(getattr(args, "command", None) or "gui", lambda: func(args))


if __name__ == "__main__":
    sys.exit(main())
