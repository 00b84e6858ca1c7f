#!/usr/bin/env bash
# Package the frozen folder (dist/optiondesk/, from installer/build.sh) as a Debian package, then check the
# package: install it with dpkg into a temporary root, run the installed launcher's self-test from there,
# remove it, and check that the user's data is still there.
# Usage: installer/make_deb.sh [lite|ml]   → dist/optiondesk_<version>_<arch>[-ml].deb
#
# Layout of the package (only these paths; nothing under anyone's home):
#   /opt/optiondesk/                                    the frozen app (executable + _internal/)
#   /usr/bin/optiondesk                                 a small wrapper that execs /opt/optiondesk/optiondesk
#   /usr/share/applications/optiondesk.desktop          the desktop entry
#   /usr/share/icons/hicolor/scalable/apps/optiondesk.svg
# Removing it (apt-get remove / dpkg -r) deletes exactly those files: the user's data, settings and logs
# (~/.local/share/optiondesk, ~/.config/optiondesk, ~/.local/state/optiondesk) are never part of it.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
FLAVOUR=${1:-${FLAVOUR:-lite}}
APP=dist/optiondesk
[ -x "$APP/optiondesk" ] || { echo "make_deb.sh: $APP/optiondesk missing; run installer/build.sh first" >&2; exit 2; }
command -v dpkg-deb >/dev/null || { echo "make_deb.sh: dpkg-deb not found (apt-get install dpkg)" >&2; exit 2; }

VERSION=$("$PY" -c "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")
ARCH=$(dpkg --print-architecture)
NAME=optiondesk
[ "$FLAVOUR" = "ml" ] && NAME=optiondesk-ml
# The X11 libraries Qt's xcb plugin links to (PySide6 bundles Qt, not these): engine/system_libraries.py.
DEPENDS=$("$PY" -c "from engine.system_libraries import XCB_PLUGIN_PACKAGES as p; \
print(', '.join(sorted({'libglib2.0-0t64 | libglib2.0-0' if v == 'libglib2.0-0' else v for v in p.values()})))")

STAGE=build/deb/$NAME
rm -rf "$STAGE"
mkdir -p "$STAGE/DEBIAN" "$STAGE/opt" "$STAGE/usr/bin" "$STAGE/usr/share/applications" \
    "$STAGE/usr/share/icons/hicolor/scalable/apps"
cp -a "$APP" "$STAGE/opt/optiondesk"
install -m 0644 resources/optiondesk.desktop "$STAGE/usr/share/applications/optiondesk.desktop"
install -m 0644 resources/icons/optiondesk.svg "$STAGE/usr/share/icons/hicolor/scalable/apps/optiondesk.svg"
# The wrapper finds the app relative to itself, so the same file works installed (/usr/bin → /opt) and
# in an extracted test root.
cat > "$STAGE/usr/bin/optiondesk" <<'WRAP'
#!/bin/sh
# Optiondesk launcher (installed by the optiondesk package): the frozen app lives in /opt/optiondesk.
here=$(dirname "$(readlink -f "$0")")
exec "$here/../../opt/optiondesk/optiondesk" "$@"
WRAP
chmod 0755 "$STAGE/usr/bin/optiondesk"
INSTALLED_KB=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
cat > "$STAGE/DEBIAN/control" <<CONTROL
Package: $NAME
Version: $VERSION
Section: misc
Priority: optional
Architecture: $ARCH
Maintainer: Optiondesk maintainers <optiondesk@localhost>
Installed-Size: $INSTALLED_KB
Depends: $DEPENDS
Conflicts: $([ "$NAME" = optiondesk ] && echo optiondesk-ml || echo optiondesk)
Description: Options trading workstation (simulated paper trading, brokers, backtests)
 Live option chains, volatility surfaces, Greeks, risk controls, paper and live brokers and a
 backtester in one desktop window. The ${FLAVOUR} build, frozen with PyInstaller under /opt/optiondesk.
CONTROL
# Menus and icon caches pick the new entry up; both tools are optional on a minimal system.
for script in postinst postrm; do
    cat > "$STAGE/DEBIAN/$script" <<'HOOK'
#!/bin/sh
set -e
# DPKG_ROOT: set by dpkg --root (the check below installs into a temporary root); empty on a real install
if command -v update-desktop-database >/dev/null 2>&1; then update-desktop-database -q "$DPKG_ROOT/usr/share/applications" || true; fi
if command -v gtk-update-icon-cache >/dev/null 2>&1; then gtk-update-icon-cache -q -t "$DPKG_ROOT/usr/share/icons/hicolor" || true; fi
exit 0
HOOK
    chmod 0755 "$STAGE/DEBIAN/$script"
done
DEB=dist/${NAME}_${VERSION}_${ARCH}.deb
dpkg-deb --root-owner-group -Zgzip --build "$STAGE" "$DEB" >/dev/null
rm -rf "$STAGE"
echo "built $DEB ($(du -h "$DEB" | cut -f1); installs $((INSTALLED_KB / 1024)) MB)"

# Check the package as a user would get it: every path it installs, then its launcher's self-test.
if dpkg-deb -c "$DEB" | awk '{print $6}' | grep -vE '^\./($|opt/|usr/$|usr/bin/|usr/share/$|usr/share/applications/|usr/share/icons/)'; then
    echo "make_deb.sh: the package installs files outside /opt/optiondesk, /usr/bin and /usr/share" >&2; exit 1
fi
# Install it with dpkg itself into a temporary root (its own package database; maintainer scripts run
# with DPKG_ROOT set, not chrooted, and touch only that root), run the installed launcher's self-test,
# then remove the package and check that it took its files and left the user's data.
ROOT=$(mktemp -d)
trap 'rm -rf "$ROOT"' EXIT
mkdir -p "$ROOT/var/lib/dpkg/info" "$ROOT/var/lib/dpkg/updates"
touch "$ROOT/var/lib/dpkg/status"
DPKG=(dpkg --root="$ROOT" --force-script-chrootless --force-not-root --log=/dev/null)
"${DPKG[@]}" --force-depends -i "$DEB" >/dev/null  # Depends are the host's business, not this root's
USER_DATA="$ROOT/home/trader/.local/share/optiondesk"
mkdir -p "$USER_DATA"
echo "a trader's database" > "$USER_DATA/optiondesk.db"
QT_QPA_PLATFORM=offscreen "$ROOT/usr/bin/optiondesk" selftest --seconds 3  # in a temporary home of its own
"${DPKG[@]}" -r "$NAME" >/dev/null
for f in opt/optiondesk usr/bin/optiondesk usr/share/applications/optiondesk.desktop \
         usr/share/icons/hicolor/scalable/apps/optiondesk.svg; do
    [ ! -e "$ROOT/$f" ] || { echo "make_deb.sh: /$f is still there after dpkg -r" >&2; exit 1; }
done
[ "$(cat "$USER_DATA/optiondesk.db")" = "a trader's database" ] || { echo "make_deb.sh: dpkg -r touched user data" >&2; exit 1; }
echo "installed-layout self-test passed; dpkg -r removed the program and kept the user's data ($DEB)"
