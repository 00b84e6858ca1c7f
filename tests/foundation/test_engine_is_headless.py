"""engine/ must run without a display: every module of it imports in a fresh interpreter without Qt (or
the heavy broker SDKs and ML libraries, which load lazily where they are used)."""

import subprocess
import sys

PROBE = r"""
import importlib, json, pkgutil, sys
{preload}
import engine
walked, failed = [], []
for mod in pkgutil.walk_packages(engine.__path__, "engine.", onerror=lambda name: failed.append(name)):
    walked.append(mod.name)
    try:
        importlib.import_module(mod.name)
    except Exception as exc:
        failed.append(f"{{mod.name}}: {{type(exc).__name__}}: {{exc}}")
qt = ("PySide6", "PySide2", "PyQt5", "PyQt6", "shiboken6", "pyqtgraph", "qasync")
heavy = ("torch", "xgboost", "tastytrade", "ib_async")
loaded = lambda roots: sorted({{n.split(".")[0] for n in sys.modules if n.split(".")[0] in roots}})
print(json.dumps({{"walked": walked, "failed": failed, "qt": loaded(qt), "heavy": loaded(heavy),
                  "imported": sorted(n for n in sys.modules if n.startswith("engine."))}}))
"""


def _probe(preload: str = "") -> dict:
    import json

    proc = subprocess.run([sys.executable, "-c", PROBE.format(preload=preload)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_every_engine_module_when_fresh_interpreter_then_no_qt_or_heavy_sdk_loaded():
    seen = _probe()
    assert seen["failed"] == [], seen["failed"]
    assert len(seen["walked"]) > 100 and "engine.core" in seen["walked"] and "engine.facade_types" in seen["walked"]
    assert set(seen["walked"]) <= set(seen["imported"])  # every module really was imported
    assert seen["qt"] == [], f"engine import pulled in {seen['qt']}"
    assert seen["heavy"] == [], f"engine import pulled in {seen['heavy']} at import time"


def test_the_probe_sees_qt_when_it_is_loaded():
    seen = _probe("import PySide6.QtCore")
    assert seen["qt"] == ["PySide6", "shiboken6"]
