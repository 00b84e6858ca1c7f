"""Widget tests: the shared qasync session loop (tests/qt_fixtures.py) plus engine-data fixtures."""

import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:  # --import-mode=importlib does not put the repo root on sys.path
    sys.path.insert(0, _ROOT)

from tests.qt_fixtures import *  # noqa: E402, F403
