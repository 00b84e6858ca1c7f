"""One clock (docs/architecture.md §7): engine code reads the time only from the engine clock.

The scan parses every module under ``engine/`` and resolves imports, so ``from datetime import datetime
as dt; dt.now()`` or ``from time import time; time()`` are found as surely as ``datetime.now(UTC)``.
Only ``engine/clock.py`` (the wall clock implementation) and ``engine/logging_setup.py`` (log records
carry real time) may read the wall clock.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

ENGINE = Path(__file__).resolve().parents[2] / "engine"
ALLOWED = {"engine/clock.py", "engine/logging_setup.py"}

#: fully qualified callables that read the wall clock whatever their arguments
_ALWAYS = {
    "datetime.datetime.now", "datetime.datetime.utcnow", "datetime.datetime.today", "datetime.date.today",
    "time.time", "time.time_ns", "pandas.Timestamp.now", "pandas.Timestamp.utcnow", "pandas.Timestamp.today",
}
#: ``time`` functions that read the wall clock when no explicit time is passed (``n`` = args of a full call)
_IMPLICIT = {"time.localtime": 1, "time.gmtime": 1, "time.ctime": 1, "time.asctime": 1, "time.strftime": 2}


def _aliases(tree: ast.Module) -> dict[str, str]:
    """Local name → fully qualified name for every import in the module (at any depth)."""
    names: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    names.setdefault("pd", "pandas")
    return names


def _qualified(node: ast.expr, names: dict[str, str]) -> str | None:
    parts: list[str] = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    parts.append(names.get(node.id, node.id))
    return ".".join(reversed(parts))


def wall_clock_calls(source: str, filename: str = "<source>") -> list[tuple[int, str]]:
    """(line, call) of every wall-clock read in ``source``."""
    tree = ast.parse(source, filename)
    names = _aliases(tree)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _qualified(node.func, names)
        if name is None:
            continue
        full_args = _IMPLICIT.get(name)
        if name in _ALWAYS or (full_args is not None and len(node.args) + len(node.keywords) < full_args):
            found.append((node.lineno, name))
    return found


def test_engine_reads_no_wall_clock_outside_clock_and_logging():
    offenders = []
    for path in sorted(ENGINE.rglob("*.py")):
        rel = path.relative_to(ENGINE.parent).as_posix()
        if rel in ALLOWED:
            continue
        for line, call in wall_clock_calls(path.read_text(encoding="utf-8"), rel):
            offenders.append(f"{rel}:{line}: {call}()")
    assert not offenders, ("engine code must take the time from the engine clock (engine/clock.py), not the "
                           "wall clock:\n" + "\n".join(offenders))


def test_scan_when_aliases_and_implicit_times_then_each_is_reported():
    src = textwrap.dedent("""
        import datetime as dtm
        import time
        from datetime import UTC, date
        from datetime import datetime as dt
        from time import time as now_s

        a = dt.now(UTC)
        b = dtm.datetime.utcnow()
        c = date.today()
        d = now_s()
        e = time.strftime("%H")
        f = time.strftime("%H", time.gmtime(0))
        g = time.localtime()
        h = dt.fromtimestamp(0, UTC)
        i = time.monotonic()
    """)
    assert wall_clock_calls(src) == [
        (8, "datetime.datetime.now"), (9, "datetime.datetime.utcnow"), (10, "datetime.date.today"),
        (11, "time.time"), (12, "time.strftime"), (14, "time.localtime"),
    ]
