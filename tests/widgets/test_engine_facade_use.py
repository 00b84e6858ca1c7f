"""Views reach the engine through its typed facade, bus commands and widgets/engine_queries.py: no probing
of engine attributes by name (``getattr(engine, "feed", None)``), which hid typos and renamed components."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROBE = re.compile(r"getattr\(\s*(engine|self\.engine|self\._engine)\b")


def probes_in(folder: Path) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*.py")):
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if PROBE.search(line):
                found.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()}")
    return found


def test_the_probe_pattern_finds_what_it_must() -> None:
    assert PROBE.search('feed = getattr(engine, "feed", None)')
    assert PROBE.search('x = getattr(getattr(self.engine, "risk", None), "profile", None)')
    assert not PROBE.search("feed = engine.feed if engine is not None else None")


def test_widgets_and_app_do_not_probe_the_engine_with_getattr() -> None:
    found = probes_in(ROOT / "widgets") + probes_in(ROOT / "app")
    assert not found, "use the typed facade or widgets/engine_queries.py instead of:\n" + "\n".join(found)
