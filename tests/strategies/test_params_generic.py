"""``Strategy[P]``: the parameter model a strategy declares to the type checker is the one that validates at
run time (``Params``). ``Strategy.parse_params`` casts to P on the strength of this, so a strategy whose two
declarations drift apart must fail here rather than type-check against fields it does not have."""

from __future__ import annotations

from typing import Any, TypeVar, get_args, get_origin

import pytest

from engine import strategies
from engine.strategies.base import ManagedStrategy, Strategy, StrategyParams


def declared_params(cls: type[Strategy[Any]]) -> type[StrategyParams] | None:
    """The concrete P of the nearest ``Strategy[P]`` / ``ManagedStrategy[P]`` base in ``cls``'s MRO."""
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            if get_origin(base) in (Strategy, ManagedStrategy):
                (arg,) = get_args(base)
                if not isinstance(arg, TypeVar):
                    return arg
    return None


@pytest.mark.parametrize("name", sorted(strategies.registry()))
def test_every_strategy_declares_its_own_params_model(name: str) -> None:
    cls = strategies.registry()[name]
    assert declared_params(cls) is cls.Params, f"{cls.__name__}: Strategy[...] and Params disagree"
    made = strategies.create(name, strategy_id=f"{name}-t")
    assert type(made.params) is cls.Params


def test_declared_params_sees_a_mismatch() -> None:
    """The check above can fail: a strategy typed with one model and validating with another is caught."""
    from engine.strategies.put_write import PutWrite, PutWriteParams
    from engine.strategies.short_strangle import ShortStrangleParams

    class Drifted(ManagedStrategy[PutWriteParams]):
        Params = ShortStrangleParams

    assert declared_params(PutWrite) is PutWriteParams
    assert declared_params(Drifted) is PutWriteParams
    assert declared_params(Drifted) is not Drifted.Params


def test_parse_params_keeps_validation_and_the_strategy_defaults() -> None:
    from engine.strategies.put_write import PutWrite, PutWriteParams

    p = PutWrite.parse_params({"underlying": "QQQ", "rules.dte_exit": "none"})
    assert isinstance(p, PutWriteParams)
    assert p.underlying == "QQQ" and p.rules.dte_exit is None
    assert p.rules.profit_target == PutWriteParams().rules.profit_target
    same = PutWriteParams(underlying="IWM")
    assert PutWrite.parse_params(same) is same
    with pytest.raises(ValueError, match="not_a_field"):
        PutWrite.parse_params({"not_a_field": 1})
