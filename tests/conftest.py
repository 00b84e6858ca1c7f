"""Suite-wide setup. Qt must run offscreen and pick PySide6 before anything imports Qt."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_API", "pyside6")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

from hypothesis import settings

# Deterministic property tests (DESIGN.md §9): the same examples on every run and in CI.
settings.register_profile("optiondesk", derandomize=True, print_blob=True)
settings.load_profile("optiondesk")
