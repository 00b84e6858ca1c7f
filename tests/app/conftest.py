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


def fast_settings():
    """Default settings, except the surface fits run on a thread: spawning the fit process (and
    waiting for it on stop) costs seconds per engine on a loaded 2-core box and is not what the app
    tests exercise."""
    from engine.settings import Settings
    from tests.sim_start import pinned_settings

    s = Settings()
    return pinned_settings(s.model_copy(update={"surface": s.surface.model_copy(update={"executor": "thread"})}))


def engine_config(home, **kw):
    from engine.core import EngineConfig

    kw.setdefault("seed", 7)
    kw.setdefault("clock_interval_s", 0.2)
    return EngineConfig.for_directory(home, settings=fast_settings(), **kw)


@pytest.fixture()
def engine(qtbot, async_cleanup, engine_home):
    """A real, started Engine (simulated market, paper broker, order path) on the session qasync loop."""
    from engine.core import Engine

    eng = Engine(engine_config(engine_home))
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
