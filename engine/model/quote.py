"""Top-of-book quotes. Bad quotes (crossed, negative, NaN) are flagged, never fatal."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from enum import IntFlag


class QuoteFlag(IntFlag):
    OK = 0
    MISSING_BID = 1
    MISSING_ASK = 2
    NAN = 4
    NEGATIVE = 8
    CROSSED = 16
    LOCKED = 32
    ZERO_BID = 64


def _bad(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


@dataclass(frozen=True, slots=True)
class Quote:
    """Bid/ask/last with sizes. Prices are floats (market data); orders use Decimal."""

    symbol: str
    bid: float
    ask: float
    ts: datetime
    bid_size: float = 0.0
    ask_size: float = 0.0
    last: float = math.nan
    volume: float = 0.0
    open_interest: float = 0.0

    @property
    def flags(self) -> QuoteFlag:
        f = QuoteFlag.OK
        bid, ask = self.bid, self.ask
        if _bad(bid) or _bad(ask) or any(
            isinstance(v, float) and (math.isinf(v)) for v in (bid, ask)
        ):
            f |= QuoteFlag.NAN
            if _bad(bid):
                f |= QuoteFlag.MISSING_BID
            if _bad(ask):
                f |= QuoteFlag.MISSING_ASK
            return f
        if bid < 0 or ask < 0:
            f |= QuoteFlag.NEGATIVE
        if bid == 0:
            f |= QuoteFlag.ZERO_BID
        if bid > ask:
            f |= QuoteFlag.CROSSED
        elif bid == ask:
            f |= QuoteFlag.LOCKED
        return f

    @property
    def is_usable(self) -> bool:
        """True when a mid price is meaningful: finite, non-negative and not crossed."""
        return not (self.flags & (QuoteFlag.NAN | QuoteFlag.NEGATIVE | QuoteFlag.CROSSED))

    @property
    def mid(self) -> float:
        return 0.5 * (self.bid + self.ask) if self.is_usable else math.nan

    @property
    def spread(self) -> float:
        return self.ask - self.bid if self.is_usable else math.nan
