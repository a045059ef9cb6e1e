#!/usr/bin/env bash
# Start the local services on 127.0.0.1: a Ray head (dashboard and job API on :8265, token auth on)
# and an MLflow tracking server (UI and REST API on :5000, SQLite backend and local artifact store).
#
#   bash infra/local/start.sh            # both
#   bash infra/local/start.sh ray        # only Ray;  ... mlflow  only MLflow
#
# Ray's token auth: the token is ~/.ray/auth_token, created here with Ray's own command where none
# exists; the head starts with RAY_AUTH_MODE=token, and clients with RAY_AUTH_MODE=token read the
# same file (`ray job submit`, scripts/demo.sh, the tests).
# The head runs in its own session and temp dir (recorded in $EBM_SERVICES_DIR/ray.head), so
# stop.sh stops this head and nothing else, and `ray.init()` elsewhere on the machine does not find
# it by accident. A port already held by something this state directory did not start is an error.
#
# Environment: EBM_SERVICES_DIR (state, logs, pid files; default .services/), RAY_PORT (6379),
# RAY_DASHBOARD_PORT (8265), RAY_AGENT_PORT (the job agent, 52365), RAY_NUM_CPUS (all), RAY_TEMP_DIR (default: a new /tmp/ebm-ray-XXXXXX;
# Unix socket paths inside it must stay under 107 characters), MLFLOW_PORT (5000),
# MLFLOW_BACKEND_URI (default sqlite:///$EBM_SERVICES_DIR/mlflow.db; postgresql://user:pw@host/db
# works once `pip install psycopg2-binary` is done: untested here), MLFLOW_ARTIFACTS (default
# $EBM_SERVICES_DIR/mlartifacts; an s3:// bucket works with boto3 installed: untested here).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
mkdir -p "$STATE"
STATE="$(cd "$STATE" && pwd)"
WHAT="${1:-all}"
case "$WHAT" in all|ray|mlflow) ;; *) echo "usage: bash infra/local/start.sh [ray|mlflow]" >&2; exit 2 ;; esac
command -v ray >/dev/null || { echo "start.sh: no 'ray' in $ROOT/.venv/bin; run bash scripts/install.sh first" >&2; exit 1; }

busy() {  # a service port that something not started from $STATE holds: say so and stop
  echo "$1: port $2 on 127.0.0.1 is in use by a process not started from $STATE; it was left alone." >&2
  echo "$1: stop that process, or start on other ports ($3=...)." >&2
  exit 1
}

if [ "$WHAT" != mlflow ]; then
  if [ -n "$(ray_pids)" ]; then
    echo "ray: already running (temp dir $(sed -n 2p "$STATE/ray.head")), dashboard and job API at http://127.0.0.1:$RAY_DASHBOARD_PORT"
  else
    for port in "$RAY_PORT:RAY_PORT" "$RAY_DASHBOARD_PORT:RAY_DASHBOARD_PORT" "$RAY_AGENT_PORT:RAY_AGENT_PORT"; do
      if listening "${port%%:*}"; then busy ray "${port%%:*}" "${port#*:}"; fi
    done
    export RAY_AUTH_MODE=token
    ray get-auth-token --generate > /dev/null  # Ray's command: creates ~/.ray/auth_token only where none is
    if [ -f "$HOME/.ray/auth_token" ]; then chmod 600 "$HOME/.ray/auth_token"; fi  # Ray writes it world-readable
    TEMP="${RAY_TEMP_DIR:-$(mktemp -d /tmp/ebm-ray-XXXXXX)}"
    mkdir -p "$TEMP"
    "${SETSID[@]}" ray start --head --port="$RAY_PORT" --dashboard-host=127.0.0.1 \
      --dashboard-port="$RAY_DASHBOARD_PORT" --dashboard-agent-listen-port="$RAY_AGENT_PORT" \
      --node-ip-address=127.0.0.1 ${RAY_NUM_CPUS:+--num-cpus="$RAY_NUM_CPUS"} --disable-usage-stats \
      --temp-dir="$TEMP" > "$STATE/ray-start.log" 2>&1 &
    printf '%s\n%s\n' "$!" "$TEMP" > "$STATE/ray.head"  # the head's session id and temp dir, for stop.sh
    wait $! || { cat "$STATE/ray-start.log" >&2; exit 1; }
    for _ in $(seq 1 60); do  # jobs are accepted once the dashboard agent listens
      listening "$RAY_AGENT_PORT" && break
      sleep 1
    done
    listening "$RAY_AGENT_PORT" || { echo "ray: the job agent did not come up; see $TEMP/session_latest/logs" >&2; exit 1; }
    echo "ray: dashboard and job API at http://127.0.0.1:$RAY_DASHBOARD_PORT (token auth on; clients set" \
         "RAY_AUTH_MODE=token and read ~/.ray/auth_token)"
  fi
fi

if [ "$WHAT" != ray ]; then
  if [ -n "$(mlflow_pid)" ]; then
    echo "mlflow: already running at http://127.0.0.1:$MLFLOW_PORT"
    exit 0
  fi
  listening "$MLFLOW_PORT" && busy mlflow "$MLFLOW_PORT" MLFLOW_PORT
  # In a session of its own: the server and its workers, which stop.sh ends together.
  MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false "${SETSID[@]}" mlflow server \
    --backend-store-uri "${MLFLOW_BACKEND_URI:-sqlite:///$STATE/mlflow.db}" \
    --artifacts-destination "${MLFLOW_ARTIFACTS:-$STATE/mlartifacts}" \
    --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 > "$STATE/mlflow.log" 2>&1 < /dev/null &
  PID=$!
  printf '%s\n%s\n' "$PID" "$(started "$PID")" > "$STATE/mlflow.pid"
  for _ in $(seq 1 60); do
    if python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$MLFLOW_PORT/health', timeout=2)" 2>/dev/null; then
      echo "mlflow: UI and tracking server at http://127.0.0.1:$MLFLOW_PORT"
      exit 0
    fi
    [ -n "$(mlflow_pid)" ] || break  # the server exited
    sleep 1
  done
  echo "mlflow: the server did not come up; see $STATE/mlflow.log" >&2
  tail -20 "$STATE/mlflow.log" >&2
  exit 1
fi
