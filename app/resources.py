"""Locate bundled resources (icons, themes, desktop file, default settings).

Looked up, in order: ``$OPTIONDESK_RESOURCES``; a PyInstaller bundle (``sys._MEIPASS/resources``);
``app/resources`` inside an installed package; the ``resources/`` folder of a source checkout;
``<prefix>/share/optiondesk`` where a wheel installs them.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path

from PySide6 import QtGui


@cache
def resources_dir() -> Path:
    candidates = []
    env = os.environ.get("OPTIONDESK_RESOURCES")
    if env:
        candidates.append(Path(env))
    meipass = getattr(sys, "_MEIPASS", None)
    if meipass:
        candidates.append(Path(meipass) / "resources")
    here = Path(__file__).resolve().parent
    candidates += [here / "resources", here.parent / "resources", Path(sys.prefix) / "share" / "optiondesk"]
    for c in candidates:
        if (c / "themes").is_dir():
            return c
    raise FileNotFoundError(
        "Optiondesk resources not found (looked in: " + ", ".join(str(c) for c in candidates)
        + "); set OPTIONDESK_RESOURCES to the folder holding icons/ and themes/"
    )


def resource_path(*parts: str) -> Path:
    return resources_dir().joinpath(*parts)


def icon(name: str) -> QtGui.QIcon:
    """An SVG icon from ``resources/icons/<name>.svg`` (an empty icon if it is missing)."""
    path = resource_path("icons", f"{name}.svg")
    return QtGui.QIcon(str(path)) if path.exists() else QtGui.QIcon()
