"""The Debian packages Qt's X11 (xcb) platform plugin needs, found with ``ldd`` — never by importing Qt.

PySide6's wheel bundles Qt but not the X11 client libraries its xcb plugin links to. On a minimal
Debian machine the window then aborts at start with ``Could not load the Qt platform plugin "xcb"``
(and Qt's message names libxcb-cursor0 even when the missing ones are libxcb-icccm4 and
libxcb-keysyms1). ``optiondesk doctor`` reports the missing libraries with the exact ``apt-get``
line; ``make run`` installs them (``python -m engine.system_libraries`` prints the package names).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

#: shared library (soname) → the Debian package that ships it; what libqxcb.so links to
XCB_PLUGIN_PACKAGES: dict[str, str] = {
    "libxcb.so.1": "libxcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxcb-xinerama.so.0": "libxcb-xinerama0",
    "libxkbcommon.so.0": "libxkbcommon0",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libX11.so.6": "libx11-6",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libXau.so.6": "libxau6",
    "libXdmcp.so.6": "libxdmcp6",
    "libGL.so.1": "libgl1",
    "libEGL.so.1": "libegl1",
    "libOpenGL.so.0": "libopengl0",
    "libfontconfig.so.1": "libfontconfig1",
    "libfreetype.so.6": "libfreetype6",
    "libglib-2.0.so.0": "libglib2.0-0",
    "libgthread-2.0.so.0": "libglib2.0-0",
    "libdbus-1.so.3": "libdbus-1-3",
}


def xcb_plugin_path() -> Path | None:
    """Where PySide6 keeps ``libqxcb.so`` (None when PySide6 or the plugin is absent, e.g. not Linux)."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        plugin = Path(base) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
        if plugin.is_file():
            return plugin
    return None


def parse_ldd_missing(ldd_output: str) -> list[str]:
    """The sonames ``ldd`` reports as ``=> not found``, once each, in the order given."""
    missing: list[str] = []
    for line in ldd_output.splitlines():
        name, sep, target = line.strip().partition("=>")
        if sep and target.strip() == "not found" and name.strip() not in missing:
            missing.append(name.strip())
    return missing


def missing_xcb_libraries(plugin: Path | None = None) -> list[str]:
    """Shared libraries the xcb plugin links to that this machine lacks ([] when unknowable)."""
    plugin = plugin or xcb_plugin_path()
    ldd = shutil.which("ldd")
    if plugin is None or ldd is None or not sys.platform.startswith("linux"):
        return []
    try:
        proc = subprocess.run([ldd, str(plugin)], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return parse_ldd_missing(proc.stdout)


def debian_packages_for(sonames: list[str]) -> list[str]:
    """Debian packages that provide ``sonames`` (unknown names are left out), sorted, once each."""
    return sorted({XCB_PLUGIN_PACKAGES[s] for s in sonames if s in XCB_PLUGIN_PACKAGES})


def apt_install_line(sonames: list[str]) -> str:
    packages = debian_packages_for(sonames)
    return f"sudo apt-get install -y {' '.join(packages)}" if packages else ""


def main() -> int:
    """Print the Debian packages the xcb plugin still needs, space-separated (nothing if none)."""
    print(" ".join(debian_packages_for(missing_xcb_libraries())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
