"""First-run wizard: how to trade (simulated paper trading or a broker), the risk level and a layout.

Shown once, by ``optiondesk`` / ``optiondesk gui``, when the settings file does not exist yet (a fresh
install); finishing or skipping it writes that file, so it never comes back. Tests, the self-test and
smoke runs (``--seconds``) build their windows without it. It runs before the engine starts, so it only
writes settings: choosing a broker makes the app open the credentials dialog (File ▸ Credentials) once
the window is up, where the secrets go to the keyring — the wizard never sees them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6 import QtCore, QtWidgets

from engine.settings import Settings, save_settings

#: the named risk levels offered (the toolbar slider sets any value 0..100 later)
RISK_CHOICES: tuple[tuple[str, float, str], ...] = (
    ("Low", 25.0, "small positions, tight daily loss limit"),
    ("Moderate", 50.0, "the default presets"),
    ("High", 75.0, "larger positions and Greeks limits"),
)
THEMES: tuple[tuple[str, str], ...] = (("dark", "Dark"), ("light", "Light"))
#: layouts: key, label, the panels left open (None: all of them). Closed panels come back from View.
LAYOUTS: tuple[tuple[str, str, frozenset[str] | None], ...] = (
    ("full", "Full workstation — every panel", None),
    ("essentials", "Essentials — chain, ticket, positions, orders, approvals, alerts",
     frozenset({"chain", "ticket", "positions", "orders", "approvals", "alerts"})),
)


@dataclass(frozen=True, slots=True)
class FirstRunChoice:
    """What the user chose; ``connect_broker`` asks the app to open the credentials dialog."""

    connect_broker: bool
    risk_level: float
    theme: str
    layout: str
    skipped: bool = False

    def apply_to_window(self, window: QtWidgets.QMainWindow) -> None:
        """Close the panels the chosen layout leaves out and, for a broker, open the credentials dialog.

        Runs once the window and its panels are up; the window saves the result as its layout."""
        keep = dict((k, panels) for k, _label, panels in LAYOUTS).get(self.layout)
        if keep is not None:
            for pid, dock in getattr(window, "docks", {}).items():
                if pid not in keep:
                    dock.close()
        if self.connect_broker:
            window.open_credentials_dialog()  # type: ignore[attr-defined]


def needs_first_run(settings_file: Path) -> bool:
    """True on a fresh install: no settings file yet (a damaged one is the loader's business, not ours)."""
    return not Path(settings_file).exists()


class FirstRunWizard(QtWidgets.QDialog):
    """One page, three questions, two buttons: *Start* writes the choices, *Skip* writes the defaults.

    A single page rather than a ``QWizard``: three short questions read faster together, and every
    answer can be changed later (toolbar slider, View menu, File ▸ Credentials)."""

    finished_choice = QtCore.Signal(object)  # FirstRunChoice

    def __init__(self, settings_file: Path, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings_file = Path(settings_file)
        self.choice: FirstRunChoice | None = None
        self.setWindowTitle("Welcome to Optiondesk")
        self.setObjectName("first_run_wizard")
        self.setModal(True)

        intro = QtWidgets.QLabel(
            "<b>Welcome to Optiondesk.</b><br>Three choices to start with; each can be changed later.")
        intro.setWordWrap(True)

        # how to trade
        self.paper_radio = QtWidgets.QRadioButton("Simulated paper trading (recommended)")
        self.paper_radio.setToolTip("A simulated market and a paper broker: no account, no real money.")
        self.broker_radio = QtWidgets.QRadioButton("Connect a broker (tastytrade or Interactive Brokers)")
        self.broker_radio.setToolTip("Opens File ▸ Credentials when the window is up. The app still starts "
                                     "in paper mode; live trading is always a separate, confirmed switch.")
        self.paper_radio.setChecked(True)
        mode_box = QtWidgets.QGroupBox("How do you want to trade?")
        mode_layout = QtWidgets.QVBoxLayout(mode_box)
        mode_layout.addWidget(self.paper_radio)
        mode_layout.addWidget(self.broker_radio)

        # risk level
        self.risk_buttons: dict[str, QtWidgets.QRadioButton] = {}
        risk_box = QtWidgets.QGroupBox("Risk level")
        risk_layout = QtWidgets.QVBoxLayout(risk_box)
        for name, level, hint in RISK_CHOICES:
            btn = QtWidgets.QRadioButton(f"{name} ({level:.0f}) — {hint}")
            btn.setProperty("level", level)
            self.risk_buttons[name] = btn
            risk_layout.addWidget(btn)
        self.risk_buttons["Moderate"].setChecked(True)

        # look and layout
        self.theme_combo = QtWidgets.QComboBox()
        for key, label in THEMES:
            self.theme_combo.addItem(label, key)
        self.layout_combo = QtWidgets.QComboBox()
        for key, label, _panels in LAYOUTS:
            self.layout_combo.addItem(label, key)
        self.layout_combo.setToolTip("Closed panels come back from the View menu; View ▸ Reset layout "
                                     "shows them all again.")
        layout_box = QtWidgets.QGroupBox("Layout")
        form = QtWidgets.QFormLayout(layout_box)
        form.addRow("Theme", self.theme_combo)
        form.addRow("Panels", self.layout_combo)

        self.error_label = QtWidgets.QLabel("")
        self.error_label.setObjectName("first_run_error")
        self.error_label.setWordWrap(True)
        self.error_label.hide()

        buttons = QtWidgets.QDialogButtonBox()
        self.start_button = buttons.addButton("Start", QtWidgets.QDialogButtonBox.ButtonRole.AcceptRole)
        self.skip_button = buttons.addButton("Skip", QtWidgets.QDialogButtonBox.ButtonRole.RejectRole)
        self.start_button.setDefault(True)
        self.start_button.clicked.connect(self.start)
        self.skip_button.clicked.connect(self.skip)

        root = QtWidgets.QVBoxLayout(self)
        root.addWidget(intro)
        root.addWidget(mode_box)
        root.addWidget(risk_box)
        root.addWidget(layout_box)
        root.addWidget(self.error_label)
        root.addWidget(buttons)

    def current_choice(self) -> FirstRunChoice:
        level = next(float(b.property("level")) for b in self.risk_buttons.values() if b.isChecked())
        return FirstRunChoice(
            connect_broker=self.broker_radio.isChecked(),
            risk_level=level,
            theme=str(self.theme_combo.currentData()),
            layout=str(self.layout_combo.currentData()),
        )

    def start(self) -> None:
        self._finish(self.current_choice())

    def skip(self) -> None:
        """Skipping is a choice too: the defaults are written so the wizard does not come back."""
        defaults = Settings()
        self._finish(FirstRunChoice(connect_broker=False, risk_level=defaults.risk.level,
                                    theme=defaults.general.theme, layout="full", skipped=True))

    def reject(self) -> None:  # Escape / the window's close button
        self.skip()

    def _finish(self, choice: FirstRunChoice) -> None:
        if not self.write(choice):
            return
        self.choice = choice
        self.finished_choice.emit(choice)
        self.done(QtWidgets.QDialog.DialogCode.Accepted if not choice.skipped
                  else QtWidgets.QDialog.DialogCode.Rejected)

    def write(self, choice: FirstRunChoice) -> bool:
        """Write the settings file; on failure say why in the dialog and keep it open (nothing is lost)."""
        base = Settings()
        settings = base.model_copy(update={
            "general": base.general.model_copy(update={"theme": choice.theme}),
            "risk": base.risk.model_copy(update={"level": choice.risk_level}),
        })
        try:
            self.settings_file.parent.mkdir(parents=True, exist_ok=True)
            save_settings(settings, self.settings_file)
        except OSError as exc:
            self.error_label.setText(f"Could not write {self.settings_file}: {exc.strerror or exc}")
            self.error_label.show()
            return False
        return True


def run_first_run(settings_file: Path, parent: QtWidgets.QWidget | None = None) -> FirstRunChoice | None:
    """Show the wizard modally if this is a fresh install; None when it was not needed.

    ``exec()`` is fine here: it runs before the engine and the qasync loop exist, so it blocks nothing."""
    if not needs_first_run(settings_file):
        return None
    wizard = FirstRunWizard(settings_file, parent)
    wizard.exec()
    return wizard.choice
