"""Strategy templates: build the legs of common option structures from a chain.

Strikes are chosen on the listed strike grid of the chosen expiry, counted in *strike steps* from a
centre strike (default: the strike nearest the spot). Direction convention: ``long`` structures are
bought for a debit (long vertical = debit spread, long straddle/strangle, long butterfly, long
calendar = sell near / buy far); ``short`` is the mirror image (credit). An iron condor is ``short``
(credit) by default, like traders mean it.

An iron condor is better built **by delta**: short strikes at ``short_delta`` (the 16-delta put and call
sell about one standard deviation out) and long wings ``wing_dollars`` beyond them. Counting strike steps
from ATM gave a $1-wide condor one strike from the money on SPY (598P/599P/601C/602C: $0.95 credit,
$5 max loss, 6 % probability of profit, commissions above the max loss).
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

import numpy as np

from engine.analytics.chain_metrics import chain_metrics
from engine.model import Leg, OptionChain, Side
from engine.model.chain import datetime64_in

#: condor defaults: short strikes at 16 Δ, wings about 1 % of the spot wide (rounded to listed strikes)
DEFAULT_SHORT_DELTA = 0.16
DEFAULT_WING_PCT = 0.01


class Template(StrEnum):
    VERTICAL = "vertical"
    IRON_CONDOR = "iron_condor"
    STRANGLE = "strangle"
    STRADDLE = "straddle"
    CALENDAR = "calendar"
    BUTTERFLY = "butterfly"


class TemplateError(ValueError):
    """The chain cannot supply the strikes/expiries a template needs (message says which)."""


def _expiry_rows(chain: OptionChain, expiry: np.datetime64 | date) -> np.ndarray:
    e = datetime64_in(expiry, "D")
    rows = np.nonzero(chain.expiry.astype("datetime64[D]") == e)[0]
    if len(rows) == 0:
        raise TemplateError(f"expiry {e} is not in the {chain.underlying} chain")
    return rows


def _strike_grid(chain: OptionChain, rows: np.ndarray) -> np.ndarray:
    return np.unique(chain.strike[rows])


def _row(chain: OptionChain, rows: np.ndarray, strike: float, call: bool) -> int:
    hit = rows[(chain.strike[rows] == strike) & (chain.is_call[rows] == call)]
    if len(hit) == 0:
        raise TemplateError(f"no {'call' if call else 'put'} at strike {strike:g} in the chosen expiry")
    return int(hit[0])


def _pick(grid: np.ndarray, center_index: int, steps: int) -> float:
    i = center_index + steps
    if not 0 <= i < len(grid):
        raise TemplateError(
            f"strike {steps:+d} steps from {grid[center_index]:g} is outside the listed strikes "
            f"({grid[0]:g}–{grid[-1]:g})"
        )
    return float(grid[i])


def _leg(chain: OptionChain, row: int, side: Side, ratio: int = 1) -> Leg:
    return Leg(chain.option(row), side, ratio)


def build_template(
    template: Template | str,
    chain: OptionChain,
    expiry: np.datetime64 | date,
    *,
    center: float | None = None,
    width: int = 1,
    wing: int = 1,
    call: bool = True,
    long: bool | None = None,
    far_expiry: np.datetime64 | date | None = None,
    short_delta: float | None = None,
    wing_dollars: float | None = None,
    r: float = 0.0,
    q: float = 0.0,
) -> tuple[Leg, ...]:
    """Legs of ``template`` on ``chain`` at ``expiry`` (one unit; the order quantity multiplies them).

    ``center``: centre strike (default ATM). ``width``: strike steps from the centre to the short
    strikes (strangle, condor) or between the strikes (vertical, butterfly wings). ``wing``: condor
    wing width in steps. ``call``: call or put version (vertical, calendar, butterfly). ``long``: see the
    module docstring (default: True, except iron condor False). ``far_expiry``: the calendar's back month
    (default: the next listed expiry after ``expiry``). ``short_delta`` (iron condor): build by delta —
    short strikes nearest that |Δ| (0 < Δ < 0.5) and wings ``wing_dollars`` beyond them (default about
    1 % of spot); ``r``/``q`` price the deltas.
    """
    template = Template(template)
    if width < 1 or wing < 1:
        raise TemplateError(f"width and wing must be at least one strike step, got width={width}, wing={wing}")
    if long is None:
        long = template is not Template.IRON_CONDOR
    rows = _expiry_rows(chain, expiry)
    grid = _strike_grid(chain, rows)
    ref = chain.spot if center is None else center
    ci = int(np.argmin(np.abs(grid - ref)))
    k0 = float(grid[ci])
    buy, sell = (Side.BUY, Side.SELL) if long else (Side.SELL, Side.BUY)

    if template is Template.STRADDLE:
        return (_leg(chain, _row(chain, rows, k0, True), buy), _leg(chain, _row(chain, rows, k0, False), buy))

    if template is Template.STRANGLE:
        kp, kc = _pick(grid, ci, -width), _pick(grid, ci, width)
        return (_leg(chain, _row(chain, rows, kp, False), buy), _leg(chain, _row(chain, rows, kc, True), buy))

    if template is Template.VERTICAL:
        if call:  # debit call spread: buy the lower strike
            k_buy, k_sell = k0, _pick(grid, ci, width)
        else:  # debit put spread: buy the higher strike
            k_buy, k_sell = k0, _pick(grid, ci, -width)
        return (
            _leg(chain, _row(chain, rows, k_buy, call), buy),
            _leg(chain, _row(chain, rows, k_sell, call), sell),
        )

    if template is Template.BUTTERFLY:
        lo, hi = _pick(grid, ci, -width), _pick(grid, ci, width)
        return (
            _leg(chain, _row(chain, rows, lo, call), buy),
            _leg(chain, _row(chain, rows, k0, call), sell, 2),
            _leg(chain, _row(chain, rows, hi, call), buy),
        )

    if template is Template.IRON_CONDOR and short_delta is not None:
        return _condor_by_delta(chain, rows, short_delta, wing_dollars, buy, sell, r, q)

    if template is Template.IRON_CONDOR:
        # long=False (default): sell the inner strikes, buy the wings -> credit; long=True is the debit mirror
        kp_in, kc_in = _pick(grid, ci, -width), _pick(grid, ci, width)
        kp_out, kc_out = _pick(grid, ci, -width - wing), _pick(grid, ci, width + wing)
        return (
            _leg(chain, _row(chain, rows, kp_out, False), sell),
            _leg(chain, _row(chain, rows, kp_in, False), buy),
            _leg(chain, _row(chain, rows, kc_in, True), buy),
            _leg(chain, _row(chain, rows, kc_out, True), sell),
        )

    # calendar: sell the near month, buy the far month, same strike (long = debit)
    expiries = np.unique(chain.expiry.astype("datetime64[D]"))
    near = datetime64_in(expiry, "D")
    if far_expiry is None:
        later = expiries[expiries > near]
        if len(later) == 0:
            raise TemplateError(f"a calendar needs an expiry after {near}; none is listed")
        far = later[0]
    else:
        far = datetime64_in(far_expiry, "D")
        if far <= near:
            raise TemplateError(f"calendar back month {far} must be after the front month {near}")
    far_rows = _expiry_rows(chain, far)
    return (
        _leg(chain, _row(chain, rows, k0, call), sell),
        _leg(chain, _row(chain, far_rows, k0, call), buy),
    )


def _condor_by_delta(chain: OptionChain, rows: np.ndarray, short_delta: float, wing_dollars: float | None,
                     buy: Side, sell: Side, r: float, q: float) -> tuple[Leg, ...]:
    if not 0 < short_delta < 0.5:
        raise TemplateError(f"short delta must be between 0 and 0.5 (0.16 = 16 Δ), got {short_delta:g}")
    spot = float(chain.spot)
    wing = spot * DEFAULT_WING_PCT if wing_dollars is None else float(wing_dollars)
    if not (np.isfinite(wing) and wing > 0):
        raise TemplateError(f"wing width must be a positive number of dollars, got {wing_dollars!r}")
    m = chain_metrics(chain, rows, r=r, q=q)
    delta = np.asarray(m.delta, float)
    strikes = chain.strike[rows]
    calls = chain.is_call[rows]
    puts_ok = ~calls & np.isfinite(delta) & (strikes < spot)
    calls_ok = calls & np.isfinite(delta) & (strikes > spot)
    if not puts_ok.any() or not calls_ok.any():
        raise TemplateError("no quoted out-of-the-money puts and calls with a delta in the chosen expiry")
    kp = float(strikes[puts_ok][np.argmin(np.abs(np.abs(delta[puts_ok]) - short_delta))])
    kc = float(strikes[calls_ok][np.argmin(np.abs(delta[calls_ok] - short_delta))])
    grid = _strike_grid(chain, rows)
    below = grid[grid <= kp - wing + 1e-9]
    above = grid[grid >= kc + wing - 1e-9]
    if len(below) == 0 or len(above) == 0:
        raise TemplateError(f"wings ${wing:g} beyond {kp:g}/{kc:g} are outside the listed strikes "
                            f"({grid[0]:g}–{grid[-1]:g})")
    kp_out, kc_out = float(below[-1]), float(above[0])
    return (
        _leg(chain, _row(chain, rows, kp_out, False), sell),
        _leg(chain, _row(chain, rows, kp, False), buy),
        _leg(chain, _row(chain, rows, kc, True), buy),
        _leg(chain, _row(chain, rows, kc_out, True), sell),
    )
