"""``RiskEngine.check`` runs in named stages; a denial says which stage said no.

validate → trading_state → order_risk → portfolio_risk → throttle (nautilus' ``_check_order`` /
``_check_orders_risk`` split). Each check result carries its stage; the decision's ``stage`` is the first
stage with a failure and its summary names it.
"""

from datetime import date

from risk_kit import Desk, make_order, opt

from engine.model import Side
from engine.risk.checks import CHECKS
from engine.risk.decision import STAGES
from engine.risk.state import TradingState


def test_stages_when_order_passes_then_every_result_names_its_stage(desk):
    d = desk.risk.check(desk.put_spread())
    assert d.passed and d.stage == ""
    by_stage = {}
    for r in d.results:
        by_stage.setdefault(r.stage, []).append(r.name)
    assert list(by_stage) == list(STAGES)
    assert by_stage["validate"] == ["order_valid"]
    assert by_stage["trading_state"] == ["trading_state"]
    assert {"market_data", "max_loss_per_trade", "price_collar"} <= set(by_stage["order_risk"])
    assert {"delta", "buying_power", "open_positions"} <= set(by_stage["portfolio_risk"])
    assert by_stage["throttle"] == ["order_rate", "duplicate"]


def test_checks_when_order_passes_then_listed_one_per_check_in_table_order(desk):
    d = desk.risk.check(desk.put_spread())
    assert [r.name for r in d.results] == [
        "order_valid", "trading_state", "market_data", "max_loss_per_trade", "price_collar", "position_size",
        "daily_loss", "drawdown", "delta", "gamma", "vega", "theta", "leverage", "open_positions", "buying_power",
        "order_rate", "duplicate"]
    table_stages = [stage for stage, _ in CHECKS]
    assert sorted(table_stages, key=STAGES.index) == table_stages  # the table runs the stages in their order


def test_checks_when_reducing_then_exposure_limits_skipped_but_buying_power_and_throttle_run(desk):
    desk.hold(desk.c610, 2)
    d = desk.risk.check(make_order([(desk.c610, Side.SELL, 1)], 1, f"-{desk.mid(desk.c610):.2f}"))
    assert d.passed and d.reducing
    assert [r.name for r in d.results] == ["order_valid", "trading_state", "market_data", "price_collar",
                                           "buying_power", "order_rate", "duplicate"]


def test_stages_when_invalid_then_validate_says_no_and_later_stages_do_not_run(desk):
    d = desk.risk.check(make_order([(desk.c610, Side.BUY, 1)], 10**30, "1.00"))
    assert not d.passed and d.stage == "validate"
    assert [r.name for r in d.results] == ["order_valid"]
    assert d.results[0].code == "quantity_too_large"
    assert d.summary().startswith("validate: ")
    assert desk.risk.bucket.tokens == desk.risk.profile.order_burst  # no token taken


def test_stages_when_expired_contract_then_denied_as_expired_not_for_missing_quotes(desk):
    old = opt(590, "P", expiry=date(2025, 12, 19))
    d = desk.risk.check(make_order([(old, Side.BUY, 1)], 1, "1.00"))
    assert d.stage == "validate" and d.results[0].code == "contract_expired"
    assert old.key in d.results[0].message


def test_stages_when_several_fail_then_first_failing_stage_is_the_decision_stage():
    desk = Desk()
    desk.state = TradingState.HALTED
    d = desk.risk.check(desk.put_spread(qty=10))
    assert d.stage == "trading_state"
    assert {r.stage for r in d.failed} >= {"trading_state", "order_risk"}  # every failure is still reported


def test_stages_when_only_the_throttle_fails_then_throttle_says_no(desk):
    assert desk.risk.check(desk.put_spread(oid="a")).passed
    d = desk.risk.check(desk.put_spread(oid="b"))
    assert d.stage == "throttle" and [r.name for r in d.failed] == ["duplicate"]
    assert "throttle: " in d.summary()
