#!/usr/bin/env bash
# The README's main command: install, start a local Ray head and MLflow server (infra/local/start.sh,
# which also creates Ray's auth token where none exists), submit the demo training with
# `ray job submit`, wait for it, and print where to look.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
bash scripts/install.sh
bash infra/local/start.sh
RUN_DIR="$ROOT/runs/demo/$(date +%Y%m%d-%H%M%S)"
export RAY_AUTH_MODE=token PATH="$ROOT/.venv/bin:$PATH"   # the client reads the token start.sh made sure of
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
ray job submit --address "http://127.0.0.1:${RAY_DASHBOARD_PORT:-8265}" --runtime-env infra/runtime_env.yaml \
  -- python -m ebm_jobs.train --preset demo --run-dir "$RUN_DIR" \
  --set "jobs.tracking_uri=http://127.0.0.1:${MLFLOW_PORT:-5000}" "$@" 2>&1 | tee "$LOG"
grep -q "Job '.*' succeeded" "$LOG" || { echo "demo: the job did not succeed (log above)" >&2; exit 1; }
UI="$(sed -n 's/.*ebm_jobs.train: MLflow UI \(.*\)$/\1/p' "$LOG" | tail -1)"
echo
echo "Run directory: $RUN_DIR (samples/, plots/, checkpoints/)"
echo "MLflow UI:     $UI"
echo "Ray dashboard: http://127.0.0.1:${RAY_DASHBOARD_PORT:-8265}"
echo "Stop both with: bash infra/local/stop.sh"
