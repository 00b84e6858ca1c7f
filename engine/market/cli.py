"""CLI subcommands of the simulated market: ``optiondesk simulate`` and ``optiondesk chain``.

- ``optiondesk simulate --symbols SPY,QQQ --days 5 --seed 7 --out DIR`` writes a reproducible history
  (Parquet chains + bars + manifest.json; see :mod:`engine.market.simulated.history`);
- ``optiondesk chain SPY --expiry nearest`` prints a snapshot with IV and Greeks from the simulated market.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("simulate", help="write a reproducible simulated history (Parquet)")
    p.add_argument("--symbols", default="SPY", help="comma-separated underlyings (default SPY)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--days", type=int, default=None, help="number of sessions (default 5)")
    g.add_argument("--years", type=float, default=None, help="years of sessions (252 per year)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--start", default=None, help="first date (YYYY-MM-DD); default: ends about a week ago")
    p.add_argument("--intraday-minutes", type=float, default=None, help="also write intraday snapshots")
    p.add_argument("--out", required=True, help="output directory")
    p.set_defaults(func=_cmd_simulate)

    c = subparsers.add_parser("chain", help="print a simulated option chain with IV and Greeks")
    c.add_argument("symbol", help="underlying, e.g. SPY")
    c.add_argument("--expiry", default="nearest", help="'nearest', an index (0, 1, …) or a date YYYY-MM-DD")
    c.add_argument("--seed", type=int, default=7)
    c.add_argument("--date", default=None, help="market date (YYYY-MM-DD); default today")
    c.add_argument("--minutes", type=float, default=60.0, help="minutes after the open to snapshot (default 60)")
    c.add_argument("--strikes", type=int, default=10, help="strikes each side of the money (default 10)")
    c.set_defaults(func=_cmd_chain)


def _parse_date(text: str | None, what: str) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise SystemExit(f"{what} {text!r} is not a date (YYYY-MM-DD)") from None


def _cmd_simulate(args: argparse.Namespace) -> int:
    from engine.market.simulated.history import generate_history

    symbols = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    days = args.days if args.days is not None or args.years is not None else 5
    try:
        manifest = generate_history(args.out, symbols=symbols, days=days, years=args.years, seed=args.seed,
                                    start=_parse_date(args.start, "--start"), intraday_minutes=args.intraday_minutes)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {manifest.sessions} sessions ({manifest.start} … {manifest.end}), {manifest.rows:,} option rows "
          f"for {', '.join(manifest.roots)} to {manifest.directory} (seed {manifest.seed})")
    return 0


def _cmd_chain(args: argparse.Namespace) -> int:
    import numpy as np

    from engine.market.config import SimulatorConfig
    from engine.market.simulated.market import SimulatedMarket

    cfg = SimulatorConfig(seed=args.seed)
    sym = args.symbol.upper()
    try:
        cfg.underlying(sym)
    except KeyError:
        print(f"error: {sym!r} is not simulated; choose one of {', '.join(u.symbol for u in cfg.universe)}",
              file=sys.stderr)
        return 2
    market = SimulatedMarket(cfg, start=_parse_date(args.date, "--date"))
    market.advance(max(args.minutes, 0.0) * 60.0)
    chain = market.chain(sym)
    expiries = chain.expiry_dates()
    if not expiries:
        print(f"error: {sym} has no live expiries at {market.now:%Y-%m-%d %H:%M} UTC", file=sys.stderr)
        return 1
    sel = args.expiry
    if sel == "nearest":
        exp = expiries[0]
    elif sel.isdigit():
        if int(sel) >= len(expiries):
            print(f"error: only {len(expiries)} expiries listed", file=sys.stderr)
            return 2
        exp = expiries[int(sel)]
    else:
        chosen = _parse_date(sel, "--expiry")
        if chosen is None or chosen not in expiries:
            print(f"error: {chosen} is not listed; expiries: {', '.join(map(str, expiries))}", file=sys.stderr)
            return 2
        exp = chosen
    sub = chain.for_expiry(exp)
    strikes = np.unique(sub.strike)
    centre = int(np.argmin(np.abs(strikes - chain.spot)))
    keep = strikes[max(0, centre - args.strikes): centre + args.strikes + 1]
    v = sub.vendor
    dte = (exp - market.now.date()).days
    print(f"{sym} {chain.spot:,.2f}   {market.now:%Y-%m-%d %H:%M} UTC   regime {market.regime}   "
          f"expiry {exp} ({dte} DTE)   seed {args.seed}")
    head = f"{'bid':>8} {'ask':>8} {'IV':>6} {'delta':>6} {'gamma':>7} {'theta':>7} {'vega':>6} | {'strike':^9} |"
    print(f"{'CALLS':^55} |           | {'PUTS':^55}")
    print(head + head.split("|")[0])
    for k in keep:
        rows = np.nonzero(sub.strike == k)[0]
        c = next((int(r) for r in rows if sub.is_call[r]), None)
        p = next((int(r) for r in rows if not sub.is_call[r]), None)

        def side(r: int | None) -> str:
            if r is None:
                return " " * 55
            return (f"{sub.bid[r]:8.2f} {sub.ask[r]:8.2f} {v['vendor_iv'][r] * 100:5.1f}% {v['vendor_delta'][r]:6.3f} "
                    f"{v['vendor_gamma'][r]:7.4f} {v['vendor_theta'][r]:7.3f} {v['vendor_vega'][r]:6.3f}")
        print(f"{side(c)} | {k:^9g} | {side(p)}")
    return 0
