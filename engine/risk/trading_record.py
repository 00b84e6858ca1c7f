"""The persisted trading-state record: one JSON value in the store's ``kv`` table, read and written by the
running engine's :class:`~engine.risk.kill_switch.KillSwitch` and by other processes sharing the database
(``optiondesk kill``, ``optiondesk risk``).

Why it lives apart from the kill switch: the CLI trips and reads it without an engine, and the rules that make
it safe under faults belong to the record itself — writes are compare-and-set in one immediate transaction, a
stored HALTED is replaced only by an explicit reset, and a record that cannot be read means HALTED (never
ACTIVE)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import TYPE_CHECKING, Any

from engine.risk.state import TradingState, TradingStatus

if TYPE_CHECKING:
    from engine.store import Store

KV_STATE = "risk.trading_state"
KV_PEAK = "risk.peak_equity"
KV_LEVEL = "risk.level"
KV_SNAPSHOT = "risk.snapshot"


def now_iso(store: Store) -> str:
    """The store's clock: the engine clock inside the engine, the wall clock in a CLI beside it."""
    return store.now().astimezone(UTC).isoformat()


@dataclass(frozen=True, slots=True)
class StateRecord:
    """The stored trading-state record as read: ``raw`` is its exact text (None: no record yet)."""

    status: TradingStatus
    seq: int = 0
    flatten: bool = False  # a flatten intent not yet carried out
    reset: bool = False  # written by an explicit reset
    raw: str | None = None
    readable: bool = True


def unreadable_record(raw: str | None, why: str) -> StateRecord:
    return StateRecord(TradingStatus(TradingState.HALTED, f"unreadable trading-state record '{KV_STATE}': {why}",
                                     "system"), raw=raw, readable=False)


def parse_record(raw: str | None) -> StateRecord:
    """Parse the stored text. Only a missing record is ACTIVE; anything unreadable is HALTED (never ACTIVE)."""
    if raw is None:
        return StateRecord(TradingStatus(TradingState.ACTIVE))
    try:
        rec = json.loads(raw)
    except ValueError as exc:
        return unreadable_record(raw, f"not JSON ({exc})")
    if not isinstance(rec, dict):
        return unreadable_record(raw, f"expected an object, found {raw[:40]!r}")
    stored_state = rec.get("state")
    try:
        state = TradingState(stored_state) if isinstance(stored_state, str) else None
    except ValueError:
        state = None
    if state is None:
        return unreadable_record(raw, f"unknown state {stored_state!r}")
    seq = rec.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        return unreadable_record(raw, f"bad sequence number {seq!r}")
    texts = {k: rec.get(k, "") for k in ("reason", "by", "since")}
    flags = {k: rec.get(k, False) for k in ("flatten", "reset")}
    if not all(isinstance(v, str) for v in texts.values()) or not all(isinstance(v, bool) for v in flags.values()):
        return unreadable_record(raw, "a field has the wrong type")
    return StateRecord(TradingStatus(state, texts["reason"], texts["by"], texts["since"]), seq,
                       flags["flatten"] and state is TradingState.HALTED, flags["reset"], raw)


def read_raw(store: Store) -> str | None:
    rows = store.query("SELECT value FROM kv WHERE key=?", (KV_STATE,))
    if not rows:
        return None
    value = rows[0][0]
    return value if isinstance(value, str) else repr(value)  # NULL or a non-text value: unreadable


def read_record(store: Store) -> StateRecord:
    return parse_record(read_raw(store))


def read_status(store: Store) -> TradingStatus:
    return read_record(store).status


_ANY = object()


def write_record(store: Store, status: TradingStatus, *, flatten: bool = False, reset: bool = False,
                 expect: object = _ANY, keep_flatten: bool = True) -> tuple[bool, StateRecord]:
    """Compare-and-set the record in one immediate transaction (serialised with every other process).

    ``expect``: the raw text the writer last saw; when the store holds something else the write is refused and
    the stored record returned. A stored HALTED is never replaced by another state unless ``reset``. A HALTED
    written over a HALTED keeps a pending flatten intent unless ``keep_flatten`` is False."""
    with store.transaction():
        cur = read_record(store)
        if expect is not _ANY and cur.raw != expect:
            return False, cur
        halted = TradingState.HALTED
        if cur.status.state is halted and status.state is not halted and not reset:
            return False, cur
        if status.state is halted and keep_flatten and cur.flatten:
            flatten = True
        rec: dict[str, Any] = {"state": status.state.value, "reason": status.reason, "by": status.by,
                               "since": status.since, "seq": cur.seq + 1, "flatten": bool(flatten)}
        if reset:
            rec["reset"] = True
        raw = json.dumps(rec, sort_keys=True)
        store.execute("INSERT INTO kv(key, value, updated_at) VALUES (?,?,?) ON CONFLICT(key) DO UPDATE SET "
                      "value=excluded.value, updated_at=excluded.updated_at", (KV_STATE, raw, now_iso(store)))
        store.audit.record(status.by or "system", f"trading_state:{status.state.value}",
                           {"reason": status.reason, "flatten": bool(flatten)})
        store.execute("INSERT INTO risk_events(ts, kind, order_id, detail) VALUES (?,?,?,?)",
                      (now_iso(store), f"trading_state:{status.state.value}", None,
                       json.dumps({"reason": status.reason, "by": status.by, "flatten": bool(flatten)})))
    return True, parse_record(raw)


@contextlib.contextmanager
def short_busy_wait(store: Store, ms: int) -> Iterator[None]:
    """Let writes on ``store``'s connection wait at most ``ms`` for another process's lock (the store waits 10 s
    by default). Holds the store's lock throughout, so no other thread's statement runs with the short wait."""
    with store._lock:
        previous = int(store.query("PRAGMA busy_timeout")[0][0])
        store.execute(f"PRAGMA busy_timeout={int(ms)}")
        try:
            yield
        finally:
            store.execute(f"PRAGMA busy_timeout={previous}")


def trip_in_store(store: Store, reason: str, by: str = "cli", flatten: bool = False) -> TradingStatus:
    """Trip the switch from any process sharing the database (a running engine acts within 200 ms; one that is
    not running finds HALTED — and a flatten intent — at its next start). Works on a damaged record."""
    status = TradingStatus(TradingState.HALTED, reason, by, now_iso(store))
    write_record(store, status, flatten=flatten)
    return status


def reset_in_store(store: Store, by: str = "cli") -> TradingStatus:
    """Reset to ACTIVE from another process (explicit: the CLI requires ``--yes``)."""
    status = TradingStatus(TradingState.ACTIVE, "reset", by, now_iso(store))
    write_record(store, status, reset=True)
    return status
