#!/usr/bin/env bash
# Build a frozen, one-folder Optiondesk with PyInstaller into dist/optiondesk/.
# Usage: installer/build.sh            (uses .venv; installs PyInstaller into it if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
    "$PY" -m pip install --quiet "pyinstaller>=6.5"
fi
"$PY" -m PyInstaller --noconfirm --clean --distpath dist --workpath build/pyinstaller installer/optiondesk.spec
# Smoke test the bundle offscreen: the self-test exercises the whole window.
QT_QPA_PLATFORM=offscreen dist/optiondesk/optiondesk selftest --seconds 3
echo "built dist/optiondesk/ (run dist/optiondesk/optiondesk)"
if [ "$(uname -s)" = "Linux" ]; then
    echo "desktop entry: copy resources/optiondesk.desktop to ~/.local/share/applications/ and"
    echo "resources/icons/optiondesk.svg to ~/.local/share/icons/hicolor/scalable/apps/"
fi
