"""`optiondesk doctor`: what this installation has, and what is broken.

Qt is probed in a subprocess: the engine never imports Qt, and a Qt that aborts must not take the
report down with it.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from engine.paths import AppPaths

REQUIRED_PACKAGES = ("numpy", "scipy", "pandas", "sqlite-utils", "keyring", "platformdirs", "pydantic",
                     "PySide6-Essentials", "pyqtgraph", "qasync")
OPTIONAL_PACKAGES = ("tastytrade", "ib_async", "torch", "xgboost-cpu", "QuantLib", "dask", "exchange_calendars")

_QT_PROBE = r"""
import importlib, json, os, sys
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
out = {}
try:
    pyside = importlib.import_module("PySide6")
    qtcore = importlib.import_module("PySide6.QtCore")
    qtgui = importlib.import_module("PySide6.QtGui")
    out["pyside6"] = pyside.__version__
    out["qt"] = qtcore.qVersion()
    app = qtgui.QGuiApplication.instance() or qtgui.QGuiApplication(sys.argv[:1])
    out["platform"] = app.platformName()
    out["opengl"] = bool(qtgui.QOpenGLContext().create())
except Exception as exc:  # the probe subprocess reports any Qt failure as JSON for the doctor to show
    out["error"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(out))
"""


@dataclass
class DoctorReport:
    optiondesk: str
    python: str
    platform: str
    packages: dict[str, str | None]
    qt: dict[str, Any]
    keyring: dict[str, Any]
    paths: dict[str, str]
    database: dict[str, Any]
    opengl: bool
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> str:
        d = asdict(self)
        d["ok"] = self.ok
        from engine.cli_errors import dumps_json

        return dumps_json(d, indent=2)


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def probe_qt(timeout: float = 30.0) -> dict[str, Any]:
    try:
        proc = subprocess.run([sys.executable, "-c", _QT_PROBE], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"Qt probe timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"error": f"Qt probe exited with {proc.returncode}: {tail[0]}"}
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": f"Qt probe printed no report: {proc.stdout[-200:]!r}"}


def probe_keyring() -> dict[str, Any]:
    try:
        import keyring
        from keyring.backends import fail

        backend = keyring.get_keyring()
        name = f"{type(backend).__module__}.{type(backend).__name__}"
        usable = not isinstance(backend, fail.Keyring) and getattr(backend, "priority", 0) > 0
        return {"backend": name, "can_store_secrets": bool(usable),
                "note": "" if usable else "no keyring backend: secrets are kept in memory for the session only"}
    except Exception as exc:  # keyring backends raise their own types (dbus, secretstorage): any means unavailable
        return {"backend": None, "can_store_secrets": False, "note": f"keyring unavailable: {exc}"}


def run_doctor(paths: AppPaths | None = None) -> DoctorReport:
    import engine

    paths = paths or AppPaths.default()
    problems: list[str] = []
    notes: list[str] = []
    packages = {p: _version(p) for p in (*REQUIRED_PACKAGES, *OPTIONAL_PACKAGES)}
    for p in REQUIRED_PACKAGES:
        if packages[p] is None:
            problems.append(f"required package {p} is not installed (run `make run` or `pip install -e .`)")
    pyside = packages.get("PySide6-Essentials")
    if pyside and pyside.startswith("6.12.0"):
        problems.append("PySide6 6.12.0 aborts Python 3.11 after a few hundred signal emits; install <6.12")
    qt = probe_qt()
    if "error" in qt:
        problems.append(f"Qt does not start: {qt['error']}")
    from engine.system_libraries import apt_install_line, missing_xcb_libraries

    missing_x11 = missing_xcb_libraries()
    if missing_x11:
        qt["missing_x11_libraries"] = missing_x11
        problems.append(f"the window cannot open on X11: Qt's xcb plugin needs {', '.join(missing_x11)}; "
                        f"install them with: {apt_install_line(missing_x11) or 'your package manager'}")
    opengl = bool(qt.get("opengl", False))
    if not opengl:
        notes.append("no OpenGL context (normal offscreen/headless): the surface shows as a 2-D heatmap")
    kr = probe_keyring()
    if not kr["can_store_secrets"]:
        notes.append(kr["note"])
    path_info = {"data_dir": str(paths.data_dir), "config_dir": str(paths.config_dir), "log_dir": str(paths.log_dir),
                 "database": str(paths.database), "settings": str(paths.settings_file)}
    db: dict[str, Any] = {}
    try:
        paths.ensure()
        for d in (paths.data_dir, paths.config_dir, paths.log_dir):
            probe = Path(d) / ".doctor-write-test"
            probe.write_text("ok")
            probe.unlink()
        from engine.store import SchemaTooNewError, Store

        try:
            store = Store.open(paths.database)
        except SchemaTooNewError as exc:
            db = {"schema_version": exc.db_version, "latest": exc.latest, "integrity": "not checked"}
            problems.append(str(exc))
        else:
            try:
                db = {"schema_version": store.schema_version, "latest": Store.latest_version(),
                      "integrity": store.integrity_check()}
            finally:
                store.close()
            if db["integrity"] != "ok":
                problems.append(f"database integrity check failed: {db['integrity']}")
    except Exception as exc:  # the doctor lists every problem it finds instead of crashing on the first
        problems.append(f"data folders or database unusable: {type(exc).__name__}: {exc}")
    from engine.settings import load_settings

    sr = load_settings(paths.settings_file)
    for e in sr.errors:
        kept = f"file kept, copy at {sr.backup_path}" if sr.backup_path else "file left as it is"
        notes.append(f"settings: {e} (defaults used; {kept})")
    return DoctorReport(
        optiondesk=engine.__version__, python=platform.python_version(), platform=platform.platform(),
        packages=packages, qt=qt, keyring=kr, paths=path_info, database=db, opengl=opengl,
        problems=problems, notes=notes,
    )


def format_report(r: DoctorReport) -> str:
    lines = [f"Optiondesk {r.optiondesk} on Python {r.python} ({r.platform})"]
    lines.append(f"Qt {r.qt.get('qt', '?')} / PySide6 {r.qt.get('pyside6', '?')}  platform={r.qt.get('platform', '?')}  "
                 f"OpenGL={'yes' if r.opengl else 'no'}")
    for name, v in r.packages.items():
        lines.append(f"  {name:<20} {v or '-'}")
    lines.append(f"keyring: {r.keyring.get('backend')} (stores secrets: {'yes' if r.keyring.get('can_store_secrets') else 'no'})")
    for k, v in r.paths.items():
        lines.append(f"{k:<11} {v}")
    lines.append(f"database schema version {r.database.get('schema_version', '?')} (latest {r.database.get('latest', '?')})")
    for n in r.notes:
        lines.append(f"note: {n}")
    for p in r.problems:
        lines.append(f"PROBLEM: {p}")
    lines.append("OK" if r.ok else f"{len(r.problems)} problem(s) found")
    return "\n".join(lines)
