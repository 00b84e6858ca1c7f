"""Symbol search and earnings dates: what a feed knows about symbols beyond its chains.

Why: the watchlist's "add symbol" field completes from the running feed. The simulated market lists its own few
underlyings; a connected broker knows thousands, so its feed asks the broker (tastytrade
``GET /symbols/search/{prefix}``, IBKR ``reqMatchingSymbols``) and the view sends the ``SearchSymbols`` command
instead of reading a list. Earnings dates come from the broker where it gives them (tastytrade's market metrics,
``earnings.expected-report-date``), cached by the feed so the watchlist's next-earnings column reads them without
I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

#: what a search prefix may contain: letters, digits and the separators tickers use (BRK.B, BF/B, ^VIX, RDS-A)
_PREFIX = re.compile(r"^[A-Za-z0-9.\-/^ ]{1,20}$")
MAX_RESULTS = 50


class SymbolSearchError(ValueError):
    """A search that cannot be sent (empty or malformed prefix, bad limit); the message says why."""


@dataclass(frozen=True, slots=True)
class SymbolMatch:
    """One search result. ``optionable`` is None when the source does not say whether options are listed."""

    symbol: str
    description: str = ""
    kind: str = "equity"  # equity | index | etf | other, as far as the source tells
    exchange: str = ""
    optionable: bool | None = None


def check_search(prefix: object, limit: object) -> tuple[str, int]:
    """The normalised prefix (upper case, trimmed) and limit, or :class:`SymbolSearchError` naming the problem."""
    if not isinstance(prefix, str):
        raise SymbolSearchError(f"a search prefix is text, got {type(prefix).__name__}")
    text = prefix.strip()
    if not text:
        raise SymbolSearchError("type at least one character to search for a symbol")
    if not _PREFIX.match(text):
        raise SymbolSearchError(f"{text[:24]!r} is not a symbol prefix (letters, digits and . - / ^ only, "
                                "at most 20 characters)")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_RESULTS:
        raise SymbolSearchError(f"the result limit must be a whole number from 1 to {MAX_RESULTS}, got {limit!r}")
    return text.upper(), limit


def match_own(symbols: Iterable[str], prefix: str, limit: int) -> list[SymbolMatch]:
    """The feed's own symbols starting with ``prefix`` (the simulated market's search): exact match first."""
    p = prefix.upper()
    found = sorted({s for s in symbols if s.upper().startswith(p)}, key=lambda s: (s.upper() != p, s))
    return [SymbolMatch(s, optionable=True) for s in found[:limit]]


def rank_matches(matches: Iterable[SymbolMatch], prefix: str, limit: int) -> list[SymbolMatch]:
    """A broker's answer in a stable order: the exact symbol, then symbols starting with the prefix, then the
    rest (matched on the description), each alphabetical; duplicates dropped."""
    p = prefix.upper()
    seen: dict[str, SymbolMatch] = {}
    for m in matches:
        key = m.symbol.upper()
        if key and key not in seen:
            seen[key] = m
    ordered = sorted(seen.values(), key=lambda m: (m.symbol.upper() != p, not m.symbol.upper().startswith(p),
                                                   m.symbol.upper()))
    return ordered[:limit]


__all__ = ["MAX_RESULTS", "SymbolMatch", "SymbolSearchError", "check_search", "match_own", "rank_matches"]
