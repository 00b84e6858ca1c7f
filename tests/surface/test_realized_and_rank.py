"""Realized-vol estimators on simulated bars, IV rank/percentile rules, and the iv_history repository."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from engine.store import Store
from engine.surface.ivrank import (
    FLAT_HISTORY,
    INSUFFICIENT_HISTORY,
    NO_CURRENT,
    OK,
    IVHistoryRepository,
    iv_rank,
)
from engine.surface.realized import (
    close_to_close,
    garman_klass,
    iv_rv_ratio,
    parkinson,
    rogers_satchell,
    yang_zhang,
)


def _bars(n: int, vol: float, seed: int = 11, steps: int = 390):
    """Daily OHLC from a driftless GBM sampled ``steps`` times a day (1-minute bars) (no overnight gap)."""
    rng = np.random.default_rng(seed)
    dt = 1.0 / 252 / steps
    inc = rng.normal(-0.5 * vol * vol * dt, vol * np.sqrt(dt), size=(n, steps))
    path = 100.0 * np.exp(np.cumsum(inc.ravel())).reshape(n, steps)
    opens = np.concatenate([[100.0], path[:-1, -1]])
    highs = np.maximum(path.max(axis=1), opens)
    lows = np.minimum(path.min(axis=1), opens)
    return opens, highs, lows, path[:, -1]


@pytest.fixture(scope="module")
def bars():
    return _bars(2000, 0.25)


def test_estimators_recover_the_simulated_volatility(bars) -> None:
    o, h, lo, c = bars
    assert close_to_close(c) == pytest.approx(0.25, rel=0.05)
    # range estimators are biased low by discrete sampling of the high/low (a few % at 390 steps a day)
    assert parkinson(h, lo) == pytest.approx(0.25, rel=0.08)
    assert garman_klass(o, h, lo, c) == pytest.approx(0.25, rel=0.08)
    assert rogers_satchell(o, h, lo, c) == pytest.approx(0.25, rel=0.10)
    assert yang_zhang(o, h, lo, c) == pytest.approx(0.25, rel=0.08)


def test_rolling_values_equal_the_full_sample_estimate_of_each_window(bars) -> None:
    o, h, lo, c = (x[:300] for x in bars)
    roll = close_to_close(c, window=20)
    assert np.isnan(roll[:20]).all()
    assert roll[150] == pytest.approx(close_to_close(c[130:151]))
    pk = parkinson(h, lo, window=20)
    assert pk[150] == pytest.approx(parkinson(h[131:151], lo[131:151]))
    yz = yang_zhang(o, h, lo, c, window=20)
    assert yz[150] == pytest.approx(yang_zhang(o[130:151], h[130:151], lo[130:151], c[130:151]))


def test_bad_prices_poison_only_their_windows_and_mismatched_lengths_raise() -> None:
    o, h, lo, c = (x[:100].copy() for x in _bars(100, 0.2))
    c[50] = np.nan
    roll = close_to_close(c, window=10)
    assert np.isnan(roll[50:61]).all() and np.isfinite(roll[61:]).all() and np.isfinite(roll[10:50]).all()
    assert np.isnan(close_to_close(c))
    h[5] = -1.0
    assert np.isnan(parkinson(h, lo))
    with pytest.raises(ValueError, match="one length"):
        parkinson(h, lo[:-1])
    with pytest.raises(ValueError, match="window"):
        close_to_close(c, window=1)
    assert np.isnan(yang_zhang(o[:2], h[:2], lo[:2], c[:2]))


def test_iv_rv_ratio_handles_missing_values() -> None:
    assert iv_rv_ratio(0.3, 0.2) == pytest.approx(1.5)
    np.testing.assert_array_equal(np.isnan(iv_rv_ratio(np.array([0.3, 0.3, np.nan]), np.array([0.0, np.nan, 0.2]))),
                                  [True, True, True])


# ---- IV rank -------------------------------------------------------------------------------------------
def test_iv_rank_and_percentile_over_the_lookback_window() -> None:
    history = np.concatenate([np.full(100, 0.50), np.linspace(0.10, 0.30, 252)])  # old spike falls outside
    r = iv_rank(history, 0.25, lookback=252, min_history=60)
    assert r.status == OK and r.days == 252
    assert r.low == pytest.approx(0.10) and r.high == pytest.approx(0.30)
    assert r.rank == pytest.approx(0.75)
    assert r.percentile == pytest.approx(np.mean(np.linspace(0.10, 0.30, 252) < 0.25))


def test_a_new_high_has_rank_one_and_percentile_one() -> None:
    r = iv_rank(np.linspace(0.1, 0.2, 100), 0.35, min_history=60)
    assert r.rank == 1.0 and r.percentile == 1.0 and r.high == 0.35


def test_short_history_says_insufficient_instead_of_a_number() -> None:
    r = iv_rank(np.linspace(0.1, 0.2, 30), 0.15, lookback=252, min_history=60)
    assert r.status == INSUFFICIENT_HISTORY and not r.ok
    assert np.isnan(r.rank) and np.isnan(r.percentile)
    assert "30 of 60" in r.message


def test_missing_current_and_flat_history_are_reported() -> None:
    assert iv_rank(np.full(100, 0.2), float("nan")).status == NO_CURRENT
    flat = iv_rank(np.full(100, 0.2), 0.2, min_history=60)
    assert flat.status == FLAT_HISTORY and np.isnan(flat.rank)
    with pytest.raises(ValueError):
        iv_rank(np.ones(10), 0.2, lookback=0)


def test_history_repository_round_trip_and_rank_excludes_today(tmp_path) -> None:
    store = Store.open(tmp_path / "desk.db")
    try:
        repo = IVHistoryRepository(store)
        start = date(2025, 1, 1)
        for i in range(80):
            repo.record("SPY", start + timedelta(days=i), 0.10 + 0.001 * i, close=500.0 + i)
        repo.record("SPY", start + timedelta(days=79), 0.5, close=1.0)  # same day: replaced, not duplicated
        days, iv, close = repo.series("SPY")
        assert len(days) == 80 and days[0] == start and iv[-1] == 0.5 and close[-1] == 1.0
        _, last10, _ = repo.series("SPY", limit=10)
        assert len(last10) == 10 and last10[-1] == 0.5
        today = start + timedelta(days=79)
        r = repo.rank("SPY", 0.2, today=today, lookback=252, min_history=60)
        assert r.days == 79 and r.ok  # today's own row is not part of its history
        with pytest.raises(ValueError):
            repo.record("SPY", today, float("nan"))
        assert repo.series("QQQ")[1].size == 0
    finally:
        store.close()
