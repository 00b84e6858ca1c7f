import importlib.util
import sys
from pathlib import Path

import pytest


def _load(name: str, path: Path) -> None:
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)


_load("risk_kit", Path(__file__).parent.parent / "risk" / "kit.py")
_load("oms_harness", Path(__file__).with_name("harness.py"))


@pytest.fixture
async def desk(tmp_path):
    from oms_harness import Harness

    h = await Harness(tmp_path / "db.sqlite").start()
    yield h
    await h.stop()
