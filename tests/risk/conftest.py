import importlib.util
import sys
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("risk_kit", Path(__file__).with_name("kit.py"))
kit = importlib.util.module_from_spec(_spec)
sys.modules["risk_kit"] = kit
_spec.loader.exec_module(kit)


@pytest.fixture
def desk():
    return kit.Desk()
