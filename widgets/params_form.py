"""A parameter form generated from a pydantic model: one editor per field, a group per nested model.

Used by the Strategies panel for a strategy's own parameter model (nested ``rules.*`` and ``pricing.*``
included). The form validates with that model before anything is sent, so a typo is marked beside its field
instead of coming back from the engine as a refusal.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from PySide6 import QtCore, QtWidgets

ERROR_STYLE = "color: #e0554f; font-weight: bold"
OK_STYLE = "color: #8a8f98"


def _strip_optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` → (X, True); anything else → (annotation, False)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _choices(annotation: Any) -> list[str] | None:
    """The allowed values of an enum or a ``Literal`` of strings (a drop-down), else None."""
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(m.value) for m in annotation]
    if typing.get_origin(annotation) is typing.Literal:
        values = typing.get_args(annotation)
        if all(isinstance(v, str) for v in values):
            return list(values)
    return None


def _as_text(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, str):
        return value
    return json.dumps(value)


class _Field:
    """One editable parameter: its dotted key, its editor and the label under it that shows its error."""

    def __init__(self, key: str, annotation: Any, value: Any, description: str) -> None:
        self.key = key
        inner, self.optional = _strip_optional(annotation)
        self.choices = _choices(inner)
        self.is_bool = inner is bool
        self.is_text = inner is str
        self.container = QtWidgets.QWidget()
        box = QtWidgets.QVBoxLayout(self.container)
        box.setContentsMargins(0, 0, 0, 0)
        box.setSpacing(1)
        self.editor: QtWidgets.QWidget
        if self.is_bool:
            self.editor = QtWidgets.QCheckBox()
        elif self.choices is not None:
            combo = QtWidgets.QComboBox()
            combo.addItems(self.choices + (["none"] if self.optional else []))
            self.editor = combo
        else:
            self.editor = QtWidgets.QLineEdit()
        self.editor.setObjectName(f"param:{key}")
        self.editor.setToolTip(description or key)
        self.error = QtWidgets.QLabel("")
        self.error.setObjectName(f"param_error:{key}")
        self.error.setStyleSheet(ERROR_STYLE)
        self.error.setWordWrap(True)
        self.error.hide()
        box.addWidget(self.editor)
        box.addWidget(self.error)
        self.set_value(value)

    def set_value(self, value: Any) -> None:
        if isinstance(self.editor, QtWidgets.QCheckBox):
            self.editor.setChecked(bool(value))
        elif isinstance(self.editor, QtWidgets.QComboBox):
            text = "none" if value is None else str(value.value if isinstance(value, enum.Enum) else value)
            self.editor.setCurrentText(text)
        elif isinstance(self.editor, QtWidgets.QLineEdit):
            self.editor.setText(_as_text(value))
            self.editor.setCursorPosition(0)

    def value(self) -> Any:
        """The typed value for the model: text fields stay text, the rest is read as JSON ("none" is None)."""
        if isinstance(self.editor, QtWidgets.QCheckBox):
            return self.editor.isChecked()
        text = (self.editor.currentText() if isinstance(self.editor, QtWidgets.QComboBox)
                else self.editor.text() if isinstance(self.editor, QtWidgets.QLineEdit) else "").strip()
        if text.lower() in ("none", "null", "off") and (self.optional or not self.is_text):
            return None
        if self.is_text or self.choices is not None:
            return text
        try:
            return json.loads(text)
        except ValueError:
            return text  # the model names what it expected

    def show_error(self, message: str) -> None:
        self.error.setText(message)
        self.error.setVisible(bool(message))


class ParamsForm(QtWidgets.QWidget):
    """A form generated from a strategy's parameter model: one row per field, a group per nested model."""

    changed = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.model: type[BaseModel] | None = None
        self.fields: dict[str, _Field] = {}
        self._layout = QtWidgets.QVBoxLayout(self)
        self._layout.setContentsMargins(4, 4, 4, 4)
        self.general_error = QtWidgets.QLabel("")
        self.general_error.setObjectName("params_error")
        self.general_error.setStyleSheet(ERROR_STYLE)
        self.general_error.setWordWrap(True)
        self.general_error.hide()
        self._body: QtWidgets.QWidget | None = None

    def load(self, model: type[BaseModel] | None, values: dict[str, Any], note: str = "") -> None:
        """Rebuild the form for ``model`` filled with ``values`` (``note`` instead of a form when there is none)."""
        if self._body is not None:
            self._layout.removeWidget(self._body)
            self._body.deleteLater()
        self._layout.removeWidget(self.general_error)
        self.model, self.fields = model, {}
        body = QtWidgets.QWidget()
        outer = QtWidgets.QVBoxLayout(body)
        outer.setContentsMargins(0, 0, 0, 0)
        if model is None:
            label = QtWidgets.QLabel(note or "No parameters.")
            label.setWordWrap(True)
            label.setStyleSheet(OK_STYLE)
            outer.addWidget(label)
        else:
            top = QtWidgets.QFormLayout()
            top.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
            outer.addLayout(top)
            for name, info in model.model_fields.items():
                ann = info.annotation
                if isinstance(ann, type) and issubclass(ann, BaseModel):
                    group = QtWidgets.QGroupBox(name)
                    form = QtWidgets.QFormLayout(group)
                    form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
                    sub = values.get(name) if isinstance(values.get(name), dict) else {}
                    for sub_name, sub_info in ann.model_fields.items():
                        self._add(form, f"{name}.{sub_name}", sub_name, sub_info, sub.get(sub_name, sub_info.default))
                    outer.addWidget(group)
                else:
                    self._add(top, name, name, info, values.get(name, info.get_default(call_default_factory=True)))
        outer.addStretch(1)
        self._body = body
        self._layout.addWidget(self.general_error)
        self._layout.addWidget(body)
        self.show_errors({})

    def _add(self, form: QtWidgets.QFormLayout, key: str, label: str, info: Any, value: Any) -> None:
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")
        elif isinstance(value, enum.Enum):
            value = value.value
        elif isinstance(value, tuple):
            value = json.loads(json.dumps(value))
        f = _Field(key, info.annotation, value, info.description or "")
        editor = f.editor
        if isinstance(editor, QtWidgets.QCheckBox):
            editor.toggled.connect(self.changed)
        elif isinstance(editor, QtWidgets.QComboBox):
            editor.currentTextChanged.connect(self.changed)
        elif isinstance(editor, QtWidgets.QLineEdit):
            editor.textEdited.connect(self.changed)
        self.fields[key] = f
        form.addRow(label.replace("_", " "), f.container)

    def data(self) -> dict[str, Any]:
        """The form's values as the nested dict the model takes."""
        out: dict[str, Any] = {}
        for key, f in self.fields.items():
            node = out
            *parents, last = key.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[last] = f.value()
        return out

    def validate(self) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """(validated parameters as JSON data, {}) or (None, {field key or "": message}) — the model's own check."""
        if self.model is None:
            return None, {"": "this strategy has no parameter model"}
        try:
            params = self.model.model_validate(self.data())
        except ValidationError as exc:
            errors: dict[str, str] = {}
            for e in exc.errors():
                loc = [str(p) for p in e["loc"]]
                key = next((".".join(loc[:n]) for n in range(len(loc), 0, -1) if ".".join(loc[:n]) in self.fields), "")
                msg = "unknown setting" if e["type"] == "extra_forbidden" else e["msg"]
                detail = ".".join(loc[len(key.split(".")):]) if key else ".".join(loc)
                errors.setdefault(key, f"{detail}: {msg}" if detail else msg)
            return None, errors
        return params.model_dump(mode="json"), {}

    def show_errors(self, errors: dict[str, str]) -> None:
        for key, f in self.fields.items():
            f.show_error(errors.get(key, ""))
        general = errors.get("", "")
        self.general_error.setText(general)
        self.general_error.setVisible(bool(general))
