"""Fixtures for the app tests: the shared qasync loop (tests/qt_fixtures.py) plus an engine factory."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # --import-mode=importlib does not put the repo root on sys.path
    sys.path.insert(0, _ROOT)

from tests.qt_fixtures import *  # noqa: E402, F403
