"""The application shell: imports, Qt signal regression, start/quit cycles, screenshot, layout."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PySide6 import QtCore, QtGui

from tests.qt_fixtures import run_async
from tests.sim_start import SIM_START

ROOT = Path(__file__).resolve().parents[2]


def test_importing_app_modules_works_and_engine_stays_qt_free_in_a_fresh_process():
    code = (
        "import sys, engine.core, engine.bus; assert 'PySide6' not in sys.modules;"
        "import app, app.main_window, app.bridge, app.toolbar, app.alerts, app.runtime, app.selftest, app.cli;"
        "import app.dialogs.settings_dialog, app.dialogs.credentials_dialog, app.dialogs.live_confirm;"
        "import app.__main__ as m; assert callable(m.main); print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("ok")


def test_emitting_10000_signals_from_python_does_not_crash(qtbot):
    class Emitter(QtCore.QObject):
        fired = QtCore.Signal(object)
        count = QtCore.Signal(int)

    em = Emitter()
    seen = []
    em.fired.connect(lambda obj: seen.append(obj))
    em.count.connect(lambda n: seen.append(n))
    for i in range(5000):
        em.fired.emit({"i": i})
        em.count.emit(i)
    assert len(seen) == 10_000
    assert seen[-1] == 4999


def test_app_starts_and_quits_cleanly_20_times_on_one_loop(qtbot, async_cleanup, tmp_path, caplog):
    from app.runtime import Workstation, run_workstation
    from tests.app.conftest import engine_config

    for i in range(20):
        ws = Workstation(
            engine_config(tmp_path / f"run{i}", clock_interval_s=0.05),
            qsettings=QtCore.QSettings(str(tmp_path / "window.ini"), QtCore.QSettings.Format.IniFormat),
        )

        async def close_when_shown(w):
            assert w.window.isVisible()
            w.window.close()  # the user's path: closing the window asks the main coroutine to quit

        assert run_async(qtbot, run_workstation(ws, on_ready=close_when_shown, cancel_leftovers=False), timeout=30) == 0
        assert ws.window is None and not ws.engine.started
    bad = [r.getMessage() for r in caplog.records if "Event loop stopped" in r.getMessage() or "no running event loop" in r.getMessage()]
    assert not bad


def test_python_m_app_opens_and_closes_cleanly_in_a_subprocess(tmp_path):
    report = tmp_path / "first_paint.json"
    env = {"QT_QPA_PLATFORM": "offscreen", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "OPTIONDESK_FIRST_PAINT_FILE": str(report)}
    (tmp_path / "home" / "config").mkdir(parents=True)  # the simulated market opens on SIM_START, not today
    (tmp_path / "home" / "config" / "settings.toml").write_text(f'[simulator]\nstart = "{SIM_START}"\n')
    out = subprocess.run(
        [sys.executable, "-m", "app", "--home", str(tmp_path / "home"), "--seconds", "1.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=90, env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    for needle in ("Event loop stopped before Future completed", "no running event loop", "Traceback"):
        assert needle not in out.stderr, out.stderr[-3000:]
    assert (tmp_path / "home" / "config" / "window.ini").exists()  # layout saved on close
    # nothing slow to import is loaded before the first paint: ML libraries, numba (the compiled kernels load
    # after the paint), pandas (chain imports and backtests) except on this first start with an empty HOME,
    # where exchange_calendars builds the market-calendar cache once
    assert set(json.loads(report.read_text())["heavy_modules"]) <= {"pandas"}
    report.unlink()
    again = subprocess.run(
        [sys.executable, "-m", "app", "--home", str(tmp_path / "home"), "--seconds", "0.5"],
        cwd=ROOT, capture_output=True, text=True, timeout=90, env=env,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(report.read_text())["heavy_modules"] == []  # the calendar cache is there now


def _non_blank(img: QtGui.QImage) -> bool:
    """More than a handful of distinct colours across a sample grid."""
    colours = set()
    for y in range(0, img.height(), max(1, img.height() // 40)):
        for x in range(0, img.width(), max(1, img.width() // 40)):
            colours.add(img.pixel(x, y))
    return len(colours) > 8


def test_main_window_screenshot_is_not_blank(window, qtbot, tmp_path):
    flushes = window.bridge.flushes  # painted, and the panels have rendered engine events
    qtbot.waitUntil(lambda: window.first_painted and window.bridge.flushes >= flushes + 2, timeout=10_000)
    img = window.grab().toImage()
    assert img.width() >= 1200 and img.height() >= 700
    assert _non_blank(img)
    out = tmp_path / "main_window.png"
    assert img.save(str(out))
    assert out.stat().st_size > 10_000


def test_status_bar_shows_paper_mode_and_the_engine_clock(window, qtbot):
    assert window.status_mode.text() == "mode = PAPER"
    assert window.windowTitle() == "Optiondesk — PAPER"
    assert not window.banner_bar.isVisible()
    qtbot.waitUntil(lambda: window.status_clock.text().startswith("simulated "), timeout=5000)
    assert " 2026 " in window.status_clock.text()  # the engine's (simulated) time, New York time, zone named


def test_layout_is_saved_and_restored(qtbot, engine, qsettings):
    from app.main_window import MainWindow

    first = MainWindow(engine, qsettings=qsettings, restore_layout=False)
    qtbot.addWidget(first)
    first.show()
    dock = first.docks["alerts"]
    first.addDockWidget(QtCore.Qt.DockWidgetArea.BottomDockWidgetArea, dock)
    assert first.dockWidgetArea(dock) == QtCore.Qt.DockWidgetArea.BottomDockWidgetArea
    first.close()
    qtbot.waitUntil(lambda: not first.isVisible())

    second = MainWindow(engine, qsettings=qsettings)
    qtbot.addWidget(second)
    assert second.layout_restored
    assert second.dockWidgetArea(second.docks["alerts"]) == QtCore.Qt.DockWidgetArea.BottomDockWidgetArea
    second.reset_layout()
    assert second.dockWidgetArea(second.docks["alerts"]) == QtCore.Qt.DockWidgetArea.LeftDockWidgetArea
    second.shutdown()


def test_theme_switch_applies_light_and_dark_style_sheets(window, qtbot):
    app = QtGui.QGuiApplication.instance()
    window.set_theme("light")
    assert "light theme" in app.styleSheet()
    assert window.qsettings.value("ui/theme") == "light"
    window.set_theme("no-such-theme")
    assert window.theme == "dark" and "dark theme" in app.styleSheet()


def test_deferred_panels_build_on_screen_docks_first_then_the_rest_and_keep_saved_state(qtbot, engine, qsettings):
    from app.main_window import MainWindow

    # a saved strike window for the chain and the backtest panel's state must survive deferral
    first = MainWindow(engine, qsettings=qsettings, restore_layout=False)
    qtbot.addWidget(first)
    first.panels["chain"].window_spin.setValue(7)
    first.save_layout()
    saved_backtest = first.panels["backtest"].panel_state()
    first.shutdown()

    win = MainWindow(engine, qsettings=qsettings, defer_panels=True)
    qtbot.addWidget(win)
    assert win.panels == {"alerts": win.alerts} and not win.panels_complete  # docks only
    assert set(win.docks) >= {"chain", "positions", "ticket", "surface", "backtest", "greeks"}
    win.start()
    win.show()
    built = win.build_visible_panels()
    assert {"chain", "positions", "ticket", "surface"} <= set(built)  # the front tabs, before any paint
    assert "backtest" not in built and "greeks" not in built  # behind tabs: later
    assert win.panels["chain"].window_spin.value() == 7
    with qtbot.waitSignal(win.panels_built, timeout=20_000):
        pass
    assert win.panels_complete and set(win.panels) == set(win.docks)
    assert win.panels["backtest"].panel_state() == saved_backtest
    assert all(win.docks[pid].widget() is panel for pid, panel in win.panels.items())
    assert not win.panel_errors
    win.shutdown()


def test_garbage_is_collected_on_the_gui_thread_never_on_a_worker(qtbot, qasync_loop):
    import gc
    import threading

    from app.runtime import GuiThreadCollector

    assert not gc.isenabled()  # the session's collector (tests/qt_fixtures.py) owns collection
    finalized_on: list[str] = []

    class Cycle:
        def __init__(self) -> None:
            self.me = self
            self.qt = QtCore.QObject()  # a Qt object in cyclic garbage: the dangerous kind

        def __del__(self) -> None:
            finalized_on.append(threading.current_thread().name)

    def churn() -> None:  # a worker allocating enough to trigger automatic collections many times over
        for _ in range(5_000):
            Cycle()

    worker = threading.Thread(target=churn, name="worker")
    worker.start()
    worker.join()
    assert finalized_on == []  # nothing was collected on the worker
    qtbot.waitUntil(lambda: len(finalized_on) >= 5_000, timeout=10_000)
    assert set(finalized_on) == {"MainThread"}

    own = GuiThreadCollector()  # stop() restores automatic collection only if it was on before
    own.stop()
    assert not gc.isenabled()


def test_quit_asks_when_positions_are_open_and_quits_at_once_when_flat(window, engine, qtbot):
    from datetime import date
    from decimal import Decimal

    from PySide6 import QtWidgets

    from engine.bus.events import PositionChanged
    from engine.model import Option, Position

    closed: list[bool] = []
    window.close_requested.connect(lambda: closed.append(True))
    pos = Position(Option("SPY", date(2026, 3, 20), 600, "P"), -1, Decimal("5.00"))
    engine.bus.publish(PositionChanged(position=pos))
    qtbot.waitUntil(lambda: window.open_exposure()[1] == 1, timeout=3000)
    window.quit_action.trigger()
    box = window.quit_dialog
    assert box is not None and box.isVisible() and not closed
    assert "1 position open" in box.text()
    keep = next(b for b in box.buttons() if b.text() == "Keep running")
    keep.click()
    qtbot.waitUntil(lambda: window.quit_dialog is None, timeout=3000)
    assert not closed and window.isVisible()
    window.quit_action.trigger()
    quit_button = next(b for b in window.quit_dialog.buttons() if b.text() == "Quit")
    quit_button.click()
    qtbot.waitUntil(lambda: bool(closed), timeout=3000)
    assert isinstance(box, QtWidgets.QMessageBox)


def test_quit_without_orders_or_positions_closes_at_once(window, qtbot):
    closed: list[bool] = []
    window.close_requested.connect(lambda: closed.append(True))
    assert window.open_exposure() == (0, 0)
    window.quit_action.trigger()
    assert closed and window.quit_dialog is None


def test_the_chain_fits_a_1920_pixel_screen_without_a_horizontal_scroll(window, qtbot):
    window.resize(1920, 1080)
    window.apply_default_layout()
    chain = window.panels["chain"]
    qtbot.waitUntil(lambda: chain.table.viewport().width() > 1000, timeout=5000)
    header = chain.table.horizontalHeader()
    qtbot.waitUntil(lambda: header.length() <= chain.table.viewport().width(), timeout=5000)
    # the put side's Θ, Vega, OI, Vol and Edge show without a horizontal scroll
    qtbot.waitUntil(lambda: chain.table.horizontalScrollBar().maximum() == 0, timeout=5000)
    oi = chain.model.column_index("p_oi")
    assert chain.table.columnWidth(oi) >= chain.model.columns[oi].width  # "19,703", not "19,7…"
