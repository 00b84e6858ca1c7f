"""The interface a feed implements to hand the history service its own daily history.

A source answers one question: the last ``sessions`` daily rows of some underlyings strictly before a
day. It runs in an executor (it may simulate, read files or call a broker's history endpoint), so it
must not touch the event loop, the bus or the store; it returns plain arrays and the service writes
them. Brokers' history endpoints implement this same protocol.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Protocol

import numpy as np


class HistorySourceError(RuntimeError):
    """A source's history could not be fetched (a broker not connected, no answer, pacing); the message says
    which and why."""


@dataclass(frozen=True, eq=False)
class DailySeries:
    """One underlying's daily rows, oldest first: the close and the 30-day constant-maturity ATM IV, and where
    the source has it the 30-day historical (realised) volatility (IBKR's ``HISTORICAL_VOLATILITY``; NaN on days
    without)."""

    underlying: str
    days: tuple[date, ...]
    close: np.ndarray
    atm_iv: np.ndarray
    hist_vol: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.days)
        if len(self.close) != n or len(self.atm_iv) != n:
            raise ValueError(f"{self.underlying}: {n} days but {len(self.close)} closes and "
                             f"{len(self.atm_iv)} ATM IVs")
        if self.hist_vol is not None and len(self.hist_vol) != n:
            raise ValueError(f"{self.underlying}: {n} days but {len(self.hist_vol)} historical vols")
        if any(b <= a for a, b in zip(self.days, self.days[1:], strict=False)):
            raise ValueError(f"{self.underlying}: days must be strictly increasing")


class HistorySource(Protocol):
    """Where backfilled history comes from (the simulated market's seeded path, a broker, a file)."""

    #: recorded with every stored row (``iv_history.source``) and in ``history_backfills``
    name: str

    def daily(self, underlyings: Sequence[str], before: date, sessions: int) -> dict[str, DailySeries]:
        """The last ``sessions`` sessions strictly before ``before`` for each underlying it knows."""
        ...


class LoopBoundSource(ABC):
    """A broker's history source: the fetch is a coroutine on the engine loop (the broker's connection lives
    there), while the history service calls :meth:`daily` from its executor thread and waits with a bound.

    :meth:`cancel` ends a fetch in flight, so the service's stop (or a switch to another source) does not leave
    its thread blocked until the bound runs out."""

    name = "broker"

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.loop = loop
        self.timeout_s = timeout_s
        self._inflight: set[concurrent.futures.Future[dict[str, DailySeries]]] = set()

    @abstractmethod
    async def fetch(self, underlyings: list[str], before: date, sessions: int) -> dict[str, DailySeries]:
        """The broker's request for these sessions, run on :attr:`loop` (each broker writes its own)."""

    def daily(self, underlyings: Sequence[str], before: date, sessions: int) -> dict[str, DailySeries]:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            raise HistorySourceError(f"{self.name} history: daily() blocks; call it from an executor thread")
        future = asyncio.run_coroutine_threadsafe(self.fetch(list(underlyings), before, sessions), self.loop)
        self._inflight.add(future)
        try:
            return future.result(self.timeout_s + 5.0)
        except TimeoutError:
            future.cancel()
            raise HistorySourceError(f"{self.name} history: no answer within {self.timeout_s:.0f} s") from None
        except concurrent.futures.CancelledError:
            raise HistorySourceError(f"{self.name} history: cancelled") from None
        finally:
            self._inflight.discard(future)

    def cancel(self) -> None:
        """Cancel every fetch in flight (thread-safe)."""
        for future in list(self._inflight):
            future.cancel()
