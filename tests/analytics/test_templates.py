from datetime import date

import pytest

from engine.analytics.templates import Template, TemplateError, build_template
from engine.model import Side

FRONT = date(2026, 3, 20)


def _desc(legs):
    return [(leg.side, leg.ratio, leg.instrument.right.value, float(leg.instrument.strike),
             leg.instrument.expiry) for leg in legs]


def test_long_call_vertical_buys_atm_and_sells_one_step_up(chain) -> None:
    legs = build_template(Template.VERTICAL, chain, FRONT, width=1)
    assert _desc(legs) == [(Side.BUY, 1, "C", 100.0, FRONT), (Side.SELL, 1, "C", 105.0, FRONT)]


def test_put_vertical_debit_buys_higher_strike(chain) -> None:
    legs = build_template("vertical", chain, FRONT, call=False, width=2)
    assert _desc(legs) == [(Side.BUY, 1, "P", 100.0, FRONT), (Side.SELL, 1, "P", 90.0, FRONT)]


def test_short_iron_condor_sells_inner_buys_wings(chain) -> None:
    legs = build_template(Template.IRON_CONDOR, chain, FRONT, width=1, wing=1)
    assert _desc(legs) == [
        (Side.BUY, 1, "P", 90.0, FRONT), (Side.SELL, 1, "P", 95.0, FRONT),
        (Side.SELL, 1, "C", 105.0, FRONT), (Side.BUY, 1, "C", 110.0, FRONT),
    ]


def test_straddle_strangle_butterfly(chain) -> None:
    assert _desc(build_template(Template.STRADDLE, chain, FRONT, long=False)) == [
        (Side.SELL, 1, "C", 100.0, FRONT), (Side.SELL, 1, "P", 100.0, FRONT)]
    assert _desc(build_template(Template.STRANGLE, chain, FRONT, width=2)) == [
        (Side.BUY, 1, "P", 90.0, FRONT), (Side.BUY, 1, "C", 110.0, FRONT)]
    assert _desc(build_template(Template.BUTTERFLY, chain, FRONT, center=104)) == [
        (Side.BUY, 1, "C", 100.0, FRONT), (Side.SELL, 2, "C", 105.0, FRONT), (Side.BUY, 1, "C", 110.0, FRONT)]


def test_calendar_sells_front_buys_next_expiry(chain) -> None:
    legs = build_template(Template.CALENDAR, chain, FRONT)
    assert _desc(legs) == [(Side.SELL, 1, "C", 100.0, FRONT), (Side.BUY, 1, "C", 100.0, date(2026, 4, 17))]


def test_templates_name_what_is_missing(chain) -> None:
    with pytest.raises(TemplateError, match="outside the listed strikes"):
        build_template(Template.IRON_CONDOR, chain, FRONT, width=4, wing=2)
    with pytest.raises(TemplateError, match="expiry 2026-05-15 is not in the XYZ chain"):
        build_template(Template.STRADDLE, chain, date(2026, 5, 15))
    with pytest.raises(TemplateError, match="none is listed"):
        build_template(Template.CALENDAR, chain, date(2026, 4, 17))
    with pytest.raises(TemplateError, match="at least one strike step"):
        build_template(Template.VERTICAL, chain, FRONT, width=0)
    with pytest.raises(ValueError):
        build_template("collar", chain, FRONT)


def test_iron_condor_by_delta_sells_the_16_delta_strikes_with_dollar_wings() -> None:
    import numpy as np

    from engine.analytics.chain_metrics import chain_metrics
    from engine.analytics.payoff import legs_from_order, profile
    from engine.analytics.ticket import ticket_prices
    from tests.analytics.conftest import NOW, priced_chain

    chain = priced_chain(spot=600.0, strikes=np.arange(500.0, 701.0, 1.0))
    legs = build_template(Template.IRON_CONDOR, chain, FRONT, short_delta=0.16, wing_dollars=10, r=0.04)
    d = _desc(legs)
    assert [(s, r) for s, _, r, _, _ in d] == [(Side.BUY, "P"), (Side.SELL, "P"), (Side.SELL, "C"), (Side.BUY, "C")]
    kp_out, kp, kc, kc_out = (k for _, _, _, k, _ in d)
    assert kp - kp_out == 10 and kc_out - kc == 10 and kp < 600 < kc
    rows = np.array([chain.row_of(leg.symbol) for leg in legs])
    delta = chain_metrics(chain, rows, r=0.04).delta
    assert abs(delta[1]) == pytest.approx(0.16, abs=0.02) and delta[2] == pytest.approx(0.16, abs=0.02)
    p = ticket_prices(legs, chain)
    pl = legs_from_order(legs, 1, p.leg_mid, [float("nan")] * 4, NOW)
    prof = profile(pl, 600.0, 0.04, 0.0)
    credit = -pl.cost
    assert credit > 100 and prof.summary.max_loss == pytest.approx(1000 - credit)  # $10 wings
    assert prof.summary.max_loss > 10 * 4 * 1.0  # far above any commission on four legs


def test_iron_condor_by_delta_defaults_and_errors(chain) -> None:
    legs = build_template(Template.IRON_CONDOR, chain, FRONT, short_delta=0.16)  # wings ≈ 1 % of spot
    kp_out, kp, kc, kc_out = (float(leg.instrument.strike) for leg in legs)
    assert kp_out < kp < 100 < kc < kc_out
    with pytest.raises(TemplateError, match=r"between 0 and 0\.5"):
        build_template(Template.IRON_CONDOR, chain, FRONT, short_delta=0.7)
    with pytest.raises(TemplateError, match="outside the listed strikes"):
        build_template(Template.IRON_CONDOR, chain, FRONT, short_delta=0.16, wing_dollars=60)
