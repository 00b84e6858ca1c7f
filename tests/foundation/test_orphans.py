"""No worker outlives its parent: SIGKILL a headless engine or the window and, within 5 s, every
process they started (pool workers, multiprocessing manager, resource tracker) is gone.

Orphans used to survive for good (one pool worker of ~96 MB per crashed engine, three per window)
and kept the dead process's stdout/stderr open, so a parent reading its output hung."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.sim_start import SIM_START

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads the process tree from /proc")

ROOT = Path(__file__).resolve().parents[2]

ENGINE_CHILD = textwrap.dedent("""
    import asyncio, sys
    from engine.core import Engine, EngineConfig
    from engine.process_pools import new_manager

    async def main():
        async with Engine(EngineConfig.for_directory(sys.argv[1], feed="none")) as engine:
            assert await engine.run_cpu(abs, -3) == 3          # the engine's process pool is up
            manager = await asyncio.to_thread(new_manager)     # as the backtest service holds one
            queue = manager.Queue()
            queue.put("x")
            print("ready", flush=True)
            await asyncio.sleep(3600)

    asyncio.run(main())
""")


def _ppid_and_state(pid: int) -> tuple[int, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces and parentheses
    return int(fields[1]), fields[0]


def _descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            info = _ppid_and_state(int(entry.name))
            if info is not None:
                children.setdefault(info[0], []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    """Still running: a zombie has exited (a container's init may never reap it)."""
    out = set()
    for pid in pids:
        info = _ppid_and_state(pid)
        if info is not None and info[1] != "Z":
            out.add(pid)
    return out


def _wait_for(predicate, timeout_s: float, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval_s)


def _kill_and_watch(proc: subprocess.Popen, minimum_children: int, start_timeout_s: float) -> tuple[set[int], set[int]]:
    """Wait until ``proc`` has started ``minimum_children`` processes, SIGKILL it, give its children
    5 s; returns (the children, those still alive)."""
    try:
        def started() -> set[int]:
            found = _descendants(proc.pid)
            return found if len(found) >= minimum_children else set()

        children = _wait_for(started, start_timeout_s, 0.25)
        assert proc.poll() is None, "the process ended before it was killed"
        assert children, f"only {sorted(_descendants(proc.pid))} started within {start_timeout_s} s"
        children = _descendants(proc.pid)
        proc.kill()
        proc.wait(10)
        _wait_for(lambda: not _alive(children), 5.0)
        return children, _alive(children)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def _clean(pids: set[int]) -> None:
    for pid in _alive(pids):
        os.kill(pid, signal.SIGKILL)


def test_sigkill_of_a_headless_engine_then_its_workers_exit_within_5_s(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", ENGINE_CHILD, str(tmp_path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready", proc.stderr.read()
    except Exception:
        proc.kill()
        raise
    # pool workers (2), the manager's server process and the resource tracker
    children, survivors = _kill_and_watch(proc, minimum_children=3, start_timeout_s=30)
    try:
        assert len(children) >= 3
        assert not survivors, f"alive 5 s after the engine's SIGKILL: {sorted(survivors)}"
    finally:
        _clean(children)


def test_sigkill_of_the_window_then_its_workers_exit_within_5_s(tmp_path: Path) -> None:
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen"}
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "settings.toml").write_text(f'[simulator]\nstart = "{SIM_START}"\n')
    # The window starts its surface-fit worker and the chain-analytics pool by itself once the chain streams.
    proc = subprocess.Popen([sys.executable, "-m", "app", "--home", str(tmp_path), "--seconds", "300"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    children, survivors = _kill_and_watch(proc, minimum_children=3, start_timeout_s=90)
    try:
        assert not survivors, f"alive 5 s after the window's SIGKILL: {sorted(survivors)}"
    finally:
        _clean(children)
