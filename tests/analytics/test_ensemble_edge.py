"""The chain's Edge column: the pricing ensemble's fair value minus mid, shown only beyond the models'
disagreement band plus half the spread."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from engine.analytics.chain_metrics import ENSEMBLE_MEMBERS, ensemble_fair_values, visible_edge
from engine.model import ExerciseStyle
from engine.surface.fit import fit_chain
from tests.analytics.conftest import NOW, priced_chain

R, Q = 0.04, 0.0


def test_visible_edge_arithmetic() -> None:
    fair = np.array([1.00, 1.00, 1.00, 1.00, np.nan])
    band = np.array([0.05, 0.05, np.nan, 0.05, 0.0])
    bid = np.array([0.80, 0.92, 0.92, 0.90, 0.9])
    ask = np.array([0.84, 0.96, 0.96, np.nan, 1.0])
    e = visible_edge(fair, band, bid, ask)
    assert e[0] == pytest.approx(0.18)  # 0.18 > 0.05 + 0.02
    assert np.isnan(e[1])  # 0.06 ≤ 0.05 + 0.02: noise, blank
    assert e[2] == pytest.approx(0.06)  # no band known: the spread alone
    assert np.isnan(e[3]) and np.isnan(e[4])  # no quote, no fair value: unknown, not zero


def test_ensemble_on_a_smooth_chain_shows_no_edge_and_a_mispriced_quote_stands_out() -> None:
    chain = replace(priced_chain(), style=ExerciseStyle.EUROPEAN)  # priced European: no early-exercise gap
    surface = fit_chain(chain, rate=R, dividend_yield=Q).surface
    rows = np.array([i for i in range(len(chain)) if str(chain.expiry[i])[:10] == "2026-04-17"])
    vals = ensemble_fair_values(chain, rows, surface, now=NOW, r=R, q=Q)
    assert vals.shape == (len(rows), 2 + len(ENSEMBLE_MEMBERS))
    fair, band = vals[:, 0], vals[:, 1]
    assert np.isfinite(fair).all() and (band > 0).all()  # three members priced every row, and they differ
    priced = [2 + ENSEMBLE_MEMBERS.index(m) for m in ("bsm", "merton", "heston")]  # no neural surrogate saved
    assert np.isfinite(vals[:, priced]).all()
    members = vals[:, priced]
    assert np.all(members.min(axis=1) - 1e-9 <= fair) and np.all(fair <= members.max(axis=1) + 1e-9)
    assert np.isnan(visible_edge(fair, band, chain.bid[rows], chain.ask[rows])).all()
    # one quote 25 % too rich: only it shows, with the seller's sign (fair below mid)
    target = int(chain.row_of("XYZ260417C00100000"))
    bump = 0.25 * chain.mid[target]
    bid, ask = chain.bid.copy(), chain.ask.copy()
    bid[target] += bump
    ask[target] += bump
    rich = replace(chain, bid=bid, ask=ask)
    vals2 = ensemble_fair_values(rich, rows, surface, now=NOW, r=R, q=Q)
    e = visible_edge(vals2[:, 0], vals2[:, 1], rich.bid[rows], rich.ask[rows])
    pos = int(np.nonzero(rows == target)[0][0])
    assert e[pos] < 0 and abs(e[pos]) > vals2[pos, 1]
    assert np.isnan(np.delete(e, pos)).all()


def test_an_american_put_quoted_at_its_european_value_shows_the_early_exercise_edge() -> None:
    chain = priced_chain()  # American contracts, quoted at European BSM values
    surface = fit_chain(chain, rate=R, dividend_yield=Q).surface
    row = int(chain.row_of("XYZ260417P00120000"))
    vals = ensemble_fair_values(chain, np.array([row]), surface, now=NOW, r=R, q=Q)
    e = visible_edge(vals[:, 0], vals[:, 1], chain.bid[[row]], chain.ask[[row]])
    assert e[0] > 0  # deep in the money: worth more than the quote (exercise early)
