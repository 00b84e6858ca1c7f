"""CLI: ``optiondesk surface SYMBOL`` fits the simulated market's chain and prints the term structure.

``optiondesk surface SPY --seed 7 --minutes 60 --rate 0.04 [--json]``: per expiry the forward and how it was
found, ATM IV, 25-delta risk reversal and butterfly, skew slope, expected moves, fit RMSE; then what the
arbitrage checks found and repaired, and why quotes were dropped.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("surface", help="fit the volatility surface of a simulated chain and print it")
    p.add_argument("symbol", help="underlying, e.g. SPY")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--date", default=None, help="market date (YYYY-MM-DD); default today")
    p.add_argument("--minutes", type=float, default=60.0, help="minutes after the open to snapshot (default 60)")
    p.add_argument("--rate", type=float, default=0.04, help="continuously compounded risk-free rate (default 0.04)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=_cmd_surface)


def _fmt(x: float, scale: float = 1.0, digits: int = 2) -> str:
    return "—" if x != x else f"{x * scale:.{digits}f}"


def _cmd_surface(args: argparse.Namespace) -> int:
    import numpy as np

    from engine.market.config import SimulatorConfig
    from engine.market.simulated.market import SimulatedMarket
    from engine.surface.fit import fit_chain

    sym = args.symbol.upper()
    cfg = SimulatorConfig(seed=args.seed)
    try:
        cfg.underlying(sym)
    except KeyError:
        print(f"error: {sym!r} is not simulated; choose one of {', '.join(u.symbol for u in cfg.universe)}",
              file=sys.stderr)
        return 2
    try:
        start = date.fromisoformat(args.date) if args.date else None
    except ValueError:
        print(f"error: --date {args.date!r} is not a date (YYYY-MM-DD)", file=sys.stderr)
        return 2
    market = SimulatedMarket(cfg, start=start)
    market.advance(max(args.minutes, 0.0) * 60.0)
    chain = market.chain(sym)
    fit = fit_chain(chain, rate=args.rate)
    t = fit.term
    rows: list[dict[str, Any]] = []
    for i, s in enumerate(fit.slices):
        rows.append({
            "expiry": str(np.datetime_as_string(s.expiry, unit="D")), "dte": round(float(t.dte[i]), 2),
            "forward": round(s.forward.forward, 4), "forward_method": s.forward.method,
            "implied_yield": round(s.forward.implied_yield, 5), "status": s.status, "points": s.n_points,
            "atm_iv": float(t.atm_iv[i]), "rr25": float(t.rr25[i]), "bf25": float(t.bf25[i]),
            "skew_slope": float(t.skew_slope[i]), "em_straddle": float(t.em_straddle[i]), "em_iv": float(t.em_iv[i]),
            "rmse_bp": float(s.rmse_bp), "reason": s.reason,
        })
    report = {
        "underlying": sym, "spot": fit.spot, "ts": fit.ts.isoformat(), "elapsed_ms": round(fit.elapsed_ms, 1),
        "expiries": rows, "reasons": list(fit.reasons), "notes": list(fit.notes),
        "arbitrage": {"found": list(fit.arbitrage.found), "repairs": list(fit.arbitrage.repairs),
                      "unresolved": list(fit.arbitrage.unresolved), "free": fit.arbitrage.arbitrage_free},
        "dropped": fit.ivs.reason_counts(),
    }
    if args.json:
        from engine.cli_errors import dumps_json

        print(dumps_json(report, indent=2))  # NaN (a failed fit) becomes null: valid JSON
        return 0
    print(f"{sym} spot {fit.spot:.2f} at {fit.ts:%Y-%m-%d %H:%M} UTC — {len(fit.fitted_slices())} of "
          f"{len(fit.slices)} expiries fitted in {fit.elapsed_ms:.0f} ms")
    print(f"{'expiry':<11}{'DTE':>7}{'forward':>10} {'fwd method':<22}{'ATM IV':>8}{'RR25':>8}{'BF25':>7}"
          f"{'skew':>8}{'EM strd':>9}{'EM 1sd':>9}{'RMSE bp':>9}")
    for r in rows:
        print(f"{r['expiry']:<11}{r['dte']:>7.1f}{r['forward']:>10.2f} {r['forward_method']:<22}"
              f"{_fmt(r['atm_iv'], 100):>8}{_fmt(r['rr25'], 100):>8}{_fmt(r['bf25'], 100):>7}"
              f"{_fmt(r['skew_slope'], 1, 3):>8}{_fmt(r['em_straddle']):>9}{_fmt(r['em_iv']):>9}"
              f"{_fmt(r['rmse_bp'], 1, 1):>9}" + (f"  {r['reason']}" if r["reason"] else ""))
    for title, lines in (("arbitrage found", report["arbitrage"]["found"]), ("repairs", report["arbitrage"]["repairs"]),
                         ("unresolved", report["arbitrage"]["unresolved"]), ("notes", report["notes"]),
                         ("reasons", report["reasons"])):
        for line in lines:
            print(f"{title}: {line}")
    print("dropped quotes: " + (", ".join(f"{k} {v}" for k, v in sorted(report["dropped"].items())) or "none"))
    return 0
