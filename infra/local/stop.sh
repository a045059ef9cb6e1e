#!/usr/bin/env bash
# Stop what infra/local/start.sh started (same EBM_SERVICES_DIR). Usage: bash infra/local/stop.sh [ray|mlflow]
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export PATH="$ROOT/.venv/bin:$PATH"
STATE="${EBM_SERVICES_DIR:-$ROOT/.services}"
WHAT="${1:-all}"
if [ "$WHAT" = all ] || [ "$WHAT" = mlflow ]; then
  if [ -f "$STATE/mlflow.pid" ]; then
    PID="$(cat "$STATE/mlflow.pid")"
    pkill -TERM -P "$PID" 2>/dev/null; kill "$PID" 2>/dev/null
    rm -f "$STATE/mlflow.pid"
    echo "mlflow: stopped"
  fi
fi
if [ "$WHAT" = all ] || [ "$WHAT" = ray ]; then
  ray stop > /dev/null 2>&1 && echo "ray: stopped"
fi
exit 0
