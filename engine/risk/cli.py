"""``optiondesk risk`` and ``optiondesk kill``: risk state and the kill switch from a terminal.

Both open the same SQLite database as the running app (WAL allows it) and never take the data folder's instance
lock, so they work beside the running app. ``kill`` writes HALTED to the store (on a damaged record too); a
running engine notices within 200 ms and cancels every open order itself; with no engine running, the next
start does it (and carries out a stored flatten). ``kill`` always ends with one line saying what it achieved.
``risk`` reports what the store knows: trading state, risk level and profile, positions and their Greeks /
VaR from the running engine's latest snapshot (written to the store every few seconds; reported as
unavailable, never invented, when no engine has written one).
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
    """The report printed by ``optiondesk risk``: trading state, profile, positions, and the running engine's
    latest Greeks / VaR snapshot (written to the store every few seconds; absent when no engine has run)."""
    from datetime import datetime

    from engine.model import OrderStatus
    from engine.risk.config import RiskConfig
    from engine.risk.kill_switch import KV_LEVEL, KV_PEAK, KV_SNAPSHOT, read_status
    from engine.risk.profile import profile_for_level

    status = read_status(store)
    level = store.kv.get(KV_LEVEL, level_default)
    profile = profile_for_level(float(level), RiskConfig())
    accounts = [r["account_id"] for r in store.query("SELECT DISTINCT account_id FROM positions ORDER BY account_id")]
    open_orders = store.orders.list((OrderStatus.PENDING_APPROVAL, OrderStatus.APPROVED, OrderStatus.SUBMITTED,
                                     OrderStatus.WORKING, OrderStatus.PARTIALLY_FILLED))
    snap = store.kv.get(KV_SNAPSHOT)
    report: dict[str, Any] = {
        "trading_state": {"state": status.state.value, "reason": status.reason, "by": status.by, "since": status.since},
        "risk_level": float(level),
        "profile": profile.to_dict(),
        "peak_equity": store.kv.get(KV_PEAK),
        "open_orders": len(open_orders),
        "positions": {a: [{"symbol": p.symbol, "quantity": p.quantity, "avg_price": str(p.avg_price)}
                          for p in store.positions.list(a)] for a in accounts},
    }
    if isinstance(snap, dict):
        age = None
        try:
            # the store's clock (this tool's wall clock); a simulated session's snapshot is on market time
            age = (store.now() - datetime.fromisoformat(snap["as_of"])).total_seconds()
        except (KeyError, ValueError, TypeError):
            pass
        report["greeks"] = snap.get("greeks")
        report["var"] = snap.get("var")
        report["snapshot"] = {"as_of": snap.get("as_of"), "age_s": age}
    else:
        report["greeks"] = None
        report["var"] = None
        report["snapshot"] = {"as_of": None, "age_s": None,
                              "note": "no engine has written a risk snapshot yet (Greeks and VaR need live prices)"}
    return report


def _cmd_risk(args: argparse.Namespace) -> int:
    store = _open(args.db)
    try:
        rep = risk_report(store)
    finally:
        store.close()
    if args.json:
        from engine.cli_errors import dumps_json

        print(dumps_json(rep, indent=2))  # a NaN Greek or VaR is null: valid JSON
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
    g, v, snap = rep["greeks"], rep["var"], rep["snapshot"]
    if g is None:
        print(f"Greeks/VaR: {snap['note']}")
    else:
        t = g["total"]
        print(f"Greeks as of {snap['as_of']} ({snap['age_s']:.0f}s ago): beta-weighted delta {t['beta_delta']:.1f} "
              f"SPY sh, gamma {t['gamma']:.2f}, vega {t['vega']:.0f} $/pt, theta {t['theta']:.0f} $/day")
        if v:
            print(f"VaR {v['confidence']:.0%} {v['horizon_days']:g}d: {v['var']:,.0f} $, CVaR {v['cvar']:,.0f} $ "
                  f"({v['method']})")
    return 0


def kill_command(store: Any, *, reason: str, flatten: bool, data_dir: Path | None) -> tuple[int, str]:
    """Trip the switch in ``store``; returns the exit code and the one line that says what was achieved.

    A failed write (a full disk, a locked database) is that one line, never a traceback."""
    from engine.instance_lock import holder
    from engine.risk.kill_switch import trip_in_store

    try:
        trip_in_store(store, reason, by="cli", flatten=flatten)
    except Exception as exc:  # any write failure must print the one NOT HALTED line with its fix, never a traceback
        return 1, (f"NOT HALTED: the trading state could not be written to {store.path} ({exc}); free the disk or "
                   "close what locks the database and run `optiondesk kill` again, or press the kill switch in "
                   "the window (Ctrl+Shift+K).")
    pid = holder(data_dir) if data_dir is not None else None
    then = " and then flattens every position" if flatten else ""
    if pid is not None:
        who = f"the running Optiondesk (pid {pid})" if pid else "the running Optiondesk"
        return 0, f"HALTED: {who} cancels every open order within 200 ms{then}."
    later = "; flatten will run when the engine next starts" if flatten else ""
    return 0, ("HALTED: no Optiondesk is running on this data folder; every open order is cancelled when the "
               f"engine next starts{later}.")


def _cmd_kill(args: argparse.Namespace) -> int:
    from engine.risk.kill_switch import reset_in_store

    path = _db_path(args.db)
    store = _open(path)  # a database that cannot be opened: one line from the CLI's error handler
    try:
        if args.reset:
            if not args.yes:
                print("refusing to reset the kill switch without --yes", file=sys.stderr)
                return 2
            try:
                reset_in_store(store, by="cli")
            except Exception as exc:  # any write failure must print the one NOT RESET line, never a traceback
                code, line = 1, f"NOT RESET: the trading state could not be written to {path} ({exc})."
            else:
                code, line = 0, "ACTIVE: the kill switch is reset; new orders are accepted again."
        else:
            code, line = kill_command(store, reason=args.reason, flatten=args.flatten, data_dir=path.parent)
    finally:
        store.close()
    _say(args, code, line)
    return code


def _say(args: argparse.Namespace, code: int, line: str) -> None:
    if args.json:
        print(json.dumps({"ok": code == 0, "message": line}))
    else:
        print(line)
