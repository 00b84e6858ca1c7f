"""Loads the order-path harness of the OMS tests (``tests/oms/harness.py`` and ``tests/risk/kit.py``) under the
module names those files import each other by, so the chaos suite drives exactly the path the crash tests
drive: real paper broker, real SQLite store, real bus, real kill switch."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent.parent
ROOT = TESTS.parent


def _load(name: str, path: Path) -> None:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)


_load("risk_kit", TESTS / "risk" / "kit.py")
_load("oms_harness", TESTS / "oms" / "harness.py")

from oms_harness import Harness, spy_chain, wait_for  # noqa: E402
from risk_kit import NOW, opt  # noqa: E402

__all__ = ["NOW", "ROOT", "Harness", "opt", "spy_chain", "wait_for"]
