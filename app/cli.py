"""``optiondesk selftest``: registered in ``engine.cli.COMMAND_MODULES``; imports stay light."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = subparsers.add_parser(
        "selftest",
        help="open the full window offscreen on the simulated market and exercise it end to end",
        description="Opens the workstation offscreen on the simulated market, streams quotes, places a paper "
        "order through approval, moves the risk slider, trips and resets the kill switch, runs a short "
        "backtest from its panel and writes PNGs. Exit 0, or non-zero naming the failed step.",
    )
    p.add_argument("--seconds", type=float, default=8.0, help="how long to keep streaming (default 8)")
    p.add_argument("--screenshots", metavar="DIR", help="write a PNG of the window and of each panel here")
    p.add_argument("--home", metavar="DIR", help="data/config/log folder (default: a temporary one)")
    p.add_argument("--json", action="store_true", help="print the step results as JSON")
    p.set_defaults(func=_cmd_selftest)


def _cmd_selftest(args: argparse.Namespace) -> int:
    from app.selftest import main

    return main(seconds=args.seconds, screenshots=args.screenshots, home=args.home, as_json=args.json)
