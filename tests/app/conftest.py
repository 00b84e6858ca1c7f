"""Fixtures for the app tests: the shared qasync loop (tests/qt_fixtures.py) plus an engine factory."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # --import-mode=importlib does not put the repo root on sys.path
    sys.path.insert(0, _ROOT)

import pytest  # noqa: E402

from tests.qt_fixtures import *  # noqa: E402, F403
from tests.qt_fixtures import run_async  # noqa: E402


@pytest.fixture()
def engine_home(tmp_path):
    """A private data/config/log folder for one test."""
    return tmp_path / "home"


@pytest.fixture()
def engine(qtbot, async_cleanup, engine_home):
    """A real, started Engine (simulated market when the build has it) on the session qasync loop."""
    from engine.core import Engine, EngineConfig

    eng = Engine(EngineConfig.for_directory(engine_home, seed=7, clock_interval_s=0.2))
    run_async(qtbot, eng.start(), timeout=30)
    yield eng
    run_async(qtbot, eng.stop(), timeout=30)


@pytest.fixture()
def qsettings(tmp_path):
    from PySide6 import QtCore

    return QtCore.QSettings(str(tmp_path / "window.ini"), QtCore.QSettings.Format.IniFormat)


@pytest.fixture()
def window(qtbot, engine, qsettings):
    """The full main window on the engine, shown offscreen; shut down after the test."""
    from app.main_window import MainWindow

    win = MainWindow(engine, qsettings=qsettings, restore_layout=False)
    qtbot.addWidget(win)
    win.start()
    win.show()
    qtbot.waitExposed(win)
    yield win
    win.shutdown()
