"""engine/ must run without a display and without heavy optional packages imported."""

import subprocess
import sys

PROBE = r"""
import importlib, pkgutil, sys
import engine
failed = []
for mod in pkgutil.walk_packages(engine.__path__, "engine."):
    try:
        importlib.import_module(mod.name)
    except Exception as exc:
        failed.append(f"{mod.name}: {type(exc).__name__}: {exc}")
forbidden = ["PySide6", "pyqtgraph", "qasync", "torch", "xgboost", "tastytrade", "ib_async"]
leaked = [name for name in forbidden if name in sys.modules]
print("FAILED", failed)
print("LEAKED", leaked)
print("COUNT", sum(1 for n in sys.modules if n.startswith("engine.")))
"""


def test_import_every_engine_module_when_fresh_interpreter_then_no_qt_or_heavy_sdk_loaded():
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = dict(line.split(" ", 1) for line in proc.stdout.strip().splitlines())
    assert lines["FAILED"] == "[]", lines["FAILED"]
    assert lines["LEAKED"] == "[]", f"engine import pulled in {lines['LEAKED']}"
    assert int(lines["COUNT"]) >= 10
