import math
from datetime import date
from decimal import Decimal

import numpy as np
import pytest

from engine.analytics.templates import Template, build_template
from engine.analytics.ticket import net_prices, order_greeks, ticket_prices, to_limit_price

FRONT = date(2026, 3, 20)


def test_debit_vertical_natural_pays_ask_and_takes_bid(chain) -> None:
    legs = build_template(Template.VERTICAL, chain, FRONT)
    p = ticket_prices(legs, chain)
    r_buy, r_sell = chain.row_of(legs[0].symbol), chain.row_of(legs[1].symbol)
    assert p.natural == pytest.approx(chain.ask[r_buy] - chain.bid[r_sell])
    assert p.mid == pytest.approx(chain.mid[r_buy] - chain.mid[r_sell])
    assert 0 < p.mid < p.natural  # a debit: natural is worse (higher) than mid
    assert p.complete


def test_credit_condor_is_negative_and_natural_receives_less(chain) -> None:
    p = ticket_prices(build_template(Template.IRON_CONDOR, chain, FRONT), chain)
    assert p.mid < 0 and p.natural > p.mid


def test_missing_quote_gives_nan_not_zero(chain) -> None:
    legs = build_template(Template.STRADDLE, chain, FRONT)
    p = net_prices(legs, np.array([1.0, np.nan]), np.array([1.2, 2.0]))
    assert math.isnan(p.mid) and not p.complete
    assert p.natural == pytest.approx(3.2)  # both legs bought: natural needs only the asks
    sold = net_prices(build_template(Template.STRADDLE, chain, FRONT, long=False), np.array([1.0, np.nan]),
                      np.array([1.2, 2.0]))
    assert math.isnan(sold.natural)
    assert math.isnan(ticket_prices(legs, None).mid)


def test_order_greeks_weight_by_side_ratio_quantity_and_multiplier(chain) -> None:
    legs = build_template(Template.BUTTERFLY, chain, FRONT)
    g = order_greeks(legs, 3, {"delta": [0.6, 0.5, 0.4], "vega": [0.1, 0.12, 0.1]})
    assert g["delta"] == pytest.approx(3 * 100 * (0.6 - 2 * 0.5 + 0.4))
    assert g["vega"] == pytest.approx(3 * 100 * (0.1 - 0.24 + 0.1))
    assert math.isnan(order_greeks(legs, 1, {"delta": [0.6, math.nan, 0.4]})["delta"])
    with pytest.raises(ValueError, match="2 values for 3 legs"):
        order_greeks(legs, 1, {"delta": [1, 2]})


def test_limit_price_rounds_to_tick() -> None:
    assert to_limit_price(1.234) == Decimal("1.23")
    assert to_limit_price(-0.875, Decimal("0.05")) == Decimal("-0.90")
    with pytest.raises(ValueError, match="finite"):
        to_limit_price(math.nan)
