# Shared by start.sh and stop.sh (sourced, not run): where the services' state lives and how to tell
# the processes this state directory started from anything else on the machine.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export PATH="$ROOT/.venv/bin:$PATH"   # the head runs jobs in the Python environment that started it
STATE="${EBM_SERVICES_DIR:-$ROOT/.services}"
RAY_PORT="${RAY_PORT:-6379}"
RAY_DASHBOARD_PORT="${RAY_DASHBOARD_PORT:-8265}"
RAY_AGENT_PORT="${RAY_AGENT_PORT:-52365}"
MLFLOW_PORT="${MLFLOW_PORT:-5000}"
export RAY_USAGE_STATS_ENABLED=0 MLFLOW_DISABLE_TELEMETRY=true

# True when something accepts TCP connections on 127.0.0.1:$1 (whatever it answers: a token-protected
# dashboard replies 401 to an unauthenticated HTTP probe, and that still means "up").
listening() {
  python - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)
EOF
}

# `cmd...` in a session (and process group) of its own, with the same pid: through Python, as macOS has no setsid(1).
SETSID=(python -c 'import os, sys; os.setsid(); os.execvp(sys.argv[1], sys.argv[1:])')

# The live (not zombie) processes of session $1: what SETSID started and all it started in turn, whatever process
# group they moved to (Ray's raylet gives each worker a group of its own). On systems other than Linux, whose ps may
# have no session column, the members of process group $1.
session_members() {
  local column=pgid
  [ "$(uname)" = Linux ] && column=sid
  ps -eo "pid=,$column=,stat=" | awk -v s="$1" '$2 == s && $3 !~ /^Z/ {print $1}'
}

# The processes of the Ray head recorded in $STATE/ray.head (line 1: session id, line 2: temp dir).
# start.sh runs `ray start` in a session of its own, in which every process of the head runs (GCS, raylet,
# dashboard, agents, workers, actors; many carry no path of the head on their command line). The session
# counts only while one of its processes still names the head's temp dir (a unique mktemp name), so a
# session id that another program reuses after a crash never matches.
ray_pids() {
  [ -f "$STATE/ray.head" ] || return 0
  local sid temp members pid
  sid="$(sed -n 1p "$STATE/ray.head")"
  temp="$(sed -n 2p "$STATE/ray.head")"
  [ -n "$sid" ] && [ -n "$temp" ] || return 0
  members="$(session_members "$sid")"
  for pid in $members; do
    # -ww: whole command lines; ps cuts them at $COLUMNS where that is set (80 under pytest-xdist, and in
    # shells that export it), before the temp dir, which comes after the head's long binary path
    if ps -ww -o args= -p "$pid" 2>/dev/null | grep -qF -- "$temp"; then echo "$members"; return 0; fi
  done
}

# `ps -o lstart` of a pid (empty when the pid is gone): the start time in wall-clock seconds.
lstart() { ps -o lstart= -p "$1" 2>/dev/null | sed 's/^ *//'; }

# Start time of a pid (empty when the pid is gone): with the pid, it names one process. On Linux it is the
# kernel's count of clock ticks from boot to the start (/proc/<pid>/stat, field 22; the 20th after the command
# name, which may hold spaces and parentheses), which no change of the wall clock moves. `ps -o lstart` adds that
# count to the boot time as the wall clock sees it now, so a clock step (NTP, a VM restored) or a slow drift past
# a second boundary shifts every process's lstart, and stop.sh would lose a server it started. Elsewhere (macOS
# has no /proc) lstart is what there is.
started() {
  if [ -r "/proc/$1/stat" ]; then sed -E 's/^.*\) //' "/proc/$1/stat" 2>/dev/null | awk '{print $20}'; else lstart "$1"; fi
}

# The MLflow server's pid when $STATE/mlflow.pid names a live process with the recorded start time (or with
# the lstart that pid files written before the tick count record).
mlflow_pid() {
  [ -f "$STATE/mlflow.pid" ] || return 0
  local pid when
  pid="$(sed -n 1p "$STATE/mlflow.pid")"
  when="$(sed -n 2p "$STATE/mlflow.pid")"
  [ -n "$pid" ] && [ -n "$when" ] || return 0
  if [ "$(started "$pid")" = "$when" ] || [ "$(lstart "$pid")" = "$when" ]; then echo "$pid"; fi
}
