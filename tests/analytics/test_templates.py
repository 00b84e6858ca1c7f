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
