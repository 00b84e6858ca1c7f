"""Historical data on the loopback TWS: ``reqHistoricalData`` (20) answered by ``historicalData`` (17), the
bars and their end in one message at server version 176 (a separate ``historicalDataEnd`` only exists from 196),
``cancelHistoricalData`` (25), and IB's pacing enforced as IB does it: error 162 "Historical data request pacing
violation" for a request identical to one within 15 s, a 7th request for the same contract and kind within 2 s,
or a 61st within 10 minutes.

Layouts as ``ib_async.client.reqHistoricalData`` sends them and ``ib_async.decoder.historicalData`` reads them.
The fake's pacing windows are its own (a loopback server's clock, like TWS's): tests count the violations it saw.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.brokers.fakes.tws_server import FakeTws, _Conn

PACING_MESSAGE = "Historical Market Data Service error message:Historical data request pacing violation"
NO_DATA_MESSAGE = "Historical Market Data Service error message:HMDS query returned no data"


@dataclass
class HistoryRequest:
    req_id: int
    symbol: str
    con_id: int
    end: str
    bar_size: str
    duration: str
    use_rth: bool
    what: str
    format_date: str
    keep_up_to_date: bool
    answered: str = ""  # "bars" | "pacing" | "no data"


@dataclass
class TwsHistory:
    """Daily bars by (symbol, whatToShow): ``bars[("SPY", "TRADES")] = [(day, close), ...]`` in any order."""

    fake: FakeTws
    bars: dict[tuple[str, str], list[tuple[date, float]]] = field(default_factory=dict)
    requests: list[HistoryRequest] = field(default_factory=list)
    violations: int = 0
    force_violations: int = 0  # answer the next N requests with a pacing violation (another client's fault)
    _times: deque[float] = field(default_factory=deque)
    _by_key: dict[tuple[int, str], deque[float]] = field(default_factory=dict)
    _by_request: dict[tuple[Any, ...], float] = field(default_factory=dict)

    def request(self, conn: _Conn, f: list[str]) -> None:
        """``[20, reqId, <12 contract fields>, includeExpired, end, barSize, duration, useRTH, whatToShow,
        formatDate, keepUpToDate, chartOptions]`` (no combo legs: stock contracts only)."""
        req_id = int(f[1])
        con_id, symbol = int(f[2] or 0), f[3]
        end, bar_size, duration, use_rth, what, fmt = f[15], f[16], f[17], f[18] == "1", f[19], f[20]
        r = HistoryRequest(req_id, symbol, con_id, end, bar_size, duration, use_rth, what, fmt, f[21] == "1")
        self.requests.append(r)
        if self._paced(r):
            self.violations += 1
            r.answered = "pacing"
            self.fake._send(conn, 4, 2, req_id, 162, PACING_MESSAGE, "")
            return
        rows = sorted(self.bars.get((symbol, what), []))
        before = _end_day(end)
        rows = [(d, v) for d, v in rows if before is None or d < before][-_sessions(duration):]
        if not rows:
            r.answered = "no data"
            self.fake._send(conn, 4, 2, req_id, 162, NO_DATA_MESSAGE, "")
            return
        r.answered = "bars"
        fields: list[Any] = []
        for d, v in rows:  # date, open, high, low, close, volume, WAP, bar count
            fields += [d.strftime("%Y%m%d"), v, v, v, v, 1000 if what == "TRADES" else -1, v, 10]
        start = rows[0][0].strftime("%Y%m%d 00:00:00")
        stop = rows[-1][0].strftime("%Y%m%d 23:59:59")
        self.fake._send(conn, 17, req_id, start, stop, len(rows), *fields)

    def _paced(self, r: HistoryRequest) -> bool:
        if self.force_violations > 0:
            self.force_violations -= 1
            return True
        now = time.monotonic()
        while self._times and now - self._times[0] >= 600:
            self._times.popleft()
        same = self._by_key.setdefault((r.con_id, r.what), deque())
        while same and now - same[0] >= 2:
            same.popleft()
        ident = (r.con_id, r.end, r.duration, r.bar_size, r.what, r.use_rth)
        last = self._by_request.get(ident)
        if len(self._times) >= 60 or len(same) >= 6 or (last is not None and now - last < 15):
            return True
        self._times.append(now)
        same.append(now)
        self._by_request[ident] = now
        return False


def _end_day(end: str) -> date | None:
    """The first day a request's ``endDateTime`` excludes ("" = now: nothing excluded)."""
    s = end.strip()
    if not s:
        return None
    return datetime.strptime(s[:8], "%Y%m%d").date()


def _sessions(duration: str) -> int:
    """Sessions in ``"N D"`` / ``"N W"`` / ``"N M"`` / ``"N Y"`` (≈ 5 per week)."""
    n, unit = duration.split()
    days = int(n) * {"D": 1, "W": 7, "M": 30, "Y": 365}[unit]
    return max(1, days * 5 // 7)
