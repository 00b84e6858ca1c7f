"""The payoff panel's analysis: date and IV sliders, probabilities, a hypothetical trade, the beta-weighted book."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from engine.analytics import analysis as an
from engine.bus.events import ChainUpdated, PositionChanged
from engine.model import Position
from tests.widgets.conftest import NOW, priced_chain
from widgets import engine_queries as eq
from widgets.base import EventBatch
from widgets.chain_table import ChainPanel
from widgets.order_ticket import TicketPanel
from widgets.payoff_view import DATE_STEPS, PayoffPanel


def _condor_on_the_ticket(qtbot, desk, *, template: str = "Iron condor") -> tuple[TicketPanel, PayoffPanel]:
    chain = ChainPanel(desk, strike_window=4)
    ticket = TicketPanel(desk)
    payoff = PayoffPanel(desk)
    for w in (chain, ticket, payoff):
        qtbot.addWidget(w)
    payoff.resize(1150, 620)
    chain.select_underlying("XYZ")
    batch = EventBatch.from_events([ChainUpdated(chain=priced_chain())])
    chain.apply_events(batch)
    ticket.apply_events(batch)
    ticket.template_box.setCurrentIndex(ticket.template_box.findText(template))
    ticket.build_button.click()
    assert payoff.source == "ticket" and payoff.legs is not None, payoff.error
    return ticket, payoff


def _hold(desk) -> list[Position]:
    chain = priced_chain()
    pos = [Position(chain.option(chain.row_of("XYZ260320C00100000")), 2, Decimal("2.00"), opened_at=NOW),
           Position(chain.option(chain.row_of("XYZ260320P00095000")), -3, Decimal("0.80"), opened_at=NOW)]
    for p in pos:
        desk.bus.publish(PositionChanged(position=p))
    return pos


def test_the_date_slider_ends_at_the_expiry_payoff_and_the_iv_slider_moves_the_curve(qtbot, desk) -> None:
    _ticket, payoff = _condor_on_the_ticket(qtbot, desk)
    s = payoff.prof.spots
    payoff.date_slider.setValue(0)
    today = payoff.date_curve.copy()
    assert today == pytest.approx(an.pnl_at_date(payoff.legs, s, 0.0, payoff.rate, payoff.div_yield,
                                                 surface_vol=eq.surface_vol(desk, "XYZ")))
    # the right end is the last expiry: the expiry payoff to the cent (one expiry: the panel's expiry curve)
    payoff.date_slider.setValue(DATE_STEPS)
    assert payoff.analysis_days() == pytest.approx(payoff.last_days)
    assert np.max(np.abs(payoff.date_curve - an.expiry_pnl(payoff.legs, s))) < 0.005
    assert np.max(np.abs(payoff.date_curve - payoff.prof.curves["Expiry"])) < 0.005
    _x, y = payoff.curve_date.getData()
    assert np.array_equal(y, payoff.date_curve)  # the plot shows what the engine computed
    # halfway: between today and expiry, and the expiry curve is still drawn for reference
    payoff.date_slider.setValue(DATE_STEPS // 2)
    mid = payoff.date_curve.copy()
    assert not np.allclose(mid, today) and not np.allclose(mid, payoff.prof.curves["Expiry"])
    assert len(payoff.curve_expiry.getData()[0]) == len(s)
    assert "T+" in payoff.date_label.text() and payoff.date_label.toolTip().endswith(("EST", "EDT"))
    # IV: 0 is the base curve; +10 pts hurts a short condor near the money
    payoff.iv_slider.setValue(10)
    up = payoff.date_curve.copy()
    payoff.iv_slider.setValue(0)
    assert np.array_equal(payoff.date_curve, mid)
    centre = int(np.argmin(np.abs(s - 100.0)))
    assert up[centre] < mid[centre]
    assert payoff.iv_label.text() == "IV +0 pts"


def test_probabilities_come_back_from_the_workers(qtbot, desk) -> None:
    _ticket, payoff = _condor_on_the_ticket(qtbot, desk)
    qtbot.waitUntil(lambda: payoff.probs is not None, timeout=60_000)
    p = payoff.probs
    assert 0 < p.p50 < 1 and p.p50_target == pytest.approx(0.5 * payoff.prof.summary.max_profit)
    assert [w for w, _, _ in p.touch] == ["breakeven", "breakeven", "short put", "short call"]
    assert all(0 < v < 1 for _, _, v in p.touch)
    # the workers ran the engine's job on the panel's legs and spot; the fixed seed makes it reproducible here
    job = payoff.prob_job
    assert job.legs is payoff.legs and job.spot == payoff.spot
    assert an.run_probabilities(job).p50 == p.p50
    text = payoff.prob_label.text()
    assert "P50" in text and "touch before expiry" in text and f"{100 * p.p50:.0f}%" in text
    assert "first-passage" in payoff.prob_label.toolTip()


def test_a_hypothetical_trade_is_drawn_and_nothing_is_sent(qtbot, desk) -> None:
    ticket, payoff = _condor_on_the_ticket(qtbot, desk)
    _hold(desk)
    qtbot.waitUntil(lambda: len(eq.positions(desk)) == 2, timeout=5000)
    positions_before = eq.positions(desk)
    orders_before = desk.store.query("SELECT COUNT(*) AS n FROM orders")[0]["n"]
    open_before = eq.open_order_count(desk)
    payoff.trade_check.setChecked(True)
    assert payoff.with_curve is not None and payoff.held_curve is not None, payoff.trade_note
    assert "2 held positions in XYZ" in payoff.trade_note
    # with trade = held + the ticket's order, at the slider's date
    s = payoff.prof.spots
    assert payoff.with_curve == pytest.approx(payoff.held_curve + payoff.date_curve, abs=1e-6)
    _x, dashed = payoff.curve_with.getData()
    assert np.array_equal(dashed, payoff.with_curve)
    assert payoff.curve_with.opts["pen"].style() == payoff.curve_now.opts["pen"].style()  # dashed
    payoff.date_slider.setValue(DATE_STEPS)
    assert payoff.with_curve == pytest.approx(payoff.held_curve + an.expiry_pnl(payoff.legs, s), abs=0.01)
    # nothing was sent: positions, orders and working orders as before
    assert eq.positions(desk) == positions_before
    assert desk.store.query("SELECT COUNT(*) AS n FROM orders")[0]["n"] == orders_before
    assert eq.open_order_count(desk) == open_before
    assert ticket.legs  # the ticket keeps its order
    payoff.trade_check.setChecked(False)
    assert payoff.with_curve is None and len(payoff.curve_with.getData()[0] or []) == 0


def _store_closes(desk, betas: dict[str, float], n: int = 260) -> None:
    from engine.history.service import write_series
    from engine.history.source import DailySeries

    rng = np.random.default_rng(17)
    spy = 0.01 * rng.standard_normal(n)
    start = NOW.date() - timedelta(days=n + 5)
    days = tuple(start + timedelta(days=i) for i in range(n))
    series = {"SPY": DailySeries("SPY", days, 600 * np.cumprod(1 + spy), np.full(n, 0.15))}
    for u, b in betas.items():
        r = b * spy + 0.003 * rng.standard_normal(n)
        series[u] = DailySeries(u, days, 100 * np.cumprod(1 + r), np.full(n, 0.25))
    write_series(desk.store, series, "test closes", NOW.isoformat())


def test_the_beta_weighted_book_uses_the_stored_history(qtbot, desk) -> None:
    _store_closes(desk, {"XYZ": 1.6})
    _hold(desk)
    qtbot.waitUntil(lambda: len(eq.positions(desk)) == 2, timeout=5000)
    payoff = PayoffPanel(desk)
    qtbot.addWidget(payoff)
    payoff.resize(1150, 620)
    payoff.show()
    payoff.tabs.setCurrentIndex(1)
    est, curve = payoff.beta_est, payoff.beta
    assert est is not None and curve is not None, payoff.beta_label.text()
    assert est.betas["SPY"] == 1.0 and est.betas["XYZ"] == pytest.approx(1.6, abs=0.1)
    assert est.days == 120 and "over 120 daily returns" in payoff.beta_label.text()
    assert curve.pnl[len(curve.moves) // 2] == pytest.approx(0.0, abs=1e-6)  # no move today: no P&L
    assert curve.by_underlying["XYZ"] == pytest.approx(curve.beta_delta)
    x, y = payoff.beta_curve.getData()
    assert np.array_equal(y, curve.pnl) and x[0] == pytest.approx(-10.0)
    # the user's window is the window used
    payoff.beta_window.setValue(60)
    assert payoff.beta_est.days == 60 and "over 60 daily returns" in payoff.beta_label.text()
    # the date slider moves the beta-weighted curve too (time decay of the held options)
    payoff.show_positions(tuple(eq.positions(desk).values()))
    payoff.date_slider.setValue(DATE_STEPS // 2)
    assert not np.allclose(payoff.beta.pnl, curve.pnl)


def test_the_analysis_panel_looks_right(qtbot, desk, shot) -> None:
    _store_closes(desk, {"XYZ": 1.3})
    _ticket, payoff = _condor_on_the_ticket(qtbot, desk)
    _hold(desk)
    qtbot.waitUntil(lambda: len(eq.positions(desk)) == 2, timeout=5000)
    payoff.trade_check.setChecked(True)
    payoff.date_slider.setValue(DATE_STEPS // 3)
    payoff.iv_slider.setValue(5)
    qtbot.waitUntil(lambda: payoff.probs is not None, timeout=60_000)
    path = shot(payoff, "payoff-analysis")
    Path("/tmp/panel_analysis_payoff.png").write_bytes(path.read_bytes())
    payoff.tabs.setCurrentIndex(1)
    path = shot(payoff, "payoff-analysis-beta")
    Path("/tmp/panel_analysis_beta.png").write_bytes(path.read_bytes())
    assert payoff.beta is not None and math.isfinite(payoff.beta.beta_delta)


def test_an_off_screen_panel_waits_and_catches_up_when_shown(qtbot, desk) -> None:
    from engine.bus.events import UnderlyingUpdated

    _ticket, payoff = _condor_on_the_ticket(qtbot, desk)
    payoff.min_interval_s = 0.0  # no throttle: only visibility decides
    quotes = EventBatch.from_events([UnderlyingUpdated(symbol="XYZ", price=100.5)])
    before = payoff.refreshes
    payoff.apply_events(quotes)  # never shown: nothing computed, remembered as stale
    assert payoff.refreshes == before and payoff._stale
    payoff.show()
    qtbot.waitExposed(payoff)
    payoff.apply_events(EventBatch.from_events([]))  # the next flush after it came forward
    assert payoff.refreshes == before + 1 and not payoff._stale
    payoff.min_interval_s = 3600.0  # a throttled refresh stays stale until it can run
    payoff.apply_events(quotes)
    assert payoff.refreshes == before + 1 and payoff._stale


def test_without_history_the_risk_engines_beta_is_used_and_named(qtbot, desk) -> None:
    _hold(desk)
    qtbot.waitUntil(lambda: len(eq.positions(desk)) == 2, timeout=5000)
    payoff = PayoffPanel(desk)
    qtbot.addWidget(payoff)
    payoff.tabs.setCurrentIndex(1)
    est = payoff.beta_est
    assert est is not None and est.missing == ("XYZ",)
    assert est.betas["XYZ"] == desk.risk.beta_of("XYZ")
    assert payoff.beta is not None and "no history for XYZ: the risk engine's beta used" in payoff.beta_label.text()
