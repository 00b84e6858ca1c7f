"""Strategy templates: build the legs of common option structures from a chain.

Strikes are chosen on the listed strike grid of the chosen expiry, counted in *strike steps* from a
centre strike (default: the strike nearest the spot). Direction convention: ``long`` structures are
bought for a debit (long vertical = debit spread, long straddle/strangle, long butterfly, long
calendar = sell near / buy far); ``short`` is the mirror image (credit). An iron condor is ``short``
(credit) by default, like traders mean it.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

import numpy as np

from engine.model import Leg, OptionChain, Side


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
    e = np.datetime64(expiry, "D")
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
) -> tuple[Leg, ...]:
    """Legs of ``template`` on ``chain`` at ``expiry`` (one unit; the order quantity multiplies them).

    ``center``: centre strike (default ATM). ``width``: strike steps from the centre to the short
    strikes (strangle, condor) or between the strikes (vertical, butterfly wings). ``wing``: condor
    wing width in steps. ``call``: call or put version (vertical, calendar, butterfly). ``long``: see the
    module docstring (default: True, except iron condor False). ``far_expiry``: the calendar's back month
    (default: the next listed expiry after ``expiry``).
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
    near = np.datetime64(expiry, "D")
    if far_expiry is None:
        later = expiries[expiries > near]
        if len(later) == 0:
            raise TemplateError(f"a calendar needs an expiry after {near}; none is listed")
        far = later[0]
    else:
        far = np.datetime64(far_expiry, "D")
        if far <= near:
            raise TemplateError(f"calendar back month {far} must be after the front month {near}")
    far_rows = _expiry_rows(chain, far)
    return (
        _leg(chain, _row(chain, rows, k0, call), sell),
        _leg(chain, _row(chain, far_rows, k0, call), buy),
    )
