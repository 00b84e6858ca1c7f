"""Money and count formatting shared by every view, so one figure reads the same everywhere.

Traders read the sign first: a loss is ``-$249.26`` (sign before the currency symbol), never ``$-249.26``
or ``249.26 $``. Counts agree with their noun (``1 error``, ``2 errors``).
"""

from __future__ import annotations

import math
from decimal import Decimal


def money(value: float | Decimal | int | None, decimals: int = 2, *, signed: bool = False,
          unbounded: str = "unlimited", missing: str = "—") -> str:
    """``$2,541.00`` / ``-$249.26``; ``signed`` adds ``+`` to gains; ±inf reads ``unbounded``.

    ``None``, NaN and values that are not numbers read ``missing`` (unknown is shown as unknown).
    """
    if value is None:
        return missing
    try:
        v = float(value)
    except (TypeError, ValueError):
        return missing
    if math.isnan(v):
        return missing
    if math.isinf(v):
        return unbounded
    body = f"${abs(v):,.{decimals}f}"
    if round(v, decimals) == 0:
        return body
    if v < 0:
        return "-" + body
    return ("+" + body) if signed else body


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """``1 error`` / ``3 errors`` (``plural_form`` for irregular nouns)."""
    word = noun if count == 1 else (plural_form or noun + "s")
    return f"{count:,} {word}"
