"""Arbitrage detection and repair: a butterfly violation and crossing slices are found, repaired and reported."""

from __future__ import annotations

import numpy as np

from engine.surface.arbitrage import check_grids, check_slices, enforce_no_arbitrage
from engine.surface.fit import fit_chain
from engine.surface.svi import durrleman_g, svi_total_variance
from tests.surface.synthetic import build_chain, equity_like_params, expiry_dates, log_strikes, svi_price_fn

VOGT = np.array([-0.0410, 0.1331, 0.3060, 0.3586, 0.4153])  # butterfly arbitrage near k ≈ 0.5


def _slice_data(params: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return k, svi_total_variance(k, *params)


def test_clean_slices_pass_unchanged_with_an_empty_report() -> None:
    k = np.linspace(-0.6, 0.4, 50)
    p = np.array([equity_like_params(0.25), equity_like_params(1.0)])
    K = np.vstack([k, k])
    W = np.vstack([svi_total_variance(k, *p[0]), svi_total_variance(k, *p[1])])
    out, rep = enforce_no_arbitrage(p, K, W, np.ones_like(K))
    np.testing.assert_array_equal(out, p)
    assert rep.arbitrage_free and rep.found == () and rep.repairs == ()


def test_butterfly_violation_is_detected_and_repaired_by_constrained_refit() -> None:
    k = np.linspace(-1.5, 1.5, 60)
    _, w = _slice_data(VOGT, k)
    out, rep = enforce_no_arbitrage(VOGT[None], k[None], w[None], np.ones((1, 60)), ["2027-03-19"])
    assert any("butterfly" in f and "2027-03-19" in f for f in rep.found)
    assert len(rep.repairs) == 1 and "refitted" in rep.repairs[0]
    assert rep.arbitrage_free and rep.unresolved == ()
    (grid,) = check_grids(np.array([[k.min(), k.max()]]))
    assert grid[0] < k.min() - 1.0 and grid[-1] > k.max() + 1.0
    assert durrleman_g(grid, *out[0]).min() >= -1e-9
    # the repair stays close to the quotes (RMS total-variance error well under the ATM variance)
    rms = np.sqrt(np.mean((svi_total_variance(k, *out[0]) - w) ** 2))
    assert rms < 0.005


def test_crossing_slices_are_detected_and_the_later_slice_is_lifted() -> None:
    k = np.linspace(-1.0, 1.0, 41)
    early = np.array([0.02, 0.20, -0.30, 0.0, 0.20])
    late = np.array([0.04, 0.05, -0.10, 0.0, 0.30])  # higher ATM, flatter wings: crosses below in the wings
    K = np.vstack([k, k])
    W = np.vstack([svi_total_variance(k, *early), svi_total_variance(k, *late)])
    grids = check_grids(np.array([[-1, 1], [-1, 1]]))
    before = check_slices(np.vstack([early, late]), grids)
    assert before[1].calendar_points > 0
    out, rep = enforce_no_arbitrage(np.vstack([early, late]), K, W, np.ones_like(K), ["front", "back"])
    assert any("calendar" in f and "back" in f for f in rep.found)
    assert any(r.startswith("back:") for r in rep.repairs)
    assert rep.arbitrage_free
    assert np.all(svi_total_variance(grids[1], *out[1]) - svi_total_variance(grids[1], *out[0]) >= -1e-9)


def test_repair_can_be_disabled_and_the_report_still_lists_the_violations() -> None:
    k = np.linspace(-1.5, 1.5, 60)
    _, w = _slice_data(VOGT, k)
    out, rep = enforce_no_arbitrage(VOGT[None], k[None], w[None], np.ones((1, 60)), repair=False)
    np.testing.assert_array_equal(out[0], VOGT)
    assert rep.found and not rep.repairs and not rep.arbitrage_free
    assert rep.butterfly_points > 0


def test_fit_chain_on_an_arbitrageable_chain_reports_and_repairs_both_kinds() -> None:
    # front expiry: Vogt's slice (negative density near k ≈ 0.5); back expiry: higher ATM variance but
    # flatter wings that cross below the front slice in the left wing
    spot, r, q = 100.0, 0.0, 0.0

    def params(T: float):
        if T < 0.55:
            return tuple(VOGT)
        return (0.03, 0.04, -0.1, 0.0, 0.2)

    chain = build_chain(spot=spot, expiries=expiry_dates([180, 210]),
                        strikes=log_strikes(-2.5, 2.5, 60, spot=spot, vol=0.45),
                        price=svi_price_fn(params, spot=spot, r=r, q=q),
                        half_spread=lambda p: np.maximum(1e-4, 0.001 * p))
    fit = fit_chain(chain, rate=r, dividend_yield=q)
    assert fit.ok and len(fit.fitted_slices()) == 2
    assert any("butterfly" in f for f in fit.arbitrage.found)
    assert any("calendar" in f for f in fit.arbitrage.found)
    assert len(fit.arbitrage.repairs) >= 1
    assert fit.arbitrage.arbitrage_free
    assert fit.arbitrage.butterfly_points == 0 and fit.arbitrage.calendar_points == 0
    front, back = fit.fitted_slices()
    assert front.rmse_bp < 60.0  # removing a density of -0.03 costs tens of bp near k ≈ 0.5
    # the back quotes cross the front slice by up to ~7 vol points in the wings, so the repaired slice
    # must leave them there; near the money it still follows its own quotes
    assert back.rmse_bp < 500.0
    assert abs(fit.term.atm_iv[1] - np.sqrt(0.03 + 0.04 * 0.2) / np.sqrt(back.T)) < 0.01
