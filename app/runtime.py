"""QApplication + qasync done right (docs/architecture.md §2, §10).

One asyncio loop — qasync's ``QEventLoop`` — runs the Qt GUI and the engine. The main coroutine
(:func:`run_workstation`) starts the engine and the window, then waits until a quit is requested
(the window was closed, File ▸ Quit, Ctrl+C, or ``QApplication.aboutToQuit``), and only then stops
the bridge, the engine and every task it left, before returning. The Qt loop ends when that coroutine
has returned, never before — so there is no "Event loop stopped before Future completed".

``quitOnLastWindowClosed`` is off: closing the window asks the coroutine to shut down instead of
tearing Qt down underneath it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("QT_API", "pyside6")
os.environ.setdefault("PYQTGRAPH_QT_LIB", "PySide6")

from PySide6 import QtCore, QtWidgets

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)


class GuiThreadCollector(QtCore.QObject):
    """Cyclic garbage collection on the GUI thread only.

    Python runs a collection on whichever thread happens to allocate. When that is a worker thread
    (a surface fit, a broker SDK import) and the garbage holds Qt objects' wrappers — pyqtgraph's plot
    menus of a closed window, say — the C++ destructor runs on the worker, takes a Qt lock and waits
    for the GIL, while the GUI thread holds the GIL and waits for that lock: the workstation froze
    (seen in the 20-starts test). So automatic collection is switched off and this timer collects with
    the interpreter's own thresholds on the GUI thread (pyqtgraph's ``GarbageCollector`` does the same).
    Every 50 ms: at 5,000 quotes/s a 500 ms interval let a young generation grow to ~10 ms of work per
    pass (benchmarks/gui.py lag p99 ~24 ms against ~18 ms at 50 ms).
    """

    def __init__(self, interval_ms: int = 50, parent: QtCore.QObject | None = None) -> None:
        import gc

        super().__init__(parent)
        self._was_enabled = gc.isenabled()
        self.threshold = gc.get_threshold()
        gc.disable()
        self.timer = QtCore.QTimer(self)
        self.timer.timeout.connect(self.check)
        self.timer.start(interval_ms)
        self.collections = 0
        self._last_full = -1e9

    #: a full pass scans every object (tens of ms with the GUI's ~150k): at most this often, as the
    #: interpreter's own heuristic also keeps full passes rare once the live set is stable
    FULL_PASS_MIN_S = 60.0

    def check(self) -> None:
        import gc
        import time

        l0, l1, l2 = gc.get_count()
        if l0 <= self.threshold[0]:
            return
        generation = 1 if l1 > self.threshold[1] else 0
        now = time.monotonic()
        if generation == 1 and l2 > self.threshold[2] and now - self._last_full >= self.FULL_PASS_MIN_S:
            generation = 2
            self._last_full = now
        gc.collect(generation)
        self.collections += 1

    def stop(self) -> None:
        import gc

        self.timer.stop()
        if self._was_enabled:
            gc.enable()


#: Qt messages that say nothing to a user: the offscreen platform (self-test, CI) prints this once per
#: top-level window whose size hints change; windowing systems that do support it never print it
QT_NOISE = frozenset({"This plugin does not support propagateSizeHints()"})


def qt_message_handler(mode: QtCore.QtMsgType, _context: Any, message: str) -> None:
    """Qt's messages to stderr, as Qt's default handler writes them, minus :data:`QT_NOISE`."""
    if message in QT_NOISE:
        return
    sys.stderr.write(message + "\n")


def create_application(argv: Sequence[str] | None = None) -> QtWidgets.QApplication:
    """The process's ``QApplication`` (created once), named for QSettings and the desktop file."""
    app = QtWidgets.QApplication.instance()
    if app is None:
        app = QtWidgets.QApplication(list(argv) if argv is not None else sys.argv[:1])
    QtCore.qInstallMessageHandler(qt_message_handler)
    app.setApplicationName("optiondesk")
    app.setOrganizationName("optiondesk")
    # no applicationDisplayName: Qt appends it to every window title that does not end with it, which
    # turned "Optiondesk — PAPER" into "Optiondesk — PAPER — Optiondesk"
    app.setDesktopFileName("optiondesk")
    app.setQuitOnLastWindowClosed(False)
    keep_a_core_for_the_window()
    from app.resources import icon

    app.setWindowIcon(icon("optiondesk"))
    return app  # type: ignore[return-value]


def keep_a_core_for_the_window() -> int:
    """Large pricing batches in this process split over every core but one, so the GUI loop always has a core
    (on 2 cores: one thread, as before the split existed). ``OPTIONDESK_PRICING_THREADS`` overrides it.
    Returns the thread count."""
    from engine.pricing import _split

    if not os.environ.get(_split.THREADS_ENV, "").strip():
        _split.set_threads(max(1, _split.cores() - 1))
    return _split.threads()


def window_settings(config_dir: Any) -> QtCore.QSettings:
    """Layout/theme persistence: an INI file next to settings.toml (one place for a user's config)."""
    from pathlib import Path

    path = Path(config_dir) / "window.ini"
    path.parent.mkdir(parents=True, exist_ok=True)
    return QtCore.QSettings(str(path), QtCore.QSettings.Format.IniFormat)


class Workstation:
    """The engine and its main window, started and stopped together on the running (qasync) loop.

    ``quit_requested`` is set when the window closes; :func:`run_workstation` waits on it.
    """

    def __init__(
        self,
        engine_config: Any = None,
        *,
        engine: Engine | None = None,
        qsettings: QtCore.QSettings | None = None,
        panels: Sequence[type] | None = None,
        theme: str | None = None,
        restore_layout: bool = True,
        show: bool = True,
    ) -> None:
        self.engine_config = engine_config
        self.engine = engine
        self.qsettings = qsettings
        self.panels = panels
        self.theme = theme
        self.restore_layout = restore_layout
        self.show = show
        self.window: Any = None
        self.quit_requested = asyncio.Event()
        self._owns_engine = engine is None

    async def start(self) -> Any:
        """Start the engine (if we own it), build and show the window, start the bridge."""
        from app.main_window import MainWindow

        if self.engine is None:
            from engine.core import Engine

            self.engine = Engine(self.engine_config)
        if not self.engine.started:
            await self.engine.start()
        qsettings = self.qsettings if self.qsettings is not None else window_settings(self.engine.paths.config_dir)
        try:
            self.window = MainWindow(
                self.engine, qsettings=qsettings, panels=self.panels, theme=self.theme,
                restore_layout=self.restore_layout, defer_panels=self.show,
            )
        except BaseException:
            if self._owns_engine:
                await self.engine.stop()
            raise
        self.window.close_requested.connect(self.quit_requested.set)
        self.window.start()
        if self.show:
            self.window.first_paint.connect(self.engine.start_kernel_warmup)  # idempotent: no-op unless deferred
            self.window.show_and_fill()  # paints first, then builds the panels on screen, then the rest
        else:
            self.window.build_all_panels()
            self.engine.start_kernel_warmup()
        return self.window

    async def all_panels(self, timeout: float = 30.0) -> None:
        """Wait until the panels behind tabs have been built too (they follow the first paint)."""
        window = self.window
        if window is None or window.panels_complete:
            return
        done = asyncio.Event()
        window.panels_built.connect(done.set)
        try:
            if not window.panels_complete:
                await asyncio.wait_for(done.wait(), timeout)
        finally:
            with contextlib.suppress(RuntimeError):
                window.panels_built.disconnect(done.set)

    def request_quit(self) -> None:
        self.quit_requested.set()

    async def stop(self) -> None:
        """Stop deliveries, close the window, stop the engine; idempotent."""
        window, self.window = self.window, None
        if window is not None:
            with contextlib.suppress(RuntimeError):  # the C++ object may already be gone
                window.close_requested.disconnect(self.quit_requested.set)
            window.shutdown()
            window.hide()
            window.deleteLater()
        if self.engine is not None and self._owns_engine and self.engine.started:
            await self.engine.stop()


def instance_locked_box(exc: Any) -> QtWidgets.QMessageBox:
    """The message a second window shows: which process holds the data folder, and what still works."""
    box = QtWidgets.QMessageBox()
    box.setObjectName("instanceLockedDialog")
    box.setIcon(QtWidgets.QMessageBox.Icon.Warning)
    box.setWindowTitle("Optiondesk is already running")
    who = f"process {exc.pid}" if getattr(exc, "pid", None) else "another process"
    box.setText(f"<b>Optiondesk is already running on this data folder ({who}).</b>")
    box.setInformativeText(f"{exc.folder}\n\nSwitch to that window, or close it first. `optiondesk kill` and "
                           "`optiondesk risk` work beside it.")
    return box


def refuse_second_instance(folder: Any, *, show: bool = True) -> None:
    """Raise ``InstanceLocked`` (after showing :func:`instance_locked_box`) when an engine holds ``folder``."""
    from engine.instance_lock import InstanceLocked, holder

    pid = holder(folder)
    if pid is None:
        return
    exc = InstanceLocked(Path(folder), pid or None)
    log.warning("%s", exc)
    if show:
        instance_locked_box(exc).exec()  # before the event loop runs: a plain modal box is safe here
    raise exc


async def cancel_leftover_tasks(timeout: float = 5.0) -> int:
    """Cancel every task on the loop except the current one and wait for them; returns how many."""
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
    for t in tasks:
        t.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    return len(tasks)


async def run_workstation(
    workstation: Workstation,
    *,
    seconds: float | None = None,
    on_ready: Callable[[Workstation], Awaitable[Any]] | None = None,
    app: QtWidgets.QApplication | None = None,
    cancel_leftovers: bool = True,
    freeze_startup_objects: bool = False,
) -> int:
    """The main coroutine: start, wait for a quit request (or ``seconds``), stop cleanly. Returns 0.

    ``on_ready`` runs once the window is up (the self-test drives the GUI from it); its exception
    propagates after the shutdown. ``cancel_leftovers`` cancels every other task on the loop at the
    end (the process is about to exit); tests sharing a loop pass False. ``freeze_startup_objects``:
    ``gc.freeze()`` at the first paint (the app; not for loops that run many windows).
    """
    app = app or QtWidgets.QApplication.instance()  # type: ignore[assignment]
    quit_evt = workstation.quit_requested
    if app is not None:
        app.aboutToQuit.connect(quit_evt.set)
    error: BaseException | None = None
    try:
        await workstation.start()
        if freeze_startup_objects:
            _freeze_after_first_paint(workstation.window)
        if on_ready is not None:
            try:
                await workstation.all_panels()
                await on_ready(workstation)
            except Exception as exc:
                error = exc
                quit_evt.set()
        if seconds is not None and not quit_evt.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(quit_evt.wait(), timeout=seconds)
        else:
            await quit_evt.wait()
    finally:
        if app is not None:
            with contextlib.suppress(RuntimeError):
                app.aboutToQuit.disconnect(quit_evt.set)
        await workstation.stop()
        if cancel_leftovers:
            await cancel_leftover_tasks()
    if error is not None:
        raise error
    return 0


def _freeze_after_first_paint(window: Any) -> None:
    """Move everything built up to the first paint (modules, the window) into the permanent generation,
    so the collector's later full passes scan only what the session allocates (``python -m app``)."""
    import gc

    if window is None or getattr(window, "first_painted", True):
        gc.freeze()
    else:
        window.first_paint.connect(gc.freeze)


def run_event_loop(app: QtWidgets.QApplication, main: Awaitable[int]) -> int:
    """Run ``main`` on a fresh qasync loop until it has returned (not merely until Qt stops)."""
    import qasync

    # Worker threads (executors, pool managers) hand the GIL back every 1 ms instead of 5: each PySide
    # call releases and re-takes the GIL, so a painting GUI thread otherwise queues behind them
    # (benchmarks/gui.py: loop-lag p99 ~27 -> ~19 ms under the streaming load).
    sys.setswitchinterval(0.001)
    collector = GuiThreadCollector()
    loop = qasync.QEventLoop(app)
    # qasync's default executor runs QThreads, which Qt aborts on when still running at exit;
    # asyncio.to_thread / run_in_executor(None) get a plain thread pool instead.
    pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="optiondesk-io")
    loop.set_default_executor(pool)
    asyncio.set_event_loop(loop)
    task = loop.create_task(main, name="optiondesk-main")  # type: ignore[arg-type]
    # Python signal handlers only run when the interpreter gets control: tick it from Qt.
    heartbeat = QtCore.QTimer()
    heartbeat.start(250)
    heartbeat.timeout.connect(lambda: None)
    previous = signal.getsignal(signal.SIGINT)
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGINT, lambda *_: loop.call_soon_threadsafe(_interrupt, app))
    try:
        for _attempt in range(3):
            try:
                return int(loop.run_until_complete(task) or 0)
            except RuntimeError as exc:
                # aboutToQuit from the session manager ended app.exec() early: the coroutine has
                # been told to quit; let it finish its shutdown on the same loop.
                if task.done() or "before Future completed" not in str(exc):
                    raise
                log.info("Qt loop ended before shutdown finished; completing shutdown")
        task.cancel()
        return 1
    finally:
        heartbeat.stop()
        collector.stop()
        with contextlib.suppress(ValueError):
            signal.signal(signal.SIGINT, previous)
        with contextlib.suppress(RuntimeError):
            loop.close()
        pool.shutdown(wait=False, cancel_futures=True)
        asyncio.set_event_loop(None)


def _interrupt(app: QtWidgets.QApplication) -> None:
    log.info("interrupted (Ctrl+C): closing the window")
    for w in app.topLevelWidgets():
        if w.objectName() == "optiondeskMainWindow":
            w.close()
            return
    app.aboutToQuit.emit()
