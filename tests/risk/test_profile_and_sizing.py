import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.risk.config import HIGH, LOW, MODERATE, RiskConfig
from engine.risk.profile import check_presets_monotone, profile_for_level
from engine.risk.sizing import kelly_fraction, size_by_kelly, size_by_max_risk

FIELDS = ("max_position_pct", "max_daily_loss_pct", "risk_per_trade_pct", "leverage_limit", "max_positions",
          "max_delta", "max_gamma", "max_vega_pct", "max_theta_pct", "max_drawdown_pct", "kelly_fraction")


@pytest.mark.parametrize(("level", "preset"), [(0, LOW), (50, MODERATE), (100, HIGH)])
def test_profile_when_level_at_anchor_then_equals_preset(level, preset):
    p = profile_for_level(level)
    for f in FIELDS:
        assert getattr(p, f) == pytest.approx(getattr(preset, f)), f
    assert p.regime_multipliers == pytest.approx(preset.regime_multipliers)


def test_profile_when_moderate_then_matches_original_specification():
    p = profile_for_level(50)
    assert (p.max_position_pct, p.max_daily_loss_pct, p.risk_per_trade_pct, p.leverage_limit) == (0.25, 0.05, 0.02, 2.0)
    assert (p.max_positions, p.max_delta, p.max_gamma, p.max_drawdown_pct) == (5, 100, 50, 0.25)


def test_profile_when_between_anchors_then_linear_and_integer_limits_round_down():
    p = profile_for_level(25)
    assert p.max_position_pct == pytest.approx(0.175)
    assert p.max_delta == pytest.approx(75)
    assert p.max_positions == 4  # 3 + (5 - 3) / 2
    assert profile_for_level(60).max_positions == 6  # 5 + 5 * 0.2 = 6
    assert profile_for_level(59).max_positions == 5  # 5.9 → 5, never more than the linear value


@settings(max_examples=60, deadline=None)
@given(a=st.floats(0, 100), b=st.floats(0, 100))
def test_slider_when_raised_then_every_limit_is_monotone_non_decreasing(a, b):
    lo, hi = sorted((a, b))
    p, q = profile_for_level(lo), profile_for_level(hi)
    for f in FIELDS:
        assert getattr(p, f) <= getattr(q, f) + 1e-12, f


def test_default_presets_when_checked_then_monotone():
    assert check_presets_monotone(RiskConfig()) == []


@pytest.mark.parametrize("bad", [-1, 100.5, math.nan, "high", None])
def test_profile_when_level_invalid_then_value_error_names_range(bad):
    with pytest.raises(ValueError, match=r"0\.\.100"):
        profile_for_level(bad)


def test_config_when_regime_multiplier_missing_then_validation_error():
    with pytest.raises(ValueError, match="high_vol"):
        RiskConfig(low=LOW.model_copy(update={"regime_multipliers": {"low_vol": 1.0, "normal": 1.0}}).model_validate(
            {**LOW.model_dump(), "regime_multipliers": {"low_vol": 1.0, "normal": 1.0}}))


def test_size_by_max_risk_when_moderate_then_two_percent_over_max_loss():
    p = profile_for_level(50)
    r = size_by_max_risk(100_000, 380.0, p)
    assert r.contracts == 5  # 2,000 / 380 = 5.26
    assert r.budget == pytest.approx(2000.0)
    assert "2.00%" in r.explain()


def test_size_by_max_risk_when_high_vol_regime_then_multiplier_applies():
    p = profile_for_level(50)
    assert size_by_max_risk(100_000, 380.0, p, regime="high_vol").contracts == 2  # 1,000 / 380
    assert size_by_max_risk(100_000, 380.0, p, regime="low_vol").contracts == 10  # 4,000 / 380


def test_size_by_kelly_when_cap_binds_then_capped_by_max_position_size():
    p = profile_for_level(100)  # 35 % position cap, Kelly fraction 0.35, low_vol multiplier 2.5
    r = size_by_kelly(100_000, 0.95, 100.0, 100.0, p, regime="low_vol")  # f* = 0.9 → 78.75 % of net liq
    assert r.contracts == 350  # capped: 35,000 / 100
    assert "capped" in r.explain()


def test_size_by_max_risk_when_one_contract_too_big_then_zero_with_reason():
    r = size_by_max_risk(10_000, 500.0, profile_for_level(50))
    assert r.contracts == 0 and "no trade" in r.explain()


@pytest.mark.parametrize(("nl", "loss"), [(0, 100), (-5, 100), (math.nan, 100), (1e5, 0), (1e5, -1), (1e5, math.inf)])
def test_sizing_when_bad_input_then_value_error(nl, loss):
    with pytest.raises(ValueError):
        size_by_max_risk(nl, loss, profile_for_level(50))


def test_kelly_when_edge_then_formula_and_quarter_kelly_budget():
    assert kelly_fraction(0.6, 100, 100) == pytest.approx(0.2)
    r = size_by_kelly(100_000, 0.6, 100.0, 100.0, profile_for_level(50))
    assert r.kelly_f == pytest.approx(0.2)
    assert r.budget == pytest.approx(100_000 * 0.2 * 0.25)
    assert r.contracts == 50


def test_kelly_when_no_edge_then_zero_contracts():
    r = size_by_kelly(100_000, 0.3, 100.0, 100.0, profile_for_level(50))
    assert r.contracts == 0 and r.kelly_f < 0 and "no edge" in r.explain()


def test_kelly_when_probability_outside_unit_interval_then_value_error():
    with pytest.raises(ValueError, match="probability"):
        kelly_fraction(1.2, 1, 1)
