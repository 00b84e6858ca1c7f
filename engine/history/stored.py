"""The history service's stored rows as a :class:`~engine.history.source.HistorySource`.

Why: once a broker has backfilled real history (its rows supersede the simulated market's in
``iv_history``), the ML pipeline must train, explain and gate on those rows — not on the simulated market's
seeded path. ML work runs in worker processes, so the source carries the database path (picklable) rather
than the engine's open :class:`~engine.store.database.Store`, and opens its own read-only connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import numpy as np

from engine.history.source import DailySeries


class StoredHistorySource:
    """Reads ``iv_history`` (days with a close and a positive ATM IV) from the app's SQLite file."""

    def __init__(self, database: Path, *, origin: str) -> None:
        self.database = Path(database)
        #: where the rows came from (the broker's source name), for the model's metadata and the panel
        self.origin = origin
        self.name = f"stored {origin}"

    def daily(self, underlyings: Sequence[str], before: date, sessions: int) -> dict[str, DailySeries]:
        """The last ``sessions`` stored sessions strictly before ``before`` per underlying (those with none are
        left out, as a broker leaves out a symbol it does not know)."""
        if sessions < 1:
            raise ValueError(f"sessions must be positive, got {sessions}")
        uri = f"{self.database.resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=5.0)
        try:
            out: dict[str, DailySeries] = {}
            for sym in underlyings:
                rows = conn.execute(
                    "SELECT day, close, atm_iv FROM iv_history WHERE underlying = ? AND day < ? "
                    "AND close IS NOT NULL AND atm_iv > 0 ORDER BY day DESC LIMIT ?",
                    (sym, before.isoformat(), int(sessions))).fetchall()[::-1]
                if rows:
                    out[sym] = DailySeries(sym, tuple(date.fromisoformat(r[0]) for r in rows),
                                           np.array([r[1] for r in rows], dtype=float),
                                           np.array([r[2] for r in rows], dtype=float))
            return out
        finally:
            conn.close()

    def __repr__(self) -> str:
        return f"StoredHistorySource({self.database.name!r}, origin={self.origin!r})"
