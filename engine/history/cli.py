"""``optiondesk ivrank SYMBOL``: IV rank, IV percentile and realized vol from the stored daily history.

Works on a brand-new data folder: when the store holds fewer sessions than the window needs, the simulated
market's seeded history (:mod:`engine.history.simulated`) is backfilled first, exactly as the engine does at
start, so the rank has a full year behind it. Opens the same SQLite database as the running app (WAL
allows it) and never takes the data folder's instance lock.

    optiondesk ivrank SPY --json
    optiondesk ivrank SPY --db /tmp/od.sqlite --seed 7 --date 2026-01-05
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("ivrank", help="IV rank/percentile and realized vol of an underlying (backfills history)")
    p.add_argument("symbol", help="underlying, e.g. SPY")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--db", type=Path, default=None, help="database file (default: the app's data folder)")
    p.add_argument("--seed", type=int, default=None, help="simulated market seed (default: the settings' seed)")
    p.add_argument("--date", default=None,
                   help="history before this day (YYYY-MM-DD); default: the simulated market's current day")
    p.add_argument("--no-backfill", action="store_true", help="only read what is stored")
    p.set_defaults(func=_cmd_ivrank)


def _settings() -> Any:
    from engine.paths import AppPaths
    from engine.settings.loader import load_settings

    return load_settings(AppPaths.default().settings_file).settings


def _market_day(store: Any, cfg: Any, day: date | None) -> tuple[date, dict[str, float]]:
    """The simulated market's current session and its spots at the start: from the running (or last) engine's
    saved state, else where a fresh engine would start (the configured start day or today)."""
    import numpy as np

    from engine.market.simulated.dynamics import FactorDynamics
    from engine.market.simulated.feed import SimulatedFeed
    from engine.market.simulated.market import _start_date

    state = store.kv.get(SimulatedFeed.STATE_KEY)
    if isinstance(state, dict) and state.get("session"):
        try:
            session = date.fromisoformat(str(state["session"]))
            opens = {k: float(v) for k, v in dict(state.get("open") or {}).items()}
            if opens:
                return day or session, opens
        except (TypeError, ValueError):
            pass
    dyn = FactorDynamics(cfg)
    return day or _start_date(None, cfg), {s: float(x) for s, x in zip(dyn.names, np.asarray(dyn.spots), strict=True)}


def _cmd_ivrank(args: argparse.Namespace) -> int:
    from engine.cli_errors import CliError, dumps_json
    from engine.clock import WallClock
    from engine.history.service import DEFAULT_SESSIONS, backfill_store, read_snapshot
    from engine.history.simulated import SimulatedHistorySource
    from engine.risk.cli import _open

    sym = args.symbol.upper()
    settings = _settings()
    cfg = settings.simulator
    if args.seed is not None:
        cfg = cfg.model_copy(update={"seed": args.seed})
    elif cfg.seed != settings.general.seed:
        cfg = cfg.model_copy(update={"seed": settings.general.seed})
    surface = settings.surface
    lookback, min_history = surface.iv_rank_lookback_days, surface.iv_rank_min_history_days
    store = _open(args.db)
    try:
        try:
            given = date.fromisoformat(args.date) if args.date is not None else None
        except ValueError:
            raise CliError(f"--date {args.date!r} is not a date (YYYY-MM-DD)") from None
        day, anchor = _market_day(store, cfg, given)
        simulated = [u.symbol for u in cfg.universe]
        written = 0
        source = ""
        if not args.no_backfill and sym in simulated:
            src = SimulatedHistorySource(cfg, anchor=anchor)
            # the engine's amount (≥ one session more than the window: the latest day is ranked against the
            # lookback days before it), so a later engine start finds nothing missing
            sessions = max(DEFAULT_SESSIONS, lookback + 1)
            written, _ = backfill_store(store, src, [sym], day, sessions, WallClock().now().isoformat())
            source = src.name
        snap = read_snapshot(store, sym, lookback=lookback, min_history=min_history,
                             realized_vol_window=surface.realized_vol_window_days,
                             until=date.fromordinal(day.toordinal() - 1))
        if snap.days == 0:
            where = f"; simulated underlyings: {', '.join(simulated)}" if sym not in simulated else ""
            raise CliError(f"no stored history for {sym}{where}")
    finally:
        store.close()
    report = snap.to_dict() | {"backfilled_rows": written, "source": source or None}
    if args.json:
        print(dumps_json(report, indent=2))
        return 0
    r = snap.iv_rank

    def pct(x: float) -> str:
        return "—" if x != x else f"{x * 100:.1f} %"

    print(f"{sym} as of {snap.last_day}: ATM IV {pct(snap.atm_iv)}, IV rank {pct(r.rank)}, "
          f"IV percentile {pct(r.percentile)} over {r.days} days (low {pct(r.low)}, high {pct(r.high)})")
    print(f"realized vol ({snap.realized_vol_window} d close-to-close): {pct(snap.realized_vol)}; "
          f"{snap.days} days stored from {snap.first_day}" + (f"; {written} backfilled from {source}" if written else ""))
    if not r.ok:
        print(r.message)
    return 0
