"""``optiondesk risk`` and ``optiondesk kill``: risk state and the kill switch from a terminal.

Both open the same SQLite database as the running app (WAL allows it). ``kill`` writes HALTED to the store;
a running engine notices within ``kill_switch_poll_s`` (≤ 1 s) and cancels every working order itself.
``risk`` reports what the store knows: trading state, risk level and profile, positions and their Greeks /
VaR when market data is available in this process (it is not when another process owns the feed: those
figures are then reported as unavailable, never invented).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("risk", help="show the trading state, risk profile, portfolio Greeks and VaR")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--db", type=Path, default=None, help="database file (default: the app's data folder)")
    p.set_defaults(func=_cmd_risk)
    k = subparsers.add_parser("kill", help="trip the kill switch (HALT trading, cancel all working orders)")
    k.add_argument("--reason", default="kill switch from the command line")
    k.add_argument("--flatten", action="store_true", help="also close every position with marketable limits")
    k.add_argument("--reset", action="store_true", help="reset a tripped switch to ACTIVE (needs --yes)")
    k.add_argument("--yes", action="store_true", help="confirm --reset")
    k.add_argument("--db", type=Path, default=None, help="database file (default: the app's data folder)")
    k.add_argument("--json", action="store_true", help="print JSON")
    k.set_defaults(func=_cmd_kill)


def _db_path(arg: Path | None) -> Path:
    if arg is not None:
        return arg
    from engine.paths import AppPaths

    return AppPaths.default().database


def _open(arg: Path | None) -> Any:
    from engine.store import Store

    return Store.open(_db_path(arg))


def risk_report(store: Any, level_default: float = 50.0) -> dict[str, Any]:
    """The report printed by ``optiondesk risk`` (also usable by the GUI's status panel)."""
    from datetime import UTC, datetime

    import numpy as np

    from engine.risk.config import RiskConfig
    from engine.risk.kill_switch import KV_LEVEL, KV_PEAK, read_status
    from engine.risk.market_view import MarketView
    from engine.risk.profile import profile_for_level
    from engine.risk.var import book_from_positions, covariance, delta_gamma_var

    cfg = RiskConfig()
    status = read_status(store)
    level = store.kv.get(KV_LEVEL, level_default)
    profile = profile_for_level(float(level), cfg)
    accounts = [r["account_id"] for r in store.query("SELECT DISTINCT account_id FROM positions ORDER BY account_id")]
    positions = {a: store.positions.list(a) for a in accounts}
    working = store.orders.list(("submitted", "working", "partially_filled", "pending_approval", "approved"))  # type: ignore[arg-type]
    report: dict[str, Any] = {
        "trading_state": {"state": status.state.value, "reason": status.reason, "by": status.by, "since": status.since},
        "risk_level": float(level),
        "profile": profile.to_dict(),
        "peak_equity": store.kv.get(KV_PEAK),
        "open_orders": len(working),
        "positions": {a: [{"symbol": p.symbol, "quantity": p.quantity, "avg_price": str(p.avg_price)} for p in ps]
                      for a, ps in positions.items()},
    }
    # Greeks / VaR need live market data; this process has none unless a chain snapshot is stored.
    market = MarketView(rate=cfg.risk_free_rate)
    now = datetime.now(UTC)
    greeks: dict[str, Any] = {}
    var: dict[str, Any] = {}
    for a, ps in positions.items():
        if not ps:
            continue
        book = book_from_positions(ps, market, now)
        if book.missing:
            greeks[a] = {"available": False, "reason": "no market data in this process for "
                         + ", ".join(book.missing[:5]) + ("…" if len(book.missing) > 5 else "")
                         + " (the running app shows live Greeks)"}
            var[a] = greeks[a]
            continue
        delta, gamma = book.delta_gamma()
        greeks[a] = {"available": True, "delta": dict(zip(book.underlyings, delta.tolist(), strict=True)),
                     "gamma": dict(zip(book.underlyings, gamma.tolist(), strict=True))}
        cov = covariance(np.full(len(book.underlyings), cfg.default_underlying_vol))
        var[a] = delta_gamma_var(book, cov, cfg.var_confidence, cfg.var_horizon_days).to_dict()
    report["greeks"] = greeks
    report["var"] = var
    return report


def _cmd_risk(args: argparse.Namespace) -> int:
    store = _open(args.db)
    try:
        rep = risk_report(store)
    finally:
        store.close()
    if args.json:
        print(json.dumps(rep, indent=2, default=str))
        return 0
    ts = rep["trading_state"]
    print(f"Trading state: {ts['state']}" + (f" ({ts['reason']}, by {ts['by']}, since {ts['since']})"
                                             if ts["state"] != "ACTIVE" else ""))
    p = rep["profile"]
    print(f"Risk level {rep['risk_level']:.0f}: max position {p['max_position_pct']:.1%}, daily loss "
          f"{p['max_daily_loss_pct']:.1%}, risk/trade {p['risk_per_trade_pct']:.2%}, positions {p['max_positions']}, "
          f"delta {p['max_delta']:.0f}, gamma {p['max_gamma']:.0f}")
    print(f"Open orders: {rep['open_orders']}")
    for a, ps in rep["positions"].items():
        print(f"Account {a}: {len(ps)} position(s)")
        g = rep["greeks"].get(a)
        if g and not g.get("available"):
            print(f"  Greeks/VaR: {g['reason']}")
        elif g:
            print(f"  delta {g['delta']}  VaR {rep['var'][a]['var']:.2f}  CVaR {rep['var'][a]['cvar']:.2f}")
    return 0


def _cmd_kill(args: argparse.Namespace) -> int:
    from engine.risk.kill_switch import reset_in_store, trip_in_store

    store = _open(args.db)
    try:
        if args.reset:
            if not args.yes:
                print("refusing to reset the kill switch without --yes", file=sys.stderr)
                return 2
            status = reset_in_store(store, by="cli")
        else:
            status = trip_in_store(store, args.reason, by="cli", flatten=args.flatten)
    finally:
        store.close()
    out = {"state": status.state.value, "reason": status.reason, "by": status.by, "since": status.since}
    if args.json:
        print(json.dumps(out))
    else:
        print(f"Trading state is now {status.state.value}: {status.reason}")
        if status.state.value == "HALTED":
            print("A running Optiondesk cancels every working order within a second.")
    return 0
