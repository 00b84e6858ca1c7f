"""``datetime64_in``: the typed spelling of ``np.datetime64(value, unit)`` must convert exactly as numpy does
(floor to the unit, NaT kept) for datetime64 values and for dates alike."""

from __future__ import annotations

from datetime import date, datetime
from typing import Literal

import numpy as np
import pytest

from engine.model.chain import datetime64_in


@pytest.mark.parametrize("value", [
    np.datetime64("2026-01-05T13:00:00"),
    np.datetime64("1969-12-31T23:59:59"),  # before the epoch: floored to the day, not rounded toward it
    np.datetime64("2026-01-05"),
    np.datetime64("2026-01"),
    np.datetime64("NaT"),
    date(2026, 3, 20),
    datetime(2026, 3, 20, 15, 30),
])
@pytest.mark.parametrize("unit", ["D", "s"])
def test_same_as_numpy_constructor(value: np.datetime64 | date, unit: Literal["D", "s"]) -> None:
    got = datetime64_in(value, unit)
    want = np.datetime64(value, unit)
    assert isinstance(got, np.datetime64)
    assert np.datetime_data(got.dtype)[0] == unit
    assert (np.isnat(got) and np.isnat(want)) or got == want


def test_floors_a_timestamp_to_its_day() -> None:
    assert datetime64_in(np.datetime64("1969-12-31T13:00:00"), "D") == np.datetime64("1969-12-31")
