#!/usr/bin/env bash
# Build a frozen, one-folder Optiondesk with PyInstaller into dist/optiondesk/ and run its self-test.
# Usage: installer/build.sh [lite|ml]   (default lite; uses .venv and installs PyInstaller into it if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
FLAVOUR=${1:-${FLAVOUR:-lite}}
case "$FLAVOUR" in lite|ml) ;; *) echo "build.sh: flavour must be lite or ml, not '$FLAVOUR'" >&2; exit 2;; esac
if ! "$PY" -c "import PyInstaller" 2>/dev/null; then
    "$PY" -m pip install --quiet "pyinstaller>=6.5"
fi
if [ "$FLAVOUR" = "ml" ] && ! "$PY" -c "import torch, xgboost" 2>/dev/null; then
    echo "build.sh: the ml flavour needs torch and xgboost in $PY (pip install -e '.[ml]')" >&2; exit 2
fi
OPTIONDESK_FLAVOUR=$FLAVOUR "$PY" -m PyInstaller --noconfirm --clean --log-level WARN \
    --distpath dist --workpath build/pyinstaller installer/optiondesk.spec
# Smoke test the bundle offscreen: the self-test exercises the whole window.
QT_QPA_PLATFORM=offscreen dist/optiondesk/optiondesk selftest --seconds 3
echo "built dist/optiondesk/ ($FLAVOUR, $(du -sh dist/optiondesk | cut -f1)); run dist/optiondesk/optiondesk"
