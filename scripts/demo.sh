#!/usr/bin/env bash
# The README's main command: install, start a local Ray head and MLflow server (infra/local/start.sh,
# which also creates Ray's auth token where none exists), submit the demo training with
# `ray job submit`, wait for it, and print where to look.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
bash scripts/install.sh
bash infra/local/start.sh
export RAY_AUTH_MODE=token PATH="$ROOT/.venv/bin:$PATH"   # the client reads the token start.sh made sure of
LOG="$(mktemp)"
trap 'rm -f "$LOG"' EXIT
# infra/runtime_env.yaml plus this checkout's commit (the job's copy of the tree has no .git); the run is named
# <preset>-<dataset>-<config hash> under runs/demo (an absolute path: the job runs in Ray's copy of the tree)
ray job submit --address "http://127.0.0.1:${RAY_DASHBOARD_PORT:-8265}" \
  --runtime-env-json "$(.venv/bin/python -m ebm_jobs.runtime_env)" \
  -- python -m ebm_jobs.train --preset demo --set "train.run_dir=$ROOT/runs/demo" \
  --set "jobs.tracking_uri=http://127.0.0.1:${MLFLOW_PORT:-5000}" "$@" 2>&1 | tee "$LOG"
grep -q "Job '.*' succeeded" "$LOG" || { echo "demo: the job did not succeed (log above)" >&2; exit 1; }
UI="$(sed -n 's/.*ebm_jobs.train: MLflow UI \(.*\)$/\1/p' "$LOG" | tail -1)"
RUN_DIR="$(sed -n 's/.*ebm_jobs.train: run \(.*\)$/\1/p' "$LOG" | tail -1)"
echo
# the final EMA model's quality figures beside a held-out real split, as the job printed them (ebm_eval.quality)
sed -n 's/.*ebm_jobs.train: \(quality of .*\)$/\1/p; s/.*ebm_jobs.train:   \(.*\)$/  \1/p' "$LOG"
echo
echo "Run directory: $RUN_DIR (samples/, plots/, checkpoints/)"
echo "MLflow UI:     $UI"
echo "Ray dashboard: http://127.0.0.1:${RAY_DASHBOARD_PORT:-8265}"
echo "Stop both with: bash infra/local/stop.sh"
