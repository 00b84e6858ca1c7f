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

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from PySide6 import QtCore, QtGui, QtWidgets

from app import themes
from app.alerts import AlertsPanel
from app.bridge import EventBridge
from app.resources import icon
from app.toolbar import KillSwitchControl, ModeControl, TradingToolbar
from app.window_docks import LAYOUT_VERSION, DocksMixin, report_startup
from app.window_menus import MenusMixin
from app.window_status import StatusBarMixin
from engine.analytics.formatting import plural
from engine.bus.events import SessionStatus
from widgets import engine_queries as eq
from widgets.base import Panel
from widgets.links import links_for

if TYPE_CHECKING:
    from app.dialogs.settings_dialog import SettingsDialog
    from engine.core import Engine

__all__ = ["MainWindow", "default_panels"]

log = logging.getLogger(__name__)


def default_panels() -> tuple[type[Panel], ...]:
    """The panel classes the widgets package offers (empty while it has none)."""
    try:
        from widgets import PANELS
    except Exception:
        log.exception("could not import widgets.PANELS; starting without panels")
        return ()
    return tuple(PANELS)


class MainWindow(DocksMixin, MenusMixin, StatusBarMixin, QtWidgets.QMainWindow):
    """The window: toolbar, banner, docks (:mod:`app.window_docks`), menus (:mod:`app.window_menus`) and
    status bar (:mod:`app.window_status`), fed by one :class:`~app.bridge.EventBridge`."""

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
        self._build_status_bar()

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

    # ---- notifications ---------------------------------------------------------------------------
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

    # ---- lifecycle -------------------------------------------------------------------------------
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
            report_startup("painted_at")
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
