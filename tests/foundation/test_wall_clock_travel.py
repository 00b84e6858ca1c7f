"""``OPTIONDESK_TEST_WALL_CLOCK`` (tests/conftest.py) really moves a pytest session's wall clock, keeps
asyncio's monotonic clock running, and refuses a value it cannot place in time. Each case runs a small
pytest session in a subprocess with a copy of the suite's conftest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

PROBE = '''
import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest


async def test_probe():
    start = datetime.now(UTC)
    assert abs(start - datetime(2026, 12, 6, 4, 30, tzinfo=UTC)) < timedelta(seconds=60)
    assert start.astimezone().year == 2026
    t0 = time.monotonic()
    await asyncio.sleep(0.05)  # asyncio's timers run on time.monotonic, which is not moved
    assert time.monotonic() - t0 >= 0.04
    assert datetime.now(UTC) > start  # the moved clock ticks


def test_a_simulated_market_left_on_today_is_refused():
    from engine.market.config import SimulatorConfig
    from engine.market.simulated.market import SimulatedMarket

    with pytest.raises(AssertionError, match="pin"):
        SimulatedMarket(SimulatorConfig(seed=7).restricted_to(["SPY"]))
'''


def _session(tmp_path: Path, value: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(PROBE)
    (tmp_path / "pytest.ini").write_text("[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n")
    env = {k: v for k, v in os.environ.items() if k != "OPTIONDESK_TEST_WALL_CLOCK"}
    if value is not None:
        env["OPTIONDESK_TEST_WALL_CLOCK"] = value
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args, str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_wall_clock_variable_when_set_then_the_session_runs_at_that_instant(tmp_path):
    out = _session(tmp_path, "2026-12-05T23:30:00-05:00")  # Saturday night in New York
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "2 passed" in out.stdout


def test_wall_clock_variable_when_unset_then_the_clock_stays_and_unpinned_markets_are_still_refused(tmp_path):
    out = _session(tmp_path, None, "-k", "refused")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "1 passed, 1 deselected" in out.stdout


@pytest.mark.parametrize(("value", "message"), [
    ("2026-12-05T23:30:00", "has no zone: add an offset such as -05:00"),
    ("next saturday", "is not an ISO timestamp"),
])
def test_wall_clock_variable_when_unusable_then_pytest_stops_naming_it(tmp_path, value, message):
    out = _session(tmp_path, value)
    assert out.returncode == 4  # a usage error: no test ran on a clock nobody asked for
    assert f"OPTIONDESK_TEST_WALL_CLOCK={value!r} {message}" in out.stdout + out.stderr
