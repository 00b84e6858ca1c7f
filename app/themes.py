"""Dark and light themes: a Fusion palette plus a style sheet from ``resources/themes/<name>.qss``.

The style sheet styles the trading controls by dynamic property (``tradingState`` ACTIVE/REDUCING/
HALTED on the kill switch, ``mode`` paper/live on the mode button, ``sign`` pos/neg on P&L labels).
pyqtgraph's default colours follow the theme for plots created afterwards.
"""

from __future__ import annotations

import logging
import sys

from PySide6 import QtGui, QtWidgets

from app.resources import resource_path

log = logging.getLogger(__name__)

THEMES = ("dark", "light")

_PALETTES = {
    "dark": {
        "Window": "#1e2127", "WindowText": "#d7dae0", "Base": "#16181d", "AlternateBase": "#1b1e24",
        "Text": "#d7dae0", "Button": "#2a2e36", "ButtonText": "#d7dae0", "Highlight": "#2f6fb3",
        "HighlightedText": "#ffffff", "ToolTipBase": "#2a2e36", "ToolTipText": "#d7dae0",
        "PlaceholderText": "#7f8591", "Link": "#5aa9ff", "Mid": "#3a3f4b", "Dark": "#121418",
    },
    "light": {
        "Window": "#f3f4f6", "WindowText": "#1d2129", "Base": "#ffffff", "AlternateBase": "#f5f7fa",
        "Text": "#1d2129", "Button": "#e8eaee", "ButtonText": "#1d2129", "Highlight": "#2f6fb3",
        "HighlightedText": "#ffffff", "ToolTipBase": "#ffffdc", "ToolTipText": "#1d2129",
        "PlaceholderText": "#8a8f99", "Link": "#1a64c8", "Mid": "#c9cdd4", "Dark": "#9aa0a8",
    },
}


def palette(name: str) -> QtGui.QPalette:
    pal = QtGui.QPalette()
    for role, colour in _PALETTES[name].items():
        pal.setColor(getattr(QtGui.QPalette.ColorRole, role), QtGui.QColor(colour))
    return pal


def style_sheet(name: str) -> str:
    """The theme's style sheet; ``@ICONS@`` becomes the icons folder (Qt resolves a relative ``url()``
    against the working directory, so a checked box lost its tick when started from elsewhere)."""
    path = resource_path("themes", f"{name}.qss")
    return path.read_text(encoding="utf-8").replace("@ICONS@", resource_path("icons").as_posix())


def apply_theme(name: str, app: QtWidgets.QApplication | None = None) -> str:
    """Apply ``name`` (unknown names fall back to dark, with a warning); returns the theme applied."""
    if name not in THEMES:
        log.warning("unknown theme %r; using dark", name)
        name = "dark"
    app = app or QtWidgets.QApplication.instance()  # type: ignore[assignment]
    if app is None:
        raise RuntimeError("apply_theme needs a QApplication")
    if app.property("optiondeskTheme") == name:
        return name  # re-polishing every widget costs ~1 s: only when the theme really changes
    app.setProperty("optiondeskTheme", name)
    if app.style().name().lower() != "fusion":
        app.setStyle("Fusion")
    app.setPalette(palette(name))
    app.setStyleSheet(style_sheet(name))
    pg = sys.modules.get("pyqtgraph")  # not imported yet: widgets.plots takes the palette when it loads
    if pg is not None:
        pg.setConfigOption("background", _PALETTES[name]["Base"])
        pg.setConfigOption("foreground", _PALETTES[name]["Text"])
    return name
