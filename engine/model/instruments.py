"""Instruments: equities, indices and listed options, with OCC symbol parse/format.

OCC (OSI) symbol: root left-justified to 6 characters, expiry YYMMDD, C/P, strike × 1000 as 8 digits,
e.g. ``"SPY   260619C00600000"``. The compact form without padding (``"SPY260619C00600000"``) is
accepted when parsing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
EQUITY_OPTION_EXPIRY_TIME = time(16, 0)
AM_SETTLEMENT_TIME = time(9, 30)


class Right(StrEnum):
    CALL = "C"
    PUT = "P"

    @classmethod
    def parse(cls, value: str | Right) -> Right:
        if isinstance(value, Right):
            return value
        v = str(value).strip().upper()
        if v in ("C", "CALL"):
            return cls.CALL
        if v in ("P", "PUT"):
            return cls.PUT
        raise ValueError(f"option right must be 'C'/'CALL' or 'P'/'PUT', got {value!r}")


class ExerciseStyle(StrEnum):
    AMERICAN = "american"
    EUROPEAN = "european"


class Settlement(StrEnum):
    """How an option settles: shares delivered, or cash at the PM close / AM opening print."""

    PHYSICAL = "physical"
    CASH_PM = "cash_pm"
    CASH_AM = "cash_am"


class AssetClass(StrEnum):
    EQUITY = "equity"
    INDEX = "index"
    OPTION = "option"


@dataclass(frozen=True, slots=True)
class Equity:
    """A stock or ETF. ``multiplier`` is 1: one share per unit of quantity."""

    symbol: str
    multiplier: int = 1
    tick_size: Decimal = Decimal("0.01")
    asset_class: AssetClass = field(default=AssetClass.EQUITY, init=False)

    @property
    def key(self) -> str:
        return self.symbol


@dataclass(frozen=True, slots=True)
class Index:
    """A cash index (SPX, VIX). Not tradable itself; options on it are cash-settled."""

    symbol: str
    multiplier: int = 1
    tick_size: Decimal = Decimal("0.01")
    asset_class: AssetClass = field(default=AssetClass.INDEX, init=False)

    @property
    def key(self) -> str:
        return self.symbol


_OCC_RE = re.compile(r"^(?P<root>[A-Z0-9.]{1,6}) *(?P<ymd>\d{6})(?P<right>[CP])(?P<strike>\d{8})$")


@dataclass(frozen=True, slots=True)
class Option:
    """A listed option.

    ``root`` is the OCC root (``SPXW``), ``underlying`` the priced underlying (``SPX``);
    ``multiplier`` is the contract's deliverable (100 for standard equity/index options).
    """

    root: str
    expiry: date
    strike: Decimal
    right: Right
    underlying: str = ""
    multiplier: int = 100
    style: ExerciseStyle = ExerciseStyle.AMERICAN
    settlement: Settlement = Settlement.PHYSICAL
    tick_size: Decimal = Decimal("0.01")
    asset_class: AssetClass = field(default=AssetClass.OPTION, init=False)

    def __post_init__(self) -> None:
        if not self.root or len(self.root) > 6:
            raise ValueError(f"option root must be 1-6 characters, got {self.root!r}")
        object.__setattr__(self, "strike", normalize_strike(self.strike))
        if self.strike <= 0:
            raise ValueError(f"option strike must be positive, got {self.strike}")
        if self.strike * 1000 != int(self.strike * 1000) or self.strike >= Decimal(100000):
            raise ValueError(f"strike {self.strike} is not representable in an OCC symbol")
        object.__setattr__(self, "right", Right.parse(self.right))
        if not self.underlying:
            object.__setattr__(self, "underlying", self.root)
        if self.multiplier <= 0:
            raise ValueError(f"multiplier must be positive, got {self.multiplier}")

    @property
    def occ(self) -> str:
        strike_milli = int(self.strike * 1000)
        return f"{self.root:<6}{self.expiry:%y%m%d}{self.right.value}{strike_milli:08d}"

    @property
    def key(self) -> str:
        """Compact OCC symbol without padding; the identity used in dict keys and the store."""
        return self.occ.replace(" ", "")

    @property
    def symbol(self) -> str:
        return self.key

    @property
    def is_call(self) -> bool:
        return self.right is Right.CALL

    @property
    def expires_at(self) -> datetime:
        """Exact expiry instant in UTC: 16:00 New York for PM-settled, 09:30 for AM-settled."""
        t = AM_SETTLEMENT_TIME if self.settlement is Settlement.CASH_AM else EQUITY_OPTION_EXPIRY_TIME
        return datetime.combine(self.expiry, t, tzinfo=NEW_YORK).astimezone(UTC)

    def time_to_expiry(self, now: datetime) -> float:
        """Years ACT/365 from ``now`` (UTC-aware) to :attr:`expires_at`; negative once expired."""
        return (self.expires_at - now).total_seconds() / (365.0 * 86400.0)

    @classmethod
    def from_occ(
        cls,
        symbol: str,
        *,
        underlying: str | None = None,
        multiplier: int = 100,
        style: ExerciseStyle = ExerciseStyle.AMERICAN,
        settlement: Settlement = Settlement.PHYSICAL,
        tick_size: Decimal = Decimal("0.01"),
    ) -> Option:
        """Parse an OCC symbol; a malformed one raises ``ValueError`` naming the problem."""
        if not isinstance(symbol, str):
            raise ValueError(f"OCC symbol must be a string, got {type(symbol).__name__}")
        s = symbol.strip().upper()
        if len(s) < 15:
            raise ValueError(f"OCC symbol {symbol!r} is too short (root + YYMMDD + C/P + 8-digit strike)")
        tail = s[-15:]
        root = s[:-15].strip()
        if not root:
            raise ValueError(f"OCC symbol {symbol!r} has no root")
        if len(root) > 6 or not re.fullmatch(r"[A-Z0-9.]+", root):
            raise ValueError(f"OCC symbol {symbol!r}: root {root!r} must be 1-6 letters/digits")
        ymd, right, strike = tail[:6], tail[6], tail[7:]
        if not ymd.isdigit():
            raise ValueError(f"OCC symbol {symbol!r}: expiry {ymd!r} is not YYMMDD digits")
        if right not in "CP":
            raise ValueError(f"OCC symbol {symbol!r}: right {right!r} must be C or P")
        if not strike.isdigit():
            raise ValueError(f"OCC symbol {symbol!r}: strike {strike!r} must be 8 digits")
        try:
            expiry = date(2000 + int(ymd[:2]), int(ymd[2:4]), int(ymd[4:6]))
        except ValueError as exc:
            raise ValueError(f"OCC symbol {symbol!r}: invalid expiry date {ymd!r} ({exc})") from None
        try:
            strike_value = Decimal(int(strike)) / 1000
        except InvalidOperation:  # pragma: no cover - digits always convert
            raise ValueError(f"OCC symbol {symbol!r}: bad strike {strike!r}") from None
        if strike_value <= 0:
            raise ValueError(f"OCC symbol {symbol!r}: strike must be positive")
        return cls(
            root=root,
            expiry=expiry,
            strike=normalize_strike(strike_value),
            right=Right(right),
            underlying=underlying or root,
            multiplier=multiplier,
            style=style,
            settlement=settlement,
            tick_size=tick_size,
        )


Instrument = Equity | Index | Option


def normalize_strike(value: Decimal | float | int | str) -> Decimal:
    """A strike as a plain Decimal: ``600`` not ``600.000`` or ``6E+2``; ``512.5`` stays ``512.5``."""
    d = Decimal(str(value))
    if d == d.to_integral_value():
        return Decimal(int(d))
    return d.normalize()


def is_occ_symbol(symbol: str) -> bool:
    return bool(_OCC_RE.match(symbol.strip().upper()))
