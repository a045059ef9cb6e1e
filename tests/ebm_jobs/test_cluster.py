"""Cluster-ready runs on a real multi-node Ray cluster on this machine (``multinode.LocalCluster``): a head and
worker nodes, each with its own scratch directory, and a real MLflow server.

- a filesystem path some node cannot see is refused before any work;
- two workers forced onto different nodes (STRICT_SPREAD) leave every output under the run's root on the storage
  (a ``file://`` URI: rank 0 writes a scratch copy on its node and uploads it) and in MLflow, none only in scratch;
- a job killed mid-run and submitted again continues (a finished one is left alone); a sweep interrupted after one
  of three trials restores and runs the other two only;
- losing rank 0's node mid-run restores on the remaining nodes from the latest checkpoint, with every worker's
  buffer and the EMA as checkpointed, and MLflow's history holding each step once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).parent))  # the suite imports tests with --import-mode=importlib
from multinode import ALIVE, LocalCluster, alive_nodes, start_mlflow  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    base = tmp_path_factory.mktemp("cluster")
    server, uri = start_mlflow(base)
    c = LocalCluster()
    c.env.update({"RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2", "MLFLOW_TRACKING_URI": uri})
    try:
        for _ in range(3):
            c.add_node(cpus=1)
        yield c
    finally:
        c.shutdown()
        os.killpg(server.pid, signal.SIGKILL)


def run(cmd: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return out


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_the_node_poll_finds_its_answer_among_rays_messages():
    """CI once failed here: Ray printed a warning to stdout after the node list."""
    nodes = [{"NodeID": "a", "Alive": True}]
    stdout = f"2026 INFO worker.py: Connecting\n{ALIVE}{json.dumps(nodes)}\n\t(2) raylet has lagging heartbeats.\n"
    assert alive_nodes(stdout) == nodes
    assert alive_nodes("\t(2) raylet has lagging heartbeats.\n") == []


def test_a_path_one_node_cannot_see_is_refused_before_work(cluster, tmp_path):
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-m", "true"]).returncode != 0:
        pytest.skip("needs `unshare -m` (a private mount namespace) to give one node its own view of the disk")
    store = tmp_path / "store"
    store.mkdir()
    # this node sees an empty tmpfs where the others see `store`: a disk local to the driver's machine
    blind = cluster.add_node(cpus=1, wrap=["unshare", "-m", "--propagation", "private", "sh", "-c",
                                           f'mount -t tmpfs tmpfs "{store}" && exec "$0" "$@"'])
    try:
        out = run([sys.executable, "-m", "ebm_jobs.train", "--preset", "test", "--run-name", "r",
                   "--set", f"jobs.storage_path={store}"], cluster.env)
    finally:
        cluster.kill(blind)
    assert out.returncode == 2, out.stderr[-3000:]
    assert "is a local path that 1 of the cluster's 5 nodes cannot see" in out.stderr
    assert "s3://" in out.stderr and "ReadWriteMany" in out.stderr
    assert [p.name for p in (store / "r").iterdir()] == []  # nothing written: no job.json, no checkpoint


def test_two_workers_on_two_nodes_leave_every_output_on_storage_and_in_mlflow(cluster, tmp_path):
    store = tmp_path / "store"
    out = run([sys.executable, "-m", "ebm_jobs.train", "--preset", "test", "--run-name", "spread",
               "--set", "jobs.num_workers=2", "--set", "jobs.placement=STRICT_SPREAD",
               "--set", f"jobs.storage_path={store.as_uri()}"], cluster.env)
    assert out.returncode == 0, out.stderr[-3000:]
    root = store / "spread"
    stored = files(root)
    assert {"job.json", "tracking.json", "config.yaml", "metrics.jsonl", "exports/model.pt",
            "plots/energy_diff.png", "plots/grad_norm.png", "samples/samples_ema.png", "samples/chain.png",
            "samples/step_3.png", "checkpoints/step_0000006.pt", "exports/ema_step_0000006.pt"} <= set(stored)
    ray_ckpts = [p for p in root.iterdir() if p.name.startswith("checkpoint_") and p.is_dir()]
    assert ray_ckpts and all({"shared.pt", "rank_0.pt", "rank_1.pt"} <= {f.name for f in p.iterdir()} for p in ray_ckpts)
    used = [n for n in cluster.nodes if (n.scratch / "ebm-runs" / "spread").is_dir()]
    assert len(used) == 2  # the two workers ran on two nodes (each makes its run directory there)
    for node in used:  # nothing only in a node's scratch: every file there is on the storage, byte for byte
        scratch = files(node.scratch / "ebm-runs" / "spread")
        assert {k: v for k, v in scratch.items() if stored.get(k) != v} == {}
    assert sum(bool(files(n.scratch / "ebm-runs" / "spread")) for n in used) == 1  # rank 0 wrote; it uploaded
    tracking = json.loads(stored["tracking.json"])
    assert tracking["status"] == "FINISHED" and tracking["tracking_uri"] == cluster.env["MLFLOW_TRACKING_URI"]
    client = MlflowClient(tracking["tracking_uri"])
    run_ = client.get_run(tracking["run_id"])
    assert run_.info.status == "FINISHED" and run_.data.tags["run_root"] == root.as_uri()
    assert sorted(m.step for m in client.get_metric_history(run_.info.run_id, "energy/diff")) == list(range(1, 7))
    arts = {a.path for d in ("samples", "plots", "checkpoints") for a in client.list_artifacts(run_.info.run_id, d)}
    assert {"plots/energy_diff.png", "samples/samples_ema.png", "checkpoints/ema_step_0000006.pt"} <= arts


def test_a_killed_job_submitted_again_continues_and_a_finished_one_is_left_alone(cluster, tmp_path):
    """The same command twice, as a KubeRay retry or a user's re-submit runs it: the second continues from the
    latest checkpoint in the same MLflow run; once finished, a third does nothing."""
    cmd = [sys.executable, "-m", "ebm_jobs.train", "--preset", "test", "--run-name", "again", "--resume",
           "--iterations", "30", "--set", f"train.run_dir={tmp_path}", "--set", "train.image_every=1000"]
    env = {k: v for k, v in cluster.env.items() if k != "MLFLOW_TRACKING_URI"}  # the cluster; MLflow in the run root
    root = tmp_path / "again"
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not (root / "checkpoints" / "step_0000009.pt").exists():
        assert first.poll() is None and time.time() < deadline
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the job and its private Ray, at once
    first.wait()
    before = (root / "metrics.jsonl").read_text().splitlines()
    run_id = json.loads((root / "tracking.json").read_text())["run_id"]
    assert 9 <= len(before) < 30
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert second.returncode == 0, second.stderr[-3000:]
    after = (root / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in after] == list(range(1, 31))  # every step once
    assert after[:6] == before[:6]  # steps up to the restored checkpoint were not run again (timings would differ)
    tracking = json.loads((root / "tracking.json").read_text())
    assert tracking == {**tracking, "run_id": run_id, "status": "FINISHED", "step": 30}
    history = MlflowClient(tracking["tracking_uri"]).get_metric_history(run_id, "energy/diff")
    assert sorted(m.step for m in history) == list(range(1, 31))
    third = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and "already finished at step 30" in third.stdout
    assert (root / "metrics.jsonl").read_text().splitlines() == after


def test_an_interrupted_sweep_restores_and_runs_only_the_unfinished_trials(cluster, tmp_path):
    """Ctrl-C after the first of three trials (one at a time); `--resume` runs the other two, in the same parent run,
    and leaves the finished trial's files as they were."""
    sweep_dir = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "ebm_jobs.sweep", "--preset", "test", "--grid", "loss.w_ent=0,0.3,0.6",
           "--max-concurrent", "1", "--sweep-dir", str(sweep_dir), "--iterations", "15", "--set", "train.log_every=5"]
    env = {k: v for k, v in cluster.env.items() if k != "MLFLOW_TRACKING_URI"}  # the cluster; MLflow in the sweep
    first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = sweep_dir / "loss.w_ent=0" / "trial_result.json"  # the trial's final report: written once it has finished
    deadline = time.time() + 180
    while not done.exists():
        assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)  # Ctrl-C: Tune saves its state and stops
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130 and f"ebm sweep --resume {sweep_dir}" in err, err[-3000:]
    kept = {p: p.read_bytes() for p in (sweep_dir / "loss.w_ent=0").rglob("*") if p.is_file()}
    parent = json.loads((sweep_dir / "sweep.json").read_text())["parent_run_id"]
    client = MlflowClient(f"sqlite:///{sweep_dir / 'mlflow.db'}")
    assert client.get_run(parent).info.status == "KILLED"

    again = subprocess.run([sys.executable, "-m", "ebm_jobs.sweep", "--resume", str(sweep_dir)], env=env,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert {p: p.read_bytes() for p in kept} == kept  # the finished trial did not run again
    rows = json.loads((sweep_dir / "summary.json").read_text())
    assert [(r["trial"], r["step"], r["diverged"]) for r in rows] == [
        ("loss.w_ent=0", 15, 0.0), ("loss.w_ent=0.3", 15, 0.0), ("loss.w_ent=0.6", 15, 0.0)]
    assert client.get_run(parent).info.status == "FINISHED"
    children = client.search_runs([client.get_run(parent).info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert sorted(c.data.tags["trial"] for c in children) == [r["trial"] for r in rows]  # one MLflow run per trial
    for child in children:
        assert child.info.status == "FINISHED"
        steps = sorted(m.step for m in client.get_metric_history(child.info.run_id, "energy/diff"))
        kept = [json.loads(line)["step"] for line in (sweep_dir / child.data.tags["trial"] / "metrics.jsonl").open()]
        assert steps == kept and kept[-1] == 15  # a trial stopped mid-way and resumed logs each step once


HOLDING_DRIVER = textwrap.dedent('''
    """Train on the cluster; every rank records its state at each (re)start and waits at step 5 of the first attempt
    (the test removes rank 0's node meanwhile)."""
    import sys, time
    from pathlib import Path
    import ray, torch
    from ebm_core.callbacks import Callback
    from ebm_core.presets import get_preset
    from ebm_jobs.train import fit

    out = Path(sys.argv[2])

    class Hold(Callback):
        def __init__(self, rank):
            self.rank = rank
        def on_fit_start(self, trainer):
            node = ray.get_runtime_context().get_node_id()
            torch.save({"step": trainer.step_count, "node": node, "buffer": trainer.buffer.state_dict(),
                        "ema": trainer.ema.state_dict()}, out / f"start_{trainer.step_count}_rank{self.rank}.pt")
        def on_step_end(self, trainer, step, metrics):
            if step == 5 and not (out / f"start_4_rank{self.rank}.pt").exists():
                (out / f"holding_rank{self.rank}").touch()
                time.sleep(120)

    cfg = get_preset("test").override({"train.iterations": 8, "train.checkpoint_every": 4, "jobs.num_workers": 2,
                                       "jobs.placement": "STRICT_SPREAD", "jobs.max_failures": 1,
                                       "jobs.storage_path": sys.argv[1], "train.run_dir": "runs/held"})
    result = fit(cfg, extra_callbacks=lambda rank: [Hold(rank)])
    print("RESULT", result.run_id, result.metrics["step"])
''')


def test_losing_rank0s_node_restores_on_the_other_nodes_from_the_checkpoint(cluster, tmp_path):
    store, out = tmp_path / "store", tmp_path / "out"
    out.mkdir()
    (tmp_path / "driver.py").write_text(HOLDING_DRIVER)
    driver = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), store.as_uri(), str(out)], env=cluster.env,
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 150
    while not (out / "holding_rank0").exists():
        assert driver.poll() is None and time.time() < deadline, driver.communicate()[1][-3000:]
        time.sleep(0.5)
    first = torch.load(out / "start_0_rank0.pt", weights_only=True)
    cluster.kill(next(n for n in cluster.nodes if n.node_id == first["node"]))
    stdout, stderr = driver.communicate(timeout=240)
    assert driver.returncode == 0, stderr[-3000:]
    root = store / "held"
    for rank in (0, 1):  # every worker restarted from the step-4 checkpoint with its own buffer and the EMA
        restored = torch.load(out / f"start_4_rank{rank}.pt", weights_only=True)
        assert restored["node"] != first["node"]
        ckpt = next(p for p in root.iterdir() if p.name.startswith("checkpoint_") and p.is_dir()
                    and torch.load(p / "rank_0.pt", weights_only=True)["step"] == 4)
        saved = torch.load(ckpt / f"rank_{rank}.pt", weights_only=True)["buffer"]
        assert torch.equal(restored["buffer"]["data"], saved["data"]) and restored["buffer"]["size"] == saved["size"]
        ema = torch.load(ckpt / "shared.pt", weights_only=True)["ema"]
        assert all(torch.equal(restored["ema"][k], v) for k, v in ema.items())
    steps = [json.loads(line)["step"] for line in (root / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))
    tracking = json.loads((root / "tracking.json").read_text())
    client = MlflowClient(tracking["tracking_uri"])
    assert client.get_run(tracking["run_id"]).info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(tracking["run_id"], "energy/diff")) == list(range(1, 9))
