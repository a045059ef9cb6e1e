"""Tracking helpers without Ray: URI resolution, tags, parameters, the scoped fluent URI, reachability, images."""

import json
import os
import subprocess

import mlflow
from mlflow.tracking import MlflowClient
from PIL import Image

from ebm_core.presets import get_preset
from ebm_jobs.run import train_run
from ebm_jobs.tracking import (command_line, config_params, fluent_tracking_uri, resolve_tracking_uri, run_tags,
                               server_reachable, source_tags, visible)


def test_tracking_uri_resolution(tmp_path, monkeypatch):
    cfg = get_preset("test").override({"train.run_dir": str(tmp_path / "run")})
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(cfg) == f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri(cfg) == "http://127.0.0.1:5999"
    assert resolve_tracking_uri(cfg.override({"jobs.tracking_uri": "sqlite:///x.db"})) == "sqlite:///x.db"


def test_fluent_uri_is_restored(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///outer.db")
    with fluent_tracking_uri(f"sqlite:///{tmp_path}/inner.db"):
        assert mlflow.get_tracking_uri().endswith("inner.db")
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///outer.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with fluent_tracking_uri(f"sqlite:///{tmp_path}/inner.db"):
        pass
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_tags_and_reachability():
    tags = run_tags(get_preset("test").override({"loss.use_ent": False}))
    assert tags["kl_terms"] == "opt" and tags["preset"] == "test" and tags["dataset"] == "shapes"
    assert server_reachable("sqlite:///anything.db")
    assert not server_reachable("http://127.0.0.1:9", timeout=1)


def test_source_tags_name_the_program_commit_user_and_command():
    cmd = command_line(["/x/site-packages/ebm_jobs/train.py", "--preset", "demo", "--set", "loss.w_ent=0.3"])
    assert cmd == "python -m ebm_jobs.train --preset demo --set loss.w_ent=0.3"
    assert command_line(["/venv/bin/ebm", "sweep", "--grid", "a=1,2"]) == "ebm sweep --grid a=1,2"
    tags = source_tags(cmd)
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert tags["mlflow.source.name"] == "python -m ebm_jobs.train" and tags["mlflow.source.git.commit"] == head
    assert tags["mlflow.source.type"] == "JOB" and tags["mlflow.user"] and tags["git_dirty"] in ("true", "false")
    assert cmd in tags["mlflow.note.content"]


def test_params_leave_out_machine_paths_and_read_well():
    params = config_params(get_preset("test").override({"data.root": "/home/me/data"}))
    assert not {"train.run_dir", "jobs.tracking_uri", "train.progress", "data.root", "jobs.storage_path"} & set(params)
    assert params["model.channel_mults"] == "1, 2" and params["model.num_classes"] == "none"
    assert params["augment.enabled"] == "true" and params["loss.w_ent"] == "0.3"


def test_sample_grids_are_enlarged_without_blur(tmp_path):
    Image.new("RGB", (137, 69), (10, 200, 30)).save(tmp_path / "g.png")
    img = visible(tmp_path / "g.png")
    assert img.size == (137 * 6, 69 * 6) and set(img.getdata()) == {(10, 200, 30)}


def test_a_run_in_mlflow_as_its_users_expect(tmp_path, monkeypatch):
    """One training run (in-process, no Ray) seen through MLflow: named, described, sourced, with its dataset,
    system metrics, metrics every log_every steps, step-indexed images and a registered model with a signature."""
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.5")
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    cfg = get_preset("test").override({"train.run_dir": str(tmp_path / "test-shapes-a1"), "train.iterations": 12,
                                       "train.log_every": 4, "train.grad_norm_every": 3, "train.image_every": 6,
                                       "jobs.tracking_uri": uri})
    out = train_run(cfg, extra_tags=source_tags("python -m ebm_jobs.train --preset test"))
    client = MlflowClient(uri)
    run = client.get_run(out.run_id)
    assert run.info.run_name == "test-shapes-a1" and run.info.status == "FINISHED"
    assert run.data.tags["mlflow.source.name"] == "python -m ebm_jobs.train"
    assert "--preset test" in run.data.tags["mlflow.note.content"]
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    steps = sorted(m.step for m in client.get_metric_history(out.run_id, "energy/diff"))
    kept = [json.loads(line)["step"] for line in (tmp_path / "test-shapes-a1" / "metrics.jsonl").open()]
    assert steps == kept and not {2, 5, 7, 10, 11} & set(steps)  # every log_every, and where Fig. 9's norms are
    assert any(k.startswith("system/cpu_utilization") for k in run.data.metrics)
    (ds,) = run.inputs.dataset_inputs
    assert ds.dataset.name == "shapes-16px" and ds.dataset.digest
    assert {(t.key, t.value) for t in ds.tags} >= {("mlflow.data.context", "training"), ("train_size", "512")}
    images = [a.path for a in client.list_artifacts(out.run_id, "images")]
    assert any(p.startswith("images/negatives+step+6+") for p in images)
    assert any(p.startswith("images/samples_ema+step+12+") for p in images)
    with fluent_tracking_uri(uri):
        info = mlflow.models.get_model_info("models:/ebm-test-shapes@latest")
        assert info.run_id == out.run_id
        assert info.signature.inputs.inputs[0].shape == (-1, 3, 16, 16)


def test_a_conditional_models_logged_model_takes_its_labels(tmp_path):
    """The demo preset is conditional: its logged model takes named inputs ``x`` and ``labels`` (the signature says
    so) and gives the energies E(x | y) of the exported model."""
    import numpy as np
    import torch

    from ebm_core.pipeline import load_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = get_preset("test").override({"train.run_dir": str(tmp_path / "run"), "train.iterations": 2,
                                       "jobs.tracking_uri": uri, "jobs.system_metrics": False,
                                       "data.labels": ["shape", "colour"], "model.num_classes": [3, 6]})
    out = train_run(cfg)
    rng = np.random.default_rng(1)
    x = rng.random((4, 3, 16, 16), dtype=np.float32)
    y = np.stack([rng.integers(0, 3, 4), rng.integers(0, 6, 4)], 1)
    with fluent_tracking_uri(uri):
        info = mlflow.models.get_model_info("models:/ebm-test-shapes@latest")
        assert info.run_id == out.run_id
        assert [(i.name, i.shape) for i in info.signature.inputs.inputs] == [("x", (-1, 3, 16, 16)), ("labels", (-1, 2))]
        energies = mlflow.pyfunc.load_model("models:/ebm-test-shapes@latest").predict({"x": x, "labels": y})
    model, _ = load_model(next((tmp_path / "run").rglob("exports/model.pt")))
    with torch.no_grad():
        expected = model(torch.from_numpy(x), torch.from_numpy(y)).numpy()
    np.testing.assert_allclose(energies, expected, rtol=1e-5, atol=1e-6)
    assert len(set(np.round(energies, 6))) == 4  # four images, four energies


def test_a_dataset_race_between_sweep_trials_does_not_stop_tracking(tmp_path, monkeypatch):
    """Two trials creating the same dataset at once break the SQL store's UNIQUE constraint (seen in a sweep):
    the losing trial logged nothing more and its run stayed RUNNING. Now it retries, and links the dataset."""
    from mlflow.exceptions import MlflowException

    from ebm_jobs.tracking import MLflowCallback

    real, calls = MLflowCallback.log_dataset, []

    def racing(self, trainer):
        calls.append(1)
        if len(calls) == 1:
            raise MlflowException("(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, ...")
        return real(self, trainer)

    monkeypatch.setattr(MLflowCallback, "log_dataset", racing)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = get_preset("test").override({"train.run_dir": str(tmp_path / "run"), "train.iterations": 2,
                                       "jobs.tracking_uri": uri, "jobs.system_metrics": False})
    out = train_run(cfg)
    run = MlflowClient(uri).get_run(out.run_id)
    assert run.info.status == "FINISHED" and "energy/diff" in run.data.metrics and len(calls) == 2
    assert run.inputs.dataset_inputs[0].dataset.name == "shapes-16px"
