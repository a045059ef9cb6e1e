#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the three packages editable, plus test tools with "test".
# Usage: bash scripts/install.sh [test]
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
EXTRA=""
if [ "${1:-}" = "test" ]; then EXTRA="-r requirements-test.txt"; fi
# One resolution for everything; torch/torchvision are pinned and come from the local wheels here.
.venv/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1" \
  -e packages/ebm_core -e packages/ebm_eval -e packages/ebm_jobs $EXTRA 2>&1 | grep -v "is ignored" || true
.venv/bin/python -c "import ebm_core, torch, torchvision" # fail loudly if the install did not take
