"""Fixtures of the simulated-market tests: one small market per module (building the calendar is slow)."""

from __future__ import annotations

from datetime import date

import pytest

from engine.market.config import SimulatorConfig
from engine.market.simulated.market import SimulatedMarket

#: a Monday session with Thanksgiving (Thu) and an early close (Fri) later that week
MONDAY = date(2026, 11, 23)


@pytest.fixture(scope="module")
def market() -> SimulatedMarket:
    m = SimulatedMarket(SimulatorConfig(seed=11), start=MONDAY)
    m.advance(3600)
    m.reprice_full()
    return m
