"""`ray job submit` against a head started by infra/local/start.sh, its run visible through MLflow's REST API."""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture
def services(tmp_path):
    env = {**os.environ, "EBM_SERVICES_DIR": str(tmp_path / "services"), "RAY_PORT": "6391",
           "RAY_DASHBOARD_PORT": "8276", "MLFLOW_PORT": "5017", "RAY_NUM_CPUS": "2"}
    start = subprocess.run(["bash", str(ROOT / "infra/local/start.sh")], env=env, capture_output=True, text=True,
                           timeout=180)
    assert start.returncode == 0, start.stdout + start.stderr
    yield env
    subprocess.run(["bash", str(ROOT / "infra/local/stop.sh")], env=env, capture_output=True, timeout=120)


def test_job_submit_runs_the_test_preset_and_mlflow_sees_it(services, tmp_path):
    run_dir = tmp_path / "job-run"
    env = {**services, "RAY_AUTH_MODE": "token", "PATH": f"{BIN}:{os.environ['PATH']}"}
    cmd = [str(BIN / "ray"), "job", "submit", "--address", "http://127.0.0.1:8276", "--working-dir", str(ROOT),
           "--runtime-env-json", json.dumps({"excludes": ["runs/", ".services/", "*.db", "mlruns/", "benchmarks/results/"]}),
           "--", "python", "-m", "ebm_jobs.train", "--preset", "test", "--run-dir", str(run_dir),
           "--set", "jobs.tracking_uri=http://127.0.0.1:5017"]
    job = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert job.returncode == 0 and "succeeded" in job.stdout, job.stdout[-3000:] + job.stderr[-3000:]
    run_id = next(line.split()[3] for line in job.stdout.splitlines() if "ebm_jobs.train: MLflow run" in line)
    with urllib.request.urlopen(f"http://127.0.0.1:5017/api/2.0/mlflow/runs/get?run_id={run_id}", timeout=10) as r:
        run = json.load(r)["run"]
    assert run["info"]["status"] == "FINISHED"
    assert {"energy/diff", "loss/cd", "grad_norm/kl"} <= {m["key"] for m in run["data"]["metrics"]}
    assert (run_dir / "plots" / "energy_diff.png").is_file()
