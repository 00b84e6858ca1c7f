"""The main window's docks: one ``QDockWidget`` per panel (its object name the panel's ``panel_id``), the
default arrangement for a 1920×1080 screen, panels built late (the window paints first, then the panels on
screen, then those behind tabs), and the layout saved to ``QSettings`` and restored.

A mixin of :class:`app.main_window.MainWindow` (it uses the window's ``engine``, ``bridge``, ``alerts`` and
``qsettings``): the dock logic reads as one piece apart from the window's wiring."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from PySide6 import QtCore, QtGui, QtWidgets

from widgets.base import Panel

log = logging.getLogger("app.main_window")  # the name its records had before the module was split off

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


def placement(panel_id: str) -> tuple[Area, str]:
    if panel_id in DEFAULT_LAYOUT:
        return DEFAULT_LAYOUT[panel_id]
    for key, value in DEFAULT_LAYOUT.items():  # e.g. "chain_table" → chain, "smile_surface" → smile
        if key in panel_id:
            return value
    return Area.RightDockWidgetArea, _FALLBACK_GROUP


#: modules that cost a large part of the 2 s first-paint budget to import, none of which the first paint needs:
#: the ML libraries, pandas (chain imports and backtests) and numba (the compiled kernels load after the paint)
HEAVY_AT_FIRST_PAINT = ("torch", "xgboost", "pandas", "numba")


def report_startup(stage: str) -> None:
    """benchmarks/gui.py measures process start → first paint (and → on-screen panels built): the
    wall time of each stage goes to ``$OPTIONDESK_FIRST_PAINT_FILE``, with the heavy modules
    (:data:`HEAVY_AT_FIRST_PAINT`) loaded by then (there should be none)."""
    report = os.environ.get("OPTIONDESK_FIRST_PAINT_FILE")
    if not report:
        return
    path = Path(report)
    try:
        data = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        data = {}
    data[stage] = time.time()
    data.setdefault("heavy_modules", [m for m in HEAVY_AT_FIRST_PAINT if m in sys.modules])
    path.write_text(json.dumps(data))


class DocksMixin:
    """Panels in docks, their late building, the default layout and its persistence."""

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
        report_startup("visible_panels_at")
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

    # ---- default layout --------------------------------------------------------------------------
    def _place_default(self, pid: str, dock: QtWidgets.QDockWidget) -> None:
        area, group = placement(pid)
        # the first dock of a group is added to the area; the rest are tabbed onto it
        first = next(
            (self.docks[p] for p in self.docks if p != pid and placement(p)[1] == group and self.dockWidgetArea(self.docks[p]) == area),
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
        for group in (*_GROUP_ORDER, *sorted({placement(p)[1] for p in self.docks} - set(_GROUP_ORDER))):
            for pid, dock in self.docks.items():
                if placement(pid)[1] != group:
                    continue
                area = placement(pid)[0]
                leader = next((self.docks[p] for p in placed if placement(p)[1] == group), None)
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
        top_left = [self.docks[p] for p in self.docks if placement(p)[1] == "left-top"]
        bottom_left = [self.docks[p] for p in self.docks if placement(p)[1] == "left-bottom"]
        if top_left and bottom_left:
            self.resizeDocks([top_left[0], bottom_left[0]], [int(height * 0.58), int(height * 0.34)], QtCore.Qt.Orientation.Vertical)
        groups = [g for g in ("right-top", "right-middle", "right-bottom") if any(placement(p)[1] == g for p in self.docks)]
        firsts = [next(self.docks[p] for p in self.docks if placement(p)[1] == g) for g in groups]
        shares = {"right-top": 0.48, "right-middle": 0.26, "right-bottom": 0.52}
        if len(firsts) > 1:
            self.resizeDocks(firsts, [int(height * shares[g]) for g in groups], QtCore.Qt.Orientation.Vertical)

    # ---- layout persistence ----------------------------------------------------------------------
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
