"""The backtest config names the paper exchange's fee presets and slippage models itself: a bad one is refused
when the config is read (naming the key), not when the run builds its exchange."""

from __future__ import annotations

import typing

import pytest
from pydantic import ValidationError

from engine.backtest.config import BacktestConfig
from engine.brokers.paper_config import PaperConfig, SlippageConfig


def test_presets_match_the_paper_exchange() -> None:
    def choices(model: type, field: str) -> set[str]:
        return set(typing.get_args(model.model_fields[field].annotation))

    assert choices(BacktestConfig, "fee_preset") == choices(PaperConfig, "fees")
    assert choices(BacktestConfig, "slippage_model") == choices(SlippageConfig, "model")


@pytest.mark.parametrize(("key", "value"), [("fee_preset", "free_lunch"), ("slippage_model", "random")])
def test_bad_preset_is_refused_naming_the_key(key: str, value: str) -> None:
    with pytest.raises(ValidationError, match=key):
        BacktestConfig.model_validate({key: value})


def test_every_preset_is_accepted() -> None:
    for fees in typing.get_args(PaperConfig.model_fields["fees"].annotation):
        assert BacktestConfig(fee_preset=fees).fee_preset == fees
    for model in typing.get_args(SlippageConfig.model_fields["model"].annotation):
        assert BacktestConfig(slippage_model=model).slippage_model == model
