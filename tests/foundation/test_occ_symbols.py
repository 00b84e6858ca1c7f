from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.model import Option, Right, Settlement

roots = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=6)
expiries = st.dates(min_value=date(2000, 1, 1), max_value=date(2099, 12, 31))
strikes = st.integers(min_value=1, max_value=99_999_999).map(lambda m: Decimal(m) / 1000)


@settings(max_examples=300, deadline=None)
@given(root=roots, expiry=expiries, strike=strikes, right=st.sampled_from([Right.CALL, Right.PUT]))
def test_format_then_parse_when_any_valid_contract_then_round_trips(root, expiry, strike, right):
    opt = Option(root=root, expiry=expiry, strike=strike, right=right)
    assert len(opt.occ) == 21
    back = Option.from_occ(opt.occ)
    assert (back.root, back.expiry, back.strike, back.right) == (root, expiry, strike, right)
    assert Option.from_occ(opt.key) == back  # compact form parses the same


def test_parse_when_spx_weekly_then_fields_and_expiry_instant_are_exact():
    o = Option.from_occ("SPXW  261218P05212500", underlying="SPX", settlement=Settlement.CASH_PM)
    assert (o.root, o.underlying, o.strike, o.right) == ("SPXW", "SPX", Decimal("5212.5"), Right.PUT)
    assert o.expires_at == datetime(2026, 12, 18, 21, 0, tzinfo=UTC)  # 16:00 New York in winter (EST)
    am = Option.from_occ("SPX   261218C05000000", settlement=Settlement.CASH_AM)
    assert am.expires_at == datetime(2026, 12, 18, 14, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("symbol", "problem"),
    [
        ("", "too short"),
        ("SPY2606", "too short"),
        ("SPY   261318C00600000", "invalid expiry"),
        ("SPY   260619X00600000", "right"),
        ("SPY   260619C0060000A", "strike"),
        ("SPY   26O619C00600000", "YYMMDD"),
        ("TOOLONGR260619C00600000", "root"),
        ("SPY   260619C00000000", "positive"),
        ("       260619C00600000", "no root"),
    ],
)
def test_parse_when_malformed_then_value_error_names_problem(symbol, problem):
    with pytest.raises(ValueError, match=problem):
        Option.from_occ(symbol)


def test_time_to_expiry_is_act365_to_the_exact_instant():
    o = Option.from_occ("SPY   260619C00600000")
    now = datetime(2026, 6, 18, 20, 0, tzinfo=UTC)  # 24 h before 16:00 EDT
    assert o.time_to_expiry(now) == pytest.approx(1 / 365, rel=1e-12)
