"""Suite-wide setup. Qt must run offscreen and pick PySide6 before anything imports Qt.

Time: no test may depend on the wall clock, the weekday or the hour (docs/architecture.md §9). Two guards:

- every simulated market a test builds in this process must have a pinned start (``tests/sim_start.py``);
  one left to "today" fails at once, naming the fix;
- ``OPTIONDESK_TEST_WALL_CLOCK=<ISO timestamp with zone>`` runs the whole session with the wall clock
  moved there (``time-machine``, ticking), which ``make test-clock`` uses to replay the clock-sensitive
  tests on a Saturday night, a holiday, a daylight-saving change and an expiry Friday after the close.
  ``time.monotonic`` is not moved, so asyncio timers and timeouts keep working.
"""

import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_API", "pyside6")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

import pytest
from hypothesis import settings

# Deterministic property tests (docs/architecture.md §9): the same examples on every run and in CI.
settings.register_profile("optiondesk", derandomize=True, print_blob=True)
settings.load_profile("optiondesk")

WALL_CLOCK_ENV = "OPTIONDESK_TEST_WALL_CLOCK"
_travel: Any = None


def wall_clock_destination(value: str) -> datetime:
    """The instant ``OPTIONDESK_TEST_WALL_CLOCK`` names; a zone is required (a naive time is ambiguous
    exactly on the daylight-saving days the variable exists to test)."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise pytest.UsageError(f"{WALL_CLOCK_ENV}={value!r} is not an ISO timestamp "
                                "(e.g. 2026-12-05T23:30:00-05:00)") from None
    if when.tzinfo is None:
        raise pytest.UsageError(f"{WALL_CLOCK_ENV}={value!r} has no zone: add an offset such as -05:00")
    return when


def pytest_configure(config: pytest.Config) -> None:
    global _travel
    config.addinivalue_line("markers", "wall_clock_start: the test builds a simulated market on today's "
                                       "date on purpose (it moves the wall clock itself)")
    value = os.environ.get(WALL_CLOCK_ENV, "").strip()
    if value and _travel is None:
        import time_machine

        _travel = time_machine.travel(wall_clock_destination(value), tick=True)
        _travel.start()


def pytest_report_header(config: pytest.Config) -> str | None:
    value = os.environ.get(WALL_CLOCK_ENV, "").strip()
    return f"wall clock moved to {value} ({WALL_CLOCK_ENV})" if value else None


@pytest.fixture(autouse=True, scope="session")
def _simulated_markets_are_pinned() -> Iterator[None]:
    """Fail a test that builds a simulated market on "today": its outcome would depend on the day."""
    from engine.market.simulated import market as sim_market

    wall_clock_start = sim_market._start_date

    def pinned_only(start: Any, config: Any) -> Any:
        if start is None and not config.start:
            raise AssertionError("a test built a simulated market on today's date: pass start= or use "
                                 "tests/sim_start.py (pinned_settings() for an Engine)")
        return wall_clock_start(start, config)

    pinned_only.wall_clock_start = wall_clock_start  # type: ignore[attr-defined]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sim_market, "_start_date", pinned_only)
        yield


@pytest.fixture()
def unpinned_simulated_start(monkeypatch: pytest.MonkeyPatch) -> None:
    """Lift the pinned-start guard for one test that exercises the start-on-today logic itself."""
    from engine.market.simulated import market as sim_market

    monkeypatch.setattr(sim_market, "_start_date", sim_market._start_date.wall_clock_start)


def pytest_unconfigure(config: pytest.Config) -> None:
    """A hang at interpreter exit fails the run instead of hanging CI: if this process has not exited
    60 s after the session ended, dump every thread's stack and exit with status 1. (The product
    itself leaves nothing behind — engine.process_pools — this only makes a regression loud.)
    It also brings the wall clock back if the session moved it."""
    import faulthandler

    global _travel
    if _travel is not None:
        _travel.stop()
        _travel = None

    faulthandler.dump_traceback_later(60, exit=True)
