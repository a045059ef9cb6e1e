#!/usr/bin/env bash
# Stop what infra/local/start.sh started from the same EBM_SERVICES_DIR, and nothing else: the Ray
# head's session (not `ray stop`, which ends every Ray on the machine) and the MLflow server's,
# each checked to be the one recorded (temp dir on a command line; pid with its start time).
# Usage: bash infra/local/stop.sh [ray|mlflow]
set -uo pipefail
source "$(dirname "$0")/lib.sh"
WHAT="${1:-all}"

# SIGTERM, up to 5 s to exit, then SIGKILL (Ray's GCS server ignores SIGTERM); $1 is a command that
# prints the pids still to stop.
end() {
  local pids
  pids="$($1)"
  [ -n "$pids" ] || return 1
  kill -TERM -- $pids 2>/dev/null
  for _ in $(seq 1 10); do
    [ -n "$($1)" ] || return 0
    sleep 0.5
  done
  pids="$($1)"
  [ -z "$pids" ] || kill -KILL -- $pids 2>/dev/null
  for _ in $(seq 1 10); do  # SIGKILL is delivered at once, but a process leaves the table only when it has exited
    [ -n "$($1)" ] || return 0
    sleep 0.2
  done
  return 0
}

if [ "$WHAT" = all ] || [ "$WHAT" = mlflow ]; then
  PID="$(mlflow_pid)"
  server() { session_members "$PID"; }  # the server and its workers (start.sh started them in a session of their own)
  if [ -n "$PID" ] && end server; then echo "mlflow: stopped"; else echo "mlflow: not running (from $STATE)"; fi
  rm -f "$STATE/mlflow.pid"
fi
if [ "$WHAT" = all ] || [ "$WHAT" = ray ]; then
  # ray_pids names the session only while one of its processes names the head's temp dir. Once that has held, the
  # session is the head's (its id is not reused while it has members), and every process left in it is stopped and
  # waited for: the jobs' workers and actors name no temp dir and outlive the raylet by a few seconds.
  SID="$([ -n "$(ray_pids)" ] && sed -n 1p "$STATE/ray.head")"
  head_session() { session_members "$SID"; }
  if [ -n "$SID" ] && end head_session; then echo "ray: stopped"; else echo "ray: not running (from $STATE)"; fi
  if [ -f "$STATE/ray.head" ]; then
    TEMP="$(sed -n 2p "$STATE/ray.head")"
    case "$TEMP" in /tmp/ebm-ray-*) rm -rf "$TEMP" ;; esac  # only the temp dirs start.sh made itself
    rm -f "$STATE/ray.head"
  fi
fi
exit 0
