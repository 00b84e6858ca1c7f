"""The workstation main window: fixed trading toolbar, live banner, dockable panels, status bar, menus.

- Every panel in :data:`widgets.PANELS` (plus the alerts/event log) sits in a ``QDockWidget`` whose
  object name is the panel's ``panel_id``; the layout (geometry + dock state + small panel state) is
  saved to ``QSettings`` on close and restored on the next start. View ▸ Reset layout restores the
  default arrangement for a 1920×1080 screen.
- The :class:`~app.bridge.EventBridge` delivers one coalesced batch every ~100 ms to the toolbar, the
  status bar, the alerts log and each panel.
- Live mode is unmistakable: a red banner under the toolbar and "LIVE" in the window title.
- Closing the window emits ``close_requested``; the runtime (``app.runtime``) then stops the bridge
  and the engine and ends the Qt loop. The window never quits the application itself.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtGui, QtWidgets

from app import themes
from app.alerts import AlertsPanel
from app.bridge import EventBridge
from app.resources import icon
from app.toolbar import KillSwitchControl, ModeControl, TradingToolbar
from engine.analytics.formatting import plural
from engine.bus.commands import JumpToNextRealSession, RestartSimulatedDay
from engine.bus.events import (
    ClockTicked,
    ConnectionStateChanged,
    ModeChanged,
    OrderPendingApproval,
    RiskProfileChanged,
    SessionStatus,
    TradingStateChanged,
)
from widgets import engine_queries as eq
from widgets.base import EventBatch, Panel, qt_alive, send_command
from widgets.links import links_for
from widgets.time_format import format_market_time

if TYPE_CHECKING:
    from app.dialogs.settings_dialog import SettingsDialog
    from engine.core import Engine

log = logging.getLogger(__name__)

LAYOUT_VERSION = 3
Area = QtCore.Qt.DockWidgetArea

#: Default placement for a 1920×1080 screen: panel_id → (area, group). Panels of one group share a
#: tabbed dock; groups in one area are stacked in this order. Unknown panels join the right-hand tabs.
DEFAULT_LAYOUT: dict[str, tuple[Area, str]] = {
    "chain": (Area.LeftDockWidgetArea, "left-top"),
    "backtest": (Area.LeftDockWidgetArea, "left-top"),
    "watchlist": (Area.LeftDockWidgetArea, "left-top"),
    "strategies": (Area.LeftDockWidgetArea, "left-top"),
    "chart": (Area.RightDockWidgetArea, "right-bottom"),
    "data": (Area.LeftDockWidgetArea, "left-top"),
    "models": (Area.LeftDockWidgetArea, "left-top"),
    "positions": (Area.LeftDockWidgetArea, "left-bottom"),
    "greeks": (Area.LeftDockWidgetArea, "left-bottom"),
    "orders": (Area.LeftDockWidgetArea, "left-bottom"),
    "pnl": (Area.LeftDockWidgetArea, "left-bottom"),
    "alerts": (Area.LeftDockWidgetArea, "left-bottom"),
    "activity": (Area.LeftDockWidgetArea, "left-bottom"),
    "ticket": (Area.RightDockWidgetArea, "right-top"),
    "approvals": (Area.RightDockWidgetArea, "right-top"),
    "strategy_builder": (Area.RightDockWidgetArea, "right-top"),
    "surface": (Area.RightDockWidgetArea, "right-bottom"),
    "smile": (Area.RightDockWidgetArea, "right-bottom"),
    "payoff": (Area.RightDockWidgetArea, "right-bottom"),
}
#: the tab shown on top of each group in the default layout
_FRONT_TABS = ("chain", "positions", "ticket", "surface", "smile")
_GROUP_ORDER = ("left-top", "left-bottom", "right-top", "right-middle", "right-bottom")
_FALLBACK_GROUP = "right-bottom"


def _placement(panel_id: str) -> tuple[Area, str]:
    if panel_id in DEFAULT_LAYOUT:
        return DEFAULT_LAYOUT[panel_id]
    for key, value in DEFAULT_LAYOUT.items():  # e.g. "chain_table" → chain, "smile_surface" → smile
        if key in panel_id:
            return value
    return Area.RightDockWidgetArea, _FALLBACK_GROUP


def _report_startup(stage: str) -> None:
    """benchmarks/gui.py measures process start → first paint (and → on-screen panels built): the
    wall time of each stage goes to ``$OPTIONDESK_FIRST_PAINT_FILE``, with the heavy ML modules
    loaded by then (there should be none)."""
    report = os.environ.get("OPTIONDESK_FIRST_PAINT_FILE")
    if not report:
        return
    path = Path(report)
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        data = {}
    data[stage] = time.time()
    data.setdefault("heavy_modules", [m for m in ("torch", "xgboost") if m in sys.modules])
    path.write_text(json.dumps(data))


def default_panels() -> tuple[type[Panel], ...]:
    """The panel classes the widgets package offers (empty while it has none)."""
    try:
        from widgets import PANELS
    except Exception:
        log.exception("could not import widgets.PANELS; starting without panels")
        return ()
    return tuple(PANELS)


class MainWindow(QtWidgets.QMainWindow):
    close_requested = QtCore.Signal()
    first_paint = QtCore.Signal()
    #: every deferred panel has been built
    panels_built = QtCore.Signal()

    def __init__(
        self,
        engine: Engine | None,
        *,
        qsettings: QtCore.QSettings | None = None,
        panels: Sequence[type[Panel]] | None = None,
        theme: str | None = None,
        restore_layout: bool = True,
        defer_panels: bool = False,
        parent: QtWidgets.QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.engine = engine
        self.setObjectName("optiondeskMainWindow")
        self.setWindowIcon(icon("optiondesk"))
        self.setDockOptions(
            QtWidgets.QMainWindow.DockOption.AnimatedDocks
            | QtWidgets.QMainWindow.DockOption.AllowTabbedDocks
            | QtWidgets.QMainWindow.DockOption.AllowNestedDocks
        )
        self.setDockNestingEnabled(True)
        self.qsettings = qsettings if qsettings is not None else QtCore.QSettings("optiondesk", "optiondesk")
        general = eq.settings(engine).general
        self.theme = theme or str(self.qsettings.value("ui/theme", general.theme))
        hz = float(general.ui_refresh_hz)
        # before any widget exists: a style sheet set afterwards re-polishes every widget (~1 s)
        self.theme = themes.apply_theme(self.theme)
        self.mode = "paper"
        self.settings_dialog: SettingsDialog | None = None  # the last one opened
        self.trading_state = "ACTIVE"
        self.connection_text = ""
        #: the engine's latest SessionStatus (market time, simulated or not, is the real market open)
        self.session_status: SessionStatus | None = None
        self.panel_errors: list[str] = []
        self._closing = False
        self.first_painted = False

        self.bridge = EventBridge(engine.bus, interval_ms=max(16, round(1000.0 / hz)), parent=self)
        self.bridge.consumer_failed.connect(self._on_consumer_failed)

        # toolbar + live banner ------------------------------------------------------------------------
        self.trading_toolbar = TradingToolbar(engine, self)
        self.addToolBar(QtCore.Qt.ToolBarArea.TopToolBarArea, self.trading_toolbar)
        self.addAction(self.trading_toolbar.kill_switch_action)
        self.addToolBarBreak(QtCore.Qt.ToolBarArea.TopToolBarArea)
        self.banner_bar = QtWidgets.QToolBar("Live banner", self)
        self.banner_bar.setObjectName("liveBannerBar")
        self.banner_bar.setMovable(False)
        self.banner_bar.toggleViewAction().setEnabled(False)
        self.banner = QtWidgets.QLabel("")
        self.banner.setObjectName("liveBanner")
        self.banner.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.banner.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Preferred)
        self.banner_bar.addWidget(self.banner)
        self.addToolBar(QtCore.Qt.ToolBarArea.TopToolBarArea, self.banner_bar)
        self.banner_bar.setVisible(False)
        mode_ctl = self.trading_toolbar.controls.get("mode")
        if isinstance(mode_ctl, ModeControl):
            self.mode = mode_ctl.mode

        # panels -------------------------------------------------------------------------------------
        # With ``defer_panels`` (the app's start) every dock is created now and the window paints with
        # them empty; then the panels on screen are built (show_and_fill), then those behind tabs, one
        # per loop turn: the plot panels cost ~0.2 s each to build, with pyqtgraph's import on top.
        self.panels: dict[str, Panel] = {}
        self.docks: dict[str, QtWidgets.QDockWidget] = {}
        self._titles: dict[str, str] = {}
        self._unbuilt: dict[str, Any] = {}  # panel id → PanelSpec not built yet
        self._pending_states: dict[str, dict[str, Any]] = {}
        self.panels_complete = False
        self.alerts = AlertsPanel(engine, self)
        self.alerts.notify.connect(self._notify)
        self._approvals_raised = False
        links_for(engine).backtest_requested.connect(self._show_backtest)
        if defer_panels:  # docks now; panel modules (pyqtgraph, pricing) import when each is built
            from widgets import PANEL_SPECS, PanelSpec

            for spec in PANEL_SPECS if panels is None else [PanelSpec.of(c) for c in panels]:
                self._add_unbuilt_dock(spec)
        else:
            for cls in default_panels() if panels is None else panels:
                self._build_panel(cls)
        self._add_panel(self.alerts)
        for msg in self.panel_errors:
            self.alerts.log("error", "GUI", f"panel failed to open: {msg}")
        self.setCentralWidget(None)

        # status bar ---------------------------------------------------------------------------------
        sb = self.statusBar()
        sb.setObjectName("statusBar")
        self.status_mode = QtWidgets.QLabel()
        self.status_mode.setObjectName("statusMode")
        self.status_state = QtWidgets.QLabel()
        self.status_state.setObjectName("statusState")
        self.status_clock = QtWidgets.QLabel("clock —")
        self.status_clock.setObjectName("statusClock")
        self.status_conn = QtWidgets.QLabel("no connections")
        self.status_conn.setObjectName("statusConnection")
        self.status_rate = QtWidgets.QLabel("")
        self.status_rate.setObjectName("statusRate")
        from app.status_regime import RegimeStatusLabel

        self.status_regime = RegimeStatusLabel(self.engine)  # VIX rules beside the live mixture (docs/ml.md)
        for w in (self.status_mode, self.status_state, self.status_clock, self.status_conn, self.status_regime):
            sb.addWidget(w)
        sb.addPermanentWidget(self.status_rate)
        self._events_seen = 0
        self._rate_timer = QtCore.QElapsedTimer()
        self._rate_timer.start()

        ks = self.trading_toolbar.controls.get("kill_switch")
        if isinstance(ks, KillSwitchControl):
            self.trading_state = ks.state
        conn = self.trading_toolbar.controls.get("connection")
        if conn is not None:
            self.connection_text = conn.summary()  # type: ignore[attr-defined]
        self.status_state.setVisible("kill_switch" in self.trading_toolbar.controls)
        self._render_status()

        # menus --------------------------------------------------------------------------------------
        self._build_menus()

        # consumers: toolbar, status bar, then every panel ---------------------------------------------
        self.bridge.add_consumer(self.trading_toolbar.apply_events, "toolbar")
        self.bridge.add_consumer(self._apply_status, "status bar")
        self.bridge.add_consumer(self.status_regime.apply_events, "status bar regime")
        for pid, panel in self.panels.items():
            self._wire_panel(pid, panel)

        # tray for desktop notifications ---------------------------------------------------------------
        self.tray: QtWidgets.QSystemTrayIcon | None = None
        if QtWidgets.QSystemTrayIcon.isSystemTrayAvailable():
            self.tray = QtWidgets.QSystemTrayIcon(icon("optiondesk"), self)
            self.tray.setToolTip("Optiondesk")
            self.tray.show()
        self.notifications: list[tuple[str, str, str]] = []

        self._apply_theme_to_panels()
        self.resize(1920, 1080)
        self.default_state = self.saveState(LAYOUT_VERSION)
        if restore_layout:
            self.layout_restored = self.restore_layout()
        else:
            self.layout_restored = False
            self.apply_default_layout()
        self._render_mode()
        self.panels_complete = not self._unbuilt
        self.visible_panels_built = not self._unbuilt
        # the first-paint watch (an application-wide event filter: every event of the process crosses
        # into Python while it is installed) starts when the window is shown, not during the build
        self._paint_watch = False

    # ---- panels and docks ------------------------------------------------------------------------
    def _new_dock(self, pid: str, title: str, widget: QtWidgets.QWidget) -> QtWidgets.QDockWidget:
        dock = QtWidgets.QDockWidget(title.replace("&", "&&"), self)  # a title is not a mnemonic
        dock.setObjectName(f"dock:{pid}")
        dock.setWidget(widget)
        dock.setFeatures(
            QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable
            | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetFloatable
            | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetClosable
        )
        self.docks[pid] = dock
        self._titles[pid] = title
        self._place_default(pid, dock)
        return dock

    def _add_panel(self, panel: Panel) -> None:
        pid = panel.panel_id or panel.objectName() or type(panel).__name__
        if pid in self.panels or pid in self._unbuilt:
            log.warning("duplicate panel id %s; second one ignored", pid)
            return
        self.panels[pid] = panel
        self._new_dock(pid, panel.title, panel)

    def _add_unbuilt_dock(self, spec: Any) -> None:
        pid = spec.panel_id
        if pid in self.panels or pid in self._unbuilt:
            log.warning("duplicate panel id %s; second one ignored", pid)
            return
        opening = QtWidgets.QLabel(f"Opening {spec.title}…")
        opening.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        opening.setStyleSheet("color: gray")
        self._unbuilt[pid] = spec
        self._new_dock(pid, spec.title, opening)

    def _build_panel(self, cls: Any) -> Panel | None:
        """Construct a panel from its class or :class:`widgets.PanelSpec` (into the dock that waits for
        it, when deferred); a failure is logged and listed, the dock says so, and the rest of the window
        carries on."""
        pid = cls.panel_id
        deferred = self._unbuilt.pop(pid, None) is not None
        try:
            if not isinstance(cls, type):
                cls = cls.load()  # a PanelSpec: import the panel's module now
            panel = cls(self.engine, self)
        except Exception as exc:
            log.exception("panel %s failed to build", getattr(cls, "__name__", cls))
            msg = f"{getattr(cls, 'title', cls)}: {type(exc).__name__}: {exc}"
            self.panel_errors.append(msg)
            if deferred:
                self.alerts.log("error", "GUI", f"panel failed to open: {msg}")
                failed = self.docks[pid].widget()
                if isinstance(failed, QtWidgets.QLabel):
                    failed.setText(f"{cls.title} failed to open: {type(exc).__name__}: {exc}")
            return None
        if not deferred:
            self._add_panel(panel)
            return panel
        opening = self.docks[pid].widget()
        self.docks[pid].setWidget(panel)
        if opening is not None:
            opening.deleteLater()
        self.panels[pid] = panel
        self._wire_panel(pid, panel)
        hook = getattr(panel, "apply_theme", None)
        if callable(hook):
            hook(self.theme)
        state = self._pending_states.pop(pid, None)
        if state is not None:
            try:
                panel.restore_panel_state(state)
            except Exception:
                log.exception("panel %s could not restore its state", pid)
        return panel

    def _show_backtest(self, request: object) -> None:
        """"Backtest these parameters" (Strategies panel): the Backtest dock comes to the front, built now if it
        was still waiting behind a tab — it then takes the request it was built too late to receive."""
        spec = self._unbuilt.get("backtest")
        if spec is not None:
            panel = self._build_panel(spec)
            from widgets.backtest_runner import BacktestPanel

            if isinstance(panel, BacktestPanel):
                panel.load_strategy(request)
        dock = self.docks.get("backtest")
        if dock is not None:
            dock.show()
            dock.raise_()

    def _wire_panel(self, pid: str, panel: Panel) -> None:
        self.bridge.add_consumer(panel.apply_events, pid)
        panel.status.connect(lambda msg, p=panel: self.alerts.log("warning", p.title, msg))
        pending_changed = getattr(panel, "pending_changed", None)
        if pid == "approvals" and pending_changed is not None:
            pending_changed.connect(self._on_pending_changed)

    def build_visible_panels(self) -> list[str]:
        """Build the deferred panels whose docks are on screen now and schedule the ones behind tabs,
        one per loop turn. Returns the ids built."""
        built = []
        for pid, cls in list(self._unbuilt.items()):
            dock = self.docks[pid]
            if dock.isVisible() and not dock.visibleRegion().isEmpty():
                self._build_panel(cls)
                built.append(pid)
        QtCore.QTimer.singleShot(50, self._build_next_deferred)
        self._watch_first_paint()
        self.visible_panels_built = True
        _report_startup("visible_panels_at")
        return built

    def show_and_fill(self) -> None:
        """Show the window and let it paint (frame, toolbar, status bar, docks saying "Opening …")
        before any panel is built; the panels on screen follow in the next loop turn, those behind
        tabs after them. The window appears ~0.5 s sooner than if it waited for its plots."""
        self.show()
        if not self._unbuilt:
            return
        self.first_paint.connect(lambda: QtCore.QTimer.singleShot(0, self._fill_visible))
        self._watch_first_paint()
        QtCore.QTimer.singleShot(1000, self._fill_visible)  # never painted (hidden, minimised): fill anyway

    def _fill_visible(self) -> None:
        if not self._closing and not self.visible_panels_built:
            self.build_visible_panels()

    def _watch_first_paint(self) -> None:
        if not self.first_painted and not self._paint_watch:
            self._paint_watch = True
            QtWidgets.QApplication.instance().installEventFilter(self)

    def showEvent(self, event: QtGui.QShowEvent) -> None:
        super().showEvent(event)
        if not self._unbuilt:  # a deferred window starts watching in show_and_fill
            self._watch_first_paint()

    def _build_next_deferred(self) -> None:
        if self._closing:
            return
        if self._unbuilt:
            self._build_panel(next(iter(self._unbuilt.values())))
        if self._unbuilt:
            QtCore.QTimer.singleShot(0, self._build_next_deferred)
        elif not self.panels_complete:
            self.panels_complete = True
            self.panels_built.emit()

    def build_all_panels(self) -> None:
        """Build every deferred panel now (tests, screenshots)."""
        for cls in list(self._unbuilt.values()):
            self._build_panel(cls)
        if not self.panels_complete:
            self.panels_complete = True
            self.panels_built.emit()

    def _place_default(self, pid: str, dock: QtWidgets.QDockWidget) -> None:
        area, group = _placement(pid)
        # the first dock of a group is added to the area; the rest are tabbed onto it
        first = next(
            (self.docks[p] for p in self.docks if p != pid and _placement(p)[1] == group and self.dockWidgetArea(self.docks[p]) == area),
            None,
        )
        if first is not None:
            self.tabifyDockWidget(first, dock)
        else:
            self.addDockWidget(area, dock, QtCore.Qt.Orientation.Vertical)

    def apply_default_layout(self) -> None:
        """Re-place every dock as on a fresh install, sized for 1920×1080."""
        for dock in self.docks.values():
            dock.setFloating(False)
            dock.show()
            self.removeDockWidget(dock)
        placed: list[str] = []
        for group in (*_GROUP_ORDER, *sorted({_placement(p)[1] for p in self.docks} - set(_GROUP_ORDER))):
            for pid, dock in self.docks.items():
                if _placement(pid)[1] != group:
                    continue
                area = _placement(pid)[0]
                leader = next((self.docks[p] for p in placed if _placement(p)[1] == group), None)
                if leader is not None:
                    self.tabifyDockWidget(leader, dock)
                else:
                    self.addDockWidget(area, dock, QtCore.Qt.Orientation.Vertical)
                dock.show()
                placed.append(pid)
        self._size_default()
        for pid in _FRONT_TABS:
            if pid in self.docks:
                self.docks[pid].raise_()

    def _size_default(self) -> None:
        width = max(self.width(), 1200)
        height = max(self.height(), 700)
        left = [d for p, d in self.docks.items() if self.dockWidgetArea(d) == Area.LeftDockWidgetArea]
        right = [d for p, d in self.docks.items() if self.dockWidgetArea(d) == Area.RightDockWidgetArea]
        if left and right:
            # 0.60: the chain's 23 columns fit without a horizontal scroll on a 1920-px screen
            self.resizeDocks([left[0], right[0]], [int(width * 0.60), int(width * 0.40)], QtCore.Qt.Orientation.Horizontal)
        top_left = [self.docks[p] for p in self.docks if _placement(p)[1] == "left-top"]
        bottom_left = [self.docks[p] for p in self.docks if _placement(p)[1] == "left-bottom"]
        if top_left and bottom_left:
            self.resizeDocks([top_left[0], bottom_left[0]], [int(height * 0.58), int(height * 0.34)], QtCore.Qt.Orientation.Vertical)
        groups = [g for g in ("right-top", "right-middle", "right-bottom") if any(_placement(p)[1] == g for p in self.docks)]
        firsts = [next(self.docks[p] for p in self.docks if _placement(p)[1] == g) for g in groups]
        shares = {"right-top": 0.48, "right-middle": 0.26, "right-bottom": 0.52}
        if len(firsts) > 1:
            self.resizeDocks(firsts, [int(height * shares[g]) for g in groups], QtCore.Qt.Orientation.Vertical)

    # ---- layout persistence -------------------------------------------------------------------------
    def save_layout(self) -> None:
        self.qsettings.setValue("window/geometry", self.saveGeometry())
        self.qsettings.setValue("window/state", self.saveState(LAYOUT_VERSION))
        self.qsettings.setValue("window/layout_version", LAYOUT_VERSION)
        states: dict[str, Any] = dict(self._pending_states)  # deferred panels not built yet keep theirs
        for pid, panel in self.panels.items():
            try:
                states[pid] = panel.panel_state()
            except Exception:
                log.exception("panel %s could not save its state", pid)
        self.qsettings.setValue("panels/state", json.dumps(states, default=str))
        self.qsettings.setValue("ui/theme", self.theme)
        self.qsettings.sync()

    def restore_layout(self) -> bool:
        """Restore the saved layout; False (and the default layout) when there is none or it is stale."""
        geometry = self.qsettings.value("window/geometry")
        state = self.qsettings.value("window/state")
        version = int(self.qsettings.value("window/layout_version", 0) or 0)
        ok = False
        if geometry is not None and state is not None and version == LAYOUT_VERSION:
            self.restoreGeometry(geometry)
            ok = bool(self.restoreState(state, LAYOUT_VERSION))
        if not ok:
            self.apply_default_layout()
        raw = self.qsettings.value("panels/state")
        if raw:
            try:
                states = json.loads(str(raw))
            except ValueError:
                states = {}
            for pid, st in states.items():
                panel = self.panels.get(pid)
                if pid in self._unbuilt and isinstance(st, dict):
                    self._pending_states[pid] = st
                if panel is not None and isinstance(st, dict):
                    try:
                        panel.restore_panel_state(st)
                    except Exception:
                        log.exception("panel %s could not restore its state", pid)
        return ok

    def reset_layout(self) -> None:
        self.qsettings.remove("window/state")
        self.apply_default_layout()

    # ---- menus ----------------------------------------------------------------------------------
    def _build_menus(self) -> None:
        mb = self.menuBar()
        file_menu = mb.addMenu("&File")
        self.settings_action = file_menu.addAction("&Settings…", self.open_settings_dialog)
        self.settings_action.setShortcut(QtGui.QKeySequence("Ctrl+,"))
        self.credentials_action = file_menu.addAction("&Credentials…", self.open_credentials_dialog)
        self.alert_rules_action = file_menu.addAction("&Alert rules…", self.open_alert_rules_dialog)
        file_menu.addSeparator()
        self.quit_action = file_menu.addAction("&Quit Optiondesk", self.request_quit)
        self.quit_action.setShortcut(QtGui.QKeySequence.StandardKey.Quit)
        self.quit_dialog: QtWidgets.QMessageBox | None = None

        view = mb.addMenu("&View")
        for pid, dock in self.docks.items():
            act = dock.toggleViewAction()
            act.setText(self._titles[pid].replace("&", "&&"))
            view.addAction(act)
        view.addSeparator()
        view.addAction("&Reset layout", self.reset_layout)
        theme_menu = view.addMenu("&Theme")
        group = QtGui.QActionGroup(self)
        for name in themes.THEMES:
            act = theme_menu.addAction(name.capitalize())
            act.setCheckable(True)
            act.setChecked(name == self.theme)
            act.triggered.connect(lambda _checked=False, n=name: self.set_theme(n))
            group.addAction(act)

        trading = mb.addMenu("&Trading")
        trading.addAction(self.trading_toolbar.kill_switch_action)
        trading.addAction(self.trading_toolbar.kill_flatten_action)
        ks = self.trading_toolbar.controls.get("kill_switch")
        if isinstance(ks, KillSwitchControl):
            trading.addAction("Reset kill switch…", ks.ask_reset)
        trading.addSeparator()
        self.restart_day_action = trading.addAction("Restart the simulated day", self.restart_simulated_day)
        self.restart_day_action.setToolTip("Back to this simulated day's open, replaying its price path")
        self.jump_session_action = trading.addAction("Jump to the next real session", self.jump_to_real_session)
        self.jump_session_action.setToolTip("Move the simulated market to the open of the real session "
                                            "running now or opening next")

        reports = mb.addMenu("&Reports")
        self.report_action = reports.addAction("&Performance report…", self.open_report_dialog)
        self.journal_action = reports.addAction("Trade &journal…", self.open_journal_dialog)

        help_menu = mb.addMenu("&Help")
        help_menu.addAction("&About Optiondesk", self._about)
        from app.shortcuts import install_hotkeys

        self.hotkeys = install_hotkeys(self, trading, help_menu)

    def _about(self) -> None:
        import engine

        box = QtWidgets.QMessageBox(self)
        box.setWindowTitle("About Optiondesk")
        box.setText(f"<b>Optiondesk</b> {engine.__version__}<br>Options-trading workstation.")
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        box.open()

    def open_settings_dialog(self) -> QtWidgets.QDialog:
        from app.dialogs.settings_dialog import SettingsDialog

        dlg = SettingsDialog(self.engine, self)
        dlg.saved.connect(lambda path: self.alerts.log("info", "settings", f"settings saved to {path}"))
        self.settings_dialog = dlg
        dlg.open()
        return dlg

    def open_alert_rules_dialog(self) -> QtWidgets.QDialog:
        from app.dialogs.alert_rules_dialog import AlertRulesDialog

        dlg = AlertRulesDialog(self.engine, self)
        dlg.saved.connect(lambda path: self.alerts.log("info", "notify", f"alert rules saved to {path}"))
        dlg.open()
        return dlg

    def open_report_dialog(self) -> QtWidgets.QDialog:
        from app.dialogs.report_dialog import ReportDialog

        dlg = ReportDialog(self.engine, self)
        dlg.written.connect(lambda path: self.alerts.log("info", "reports", f"report written to {path}"))
        dlg.open()
        return dlg

    def open_journal_dialog(self) -> QtWidgets.QDialog:
        from app.dialogs.journal_dialog import JournalDialog

        dlg = JournalDialog(self.engine, self)
        dlg.open()
        return dlg

    def open_credentials_dialog(self) -> QtWidgets.QDialog:
        from app.dialogs.credentials_dialog import CredentialsDialog

        dlg = CredentialsDialog(self.engine, parent=self)
        dlg.stored.connect(lambda where: self.alerts.log("info", "credentials", f"credentials stored ({where})"))
        dlg.open()
        return dlg

    # ---- theme ----------------------------------------------------------------------------------
    def set_theme(self, name: str) -> None:
        self.theme = themes.apply_theme(name)
        self.qsettings.setValue("ui/theme", self.theme)
        self._apply_theme_to_panels()

    def _apply_theme_to_panels(self) -> None:
        for panel in self.panels.values():
            hook = getattr(panel, "apply_theme", None)
            if callable(hook):
                try:
                    hook(self.theme)
                except Exception:
                    log.exception("panel %s failed to apply the theme", panel.panel_id)

    # ---- events ---------------------------------------------------------------------------------
    def _apply_status(self, batch: EventBatch) -> None:
        self._events_seen += len(batch)
        changed = False
        for ev in batch.events(ModeChanged):
            self.mode = ev.mode.lower()
            changed = True
        for ev in batch.events(TradingStateChanged):
            self.trading_state = str(ev.state).upper()
            changed = True
        ks = self.trading_toolbar.controls.get("kill_switch")
        if isinstance(ks, KillSwitchControl) and ks.state != self.trading_state:
            self.trading_state = ks.state
            changed = True
        if batch.events(ConnectionStateChanged):
            conn = self.trading_toolbar.controls.get("connection")
            self.connection_text = conn.summary() if conn is not None else ""  # type: ignore[attr-defined]
            changed = True
        levels = batch.events(RiskProfileChanged)
        dlg = self.settings_dialog
        if levels and dlg is not None and qt_alive(dlg) and dlg.isVisible():
            dlg.show_risk_level(levels[-1].level)  # the slider moved while the form is open
        if batch.events(OrderPendingApproval) and "approvals" in self.docks:
            self.docks["approvals"].show()
            self.docks["approvals"].raise_()  # an order waiting for a human must be seen
            self._approvals_raised = True
        for status in batch.latest(SessionStatus).values():
            self.session_status = status
            self._render_clock(status.now, status.market_open)
        for ev in batch.latest(ClockTicked).values():  # the simulated feed ticks faster than the engine's status
            self._render_clock(ev.now, ev.market_open)
        if changed:
            self._render_status()
            self._render_mode()
        if self._rate_timer.elapsed() >= 1000:
            rate = self.bridge.events_in / max(self._rate_timer.elapsed() / 1000.0, 1e-3)
            self.status_rate.setText(f"{rate:,.0f} ev/s · flush {self.bridge.last_flush_ms:.1f} ms")
            self.bridge.events_in = 0
            self._rate_timer.restart()

    def _render_clock(self, now: datetime, market_open: bool) -> None:
        """The market time in New York time and what the market is doing; on the simulated market, also
        whether the real market is open (a simulated session often runs while the real one is shut)."""
        status = self.session_status
        if status is None:
            self.status_clock.setText(f"market {'open' if market_open else 'closed'} · {format_market_time(now)}")
            return
        self.status_clock.setText(replace(status, now=now, market_open=market_open).describe())
        self.restart_day_action.setEnabled(status.simulated)
        self.jump_session_action.setEnabled(status.simulated)

    # ---- the simulated clock --------------------------------------------------------------------
    def restart_simulated_day(self) -> None:
        """Trading ▸ Restart the simulated day: the engine moves its simulated clock (and audits it)."""
        self._move_simulated_clock(RestartSimulatedDay(by="user"), "restart the simulated day")

    def jump_to_real_session(self) -> None:
        """Trading ▸ Jump to the next real session."""
        self._move_simulated_clock(JumpToNextRealSession(by="user"), "jump to the next real session")

    def _move_simulated_clock(self, command: Any, what: str) -> None:
        def failed(message: str) -> None:
            self.alerts.log("error", "simulated market", f"could not {what}: {message}")

        # success shows itself: the engine publishes SimulatedClockMoved (event log) and a new SessionStatus
        send_command(self.engine, command, on_error=failed)

    def _render_status(self) -> None:
        self.status_mode.setText(f"mode = {self.mode.upper()}")
        self.status_mode.setProperty("mode", self.mode)
        self.status_state.setText(f"trading {self.trading_state}")
        self.status_state.setProperty("tradingState", self.trading_state)
        self.status_conn.setText(self.connection_text or "no connections")
        for w in (self.status_mode, self.status_state):
            w.style().unpolish(w)
            w.style().polish(w)

    def _render_mode(self) -> None:
        live = self.mode == "live"
        mode_ctl = self.trading_toolbar.controls.get("mode")
        account = mode_ctl.account_label if isinstance(mode_ctl, ModeControl) else ""
        self.setWindowTitle(f"● LIVE — {account} — Optiondesk" if live else "Optiondesk — PAPER")
        self.banner.setText(f"LIVE TRADING — {account} — real orders are sent to the broker" if live else "")
        self.banner_bar.setVisible(live)
        self.setProperty("mode", self.mode)
        self._render_status()

    def _on_pending_changed(self, count: int) -> None:
        # the queue we brought forward is empty again: give the order ticket its place back
        if count == 0 and self._approvals_raised and "ticket" in self.docks:
            self._approvals_raised = False
            self.docks["ticket"].raise_()

    def _on_consumer_failed(self, name: str, error: str) -> None:
        self.alerts.log("error", "GUI", f"{name} failed to render: {error}")

    def _notify(self, level: str, title: str, message: str) -> None:
        self.notifications.append((level, title, message))
        if self.tray is not None and level == "critical":
            self.tray.showMessage(title, message, QtWidgets.QSystemTrayIcon.MessageIcon.Critical, 10000)

    # ---- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the bridge and log what happened before it subscribed (engine start, settings errors)."""
        self.bridge.start()
        where = f" — data in {self.engine.paths.data_dir}" if self.engine is not None else ""
        self.alerts.log("info", "engine", f"engine started in {self.mode.upper()} mode{where}")
        result = self.engine.settings_result if self.engine is not None else None
        for err in result.errors if result is not None else ():
            self.alerts.log("warning", "settings", f"{err} — default used")
        if result is not None and result.backup_path:
            self.alerts.log("warning", "settings", f"your settings file was copied to {result.backup_path}")
        missing = eq.missing_components(self.engine, "feed", "paper_broker", "oms", "risk", "kill_switch")
        if missing:
            self.alerts.log("info", "engine", f"components not available in this build: {', '.join(missing)}")

    def shutdown(self) -> None:
        """Stop the bridge (no more deliveries) and save the layout. Idempotent."""
        if self.bridge.running:
            self.bridge.stop()
        if not self._closing:
            self._closing = True
            self.save_layout()
        if self.tray is not None:
            self.tray.hide()
        if not self.first_painted:
            self.first_painted = True
            if self._paint_watch:
                QtWidgets.QApplication.instance().removeEventFilter(self)

    def eventFilter(self, obj: QtCore.QObject, event: QtCore.QEvent) -> bool:
        # Watches for the first Paint of any widget of this window (the window itself is covered by docks).
        if (
            not self.first_painted
            and event.type() == QtCore.QEvent.Type.Paint
            and isinstance(obj, QtWidgets.QWidget)
            and obj.window() is self
        ):
            self.first_painted = True
            QtWidgets.QApplication.instance().removeEventFilter(self)
            self.first_paint.emit()
            _report_startup("painted_at")
        return False

    def open_exposure(self) -> tuple[int, int]:
        """(orders not yet finished, open positions): what a quit leaves unattended."""
        positions = sum(1 for p in eq.positions(self.engine).values() if p.quantity != 0)
        return eq.open_order_count(self.engine), positions

    def request_quit(self) -> None:
        """File ▸ Quit: with orders working or positions open, ask first (a stray Ctrl+Q must not walk
        away from a live book); otherwise quit at once. Non-modal (``open()``), like every dialog here."""
        orders, positions = self.open_exposure()
        if not orders and not positions:
            self.close()
            return
        if self.quit_dialog is not None and self.quit_dialog.isVisible():
            return
        box = QtWidgets.QMessageBox(self)
        box.setObjectName("quitDialog")
        box.setIcon(QtWidgets.QMessageBox.Icon.Warning)
        box.setWindowTitle("Quit Optiondesk?")
        what = " and ".join(x for x in (plural(orders, "order") + " working" if orders else "",
                                         plural(positions, "position") + " open" if positions else "") if x)
        box.setText(f"<b>{what}.</b> Quit anyway?")
        box.setInformativeText("Working orders stay at the broker (paper orders are kept in the store and "
                               "resume at the next start); nothing watches positions while the desk is closed.")
        quit_button = box.addButton("Quit", QtWidgets.QMessageBox.ButtonRole.DestructiveRole)
        box.addButton("Keep running", QtWidgets.QMessageBox.ButtonRole.RejectRole)
        box.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
        self.quit_dialog = box

        def done(_result: int) -> None:
            self.quit_dialog = None
            if box.clickedButton() is quit_button:
                self.close()

        box.finished.connect(done)
        box.open()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self.shutdown()
        event.accept()
        self.close_requested.emit()

    def grab_panels(self) -> dict[str, QtGui.QPixmap]:
        """A pixmap of every visible panel (the self-test writes them to PNG)."""
        out = {}
        for pid, panel in self.panels.items():
            out[pid] = panel.grab()
        return out
