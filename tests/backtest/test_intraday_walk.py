"""The price walk inside a session: on an intraday history a resting entry that has waited ``pricing.interval_s``
is withdrawn and the next attempt goes out one step closer to natural at the next snapshot — the walk steps
through the day, not only from one day's close to the next."""

from __future__ import annotations

from collections import defaultdict
from decimal import Decimal

import pytest

from engine.backtest.config import BacktestConfig
from engine.backtest.runner import Backtest
from engine.backtest.sources import simulated_intraday_history
from tests.backtest.histories import fixed_signals

WALK = {"iv_rank_entry": 0.5, "dte_min": 20, "dte_max": 50, "pricing.start": 0.0, "pricing.step": 0.25}


@pytest.fixture(scope="module")
def intraday():
    """Five sessions of the simulated SPY market, a snapshot every 30 minutes plus each close."""
    return simulated_intraday_history("SPY", 0.02, 7, 30.0, max_strikes=84)


def entries_by_session(intraday, params):
    cfg = BacktestConfig(strategy="iv_rank_put_spread", symbol="SPY", params=params, fee_preset="zero")
    r = Backtest(cfg, intraday, signals=fixed_signals(intraday.n_days, ivr=0.9, regime="low_vol")).run()
    assert r.status == "completed", r.error
    out = defaultdict(list)
    for o in r.orders:
        if o["tag"].endswith(":open"):
            out[o["created_at"][:10]].append(o)
    return r, out


def test_entry_unfilled_for_its_interval_then_walks_toward_natural_within_the_session(intraday):
    assert intraday.intraday
    r, sessions = entries_by_session(intraday, {**WALK, "pricing.interval_s": 1800})
    day, attempts = next((d, a) for d, a in sorted(sessions.items()) if len(a) >= 2)
    # several attempts on one day, each at least the interval after the one before, each withdrawn by the walk
    assert len(attempts) >= 2, sessions
    withdrawn = [a for a in attempts if a["status"] == "cancelled"]
    assert withdrawn and all(a["reason"] == "price walk: unfilled after 1800s" for a in withdrawn)
    # a credit spread: each later limit asks a smaller credit (a higher signed price), toward natural
    limits = [Decimal(a["limit_price"]) for a in attempts]
    assert limits == sorted(limits) and limits[-1] > limits[0], (day, limits)
    assert r.reconciliation()["difference"] == Decimal("0.00")


def test_no_interval_then_one_attempt_rests_through_the_session(intraday):
    _, sessions = entries_by_session(intraday, {**WALK, "pricing.interval_s": 0})
    attempts = [a for day in sessions.values() for a in day]
    # the DAY attempt rests until the close (an unfilled one expires there, and the next goes out at the close
    # for the next session): nothing is withdrawn during the day
    assert attempts and {a["status"] for a in attempts} <= {"filled", "expired"}, attempts
    closes = {intraday.timestamp(int(i)).isoformat() for i in intraday.session_ends()}
    later = [a["created_at"] for a in attempts[1:]]
    assert later and all(t in closes for t in later), (later, sorted(closes))
