import math
from datetime import UTC, date, datetime
from decimal import Decimal

import numpy as np
import pytest

from engine.model import (
    Fill,
    Leg,
    Option,
    OptionChain,
    OrderStatus,
    Quote,
    QuoteFlag,
    Right,
    Side,
    can_transition,
    round_to_tick,
)

NOW = datetime(2026, 11, 20, 15, 0, tzinfo=UTC)


def test_quote_flags_when_bad_quotes_then_flagged_not_fatal():
    assert Quote("X", 1.0, 1.1, NOW).flags == QuoteFlag.OK
    assert Quote("X", 1.2, 1.1, NOW).flags & QuoteFlag.CROSSED
    assert not Quote("X", 1.2, 1.1, NOW).is_usable and math.isnan(Quote("X", 1.2, 1.1, NOW).mid)
    assert Quote("X", math.nan, 1.1, NOW).flags & QuoteFlag.MISSING_BID
    assert Quote("X", -0.1, 1.1, NOW).flags & QuoteFlag.NEGATIVE
    assert Quote("X", 0.0, 0.05, NOW).flags & QuoteFlag.ZERO_BID
    assert Quote("X", 0.0, 0.05, NOW).mid == pytest.approx(0.025)


def _chain() -> OptionChain:
    opts, bid, ask = [], [], []
    for exp in (date(2026, 12, 18), date(2026, 11, 27)):
        for k in (90, 100, 110):
            for r in (Right.PUT, Right.CALL):
                opts.append(Option("SPY", exp, Decimal(k), r))
                bid.append(1.0 + k / 100)
                ask.append(1.2 + k / 100)
    bid[0], ask[0] = 2.0, 1.0  # one crossed quote
    return OptionChain.build("SPY", 101.0, NOW, opts, bid=bid, ask=ask)


def test_chain_when_built_then_sorted_columnar_and_sliceable():
    ch = _chain()
    assert len(ch) == 12
    assert list(ch.expiry_dates()) == [date(2026, 11, 27), date(2026, 12, 18)]
    assert np.all(np.diff(ch.expiry.astype("int64")) >= 0)
    first = ch.for_expiry(date(2026, 11, 27))
    assert len(first) == 6 and first.is_call[0] and not first.is_call[1]  # calls before puts per strike
    assert ch.atm_strike(date(2026, 12, 18)) == 100.0
    assert ch.time_to_expiry()[0] > 0
    assert ch.crossed_mask().sum() == 1
    assert np.isnan(ch.mid).sum() == 1  # crossed quote has no mid
    row = ch.row_of(ch.symbol[3])
    assert ch.option(row).key == ch.symbol[3]


def test_chain_when_columns_mismatch_then_value_error():
    ch = _chain()
    with pytest.raises(ValueError, match="bid"):
        OptionChain(underlying="SPY", spot=1, ts=NOW, symbol=ch.symbol, expiry=ch.expiry, strike=ch.strike,
                    is_call=ch.is_call, bid=ch.bid[:3], ask=ch.ask, bid_size=ch.bid_size, ask_size=ch.ask_size,
                    last=ch.last, volume=ch.volume, open_interest=ch.open_interest)


def test_round_to_tick_and_state_machine():
    assert round_to_tick(Decimal("1.234"), Decimal("0.05")) == Decimal("1.25")
    assert round_to_tick(Decimal("-1.226"), Decimal("0.01")) == Decimal("-1.23")
    with pytest.raises(ValueError):
        round_to_tick(Decimal("1"), Decimal("0"))
    assert can_transition(OrderStatus.PENDING_APPROVAL, OrderStatus.APPROVED)
    assert not can_transition(OrderStatus.FILLED, OrderStatus.CANCELLED)
    assert not can_transition(OrderStatus.PENDING_APPROVAL, OrderStatus.FILLED)


def test_leg_and_fill_signs():
    o = Option("SPY", date(2026, 12, 18), Decimal(100), Right.PUT)
    with pytest.raises(ValueError):
        Leg(o, Side.SELL, ratio=0)
    f = Fill("f1", "o1", o, -2, Decimal("1.50"), NOW, fee=Decimal("1.30"))
    assert f.cash_flow == Decimal("298.70")  # sold 2 × 1.50 × 100, minus fees


def test_chain_option_when_mixed_am_pm_index_chain_then_each_row_keeps_its_settlement():
    from engine.model import Settlement

    am = Option("SPX", date(2026, 12, 18), Decimal(6000), Right.CALL, underlying="SPX", style="european",
                settlement=Settlement.CASH_AM)
    pm = Option("SPXW", date(2026, 12, 18), Decimal(6000), Right.CALL, underlying="SPX", style="european",
                settlement=Settlement.CASH_PM)
    ch = OptionChain.build("SPX", 6000.0, NOW, [pm, am])
    rebuilt = {ch.option(i).root: ch.option(i).settlement for i in range(len(ch))}
    assert rebuilt == {"SPX": Settlement.CASH_AM, "SPXW": Settlement.CASH_PM}
