"""Shared helpers for the pricing tests: QuantLib reference builders."""

from __future__ import annotations

from typing import Any

import pytest

try:  # QuantLib comes with the dev extra; only the comparisons against it skip without it
    import QuantLib as ql
except ImportError:  # pragma: no cover
    ql = None

#: a test comparing against QuantLib's reference values (identities and property tests run without it)
needs_quantlib = pytest.mark.skipif(ql is None, reason="QuantLib (the dev extra) is not installed")

TODAY: Any = ql.Date(15, 1, 2025) if ql is not None else None


def ql_setup() -> None:
    ql.Settings.instance().evaluationDate = TODAY


def ql_process(S: float, r: float, q: float, sigma: float):  # type: ignore[no-untyped-def]
    dc = ql.Actual365Fixed()
    spot = ql.QuoteHandle(ql.SimpleQuote(S))
    rts = ql.YieldTermStructureHandle(ql.FlatForward(TODAY, r, dc, ql.Continuous))
    qts = ql.YieldTermStructureHandle(ql.FlatForward(TODAY, q, dc, ql.Continuous))
    vts = ql.BlackVolTermStructureHandle(ql.BlackConstantVol(TODAY, ql.NullCalendar(), sigma, dc))
    return ql.BlackScholesMertonProcess(spot, qts, rts, vts)


def ql_option(is_call: bool, K: float, days: int, exercise: str = "european"):  # type: ignore[no-untyped-def]
    payoff = ql.PlainVanillaPayoff(ql.Option.Call if is_call else ql.Option.Put, K)
    maturity = TODAY + days
    ex = ql.EuropeanExercise(maturity) if exercise == "european" else ql.AmericanExercise(TODAY, maturity)
    return ql.VanillaOption(payoff, ex)
