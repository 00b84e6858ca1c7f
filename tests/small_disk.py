"""A real full disk for fault tests: a small tmpfs mounted for the test, filled with a file until ENOSPC.

SQLite then fails writes with its own ``database or disk is full``. Mounting needs root (CAP_SYS_ADMIN); where
that is not available the test is skipped with the reason."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


class SmallDisk:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._filler = path / "filler.bin"

    def fill(self) -> None:
        """Write until the filesystem says no space is left."""
        with open(self._filler, "ab") as fh:
            try:
                while True:
                    fh.write(b"\0" * 65536)
                    fh.flush()
            except OSError:
                pass
        with contextlib.suppress(OSError), open(self.path / "filler2.bin", "ab") as fh:
            for _ in range(64):  # the last few blocks too
                fh.write(b"\0" * 512)
                fh.flush()

    def free(self) -> None:
        for name in ("filler.bin", "filler2.bin"):
            with contextlib.suppress(FileNotFoundError):
                (self.path / name).unlink()


@contextlib.contextmanager
def small_disk(size_kb: int = 8192) -> Iterator[SmallDisk]:
    if shutil.which("mount") is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("filling a disk needs a tmpfs mount (root)")
    d = tempfile.mkdtemp(prefix="optiondesk-fulldisk-")
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kb}k", "tmpfs", d], capture_output=True,
                         timeout=30)
    if res.returncode != 0:
        os.rmdir(d)
        pytest.skip(f"cannot mount a tmpfs: {res.stderr.decode(errors='replace').strip()}")
    try:
        yield SmallDisk(Path(d))
    finally:
        subprocess.run(["umount", "-l", d], capture_output=True, timeout=30)
        with contextlib.suppress(OSError):
            os.rmdir(d)
