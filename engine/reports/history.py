"""P&L, Greeks and equity history that outlives a session: the ``pnl_history`` table.

The engine's :class:`HistoryRecorder` writes one row per account and mode every ``interval_s`` of engine time
(the simulated clock in paper-on-simulation, the wall clock live), from the portfolio's account snapshot and
the risk service's Greeks and regime. Rows carry ``strategy_id = ''`` for the whole account; strategies that
trade get rows of their own under their id. The P&L and Greeks panels load the active account's rows at start,
and the reports read them for equity, drawdown and Greeks over time.

A simulated day restarted from its open moves the clock back: rows already written for later times stay (the
key includes the time, so nothing is overwritten) and the cadence restarts from the new time.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HistoryRow:
    account_id: str
    mode: str
    ts: datetime
    net_liquidation: float
    cash: float = math.nan
    day_pnl: float = math.nan
    realized_pnl: float = math.nan
    unrealized_pnl: float = math.nan
    delta: float = math.nan
    beta_delta: float = math.nan
    gamma: float = math.nan
    theta: float = math.nan
    vega: float = math.nan
    regime: str | None = None
    broker: str = ""
    strategy_id: str = ""


_COLUMNS = ("net_liquidation", "cash", "day_pnl", "realized_pnl", "unrealized_pnl", "delta", "beta_delta", "gamma",
            "theta", "vega")


def _num(v: Any) -> float | None:
    """NaN and missing numbers are stored as NULL (SQLite has no NaN) and read back as NaN."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def write_row(store: Any, row: HistoryRow) -> None:
    store.execute(
        f"""INSERT INTO pnl_history(account_id, mode, strategy_id, ts, broker, {', '.join(_COLUMNS)}, regime)
            VALUES (?,?,?,?,?,{','.join('?' * len(_COLUMNS))},?)
            ON CONFLICT(account_id, mode, strategy_id, ts) DO UPDATE SET
            {', '.join(f'{c}=excluded.{c}' for c in _COLUMNS)}, regime=excluded.regime, broker=excluded.broker""",
        (row.account_id, row.mode, row.strategy_id, row.ts.astimezone(UTC).isoformat(), row.broker,
         *(_num(getattr(row, c)) for c in _COLUMNS), row.regime),
    )


def load_history(store: Any, account_id: str | None = None, mode: str | None = None, *,
                 start: datetime | None = None, end: datetime | None = None, strategy_id: str = "",
                 limit: int | None = None) -> list[HistoryRow]:
    """Rows oldest first, filtered by account, mode and ``[start, end]``; ``limit`` keeps the newest."""
    where, params = ["strategy_id=?"], [strategy_id]
    if account_id is not None:
        where.append("account_id=?")
        params.append(account_id)
    if mode is not None:
        where.append("mode=?")
        params.append(mode)
    if start is not None:
        where.append("ts>=?")
        params.append(start.astimezone(UTC).isoformat())
    if end is not None:
        where.append("ts<=?")
        params.append(end.astimezone(UTC).isoformat())
    cols = ("ts", "account_id", "mode", "regime", "broker", "strategy_id", *_COLUMNS)
    sql = f"SELECT {', '.join(cols)} FROM pnl_history WHERE {' AND '.join(where)} ORDER BY ts DESC"
    if limit:
        sql += f" LIMIT {int(limit)}"
    rows = store.query(sql, tuple(params))
    nan = math.nan
    parse = datetime.fromisoformat
    # positional access, the figures by name (zip(strict) follows _COLUMNS): ~100k minute rows load as fast as
    # with positional figures, which the type checker cannot match to the fields
    return [HistoryRow(r[1], r[2], parse(r[0]),
                       **{c: nan if v is None else v for c, v in zip(_COLUMNS, tuple(r)[6:], strict=True)},
                       regime=r[3], broker=r[4], strategy_id=r[5])
            for r in reversed(rows)]


def regime_at(store: Any, account_id: str, mode: str, ts: datetime, strategy_id: str = "") -> str | None:
    """The regime of the newest row at or before ``ts`` (one index lookup)."""
    rows = store.query("SELECT regime FROM pnl_history WHERE account_id=? AND mode=? AND strategy_id=? AND ts<=? "
                       "ORDER BY ts DESC LIMIT 1", (account_id, mode, strategy_id, ts.astimezone(UTC).isoformat()))
    return rows[0][0] if rows else None


def accounts_with_history(store: Any) -> list[tuple[str, str, str]]:
    """(account, mode, newest ts) with stored history, the most recently written first."""
    return [(r["account_id"], r["mode"], r["last"]) for r in store.query(
        "SELECT account_id, mode, MAX(ts) AS last FROM pnl_history WHERE strategy_id='' "
        "GROUP BY account_id, mode ORDER BY last DESC")]


def mode_of(account: Any) -> str:
    return "live" if getattr(account, "is_live", False) else "paper"


class HistoryRecorder:
    """Writes the history on the engine's clock ticks (a synchronous ~0.1 ms insert on the loop)."""

    def __init__(self, bus: Any, store: Any, portfolio: Any, risk_service: Any, *, interval_s: float = 60.0) -> None:
        self.bus, self.store, self.portfolio, self.risk_service = bus, store, portfolio, risk_service
        self.interval_s = interval_s
        self._last: datetime | None = None
        self._sub: Any = None
        self.rows_written = 0

    def start(self) -> None:
        from engine.bus.events import ClockTicked

        self._sub = self.bus.subscribe(ClockTicked, self._on_tick, name="reports:history")

    def stop(self) -> None:
        if self._sub is not None:
            self._sub.cancel()
            self._sub = None

    def _on_tick(self, ev: Any) -> None:
        now: datetime = ev.now
        if self._last is not None and self._last <= now < self._last + timedelta(seconds=self.interval_s):
            return
        try:
            if self.record(now):
                self._last = now
        except Exception:  # a history row failing (full disk) must not break the clock tick that drives it
            log.exception("could not write the P&L history")

    def record(self, now: datetime) -> bool:
        """One row for the active account at ``now``; False when no account snapshot exists yet."""
        account = getattr(self.portfolio, "account", None)
        if account is None:
            return False
        g: dict[str, Any] = {}
        regime = None
        if self.risk_service is not None:
            try:
                g = dict(self.risk_service.greeks().get("total") or {})
            except Exception:  # Greeks may be missing or failing mid-start: the row is written without them
                log.debug("no Greeks for the history row", exc_info=True)
            regime = getattr(self.risk_service, "regime", None)
        write_row(self.store, HistoryRow(
            account_id=account.account_id, mode=mode_of(account), ts=now, broker=account.broker,
            net_liquidation=float(account.net_liquidation), cash=float(account.cash), day_pnl=float(account.day_pnl),
            realized_pnl=float(account.realized_pnl), unrealized_pnl=float(account.unrealized_pnl),
            delta=float(g.get("delta", math.nan)), beta_delta=float(g.get("beta_delta", math.nan)),
            gamma=float(g.get("gamma", math.nan)), theta=float(g.get("theta", math.nan)),
            vega=float(g.get("vega", math.nan)), regime=regime))
        self.rows_written += 1
        return True



def history_for_panels(engine: Any, limit: int) -> list[HistoryRow]:
    """The stored rows the P&L and Greeks panels start from: the active account and mode (else the account
    with the newest history), up to the engine's present (rows after it, left by a restarted simulated day,
    would sit ahead of the live curve). Empty when the engine has no store."""
    store = getattr(engine, "store", None)
    if store is None:
        return []
    account = getattr(getattr(engine, "portfolio", None), "account", None)
    if account is not None:
        account_id, mode = account.account_id, mode_of(account)
    else:
        known = accounts_with_history(store)
        if not known:
            return []
        account_id, mode = known[0][0], known[0][1]
    try:
        now = engine.now()
    except Exception:  # a half-built or stopping engine has no clock yet: read without an end
        now = None
    try:
        return load_history(store, account_id, mode, end=now, limit=limit)
    except Exception:  # a report must show "no history" rather than fail on a damaged store
        log.exception("could not read the stored P&L history")
        return []
