"""The workstation keeps a core for its window: large pricing batches split over every core but one."""

from __future__ import annotations

import pytest

from app.runtime import keep_a_core_for_the_window
from engine.pricing import _split


@pytest.fixture(autouse=True)
def _restore():  # type: ignore[no-untyped-def]
    yield
    _split.set_threads(None)


def test_the_window_keeps_one_core_unless_the_environment_says(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(_split.THREADS_ENV, raising=False)
    monkeypatch.setattr(_split, "cores", lambda: 2)
    assert keep_a_core_for_the_window() == 1
    monkeypatch.setattr(_split, "cores", lambda: 8)
    assert keep_a_core_for_the_window() == 7
    monkeypatch.setattr(_split, "cores", lambda: 1)
    assert keep_a_core_for_the_window() == 1
    _split.set_threads(None)
    monkeypatch.setenv(_split.THREADS_ENV, "4")
    assert keep_a_core_for_the_window() == 4
