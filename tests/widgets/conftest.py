"""Widget tests: the shared qasync session loop (tests/qt_fixtures.py), a started engine, real chains."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # --import-mode=importlib does not put the repo root on sys.path
    sys.path.insert(0, _ROOT)

import pytest  # noqa: E402

from tests.analytics.conftest import NOW, priced_chain  # noqa: E402, F401
from tests.qt_fixtures import *  # noqa: E402, F403
from tests.qt_fixtures import run_async  # noqa: E402

SHOTS = Path(__file__).resolve().parents[2] / "build" / "panel-shots"


@pytest.fixture()
def engine(qtbot, async_cleanup, tmp_path):
    """A real, started Engine (bus, store, settings) without a market feed."""
    from engine.core import Engine, EngineConfig

    eng = Engine(EngineConfig.for_directory(tmp_path, feed="none"))
    run_async(qtbot, eng.start())
    yield eng
    run_async(qtbot, eng.stop())


@pytest.fixture()
def shot():
    """Save a widget's grab() as PNG under build/panel-shots and check it is not blank."""

    def save(widget, name: str):
        from PySide6.QtGui import QImage

        widget.resize(widget.size() if widget.width() > 200 else widget.sizeHint())
        img = widget.grab().toImage().convertToFormat(QImage.Format.Format_RGB32)
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}.png"
        img.save(str(path))
        # non-blank: many distinct colours
        colours = {img.pixel(x, y) for x in range(0, img.width(), 7) for y in range(0, img.height(), 7)}
        assert len(colours) > 8, f"{name} looks blank ({len(colours)} colours)"
        return path

    return save
