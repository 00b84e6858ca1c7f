"""Positions as strategies: group holdings into named structures ("SPY 580/570 put vertical").

A trader manages a condor, not four option lines. Grouping uses the orders' trade tags first: positions
opened by a strategy carry its ``strategy_id`` and stay together under it. Untagged holdings of one
underlying are recognized by their shape — the whole set when it forms one structure, else each expiry's
set, else verticals paired greedily (one long, one short, same right, expiry and size), and what is left
stands alone ("SPY 600 put", "100 SPY shares").

The figures per group (P&L, Greeks, DTE, % of max profit) are sums over the group's rows of what the risk
engine computed per position; max profit and loss at expiry come from the positions' cost basis through
:func:`engine.risk.payoff.summarize` (single-expiry groups only: a calendar has no expiry payoff).
Also here: the legs of a **roll** (close the group, open the same structure at a later expiry, optionally
shifted in strike) as one order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np

from engine.analytics.builder import ONE_RIGHT, STRUCTURE_NAMES, Structure
from engine.model import Equity, Leg, OpenClose, Option, OptionChain, Position, Side
from engine.model.chain import datetime64_in
from engine.risk.payoff import CALL, PUT, STOCK, summarize


@dataclass(frozen=True)
class PositionGroup:
    """Positions shown and managed as one strategy. ``indices`` point into the grouped sequence."""

    key: str
    name: str
    underlying: str
    structure: Structure | None  # None: not a recognized structure (single legs, odd combinations)
    indices: tuple[int, ...]
    tag: str = ""  # the strategy id of tagged groups
    max_profit: float = math.nan  # dollars at expiry from the cost basis; inf when unbounded
    max_loss: float = math.nan


def _underlying(p: Position) -> str:
    inst = p.instrument
    return inst.underlying if isinstance(inst, Option) else inst.key


def _opt(p: Position) -> Option | None:
    return p.instrument if isinstance(p.instrument, Option) else None


def _options_held(positions: Sequence[Position]) -> list[tuple[Position, Option]]:
    """The option positions beside their contracts, in order: the contract keeps its type for what follows."""
    return [(p, p.instrument) for p in positions if isinstance(p.instrument, Option)]


def recognize(positions: Sequence[Position]) -> Structure | None:
    """The structure ``positions`` form together (quantities compared in lowest terms), or None."""
    if not positions or any(p.quantity == 0 for p in positions):
        return None
    shares = [p for p in positions if isinstance(p.instrument, Equity)]
    held = _options_held(positions)
    opts = [p for p, _ in held]
    if len(shares) + len(opts) != len(positions) or len(shares) > 1:
        return None
    if shares:
        sh = shares[0]
        calls = [(p, x) for p, x in held if x.is_call]
        puts = [(p, x) for p, x in held if not x.is_call]
        if sh.quantity <= 0 or len(calls) != 1 or calls[0][0].quantity >= 0:
            return None
        call_pos, call = calls[0]
        if sh.quantity != -call_pos.quantity * call.multiplier:
            return None
        if not puts:
            return Structure.COVERED_CALL
        if len(puts) == 1 and puts[0][0].quantity == -call_pos.quantity and puts[0][1].strike < call.strike:
            return Structure.COLLAR
        return None
    g = math.gcd(*(abs(p.quantity) for p in opts))
    q = [p.quantity // g for p in opts]
    o = [x for _, x in held]
    expiries = {x.expiry for x in o}
    rights = {x.is_call for x in o}
    if len(opts) == 2:
        a, b = o
        qa, qb = q
        if len(expiries) == 2:
            if a.is_call == b.is_call and qa == -qb:
                return Structure.CALENDAR if a.strike == b.strike else Structure.DIAGONAL
            return None
        if a.is_call == b.is_call and qa * qb < 0:
            if abs(qa) == abs(qb):
                return Structure.VERTICAL
            long_q, short_q = (qa, -qb) if qa > 0 else (qb, -qa)
            # a ratio spread sells a whole multiple (≥ 2) of what it buys; 3 × 2 is no named structure
            return Structure.RATIO if long_q == 1 and short_q >= 2 else None
        if a.is_call != b.is_call and qa == qb:
            return Structure.STRADDLE if a.strike == b.strike else Structure.STRANGLE
        return None
    if len(expiries) != 1:
        return None
    order = sorted(range(len(o)), key=lambda i: (o[i].strike, o[i].is_call))
    ks = [o[i].strike for i in order]
    qs = [q[i] for i in order]
    if len(opts) == 3 and len(rights) == 1 and len(set(ks)) == 3:
        if qs[1] == -2 * qs[0] and qs[0] == qs[2]:
            return (Structure.BUTTERFLY if ks[1] - ks[0] == ks[2] - ks[1]
                    else Structure.BROKEN_WING_BUTTERFLY)
        return None
    if len(opts) == 3 and len(rights) == 2:
        put_ix = [i for i in order if not o[i].is_call]
        call_ix = [i for i in order if o[i].is_call]
        if len(put_ix) == 1 and len(call_ix) == 2:
            p, c_lo, c_hi = put_ix[0], call_ix[0], call_ix[1]
            if q[p] < 0 and q[c_lo] < 0 and q[c_hi] == -q[c_lo] and q[p] == q[c_lo] and o[p].strike <= o[c_lo].strike:
                return Structure.JADE_LIZARD
        return None
    if len(opts) == 4 and len(rights) == 2:
        put_ix = sorted((i for i in range(4) if not o[i].is_call), key=lambda i: o[i].strike)
        call_ix = sorted((i for i in range(4) if o[i].is_call), key=lambda i: o[i].strike)
        if len(put_ix) != 2 or len(call_ix) != 2:
            return None
        lp, sp = put_ix
        sc, lc = call_ix
        if not (q[lp] == -q[sp] == -q[sc] == q[lc]) or o[sp].strike > o[sc].strike:
            return None
        return Structure.IRON_FLY if o[sp].strike == o[sc].strike else Structure.IRON_CONDOR
    return None


def _label(p: Position) -> str:
    inst = p.instrument
    if isinstance(inst, Option):
        return f"{'long' if p.quantity > 0 else 'short'} {inst.strike:g} {'call' if inst.is_call else 'put'}"
    return f"{p.quantity:+d} shares"


def group_name(underlying: str, structure: Structure | None, positions: Sequence[Position]) -> str:
    """"SPY 580/570 put vertical": strikes short first for verticals and calendars, else ascending."""
    held = _options_held(positions)
    if structure is None:
        if len(positions) == 1:
            return f"{underlying} {_label(positions[0])}"
        return f"{underlying} " + " · ".join(_label(p) for p in positions)
    if structure in (Structure.VERTICAL, Structure.CALENDAR, Structure.DIAGONAL, Structure.RATIO):
        held = sorted(held, key=lambda px: px[0].quantity)  # short first: "580/570 put vertical"
    else:
        held = sorted(held, key=lambda px: (px[1].strike, px[1].is_call))
    strikes = "/".join(f"{x.strike:g}" for _, x in held)
    label = STRUCTURE_NAMES[structure].lower()
    if structure in ONE_RIGHT:
        label = f"{'call' if held[0][1].is_call else 'put'} {label}"
    if structure is Structure.VERTICAL or structure is Structure.RATIO:
        label = f"{label} ({'credit' if _credit([p for p, _ in held]) else 'debit'})"
    return f"{underlying} {strikes} {label}"


def _credit(opts: Sequence[Position]) -> bool:
    return sum(float(p.avg_price) * p.quantity for p in opts) < 0


def _expiry_summary(positions: Sequence[Position]) -> tuple[float, float]:
    """(max profit, max loss) at expiry in dollars from the cost basis; NaN for multi-expiry groups."""
    held = _options_held(positions)
    if not held or len({x.expiry for _, x in held}) != 1:
        return math.nan, math.nan
    contracts = [_opt(p) for p in positions]
    kind = np.array([STOCK if x is None else (CALL if x.is_call else PUT) for x in contracts])
    strike = np.array([float(x.strike) if x is not None else 0.0 for x in contracts])
    units = np.array([float(p.quantity) for p in positions])
    mult = np.array([float(p.multiplier) for p in positions])
    cost = float(np.sum(units * mult * np.array([float(p.avg_price) for p in positions])))
    spot = float(np.mean(strike[kind != STOCK]))
    s = summarize(kind, strike, units, mult, cost, spot, 0.15)
    return float(s.max_profit), float(s.max_loss)


def _pair_verticals(positions: Sequence[Position], idx: list[int]) -> tuple[list[list[int]], list[int]]:
    """Greedy vertical pairs (same right and expiry, opposite sides, same size), nearest strikes first."""
    candidates: list[tuple[float, int, int]] = []
    for n, a in enumerate(idx):
        for b in idx[n + 1:]:
            pa, pb = positions[a], positions[b]
            oa, ob = _opt(pa), _opt(pb)
            if oa is None or ob is None:
                continue
            if oa.is_call == ob.is_call and oa.expiry == ob.expiry and pa.quantity == -pb.quantity \
                    and oa.strike != ob.strike:
                candidates.append((abs(float(oa.strike - ob.strike)), a, b))
    used: set[int] = set()
    pairs: list[list[int]] = []
    for _gap, a, b in sorted(candidates):
        if a not in used and b not in used:
            pairs.append([a, b])
            used.update((a, b))
    return pairs, [i for i in idx if i not in used]


def group_positions(positions: Sequence[Position]) -> tuple[PositionGroup, ...]:
    """Named strategy groups over ``positions`` (every index in exactly one group), ordered by underlying."""
    by_key: dict[tuple[str, str], list[int]] = {}
    for i, p in enumerate(positions):
        if p.quantity != 0:
            by_key.setdefault((_underlying(p), p.strategy_id or ""), []).append(i)
    out: list[PositionGroup] = []

    def add(und: str, idx: list[int], tag: str = "") -> None:
        ps = [positions[i] for i in idx]
        s = recognize(ps)
        name = group_name(und, s, ps)
        if tag:
            name = f"{name} · {tag}"
        mp, ml = _expiry_summary(ps) if s is not None else (math.nan, math.nan)
        # a tag names its group; untagged groups are named by their members
        key = f"group:{und}:{tag}" if tag else f"group:{und}::" + ",".join(sorted(p.symbol for p in ps))
        out.append(PositionGroup(key, name, und, s, tuple(idx), tag, mp, ml))

    for (und, tag), idx in sorted(by_key.items()):
        if tag or recognize([positions[i] for i in idx]) is not None:
            add(und, idx, tag)
            continue
        by_expiry: dict[date | None, list[int]] = {}
        for i in idx:
            o = _opt(positions[i])
            by_expiry.setdefault(o.expiry if o else None, []).append(i)
        for _exp, eidx in sorted(by_expiry.items(), key=lambda kv: (kv[0] is None, kv[0] or date.min)):
            if len(eidx) > 1 and recognize([positions[i] for i in eidx]) is not None:
                add(und, eidx)
                continue
            pairs, rest = _pair_verticals(positions, eidx)
            for pair in pairs:
                add(und, pair)
            for i in rest:
                add(und, [i])
    return tuple(out)


@dataclass(frozen=True, eq=False)
class GroupFigures:
    """Per group (in ``group_positions`` order): P&L, % of max profit, Greeks, nearest DTE."""

    pnl: np.ndarray
    pct_of_max: np.ndarray  # unrealised P&L / max profit (NaN when the max profit is unknown or unbounded)
    greeks: dict[str, np.ndarray]
    dte: np.ndarray


def group_figures(groups: Sequence[PositionGroup], pnl: np.ndarray, greeks: dict[str, np.ndarray],
                  dte: np.ndarray) -> GroupFigures:
    """Sum the per-position columns over each group (NaN only when every member is NaN)."""

    def total(a: np.ndarray, idx: tuple[int, ...]) -> float:
        v = np.asarray(a, float)[list(idx)]
        return float(np.nansum(v)) if np.isfinite(v).any() else math.nan

    g_pnl = np.array([total(pnl, g.indices) for g in groups], float)
    max_profit = np.array([g.max_profit for g in groups], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = np.where(np.isfinite(max_profit) & (max_profit > 0), g_pnl / max_profit, np.nan)
    g_greeks = {k: np.array([total(v, g.indices) for g in groups], float) for k, v in greeks.items()}
    d = np.asarray(dte, float)
    g_dte = np.array([float(np.nanmin(d[list(g.indices)])) if np.isfinite(d[list(g.indices)]).any() else math.nan
                      for g in groups], float)
    return GroupFigures(g_pnl, pct, g_greeks, g_dte)


class RollError(ValueError):
    """The roll cannot be built on this chain (message says why)."""


def closing_legs(positions: Sequence[Position]) -> tuple[tuple[Leg, ...], int]:
    """Legs that close ``positions`` and the order quantity (quantities in lowest terms × gcd)."""
    held = [p for p in positions if p.quantity != 0]
    if not held:
        raise RollError("nothing to close")
    size = math.gcd(*(abs(p.quantity) for p in held))
    legs = tuple(Leg(p.instrument, Side.SELL if p.quantity > 0 else Side.BUY, abs(p.quantity) // size,
                     OpenClose.CLOSE) for p in held)
    return legs, size


def roll_legs(positions: Sequence[Position], chain: OptionChain, expiry: date | np.datetime64,
              strike_shift: float = 0.0) -> tuple[tuple[Leg, ...], int]:
    """One order that closes ``positions`` and opens the same structure at ``expiry`` (strikes + shift).

    The opening legs keep each option's right, side and ratio; shares are left alone (rolling a covered
    call rolls the call). Each new strike must be listed at the new expiry: a roll that silently moved a
    strike would change the risk the trader reviewed.
    """
    close, size = closing_legs([p for p in positions if _opt(p) is not None])
    new_exp = datetime64_in(expiry, "D")
    rows = np.nonzero(chain.expiry.astype("datetime64[D]") == new_exp)[0]
    if len(rows) == 0:
        raise RollError(f"expiry {new_exp} is not in the {chain.underlying} chain")
    old = {x.expiry for _, x in _options_held(positions)}
    if any(np.datetime64(e, "D") >= new_exp for e in old):
        raise RollError(f"roll to an expiry after the current one ({max(old)}), not {new_exp}")
    opening: list[Leg] = []
    for leg in close:
        inst = leg.instrument
        if not isinstance(inst, Option):
            continue
        k = float(inst.strike) + float(strike_shift)
        hit = rows[(np.abs(chain.strike[rows] - k) < 1e-9) & (chain.is_call[rows] == inst.is_call)]
        if len(hit) == 0:
            raise RollError(f"no {k:g} {'call' if inst.is_call else 'put'} listed at {new_exp}")
        opening.append(Leg(chain.option(int(hit[0])), Side.BUY if leg.side is Side.SELL else Side.SELL, leg.ratio,
                           OpenClose.OPEN))
    return close + tuple(opening), size


def next_expiry(chain: OptionChain, after: date, min_days: int = 1) -> date:
    """The first listed expiry at least ``min_days`` after ``after`` (the default roll target)."""
    expiries = np.unique(chain.expiry.astype("datetime64[D]"))
    later = expiries[expiries >= np.datetime64(after, "D") + np.timedelta64(min_days, "D")]
    if len(later) == 0:
        raise RollError(f"no {chain.underlying} expiry listed after {after}")
    return later[0].astype(object)


def roll_expiry(chain: OptionChain, now: datetime, current: date, dte: float) -> date:
    """The listed expiry nearest ``dte`` days from ``now`` among those after ``current`` (the roll target)."""
    expiries = np.unique(chain.expiry.astype("datetime64[D]"))
    later = expiries[expiries > np.datetime64(current, "D")]
    if len(later) == 0:
        raise RollError(f"no {chain.underlying} expiry listed after {current}")
    days = (later - np.datetime64(now.date(), "D")).astype(float)
    return later[int(np.argmin(np.abs(days - dte)))].astype(object)


def theta_to_expiry(instruments: Sequence[object], quantity: np.ndarray, mark: np.ndarray, spot: np.ndarray,
                    now: datetime) -> tuple[np.ndarray, np.ndarray]:
    """Per position: (dollars still to decay by expiry at an unchanged spot, hours left); NaN unless < 1 day.

    With hours left, theta per calendar day overstates the decay — an SPX 0DTE put sold for $1,040 showed
    +$3,620/day. What can still decay is the time value in the mark: quantity × multiplier × (intrinsic −
    mark), which a short position gains and a long one loses.
    """
    n = len(instruments)
    is_opt = np.array([isinstance(i, Option) for i in instruments], bool)
    years = np.array([i.time_to_expiry(now) if isinstance(i, Option) else np.inf for i in instruments], float)
    hours = years * 365.0 * 24.0
    strike = np.array([float(i.strike) if isinstance(i, Option) else np.nan for i in instruments], float)
    call = np.array([bool(i.is_call) if isinstance(i, Option) else False for i in instruments], bool)
    mult = np.array([float(getattr(i, "multiplier", 1)) for i in instruments], float)
    s = np.asarray(spot, float)
    intrinsic = np.where(call, np.maximum(s - strike, 0.0), np.maximum(strike - s, 0.0))
    short_dated = is_opt & (hours > 0) & (hours < 24.0)
    with np.errstate(invalid="ignore"):
        decay = np.asarray(quantity, float) * mult * (intrinsic - np.asarray(mark, float))
    if n == 0:
        return np.array([]), np.array([])
    return np.where(short_dated, decay, np.nan), np.where(short_dated, hours, np.nan)


__all__ = ["GroupFigures", "PositionGroup", "RollError", "closing_legs", "group_figures", "group_name",
           "group_positions", "next_expiry", "recognize", "roll_expiry", "roll_legs", "theta_to_expiry"]
