"""The doctor names the Debian packages Qt's xcb plugin is missing (a fresh Debian machine lacked two)."""

from __future__ import annotations

import pytest

from engine.system_libraries import (
    XCB_PLUGIN_PACKAGES,
    apt_install_line,
    debian_packages_for,
    missing_xcb_libraries,
    parse_ldd_missing,
    xcb_plugin_path,
)

# ldd of PySide6 6.11's libqxcb.so on a minimal Debian 12 machine (2026-12-05), abridged
LDD_FRESH_DEBIAN = """\
\tlinux-vdso.so.1 (0x00007ffc6a1f2000)
\tlibQt6XcbQpa.so.6 => /venv/lib/python3.11/site-packages/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f1)
\tlibxcb-cursor.so.0 => /lib/x86_64-linux-gnu/libxcb-cursor.so.0 (0x00007f2)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-util.so.1 => /lib/x86_64-linux-gnu/libxcb-util.so.1 (0x00007f3)
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-icccm.so.4 => not found
\t/lib64/ld-linux-x86-64.so.2 (0x00007f4)
"""


def test_ldd_output_when_two_libraries_are_missing_then_both_are_named_once() -> None:
    assert parse_ldd_missing(LDD_FRESH_DEBIAN) == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]


def test_missing_libraries_map_to_the_exact_apt_get_line() -> None:
    missing = parse_ldd_missing(LDD_FRESH_DEBIAN)
    assert apt_install_line(missing) == "sudo apt-get install -y libxcb-icccm4 libxcb-keysyms1"
    assert debian_packages_for(["libunknown.so.9"]) == []
    assert apt_install_line([]) == ""


def test_every_library_the_installed_plugin_links_is_mapped_to_a_package() -> None:
    """When PySide6 changes what libqxcb.so links, the table must learn the new library."""
    import shutil
    import subprocess

    plugin = xcb_plugin_path()
    if plugin is None or shutil.which("ldd") is None:
        pytest.skip("no xcb plugin or ldd here")
    out = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True, timeout=20).stdout
    linked = {line.split()[0] for line in out.splitlines() if line.strip().startswith(("libxcb", "libX", "libxkb"))}
    assert linked, out
    assert linked <= set(XCB_PLUGIN_PACKAGES), sorted(linked - set(XCB_PLUGIN_PACKAGES))
    assert isinstance(missing_xcb_libraries(plugin), list)
