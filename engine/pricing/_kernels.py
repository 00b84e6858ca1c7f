"""Optional compiled kernels (numba): availability, cache directory, background warm-up.

The pricing functions use the compiled kernels only once they are *loaded*; until then (and whenever numba is
missing, fails, or ``OPTIONDESK_NO_NUMBA=1``) they run the numpy reference path, which gives the same numbers
to ~1e-15. Loading means compiling on a first run (tens of seconds) or reading numba's on-disk cache
(about a second), so it never happens on a caller's thread by surprise: the engine starts a :class:`WarmUp`
thread at start and stops it at stop; scripts and benchmarks call :func:`warm_up` themselves; a frozen build
calls :func:`prewarm_cache` at build time. Importing this module imports neither numba nor the kernels.

Other pricers may put their own kernels behind the same switch: :func:`numba_available`,
:func:`configure_cache_dir` and :func:`warm_up` are the public pieces.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

#: set to 1 to keep the numpy path (no numba import at all)
DISABLE_ENV = "OPTIONDESK_NO_NUMBA"
_KERNEL_MODULE = "engine.pricing._jit"
#: pricers (and the surface fit) with kernels of their own, loaded by :func:`warm_up` after these
_OTHER_PRICERS = ("engine.pricing.american", "engine.surface.svi")

_lock = threading.Lock()
_loaded: ModuleType | None = None
_failure: str | None = None
_enabled = True
_load_seconds: float | None = None
_loaded_on: str | None = None  # the thread that loaded the kernels (the warm-up's, in the engine)


def disabled_by_env() -> bool:
    """True when ``OPTIONDESK_NO_NUMBA`` asks for the numpy path (any value but '', '0', 'false', 'no')."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def numba_available() -> bool:
    """Whether numba can be used here: installed and not disabled. Does not import it."""
    if disabled_by_env():
        return False
    try:
        return importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):
        return False


def _writable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def configure_cache_dir(cache_dir: Path | str | None = None) -> Path | None:
    """Point numba's on-disk cache at a writable folder; returns the folder used (None: numba's default,
    the ``__pycache__`` next to this package, which is writable).

    ``cache_dir`` wins; else ``NUMBA_CACHE_DIR`` if already set; else the package's ``__pycache__`` when it is
    writable (a source checkout); else ``<app cache dir>/numba`` (a read-only install or a frozen build).
    Works before and after numba is imported."""
    chosen: Path | None = None
    if cache_dir is not None:
        chosen = Path(cache_dir)
    elif os.environ.get("NUMBA_CACHE_DIR"):
        chosen = Path(os.environ["NUMBA_CACHE_DIR"])
    elif not _writable(Path(__file__).resolve().parent / "__pycache__"):
        from engine.paths import cache_dir as app_cache_dir

        chosen = app_cache_dir() / "numba"
    if chosen is None:
        return None
    chosen.mkdir(parents=True, exist_ok=True)
    os.environ["NUMBA_CACHE_DIR"] = str(chosen)
    numba_mod = sys.modules.get("numba")
    if numba_mod is not None:  # numba read its config at import: update it in place
        numba_mod.config.CACHE_DIR = str(chosen)
    return chosen


def kernels() -> ModuleType | None:
    """The loaded kernel module, or None (not loaded yet, unavailable or switched off): never blocks."""
    return _loaded if _enabled else None


def warm_up(cache_dir: Path | str | None = None) -> bool:
    """Load (compile on a first run, else read from the cache) every kernel in the calling thread; True when
    the compiled path is now in use. Blocks for up to tens of seconds on a first run: call it from a
    background thread (:class:`WarmUp`), a script or a build step, never from the UI thread.

    A failure (numba missing, disabled, a compile error, an unwritable cache) is logged once and leaves the
    numpy path in use; it is not raised."""
    global _loaded, _failure, _load_seconds, _loaded_on
    if _loaded is not None:
        return True
    if disabled_by_env():
        return False
    with _lock:
        if _loaded is not None:
            return True
        if _failure is not None:
            return False
        if not numba_available():
            _failure = "numba is not installed"
            return False
        t0 = time.perf_counter()
        try:
            configure_cache_dir(cache_dir)
            module = importlib.import_module(_KERNEL_MODULE)
        except Exception as exc:  # any failure leaves the numpy path, which is always correct
            _failure = f"{type(exc).__name__}: {exc}"
            log.warning("compiled pricing kernels unavailable, using numpy: %s", _failure)
            return False
        _loaded_on = threading.current_thread().name
        _loaded = module
        for name in _OTHER_PRICERS:  # their own kernels behind this switch; a failure there leaves ours in use
            try:
                importlib.import_module(name).warm_up(cache_dir)
            except Exception:  # numba/LLVM may fail any way: that pricer stays on numpy, which is always correct
                log.warning("compiled kernels of %s unavailable, it uses numpy", name, exc_info=True)
        _load_seconds = time.perf_counter() - t0
        log.info("compiled pricing kernels loaded in %.2f s", _load_seconds)
        return True


def prewarm_cache(cache_dir: Path | str) -> bool:
    """Compile every kernel into ``cache_dir`` (for a frozen build or an installer step). numba keys its cache
    by the kernel module's path and modification time, so run this with the installed files in place."""
    return warm_up(cache_dir)


def status() -> dict[str, Any]:
    """What the pricing functions use right now, for logs, ``doctor`` and benchmarks."""
    return {"numba_available": numba_available(), "disabled_by_env": disabled_by_env(),
            "loaded": _loaded is not None, "enabled": _enabled, "in_use": kernels() is not None,
            "load_seconds": _load_seconds, "loaded_on_thread": _loaded_on, "failure": _failure,
            "cache_dir": os.environ.get("NUMBA_CACHE_DIR")}


@contextlib.contextmanager
def numpy_only() -> Iterator[None]:
    """Run the numpy reference path inside the block (tests and benchmarks compare the two paths).
    Process-wide, not per thread: do not use it while other threads price."""
    global _enabled
    previous = _enabled
    _enabled = False
    try:
        yield
    finally:
        _enabled = previous


class WarmUp:
    """Owns the background thread that loads the kernels; started and stopped by the engine.

    Loading cannot be interrupted half-way (numba compiles in C), so :meth:`stop` waits at most ``timeout``
    seconds and then leaves the daemon thread to finish on its own; the pricing functions keep using numpy
    until it has."""

    def __init__(self, cache_dir: Path | str | None = None) -> None:
        self.cache_dir = cache_dir
        self._thread: threading.Thread | None = None
        self._done = threading.Event()
        self.result: bool | None = None

    def start(self) -> bool:
        """Start the warm-up thread unless the kernels are loaded, numba is missing or disabled; True when
        a thread was started."""
        if self._thread is not None or kernels() is not None or not numba_available():
            self._done.set()
            return False
        self._thread = threading.Thread(target=self._run, name="optiondesk-numba-warmup", daemon=True)
        self._thread.start()
        return True

    def _run(self) -> None:
        try:
            self.result = warm_up(self.cache_dir)
        finally:
            self._done.set()

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the warm-up; True when it has finished (loaded or not)."""
        return self._done.wait(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self, timeout: float = 2.0) -> bool:
        """Join the thread for at most ``timeout`` seconds; True when it is no longer running."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()


def main(argv: list[str] | None = None) -> int:
    """``python -m engine.pricing._kernels [CACHE_DIR]``: compile the kernels (into CACHE_DIR) and print the status."""
    import json

    args = sys.argv[1:] if argv is None else argv
    ok = warm_up(args[0] if args else None)
    print(json.dumps(status(), indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
