"""Buying power and margin of the paper account (Reg-T style, per underlying).

Per underlying, options are margined as one group:

1. short calls not covered by long calls or long shares, and short puts not covered by long puts, are
   *naked*: each uses the standard Reg-T formula per contract ``multiplier × (mark + max(p·S − OTM,
   m·X))`` with p = 20 % (15 % for broad-based indices), m = 10 % and X = S for calls, the strike for
   puts; the riskiest ones (lowest call strikes, highest put strikes) count as the naked ones;
2. what remains is defined risk: its requirement is the worst loss of its expiry payoff over every
   underlying price (evaluated at 0 and at each strike; the payoff is linear in between and bounded
   beyond), i.e. the spread width for verticals, the wider side for iron condors. Calendars are
   treated as if all legs expired together (conservative for long calendars).

The requirement is the lesser of that and margining every short as naked (a very wide spread never
needs more than its short leg alone).

Buying power = cash + (1 − m_s)·long stock − (1 + m_s)·short stock − option requirement, where m_s is
the stock margin (50 %; 100 % in a cash account). Long options are paid in full and lend nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, slots=True)
class OptionHolding:
    strike: float
    is_call: bool
    contracts: int  # signed
    multiplier: int
    mark: float  # per unit


def naked_requirement(strike: float, is_call: bool, spot: float, mark: float, multiplier: int,
                      pct: float, min_pct: float) -> float:
    """Reg-T requirement of one naked short contract, dollars."""
    otm = max(strike - spot, 0.0) if is_call else max(spot - strike, 0.0)
    floor = min_pct * (spot if is_call else strike)
    return multiplier * (max(mark, 0.0) + max(pct * spot - otm, floor))


def option_requirement(holdings: Iterable[OptionHolding], spot: float, shares: int, *, index: bool,
                       naked_pct: float = 0.20, index_pct: float = 0.15, min_pct: float = 0.10) -> float:
    """Margin requirement (dollars, ≥ 0) of one underlying's options, with ``shares`` of the underlying."""
    hs = [h for h in holdings if h.contracts != 0]
    if not hs:
        return 0.0
    pct = index_pct if index else naked_pct
    # expand into unit lots (one contract each) so coverage can be assigned lot by lot
    calls_long = sorted((h for h in hs if h.is_call and h.contracts > 0), key=lambda h: h.strike)
    puts_long = sorted((h for h in hs if not h.is_call and h.contracts > 0), key=lambda h: -h.strike)
    calls_short = sorted((h for h in hs if h.is_call and h.contracts < 0), key=lambda h: h.strike)
    puts_short = sorted((h for h in hs if not h.is_call and h.contracts < 0), key=lambda h: -h.strike)
    n_call_long = sum(h.contracts for h in calls_long)
    n_put_long = sum(h.contracts for h in puts_long)
    mult = hs[0].multiplier
    covered_by_shares = max(shares, 0) // mult if mult > 0 else 0
    naked = 0.0
    remaining: list[OptionHolding] = list(calls_long) + list(puts_long)
    # calls: uncovered = short calls − long calls − covering shares; the lowest strikes are the naked ones
    uncovered_calls = max(-sum(h.contracts for h in calls_short) - n_call_long - covered_by_shares, 0)
    for h in calls_short:
        n = -h.contracts
        take = min(n, uncovered_calls)
        if take:
            naked += take * naked_requirement(h.strike, True, spot, h.mark, h.multiplier, pct, min_pct)
            uncovered_calls -= take
        if n - take:
            remaining.append(OptionHolding(h.strike, True, -(n - take), h.multiplier, h.mark))
    uncovered_puts = max(-sum(h.contracts for h in puts_short) - n_put_long, 0)
    for h in puts_short:
        n = -h.contracts
        take = min(n, uncovered_puts)
        if take:
            naked += take * naked_requirement(h.strike, False, spot, h.mark, h.multiplier, pct, min_pct)
            uncovered_puts -= take
        if n - take:
            remaining.append(OptionHolding(h.strike, False, -(n - take), h.multiplier, h.mark))
    grouped = naked + defined_risk(remaining, covered_shares=min(covered_by_shares * mult, max(shares, 0)))
    # the lesser of: the grouped requirement, or every short margined as naked (long options ignored)
    all_naked = sum(-h.contracts * naked_requirement(h.strike, h.is_call, spot, h.mark, h.multiplier, pct, min_pct)
                    for h in hs if h.contracts < 0)
    return min(grouped, all_naked)


def defined_risk(holdings: list[OptionHolding], covered_shares: int = 0) -> float:
    """Worst expiry-payoff loss of a bounded option group (dollars, ≥ 0); shares count as payoff S·n."""
    hs = [h for h in holdings if h.contracts != 0]
    if not hs:
        return 0.0
    strikes = np.array([h.strike for h in hs])
    qty = np.array([h.contracts * h.multiplier for h in hs], dtype=float)
    calls = np.array([h.is_call for h in hs])
    grid = np.concatenate(([0.0], np.unique(strikes)))
    s = grid[:, None]
    payoff = np.where(calls, np.maximum(s - strikes, 0.0), np.maximum(strikes - s, 0.0)) @ qty
    if covered_shares:
        # only the shares covering short calls enter, so a covered call's floor is the stock itself
        short_call_units = -qty[calls & (qty < 0)].sum()
        payoff = payoff + np.minimum(covered_shares, short_call_units) * grid
    # slope beyond the highest strike: Σ call units (+ covering shares); ≥ 0 after the naked split
    return float(max(0.0, -payoff.min()))


def buying_power(cash: float, long_stock_value: float, short_stock_value: float, option_req: float,
                 stock_margin: float) -> float:
    """Reg-T style option buying power (dollars); ``short_stock_value`` is a positive amount."""
    return cash + (1.0 - stock_margin) * long_stock_value - (1.0 + stock_margin) * short_stock_value - option_req
