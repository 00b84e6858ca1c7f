"""Strategy builder: the legs of a named structure chosen by delta or probability on the current chain.

Traders think in deltas and dollars, not in strike steps: "sell the 16-delta put, $5 wide". Counting steps
from the money (the old iron-condor template) gave a $1-wide condor one strike out on SPY. So every
structure here picks its anchor strike by |Δ| (or by probability of expiring out of the money), its wings
by a dollar width snapped to the listed strikes, and its expiry by days to expiry. All selection is one
vectorized pass over the expiry's rows (:func:`engine.analytics.chain_metrics.chain_metrics`).

Direction: every structure has its usual side (``credit`` for condors, strangles, verticals, jade lizard;
``debit`` for butterflies, calendars, diagonals, straddles); ``flip=True`` mirrors every leg. Share legs
(covered call, collar) are ``multiplier`` shares per option contract so one combo unit covers one call.
The figures (net mid/natural, max profit/loss, breakevens, probability of profit, Greeks) are what the
builder panel shows and what the ticket will recompute once the legs are sent there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import numpy as np
from scipy.special import ndtr

from engine.analytics.chain_metrics import chain_metrics
from engine.analytics.payoff import legs_from_order, profile
from engine.analytics.ticket import order_greeks
from engine.model import Equity, Leg, OptionChain, Side
from engine.model.orders import leg_weights
from engine.risk.payoff import PayoffSummary


class Structure(StrEnum):
    VERTICAL = "vertical"
    IRON_CONDOR = "iron_condor"
    IRON_FLY = "iron_fly"
    STRANGLE = "strangle"
    STRADDLE = "straddle"
    CALENDAR = "calendar"
    DIAGONAL = "diagonal"
    BUTTERFLY = "butterfly"
    BROKEN_WING_BUTTERFLY = "broken_wing_butterfly"
    RATIO = "ratio"
    JADE_LIZARD = "jade_lizard"
    COVERED_CALL = "covered_call"
    COLLAR = "collar"


#: display names, in the library's order
STRUCTURE_NAMES: dict[Structure, str] = {
    Structure.VERTICAL: "Vertical", Structure.IRON_CONDOR: "Iron condor", Structure.IRON_FLY: "Iron fly",
    Structure.STRANGLE: "Strangle", Structure.STRADDLE: "Straddle", Structure.CALENDAR: "Calendar",
    Structure.DIAGONAL: "Diagonal", Structure.BUTTERFLY: "Butterfly",
    Structure.BROKEN_WING_BUTTERFLY: "Broken-wing butterfly", Structure.RATIO: "Ratio spread",
    Structure.JADE_LIZARD: "Jade lizard", Structure.COVERED_CALL: "Covered call", Structure.COLLAR: "Collar",
}

#: the anchor |Δ| each structure starts from: OTM shorts sell about one standard deviation out (16 Δ);
#: bodies of flies, calendars and straddles sit at the money (50 Δ)
DEFAULT_DELTA: dict[Structure, float] = {s: 0.16 for s in Structure} | {
    Structure.IRON_FLY: 0.50, Structure.STRADDLE: 0.50, Structure.CALENDAR: 0.50, Structure.BUTTERFLY: 0.50,
    Structure.BROKEN_WING_BUTTERFLY: 0.30, Structure.DIAGONAL: 0.30, Structure.RATIO: 0.25,
    Structure.COVERED_CALL: 0.30, Structure.COLLAR: 0.25,
}

#: structures bought for a debit in their usual form (the rest are sold for a credit)
DEBIT = frozenset({Structure.CALENDAR, Structure.DIAGONAL, Structure.BUTTERFLY, Structure.BROKEN_WING_BUTTERFLY,
                   Structure.STRADDLE, Structure.COVERED_CALL, Structure.COLLAR})
#: structures with one right to choose (the others fix their rights)
ONE_RIGHT = frozenset({Structure.VERTICAL, Structure.CALENDAR, Structure.DIAGONAL, Structure.BUTTERFLY,
                       Structure.BROKEN_WING_BUTTERFLY, Structure.RATIO})
#: structures with two expiries
TWO_EXPIRIES = frozenset({Structure.CALENDAR, Structure.DIAGONAL})

_NICE = np.array([0.5, 1.0, 2.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0])


class BuildError(ValueError):
    """The chain cannot supply what the structure asks for; the message names what and why."""


def default_width(spot: float) -> float:
    """A wing width in dollars scaled to the underlying: about 1 % of spot on a round number.

    $5 on a $600 ETF, $50 on a 6,000 index, $1 on a $100 stock: wide enough that the credit pays for the
    commissions, narrow enough to keep the risk defined and small.
    """
    if not (math.isfinite(spot) and spot > 0):
        return 1.0
    target = 0.01 * spot
    return float(_NICE[np.argmin(np.abs(np.log(_NICE / target)))])


@dataclass(frozen=True)
class BuildSpec:
    """What the trader asked for. ``target`` is |Δ| (by="delta") or probability OTM (by="probability")."""

    structure: Structure
    dte: float = 30.0
    by: str = "delta"
    target: float | None = None
    width: float | None = None  # wing width in dollars (None: :func:`default_width`)
    far_width: float | None = None  # broken-wing butterfly's far wing (None: twice ``width``)
    call: bool = False  # right of one-right structures
    flip: bool = False  # mirror every leg (debit condor, long strangle, short butterfly...)
    far_dte: float | None = None  # calendar/diagonal back month (None: about 30 days after the front)
    ratio: int = 2  # ratio spread: short contracts per long one


@dataclass(frozen=True, eq=False)
class BuiltStrategy:
    """The legs of one combo unit and the figures the builder shows (see :func:`build_strategy`)."""

    structure: Structure
    name: str
    legs: tuple[Leg, ...]
    expiry: np.datetime64
    mid: float  # net per unit, positive debit / negative credit
    natural: float
    summary: PayoffSummary | None  # for the quantity built (dollars)
    max_loss_text: str
    probability_of_profit: float
    greeks: dict[str, float]  # order totals for the quantity built
    leg_delta: np.ndarray  # per leg, NaN for shares' "1"
    notes: tuple[str, ...] = field(default=())


def _nearest_expiry(chain: OptionChain, now: datetime, dte: float, after: np.datetime64 | None = None) -> np.datetime64:
    expiries = np.unique(chain.expiry.astype("datetime64[D]"))
    if after is not None:
        expiries = expiries[expiries > after]
    if len(expiries) == 0:
        raise BuildError(f"no expiry listed after {after}" if after is not None else
                         f"the {chain.underlying} chain lists no expiries")
    today = np.datetime64(now.date(), "D")
    days = (expiries - today).astype(float)
    days_ok = days >= 0
    if not days_ok.any():
        raise BuildError(f"every {chain.underlying} expiry has passed")
    expiries, days = expiries[days_ok], days[days_ok]
    return expiries[int(np.argmin(np.abs(days - dte)))]


class _Side:
    """The OTM rows of one right at one expiry, with |Δ| and probability OTM as arrays."""

    def __init__(self, chain: OptionChain, rows: np.ndarray, call: bool, now: datetime, r: float, q: float) -> None:
        sel = rows[chain.is_call[rows] == call]
        m = chain_metrics(chain, sel, now=now, r=r, q=q)
        ok = np.isfinite(m.delta) & np.isfinite(m.iv) & (m.years > 0)
        self.call = call
        self.rows = sel[ok]
        self.strike = chain.strike[self.rows]
        self.delta = np.abs(m.delta[ok])
        sig = m.iv[ok] * np.sqrt(m.years[ok])
        with np.errstate(divide="ignore", invalid="ignore"):
            d2 = (np.log(chain.spot / self.strike) + (r - q) * m.years[ok]) / sig - 0.5 * sig
        cdf = ndtr(d2)
        self.prob_otm = np.where(call, 1.0 - cdf, cdf)  # put OTM when S_T > K: N(d2); call: N(-d2)
        self.spot = float(chain.spot)

    def by(self, by: str, target: float) -> int:
        """Chain row whose |Δ| (or probability OTM) is nearest ``target``; a clear error when none is near."""
        right = "call" if self.call else "put"
        if len(self.rows) == 0:
            raise BuildError(f"no quoted {right}s with a delta in the chosen expiry")
        values = self.delta if by == "delta" else self.prob_otm
        if by == "delta" and not 0 < target < 1:
            raise BuildError(f"delta must be between 0 and 1 (0.16 = 16 Δ), got {target:g}")
        if by == "probability" and not 0 < target < 1:
            raise BuildError(f"probability OTM must be between 0 and 1 (0.84 = 84 %), got {target:g}")
        lo, hi = float(values.min()), float(values.max())
        slack = 0.02
        if target < lo - slack or target > hi + slack:
            what = f"{100 * target:.3g} Δ" if by == "delta" else f"{100 * target:.3g} % OTM"
            span = (f"{100 * lo:.0f}–{100 * hi:.0f} Δ" if by == "delta" else f"{100 * lo:.0f}–{100 * hi:.0f} % OTM")
            raise BuildError(f"no {right} at {what}: the listed {right}s span {span}")
        return int(self.rows[int(np.argmin(np.abs(values - target)))])


def _strike_row(chain: OptionChain, rows: np.ndarray, strike: float, call: bool, what: str,
                beyond: tuple[float, float] | None = None) -> int:
    """Row of the listed strike nearest ``strike`` (of that right); refuses one beyond the chain's ends.

    ``beyond=(k, sign)``: only strikes at least ``|strike - k|`` on the ``sign`` side of ``k`` qualify, so a
    $5 wing on a grid without that strike takes the next listed one outward (never narrower than asked,
    never onto the short strike itself).
    """
    sel = rows[chain.is_call[rows] == call]
    grid = chain.strike[sel]
    right = "calls" if call else "puts"
    if len(grid) == 0:
        raise BuildError(f"no {right} listed in the chosen expiry")
    unique = np.unique(grid)
    step = float(np.min(np.diff(unique))) if len(unique) > 1 else 0.0
    if strike < grid.min() - step / 2 or strike > grid.max() + step / 2:
        raise BuildError(f"the {what} at {strike:g} is beyond the listed {right} ({grid.min():g}–{grid.max():g})")
    if beyond is not None:
        k, sign = beyond
        ok = sign * (grid - k) >= max(abs(strike - k), 1e-9) - 1e-9
        if not ok.any():
            raise BuildError(f"the {what} at {strike:g} is beyond the listed {right} ({grid.min():g}–{grid.max():g})")
        sel, grid = sel[ok], grid[ok]
    return int(sel[int(np.argmin(np.abs(grid - strike)))])


def _leg(chain: OptionChain, row: int, side: Side, ratio: int = 1) -> Leg:
    return Leg(chain.option(row), side, ratio)


def build_legs(spec: BuildSpec, chain: OptionChain, now: datetime, r: float = 0.0,
               q: float = 0.0) -> tuple[tuple[Leg, ...], np.datetime64]:
    """The legs of one unit of ``spec`` on ``chain`` and the (front) expiry they use."""
    s = Structure(spec.structure)
    if spec.by not in ("delta", "probability"):
        raise BuildError(f"choose strikes by 'delta' or 'probability', not {spec.by!r}")
    target = DEFAULT_DELTA[s] if spec.target is None else float(spec.target)
    if spec.by == "probability" and spec.target is None:
        target = 1.0 - target  # 16 Δ ≈ 84 % OTM
    width = default_width(chain.spot) if spec.width is None else float(spec.width)
    if not (math.isfinite(width) and width > 0):
        raise BuildError(f"wing width must be a positive number of dollars, got {spec.width!r}")
    expiry = _nearest_expiry(chain, now, spec.dte)
    rows = np.nonzero(chain.expiry.astype("datetime64[D]") == expiry)[0]
    puts, calls = _Side(chain, rows, False, now, r, q), _Side(chain, rows, True, now, r, q)
    buy, sell = (Side.SELL, Side.BUY) if spec.flip else (Side.BUY, Side.SELL)
    one = calls if spec.call else puts
    out = +1.0 if spec.call else -1.0  # direction away from the money for the chosen right

    def anchor(side: _Side) -> int:
        return side.by(spec.by, target)

    def k(row: int) -> float:
        return float(chain.strike[row])

    def at(strike: float, call: bool, what: str, expiry_rows: np.ndarray = rows,
           beyond: tuple[float, float] | None = None) -> int:
        return _strike_row(chain, expiry_rows, strike, call, what, beyond)

    def wing(row: int, sign: float, dollars: float, call: bool, what: str) -> int:
        """The listed strike ``dollars`` from ``row``'s strike in direction ``sign`` (strictly beyond it)."""
        return at(k(row) + sign * dollars, call, what, beyond=(k(row), sign))

    def atm(call: bool) -> int:
        return at(float(chain.spot), call, "at-the-money strike")

    if s is Structure.VERTICAL:
        short = anchor(one)
        long_wing = wing(short, out, width, spec.call, "long wing")
        return (_leg(chain, short, sell), _leg(chain, long_wing, buy)), expiry
    if s is Structure.IRON_CONDOR:
        sp, sc = anchor(puts), anchor(calls)
        lp = wing(sp, -1, width, False, "put wing")
        lc = wing(sc, +1, width, True, "call wing")
        return (_leg(chain, lp, buy), _leg(chain, sp, sell), _leg(chain, sc, sell), _leg(chain, lc, buy)), expiry
    if s is Structure.IRON_FLY:
        body_p = anchor(puts) if spec.target is not None else atm(False)
        body_c = at(k(body_p), True, "call body")
        lp = wing(body_p, -1, width, False, "put wing")
        lc = wing(body_p, +1, width, True, "call wing")
        return (_leg(chain, lp, buy), _leg(chain, body_p, sell), _leg(chain, body_c, sell),
                _leg(chain, lc, buy)), expiry
    if s is Structure.STRANGLE:
        return (_leg(chain, anchor(puts), sell), _leg(chain, anchor(calls), sell)), expiry
    if s is Structure.STRADDLE:
        c = anchor(calls) if spec.target is not None else atm(True)
        p = at(k(c), False, "put")
        return (_leg(chain, c, buy), _leg(chain, p, buy)), expiry
    if s is Structure.BUTTERFLY or s is Structure.BROKEN_WING_BUTTERFLY:
        body = anchor(one) if (spec.target is not None or s is Structure.BROKEN_WING_BUTTERFLY) else atm(spec.call)
        far = width if s is Structure.BUTTERFLY else (2 * width if spec.far_width is None else float(spec.far_width))
        if s is Structure.BROKEN_WING_BUTTERFLY and far <= width:
            raise BuildError(f"a broken wing is wider than the near wing: far ${far:g} ≤ near ${width:g}")
        near_wing = wing(body, -out, width, spec.call, "near wing")
        far_wing = wing(body, out, far, spec.call, "far wing")
        return (_leg(chain, near_wing, buy), _leg(chain, body, sell, 2), _leg(chain, far_wing, buy)), expiry
    if s is Structure.RATIO:
        if spec.ratio < 2:
            raise BuildError(f"a ratio spread sells at least 2 per long contract, got {spec.ratio}")
        short = anchor(one)
        long_ = wing(short, -out, width, spec.call, "long strike")
        return (_leg(chain, long_, buy), _leg(chain, short, sell, int(spec.ratio))), expiry
    if s is Structure.JADE_LIZARD:
        sp, sc = anchor(puts), anchor(calls)
        lc = wing(sc, +1, width, True, "call wing")
        return (_leg(chain, sp, sell), _leg(chain, sc, sell), _leg(chain, lc, buy)), expiry
    if s in (Structure.COVERED_CALL, Structure.COLLAR):
        shares = Leg(Equity(chain.underlying), buy, int(chain.multiplier))
        sc = anchor(calls)
        if s is Structure.COVERED_CALL:
            return (shares, _leg(chain, sc, sell)), expiry
        return (shares, _leg(chain, anchor(puts), buy), _leg(chain, sc, sell)), expiry
    # calendar / diagonal: sell the front month, buy the back month (a debit)
    far_dte = (spec.dte + 30.0) if spec.far_dte is None else float(spec.far_dte)
    back = _nearest_expiry(chain, now, far_dte, after=expiry)
    back_rows = np.nonzero(chain.expiry.astype("datetime64[D]") == back)[0]
    front = anchor(one) if (spec.target is not None or s is Structure.DIAGONAL) else atm(spec.call)
    if s is Structure.CALENDAR:
        far = at(k(front), spec.call, "back-month strike", back_rows)
    else:  # diagonal: the back month sits ``width`` further in the money (it covers the short)
        far = at(k(front) - out * width, spec.call, "back-month strike", back_rows, beyond=(k(front), -out))
    return (_leg(chain, front, sell), _leg(chain, far, buy)), expiry


def strategy_name(underlying: str, structure: Structure, legs: tuple[Leg, ...]) -> str:
    """A trader's name for the legs: "SPY 580/570 put vertical", "SPY 560/570/620/630 iron condor"."""
    strikes = [f"{float(leg.instrument.strike):g}" for leg in legs if hasattr(leg.instrument, "strike")]
    rights = {leg.instrument.right.value for leg in legs if hasattr(leg.instrument, "right")}
    label = STRUCTURE_NAMES[structure].lower()
    if structure in ONE_RIGHT and len(rights) == 1:
        label = f"{'call' if rights == {'C'} else 'put'} {label}"
    return f"{underlying} {'/'.join(strikes)} {label}".strip()


def build_strategy(spec: BuildSpec, chain: OptionChain, now: datetime, *, r: float = 0.0, q: float = 0.0,
                   stress: float = 0.15, quantity: int = 1) -> BuiltStrategy:
    """Legs of ``spec`` on ``chain`` with their figures (see the module docstring).

    Net mid and natural are per combo unit, like the ticket's limit; max profit/loss, probability of
    profit and Greeks are for ``quantity`` units, the order the trader is about to send.
    """
    if quantity < 1:
        raise BuildError(f"quantity must be at least 1, got {quantity}")
    legs, expiry = build_legs(spec, chain, now, r, q)
    index = {str(sym): i for i, sym in enumerate(chain.symbol)}
    rows = np.array([index.get(leg.symbol, -1) for leg in legs])
    is_opt = rows >= 0
    bid = np.where(is_opt, chain.bid[np.maximum(rows, 0)], float(chain.spot))
    ask = np.where(is_opt, chain.ask[np.maximum(rows, 0)], float(chain.spot))
    # net per unit in the order's price multiplier (shares of a covered call count per share / 100)
    w = np.array([float(x) for x in leg_weights(legs)])
    with np.errstate(invalid="ignore"):
        leg_mid = np.where((ask >= bid) & (bid >= 0), 0.5 * (bid + ask), np.nan)
    complete = bool(np.all(np.isfinite(leg_mid)))
    mid = float(np.sum(w * leg_mid)) if complete else math.nan
    natural = float(np.sum(w * np.where(w > 0, ask, bid))) if complete else math.nan
    greeks = {g: np.where(is_opt, np.nan, 0.0) for g in ("delta", "gamma", "theta", "vega")}
    greeks["delta"] = np.where(is_opt, np.nan, 1.0)
    iv = np.full(len(legs), np.nan)
    if is_opt.any():
        m = chain_metrics(chain, rows[is_opt], now=now, r=r, q=q)
        iv[is_opt] = m.iv
        for g in greeks:
            greeks[g][is_opt] = getattr(m, g)
    totals = order_greeks(legs, quantity, greeks)
    summary, pop, loss_text, notes = None, math.nan, "—", []
    if complete:
        try:
            pl = legs_from_order(legs, quantity, leg_mid, iv, now)
            prof = profile(pl, float(chain.spot), r, q, days=(), stress=stress)
            summary, pop, loss_text = prof.summary, prof.probability_of_profit, prof.max_loss_text()
        except ValueError as exc:
            notes.append(str(exc))
    else:
        notes.append("some legs have no two-sided quote: prices and payoff are unknown")
    return BuiltStrategy(Structure(spec.structure), strategy_name(chain.underlying, Structure(spec.structure), legs),
                         legs, expiry, mid, natural, summary, loss_text, pop, totals,
                         np.asarray(greeks["delta"], float), tuple(notes))
