"""The trade journal: notes and tags per trade (an order), searchable, exported to CSV.

Notes are rows of ``journal_notes`` keyed by the order id; a trade may carry several notes (a plan before, a
review after), each with its own tags. Tags are stored normalised (lower case, ``,``-separated, no blanks) so
``--tag earnings`` finds ``Earnings``. Writing a note beside the running app is safe (WAL), like ``optiondesk
kill``: the journal does not take the data folder's lock.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

_TAG_RE = re.compile(r"^[\w.\-/+]{1,40}$")


class JournalError(ValueError):
    """Bad journal input (unknown order, an empty note, a malformed tag); the message says which and why."""


@dataclass(frozen=True)
class JournalNote:
    id: int
    order_id: str
    ts: datetime
    note: str
    tags: tuple[str, ...]
    symbols: tuple[str, ...] = ()
    strategy_id: str = ""
    status: str = ""


def normalize_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Lower-cased, de-duplicated tags in the given order; a tag with spaces or punctuation is refused."""
    out: list[str] = []
    for raw in tags:
        for t in str(raw).split(","):
            t = t.strip().lower().lstrip("#")
            if not t:
                continue
            if not _TAG_RE.match(t):
                raise JournalError(f"tag {t!r} is not valid: use letters, digits and . - _ / + (at most 40)")
            if t not in out:
                out.append(t)
    return tuple(out)


def resolve_order_id(store: Any, ref: str) -> str:
    """The order id for ``ref``: an order id, a client order id, or a unique prefix of either."""
    ref = ref.strip()
    if not ref:
        raise JournalError("no order given: pass an order id (see `optiondesk journal trades`)")
    rows = store.query("SELECT order_id FROM orders WHERE order_id=? OR client_order_id=?", (ref, ref))
    if rows:
        return str(rows[0]["order_id"])
    like = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    rows = store.query("SELECT order_id FROM orders WHERE order_id LIKE ? ESCAPE '\\' "
                       "OR client_order_id LIKE ? ESCAPE '\\' LIMIT 3", (like, like))
    if len(rows) == 1:
        return str(rows[0]["order_id"])
    if not rows:
        raise JournalError(f"no order {ref!r} in the store: `optiondesk journal trades` lists them")
    raise JournalError(f"{ref!r} matches several orders ({', '.join(r['order_id'] for r in rows)}, …): "
                       "give more of the id")


def add_note(store: Any, order_ref: str, note: str, tags: Sequence[str] = (), *, ts: datetime | None = None) -> int:
    """Attach a note (and tags) to a trade; returns the note's id. A note needs text or at least one tag."""
    order_id = resolve_order_id(store, order_ref)
    clean = normalize_tags(tags)
    text = note.strip()
    if not text and not clean:
        raise JournalError("an empty note: give some text or at least one --tag")
    when = (ts or store.now()).astimezone(UTC).isoformat()
    cur = store.execute("INSERT INTO journal_notes(order_id, ts, note, tags) VALUES (?,?,?,?)",
                        (order_id, when, text, ",".join(clean)))
    return int(cur.lastrowid)


def delete_note(store: Any, note_id: int) -> None:
    cur = store.execute("DELETE FROM journal_notes WHERE id=?", (int(note_id),))
    if cur.rowcount != 1:
        raise JournalError(f"no journal note {note_id}")


def symbols_of(legs_json: str | None) -> tuple[str, ...]:
    if not legs_json:
        return ()
    try:
        return tuple(str(leg["instrument"]["key"]) for leg in json.loads(legs_json))
    except (ValueError, KeyError, TypeError):
        return ()


def search(store: Any, query: str = "", *, tags: Sequence[str] = (), order_id: str | None = None,
           start: datetime | None = None, end: datetime | None = None, limit: int | None = None) -> list[JournalNote]:
    """Notes oldest first. ``query`` matches (case-insensitively) the note, its tags, the order's id, symbols,
    strategy and order tag; every tag in ``tags`` must be on the note."""
    where, params = [], []
    if query.strip():
        like = "%" + query.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        where.append("(lower(n.note) LIKE ? ESCAPE '\\' OR n.tags LIKE ? ESCAPE '\\' OR lower(n.order_id) LIKE ? "
                     "ESCAPE '\\' OR lower(coalesce(o.legs,'')) LIKE ? ESCAPE '\\' OR lower(coalesce(o.strategy_id,''))"
                     " LIKE ? ESCAPE '\\' OR lower(coalesce(o.tag,'')) LIKE ? ESCAPE '\\')")
        params += [like] * 6
    for t in normalize_tags(tags):
        where.append("(',' || n.tags || ',') LIKE ?")
        params.append(f"%,{t},%")
    if order_id is not None:
        where.append("n.order_id=?")
        params.append(order_id)
    if start is not None:
        where.append("n.ts>=?")
        params.append(start.astimezone(UTC).isoformat())
    if end is not None:
        where.append("n.ts<=?")
        params.append(end.astimezone(UTC).isoformat())
    sql = ("SELECT n.*, o.legs AS legs, o.strategy_id AS strategy_id, o.status AS status FROM journal_notes n "
           "LEFT JOIN orders o ON o.order_id = n.order_id")
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY n.ts, n.id"
    if limit:
        sql += f" LIMIT {int(limit)}"
    return [JournalNote(id=int(r["id"]), order_id=r["order_id"], ts=datetime.fromisoformat(r["ts"]), note=r["note"],
                        tags=tuple(t for t in r["tags"].split(",") if t), symbols=symbols_of(r["legs"]),
                        strategy_id=r["strategy_id"] or "", status=r["status"] or "")
            for r in store.query(sql, tuple(params))]


CSV_COLUMNS = ("id", "time_utc", "order_id", "symbols", "strategy", "order_status", "tags", "note")


def to_csv(notes: Sequence[JournalNote]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for n in notes:
        w.writerow([n.id, n.ts.astimezone(UTC).isoformat(), n.order_id, " ".join(n.symbols), n.strategy_id, n.status,
                    " ".join(n.tags), n.note])
    return buf.getvalue()


def export_csv(notes: Sequence[JournalNote], path: str | os.PathLike[str]) -> Path:
    """Write the notes as CSV (UTF-8, one row per note); the file is written whole or not at all."""
    out = Path(path)
    tmp = out.with_name(f".{out.name}.partial")
    try:
        tmp.write_text(to_csv(notes), encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise JournalError(f"could not write {out}: {exc}") from exc
    return out
