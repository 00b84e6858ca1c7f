"""Settings dialog generated from the pydantic ``Settings`` model: one tab per section.

Editors follow the field type (check box for bools, combo box for ``Literal`` choices, a line edit for
numbers and text, JSON for mappings and lists). Saving validates the whole form with the same model the
engine loads; each error is shown in red next to its field and nothing is written until the form is
valid. Secrets are never settings: credentials live in the Credentials dialog.
"""

from __future__ import annotations

import json
import logging
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError
from PySide6 import QtCore, QtWidgets

from engine.analytics.formatting import plural
from engine.bus.commands import ApplySettings, SettingsApplied
from widgets import engine_queries as eq
from widgets.base import qt_alive, send_command

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _is_structured(value: Any) -> bool:
    """A list/dict holding tables (dicts or lists): shown read-only in the dialog."""
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else ()
    return any(isinstance(v, dict | list) for v in items)


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


class FieldEditor(QtWidgets.QWidget):
    """One setting: an editor plus an error label underneath (hidden while valid)."""

    def __init__(self, key: str, annotation: Any, value: Any, description: str = "",
                 parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.key = key
        self.annotation, self.optional = _unwrap_optional(annotation)
        self.kind = "text"
        lay = QtWidgets.QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.setSpacing(1)
        if self.annotation is bool:
            self.kind = "bool"
            self.editor: QtWidgets.QWidget = QtWidgets.QCheckBox()
            self.editor.setChecked(bool(value))  # type: ignore[attr-defined]
        elif get_origin(self.annotation) is Literal:
            self.kind = "choice"
            self.choices = list(get_args(self.annotation))
            combo = QtWidgets.QComboBox()
            for c in self.choices:
                combo.addItem(str(c))
            if value in self.choices:
                combo.setCurrentIndex(self.choices.index(value))
            self.editor = combo
        elif get_origin(self.annotation) in (dict, list, tuple) or self.annotation in (dict, list):
            text = json.dumps(value)
            if _is_structured(value):
                # lists of tables (e.g. the simulated universe) do not fit a line edit: kept as they are
                self.kind = "fixed"
                self.fixed_value = value
                self.editor = QtWidgets.QLabel(f"{plural(len(value), 'entry', 'entries')} — edit in settings.toml")
            else:
                self.kind = "json"
                self.editor = QtWidgets.QLineEdit(text)
        else:
            self.kind = "text"
            self.editor = QtWidgets.QLineEdit("" if value is None else str(value))
            if self.optional:
                self.editor.setPlaceholderText("(not set)")  # type: ignore[attr-defined]
        self.editor.setObjectName(f"setting:{key}")
        if description:
            self.editor.setToolTip(description)
        self.error = QtWidgets.QLabel("")
        self.error.setObjectName(f"error:{key}")
        self.error.setProperty("role", "fieldError")
        self.error.setWordWrap(True)
        self.error.setVisible(False)
        lay.addWidget(self.editor)
        lay.addWidget(self.error)

    def raw_value(self) -> Any:
        """The value to validate; raises ValueError for text that is not even parseable (JSON)."""
        if self.kind == "bool":
            return self.editor.isChecked()  # type: ignore[attr-defined]
        if self.kind == "fixed":
            return self.fixed_value
        if self.kind == "choice":
            return self.choices[self.editor.currentIndex()]  # type: ignore[attr-defined]
        text = self.editor.text().strip()  # type: ignore[attr-defined]
        if self.kind == "json":
            try:
                return json.loads(text or "null")
            except ValueError as exc:
                raise ValueError(f"not valid JSON: {exc.msg}") from None
        if text == "" and self.optional:
            return None
        return text

    def set_value(self, value: Any) -> None:
        if self.kind == "fixed":
            self.fixed_value = value
            return
        if self.kind == "bool":
            self.editor.setChecked(bool(value))  # type: ignore[attr-defined]
        elif self.kind == "choice":
            if value in self.choices:
                self.editor.setCurrentIndex(self.choices.index(value))  # type: ignore[attr-defined]
        elif self.kind == "json":
            self.editor.setText(json.dumps(value))  # type: ignore[attr-defined]
        else:
            self.editor.setText("" if value is None else str(value))  # type: ignore[attr-defined]

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(bool(message))


class SettingsDialog(QtWidgets.QDialog):
    """Edit the settings. With an engine, Save sends ``ApplySettings``: the engine writes the file, swaps
    its settings and hands each running component what it owns; what only a restart applies stays listed
    in the dialog. Without one the file is written directly. ``saved(path)`` fires after a valid save."""

    saved = QtCore.Signal(str)

    def __init__(self, engine: Engine | None, parent: QtWidgets.QWidget | None = None, *, path: Path | None = None) -> None:
        super().__init__(parent)
        from engine.settings import Settings

        self.engine = engine
        self.setObjectName("settingsDialog")
        self.setWindowTitle("Settings")
        self.settings_cls = Settings
        self.current: BaseModel = eq.settings(engine)
        self.path = engine.paths.settings_file if engine is not None else path
        self.editors: dict[str, FieldEditor] = {}
        self.errors: dict[str, str] = {}
        self.last_saved: BaseModel | None = None
        #: the engine's answer to the last save (None before one, or without an engine)
        self.result: SettingsApplied | None = None

        self.tabs = QtWidgets.QTabWidget()
        for name, finfo in type(self.current).model_fields.items():
            section = getattr(self.current, name)
            if not isinstance(section, BaseModel):
                continue
            page = QtWidgets.QWidget()
            form = QtWidgets.QFormLayout(page)
            form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
            self._build_form(form, name, section)
            scroll = QtWidgets.QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setWidget(page)
            self.tabs.addTab(scroll, (finfo.title or name).replace("_", " ").capitalize())
        self.summary = QtWidgets.QLabel("")
        self.summary.setProperty("role", "fieldError")
        self.summary.setWordWrap(True)
        buttons = QtWidgets.QDialogButtonBox(
            QtWidgets.QDialogButtonBox.StandardButton.Save
            | QtWidgets.QDialogButtonBox.StandardButton.Cancel
            | QtWidgets.QDialogButtonBox.StandardButton.RestoreDefaults
        )
        self.save_button = buttons.button(QtWidgets.QDialogButtonBox.StandardButton.Save)
        buttons.accepted.connect(self.save)
        buttons.rejected.connect(self.reject)
        buttons.button(QtWidgets.QDialogButtonBox.StandardButton.RestoreDefaults).clicked.connect(self.restore_defaults)
        note = QtWidgets.QLabel(
            (f"File: {self.path}" if self.path else "No settings file")
            + "\nThe risk level, manual approval and notification rules apply at once; "
              "the dialog lists what waits for the next start."
        )
        note.setWordWrap(True)
        note.setObjectName("settingsPath")
        note.setTextInteractionFlags(QtCore.Qt.TextInteractionFlag.TextSelectableByMouse)
        lay = QtWidgets.QVBoxLayout(self)
        lay.addWidget(self.tabs, 1)
        lay.addWidget(note)
        self.outcome = QtWidgets.QLabel("")
        self.outcome.setObjectName("settingsOutcome")
        self.outcome.setWordWrap(True)
        self.outcome.setVisible(False)
        lay.addWidget(self.outcome)
        lay.addWidget(self.summary)
        lay.addWidget(buttons)
        self.resize(640, 560)

    def _build_form(self, form: QtWidgets.QFormLayout, prefix: str, model: BaseModel) -> None:
        dumped = model.model_dump(mode="json")
        for fname, finfo in type(model).model_fields.items():
            key = f"{prefix}.{fname}"
            value = getattr(model, fname)
            annotation, _ = _unwrap_optional(finfo.annotation)
            if isinstance(value, BaseModel) or _is_model(annotation):
                box = QtWidgets.QGroupBox(fname.replace("_", " "))
                sub = QtWidgets.QFormLayout(box)
                if isinstance(value, BaseModel):
                    self._build_form(sub, key, value)
                form.addRow(box)
                continue
            editor = FieldEditor(key, finfo.annotation, dumped.get(fname), finfo.description or "", self)
            self.editors[key] = editor
            form.addRow(fname.replace("_", " "), editor)

    def form_data(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The form as a nested mapping, plus parse errors by key (JSON that does not parse)."""
        data: dict[str, Any] = self.current.model_dump(mode="json")
        errors: dict[str, str] = {}
        for key, editor in self.editors.items():
            try:
                value = editor.raw_value()
            except ValueError as exc:
                errors[key] = str(exc)
                continue
            node = data
            parts = key.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = value
        return data, errors

    def validate_form(self) -> BaseModel | None:
        """Validate; show every error next to its field. Returns the settings when valid."""
        data, errors = self.form_data()
        settings = None
        if not errors:
            try:
                settings = self.settings_cls.model_validate(data)
            except ValidationError as exc:
                for e in exc.errors():
                    key = ".".join(str(p) for p in e["loc"])
                    target = key if key in self.editors else next((k for k in self.editors if key.startswith(k)), key)
                    errors.setdefault(target, e["msg"])
        self.errors = errors
        for key, editor in self.editors.items():
            editor.show_error(errors.get(key, ""))
        orphans = [f"{k}: {m}" for k, m in errors.items() if k not in self.editors]
        self.summary.setText(
            (f"{len(errors)} setting(s) need attention" + (": " + "; ".join(orphans) if orphans else "")) if errors else ""
        )
        if errors:
            first = next(iter(k for k in errors if k in self.editors), None)
            if first is not None:
                self._show_tab_of(first)
        return settings

    def _show_tab_of(self, key: str) -> None:
        editor = self.editors[key]
        for i in range(self.tabs.count()):
            if self.tabs.widget(i).isAncestorOf(editor):
                self.tabs.setCurrentIndex(i)
                return

    def save(self) -> None:
        settings = self.validate_form()
        if settings is None:
            return
        if self.engine is None:
            self._save_file(settings)
            return
        self.save_button.setEnabled(False)
        send_command(self.engine, ApplySettings(settings=settings), on_error=self._not_applied,
                     on_result=lambda result: self._applied(settings, result))

    def _save_file(self, settings: BaseModel) -> None:
        """No engine runs (the dialog on its own): the file is all there is to change."""
        if self.path is not None:
            from engine.settings import Settings, save_settings

            assert isinstance(settings, Settings)
            try:
                save_settings(settings, self.path)
            except OSError as exc:
                self.summary.setText(f"could not write {self.path}: {exc}")
                return
        self.last_saved = settings
        self.saved.emit(str(self.path))
        self.accept()

    def _not_applied(self, message: str) -> None:
        if qt_alive(self):
            self.save_button.setEnabled(True)
            self.summary.setText(f"not saved: {message}")

    def _applied(self, settings: BaseModel, result: SettingsApplied) -> None:
        """Saved and applied; a change only a restart applies keeps the dialog open to say so."""
        if not qt_alive(self):
            return
        self.save_button.setEnabled(True)
        self.last_saved = settings
        self.current = settings
        self.result = result
        self.saved.emit(result.path or "")
        if not result.at_restart:
            self.accept()
            return
        keys = ", ".join(result.at_restart)
        now = f" Applied now: {', '.join(result.applied)}." if result.applied else ""
        self.outcome.setText(f"Saved.{now} Takes effect at the next start: {keys}.")
        self.outcome.setVisible(True)

    def show_risk_level(self, level: float) -> None:
        """The slider moved while the dialog is open: the form follows the level the engine runs at."""
        editor = self.editors.get("risk.level")
        if editor is not None:
            editor.set_value(level)

    def restore_defaults(self) -> None:
        defaults = self.settings_cls()
        dumped = defaults.model_dump(mode="json")
        for key, editor in self.editors.items():
            node: Any = dumped
            for p in key.split("."):
                node = node.get(p) if isinstance(node, dict) else None
            editor.set_value(node)
            editor.show_error("")
