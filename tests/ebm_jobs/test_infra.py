"""The local services as a newcomer meets them: infra/local/start.sh on a machine with no ~/.ray, `ray job
submit` against it, MLflow seeing the run; library code that never attaches to that head by accident."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def start(env: dict[str, str]) -> None:
    out = subprocess.run(["bash", str(ROOT / "infra/local/start.sh")], env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr


def stop(env: dict[str, str]) -> str:
    out = subprocess.run(["bash", str(ROOT / "infra/local/stop.sh")], env=env, capture_output=True, text=True,
                         timeout=120)
    return out.stdout + out.stderr


@pytest.fixture
def new_home(tmp_path):
    """An empty HOME, as on a new machine: no ~/.ray/auth_token, no caches."""
    home = tmp_path / "home"
    home.mkdir()
    return home


@pytest.fixture
def services(tmp_path, new_home):
    env = {**os.environ, "HOME": str(new_home), "EBM_SERVICES_DIR": str(tmp_path / "services"), "RAY_PORT": "6391",
           "RAY_DASHBOARD_PORT": "8276", "RAY_AGENT_PORT": "52376", "MLFLOW_PORT": "5017", "RAY_NUM_CPUS": "2",
           "COLUMNS": "80"}  # a shell that exports its width (so does pytest-xdist): start/stop still know their head
    env.pop("RAY_AUTH_MODE", None)
    start(env)
    yield env
    stop(env)


def test_job_submit_on_a_new_machine_runs_the_test_preset_and_mlflow_sees_it(services, new_home, tmp_path):
    token = new_home / ".ray" / "auth_token"
    assert token.is_file() and token.stat().st_mode & 0o077 == 0  # created by start.sh, readable by its owner only
    again = subprocess.run(["bash", str(ROOT / "infra/local/start.sh")], env=services, capture_output=True, text=True,
                           timeout=60)
    assert again.returncode == 0 and "ray: already running" in again.stdout and "mlflow: already running" in again.stdout

    run_dir = tmp_path / "job-run"
    env = {**services, "RAY_AUTH_MODE": "token", "PATH": f"{BIN}:{os.environ['PATH']}"}
    cmd = [str(BIN / "ray"), "job", "submit", "--address", "http://127.0.0.1:8276", "--runtime-env",
           "infra/runtime_env.yaml", "--", "python", "-m", "ebm_jobs.train", "--preset", "test", "--run-dir",
           str(run_dir), "--set", "jobs.tracking_uri=http://127.0.0.1:5017"]
    job = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert job.returncode == 0 and "succeeded" in job.stdout, job.stdout[-3000:] + job.stderr[-3000:]
    run_id = next(line.split()[3] for line in job.stdout.splitlines() if "ebm_jobs.train: MLflow run" in line)
    with urllib.request.urlopen(f"http://127.0.0.1:5017/api/2.0/mlflow/runs/get?run_id={run_id}", timeout=10) as r:
        run = json.load(r)["run"]
    assert run["info"]["status"] == "FINISHED"
    assert {"energy/diff", "loss/cd", "grad_norm/kl"} <= {m["key"] for m in run["data"]["metrics"]}
    assert (run_dir / "plots" / "energy_diff.png").is_file()

    # the job runs the submitted code: a marker present only in a copy of the tree, seen by the job and a Ray worker
    copy = tmp_path / "submitted"
    for rel in ("packages", "infra"):
        shutil.copytree(ROOT / rel, copy / rel, ignore=shutil.ignore_patterns("*.egg-info", "__pycache__"))
    init = copy / "packages" / "ebm_core" / "src" / "ebm_core" / "__init__.py"
    init.write_text(init.read_text() + "\nSUBMITTED_MARKER = 'only-in-the-submitted-copy'\n")
    # inside the job, init_ray() joins the cluster it was submitted to ($RAY_ADDRESS, set by `ray job submit`)
    probe = ("import ray, ebm_core; from ebm_jobs.cluster import init_ray; print('driver', ebm_core.SUBMITTED_MARKER); "
             "init_ray(); "
             "print('worker', ray.get(ray.remote(lambda: __import__('ebm_core').SUBMITTED_MARKER).remote()))")
    marked = subprocess.run([str(BIN / "ray"), "job", "submit", "--address", "http://127.0.0.1:8276", "--runtime-env",
                             "infra/runtime_env.yaml", "--", "python", "-c", probe], env=env, capture_output=True,
                            text=True, timeout=300, cwd=copy)
    assert marked.returncode == 0, marked.stdout[-3000:] + marked.stderr[-3000:]
    assert "driver only-in-the-submitted-copy" in marked.stdout and "worker only-in-the-submitted-copy" in marked.stdout

    session, temp_dir = (Path(services["EBM_SERVICES_DIR"]) / "ray.head").read_text().split()
    stopped = stop(services)
    assert "ray: stopped" in stopped and "mlflow: stopped" in stopped
    assert not Path(temp_dir).exists()
    assert free(8276) and free(5017)
    # nothing of the head's session is left running, the jobs' workers and actors included (Ray gives each a process
    # group of its own, and their command lines name no temp dir)
    table = subprocess.run(["ps", "-eo", "pid=,sid=,stat=,args="], capture_output=True, text=True).stdout
    left = [row for row in table.splitlines() if row.split()[1] == session and not row.split()[2].startswith("Z")]
    assert not left, left


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="start times from /proc (Linux); lstart elsewhere")
def test_stop_finds_its_mlflow_server_after_the_wall_clock_steps(tmp_path, new_home):
    """`ps -o lstart` is the boot time as the wall clock sees it now plus the ticks since boot, so a clock step
    (NTP, a VM restored) changes every process's lstart. A `ps` that reports another start time stands in for
    the step here: stop.sh must still stop the server start.sh started, and leave its port free."""
    env = {**os.environ, "HOME": str(new_home), "EBM_SERVICES_DIR": str(tmp_path / "services"), "MLFLOW_PORT": "5023"}
    out = subprocess.run(["bash", str(ROOT / "infra/local/start.sh"), "mlflow"], env=env, capture_output=True,
                         text=True, timeout=180)
    assert out.returncode == 0, out.stdout + out.stderr
    shim = tmp_path / "stepped-clock"
    shim.mkdir()
    (shim / "ps").write_text(f'#!/bin/sh\ncase "$*" in *lstart*) {shutil.which("ps")} "$@" > /dev/null && '
                             f'echo "Thu Jan  1 00:00:00 1970"; exit $? ;; esac\nexec {shutil.which("ps")} "$@"\n')
    (shim / "ps").chmod(0o755)
    stepped = {**env, "PATH": f"{shim}:{env['PATH']}"}
    try:
        again = subprocess.run(["bash", str(ROOT / "infra/local/start.sh"), "mlflow"], env=stepped,
                               capture_output=True, text=True, timeout=60)
        assert again.returncode == 0 and "mlflow: already running" in again.stdout, again.stdout + again.stderr
        stopped = subprocess.run(["bash", str(ROOT / "infra/local/stop.sh"), "mlflow"], env=stepped,
                                 capture_output=True, text=True, timeout=60)
        assert "mlflow: stopped" in stopped.stdout, stopped.stdout + stopped.stderr
        assert free(5023)
    finally:
        stop(env)


def drivers(env: dict[str, str], dashboard: int) -> int:
    """The number of driver processes that have ever connected to the head behind ``dashboard``."""
    out = subprocess.run([str(BIN / "ray"), "list", "jobs", "--address", f"http://127.0.0.1:{dashboard}", "--format",
                          "json", "--limit", "1000"], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout.count('"DRIVER"')


def test_private_ray_never_attaches_to_a_running_head(new_home, tmp_path):
    """A head as the demo leaves it (default ports when they are free), made discoverable the way a user's own
    `ray start --head` is (Ray's current-cluster file in the default temp dir): the sweep entry point and the
    test fixtures' private Ray must neither attach to it nor fail."""
    ray_tmp = tempfile.mkdtemp(prefix="ebmt-", dir="/tmp")  # short: Ray's socket paths live below it
    default = (6379, 8265, 52365, 5000)
    ports = default if all(free(p) for p in default) else (6393, 8278, 52378, 5019)
    env = {**os.environ, "HOME": str(new_home), "EBM_SERVICES_DIR": str(tmp_path / "services"),
           "RAY_TMPDIR": ray_tmp, "RAY_TEMP_DIR": f"{ray_tmp}/ray", "RAY_PORT": str(ports[0]),
           "RAY_DASHBOARD_PORT": str(ports[1]), "RAY_AGENT_PORT": str(ports[2]), "MLFLOW_PORT": str(ports[3]),
           "RAY_NUM_CPUS": "1",
           "RAY_AUTH_MODE": "token", "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("RAY_ADDRESS", None)
    start(env)
    try:
        # The trap is real: Ray's own default (no address) attaches to this head and refuses num_cpus.
        naive = subprocess.run([sys.executable, "-c", "import ray; ray.init(num_cpus=1)"], env=env,
                               capture_output=True, text=True, timeout=120)
        assert naive.returncode != 0 and "num_cpus" in naive.stderr, naive.stderr[-2000:]
        before = drivers(env, ports[1])

        fixture = subprocess.run([sys.executable, "-c", "from ebm_jobs.cluster import init_ray; import ray; "
                                  "init_ray('local', num_cpus=1); print('GCS', ray.get_runtime_context().gcs_address)"],
                                 env=env, capture_output=True, text=True, timeout=120)
        assert fixture.returncode == 0, fixture.stderr[-2000:]
        gcs = [line.split()[1] for line in fixture.stdout.splitlines() if line.startswith("GCS ")]  # Ray may print too
        assert len(gcs) == 1 and not gcs[0].endswith(f":{ports[0]}"), fixture.stdout[-2000:]

        sweep = subprocess.run([str(BIN / "ebm"), "sweep", "--preset", "test", "--grid", "sampler.steps=2",
                                "--iterations", "2", "--sweep-dir", str(tmp_path / "sweep")],
                               env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert sweep.returncode == 0, sweep.stdout[-2000:] + sweep.stderr[-2000:]
        assert (tmp_path / "sweep" / "summary.md").is_file()
        assert drivers(env, ports[1]) == before  # nothing connected to the head
    finally:
        stop(env)
        shutil.rmtree(ray_tmp, ignore_errors=True)
