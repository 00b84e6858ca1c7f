"""The main window's menu bar (File, View, Trading, Reports, Help), the dialogs it opens and the theme.

A mixin of :class:`app.main_window.MainWindow`. Every dialog opens non-modally (``open()``): a modal
``exec()`` inside the qasync loop would stall the engine."""

from __future__ import annotations

import logging

from PySide6 import QtCore, QtGui, QtWidgets

from app import themes
from app.toolbar import KillSwitchControl

log = logging.getLogger("app.main_window")  # the name its records had before the module was split off


class MenusMixin:
    """The menus, the dialogs they open, and the theme applied to every panel."""

    # ---- menus and dialogs -----------------------------------------------------------------------
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

    # ---- theme -----------------------------------------------------------------------------------
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
