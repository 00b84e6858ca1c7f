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
# Debug symbols are a quarter of the folder (libpython alone: 22 MB → 6 MB). Wheel-vendored libraries in
# *.libs/ are left alone: auditwheel rewrote their ELF headers, and strip then breaks them ("ELF load
# command address/offset not page-aligned"). The self-test below loads what was stripped.
if command -v strip >/dev/null 2>&1; then
    find dist/optiondesk/_internal -type f \( -name '*.so' -o -name '*.so.*' \) -not -path '*.libs/*' \
        -exec strip --strip-unneeded {} +
else
    echo "build.sh: strip (binutils) not found; the folder keeps its debug symbols" >&2
fi
# Smoke test the bundle offscreen: the self-test exercises the whole window.
QT_QPA_PLATFORM=offscreen dist/optiondesk/optiondesk selftest --seconds 3
echo "built dist/optiondesk/ ($FLAVOUR, $(du -sh dist/optiondesk | cut -f1)); run dist/optiondesk/optiondesk"
