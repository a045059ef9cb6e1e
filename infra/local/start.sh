#!/usr/bin/env bash
# Start the local services on 127.0.0.1: a Ray head (dashboard and job API on :8265) and an MLflow
# tracking server (UI and REST API on :5000, SQLite backend and local artifact store by default).
#
#   bash infra/local/start.sh            # both
#   bash infra/local/start.sh ray        # only Ray;  ... mlflow  only MLflow
#
# Environment: EBM_SERVICES_DIR (state, logs, pid files; default .services/), RAY_PORT (6379),
# RAY_DASHBOARD_PORT (8265), RAY_NUM_CPUS (all), MLFLOW_PORT (5000),
# MLFLOW_BACKEND_URI (default sqlite:///$EBM_SERVICES_DIR/mlflow.db; postgresql://user:pw@host/db
# works once `pip install psycopg2-binary` is done: untested here), MLFLOW_ARTIFACTS (default
# $EBM_SERVICES_DIR/mlartifacts; an s3:// bucket works with boto3 installed: untested here).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
export PATH="$ROOT/.venv/bin:$PATH"   # jobs run in the Python environment that started the head
STATE="${EBM_SERVICES_DIR:-$ROOT/.services}"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
export RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true
WHAT="${1:-all}"

up() { python -c "import urllib.request,sys; urllib.request.urlopen('$1', timeout=2)" 2>/dev/null; }

if { [ "$WHAT" = all ] || [ "$WHAT" = ray ]; } && up "http://127.0.0.1:${RAY_DASHBOARD_PORT:-8265}/api/version"; then
  echo "ray: already running, dashboard at http://127.0.0.1:${RAY_DASHBOARD_PORT:-8265}"
elif [ "$WHAT" = all ] || [ "$WHAT" = ray ]; then
  ray start --head --port="${RAY_PORT:-6379}" --dashboard-host=127.0.0.1 \
    --dashboard-port="${RAY_DASHBOARD_PORT:-8265}" --node-ip-address=127.0.0.1 \
    ${RAY_NUM_CPUS:+--num-cpus="$RAY_NUM_CPUS"} --disable-usage-stats --temp-dir="${RAY_TEMP_DIR:-/tmp/ray}" \
    > "$STATE/ray-start.log" 2>&1 || { cat "$STATE/ray-start.log"; exit 1; }
  echo "ray: dashboard and job API at http://127.0.0.1:${RAY_DASHBOARD_PORT:-8265} (token auth on: clients set RAY_AUTH_MODE=token)"
fi

PORT="${MLFLOW_PORT:-5000}"
if { [ "$WHAT" = all ] || [ "$WHAT" = mlflow ]; } && up "http://127.0.0.1:$PORT/health"; then
  echo "mlflow: already running at http://127.0.0.1:$PORT"
elif [ "$WHAT" = all ] || [ "$WHAT" = mlflow ]; then
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false nohup mlflow server \
    --backend-store-uri "${MLFLOW_BACKEND_URI:-sqlite:///$STATE/mlflow.db}" \
    --artifacts-destination "${MLFLOW_ARTIFACTS:-$STATE/mlartifacts}" \
    --host 127.0.0.1 --port "$PORT" --workers 1 > "$STATE/mlflow.log" 2>&1 &
  echo $! > "$STATE/mlflow.pid"
  for _ in $(seq 1 60); do
    if up "http://127.0.0.1:$PORT/health"; then
      echo "mlflow: UI and tracking server at http://127.0.0.1:$PORT"
      exit 0
    fi
    sleep 1
  done
  echo "mlflow: server did not answer within 60 s; see $STATE/mlflow.log" >&2
  tail -20 "$STATE/mlflow.log" >&2
  exit 1
fi
