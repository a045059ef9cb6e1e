#!/usr/bin/env bash
# Create .venv (Python 3.11) and install the three packages editable, plus test tools with "test".
# Usage: bash scripts/install.sh [test]      (PYTHON=/path/to/python3.11 to choose the interpreter)
# Any failure stops it with a non-zero exit status: pip's own, or an installed package that does not import.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3.11}"
is311() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; }
if [ ! -x .venv/bin/python ]; then
  if ! command -v "$PY" >/dev/null || ! is311 "$PY"; then
    echo "install.sh: needs Python 3.11 ('$PY' not found or another version): install it (python.org, pyenv install 3.11, or apt-get install python3.11 python3.11-venv), or set PYTHON=/path/to/python3.11" >&2
    exit 1
  fi
  "$PY" -m venv .venv
elif ! is311 .venv/bin/python; then
  echo "install.sh: .venv holds $(.venv/bin/python --version 2>&1), not Python 3.11: remove .venv and run again" >&2
  exit 1
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
EXTRA=()
if [ "${1:-}" = "test" ]; then EXTRA=(-r requirements-test.txt); fi
echo "install.sh: installing into .venv (a few minutes on a new machine: torch alone is about 5 GB)"
# One resolution for everything; torch/torchvision are pinned and come from the local wheels here.
# pip's "Location ... is ignored" notes are dropped from the output; its exit status is kept (pipefail).
.venv/bin/pip install -q "torch==2.14.1" "torchvision==0.29.1" \
  -e packages/ebm_core -e packages/ebm_eval -e packages/ebm_jobs ${EXTRA[@]+"${EXTRA[@]}"} 2>&1 | { grep -v "is ignored" || true; }
.venv/bin/python - <<'EOF'
import importlib, sys
failed = []
for name in ("torch", "torchvision", "ebm_core", "ebm_eval", "ebm_jobs", "ray.train", "ray.tune", "mlflow", "torch_fidelity"):
    try:
        importlib.import_module(name)
    except Exception as e:  # any failure to import is an install failure
        failed.append(f"  {name}: {type(e).__name__}: {e}")
if failed:
    print("install.sh: installed, but these do not import:\n" + "\n".join(failed), file=sys.stderr)
    sys.exit(1)
print("install.sh: .venv ready (ebm_core, ebm_eval, ebm_jobs, ray, mlflow, torch_fidelity import)")
EOF
