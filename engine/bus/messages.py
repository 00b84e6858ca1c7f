"""Base message types. Commands are imperative (one handler); events are past-tense facts (fan-out).

Every message is a frozen dataclass; nobody mutates a message after it is published.
Packages define their own events next to the code that publishes them, subclassing :class:`Event`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import ClassVar

#: ``Message.ts`` until the bus stamps it: publishers rarely know the engine's clock, the bus does, so a
#: message built without a time gets the bus's clock time when it is published or sent (never wall time
#: behind the engine's back). Far in the past, so an unpublished message cannot pass for a current one.
UNSTAMPED = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True, kw_only=True)
class Message:
    ts: datetime = UNSTAMPED


@dataclass(frozen=True, slots=True, kw_only=True)
class Event(Message):
    """A fact. ``conflate`` events keep only the latest per :meth:`conflation_key` for slow subscribers."""

    conflate: ClassVar[bool] = False
    #: severity shown in the event log: debug | info | warning | error | critical
    severity: ClassVar[str] = "info"

    def conflation_key(self) -> object:
        return None

    def describe(self) -> str:
        """One line for the event log."""
        return type(self).__name__


@dataclass(frozen=True, slots=True, kw_only=True)
class Command(Message):
    """An instruction addressed to exactly one handler."""
