"""Ray Train around the core trainer, on a real local Ray and a real MLflow store."""

import json
import re
import sys
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from ray import cloudpickle

from ebm_core.callbacks import Callback
from ebm_core.config import ConfigError
from ebm_core.presets import get_preset
from ebm_jobs.tracking import start_run
from ebm_core.runs import config_from_args
from ebm_jobs.train import fit, main, parser, run_dir_from_args

cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import test modules

DESIGN_METRICS = {"loss/cd", "loss/reg", "loss/kl_opt", "loss/kl_ent", "energy/pos", "energy/neg", "energy/diff",
                  "grad_norm/cd", "grad_norm/kl", "perf/images_per_s"}


def digest(tensors) -> float:
    return float(sum(t.double().sum() * (i + 1) for i, t in enumerate(tensors)))


class Recorder(Callback):
    """Writes, per rank, a digest of the parameters after each step. (Restores after a lost worker, node or job are
    tested in test_cluster.py and below.)"""

    def __init__(self, out: str, rank: int) -> None:
        self.out, self.rank = Path(out), rank

    def on_step_end(self, trainer, step, metrics) -> None:
        with open(self.out / f"rank{self.rank}.jsonl", "a") as f:
            f.write(json.dumps({"event": "step", "step": step, "params": digest(trainer.model.parameters())}) + "\n")


def recorders(out):
    return lambda rank: [Recorder(str(out), rank)]


def read(out, rank):
    return [json.loads(line) for line in (Path(out) / f"rank{rank}.jsonl").read_text().splitlines()]


def test_two_workers_keep_identical_weights_and_log_everything(ray_local, tmp_path, monkeypatch):
    cfg = get_preset("test").override({"train.run_dir": str(tmp_path / "run"), "jobs.num_workers": 2,
                                  "train.iterations": 4, "train.checkpoint_every": 2})
    out = tmp_path / "rec"
    out.mkdir()
    result = fit(cfg, extra_callbacks=recorders(out))
    assert not result.diverged and result.metrics["step"] == 4
    r0 = [r["params"] for r in read(out, 0) if r["event"] == "step"]
    r1 = [r["params"] for r in read(out, 1) if r["event"] == "step"]
    assert len(r0) == 4 and r0 == r1  # all-reduced gradients: the same update on both workers
    ckpt_dir = Path(result.checkpoint_path)
    assert {"shared.pt", "rank_0.pt", "rank_1.pt"} <= {p.name for p in ckpt_dir.iterdir()}
    assert not torch.equal(torch.load(ckpt_dir / "rank_0.pt", weights_only=True)["buffer"]["data"],
                           torch.load(ckpt_dir / "rank_1.pt", weights_only=True)["buffer"]["data"])  # one buffer each

    client = MlflowClient(result.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert DESIGN_METRICS <= set(run.data.metrics)
    assert run.data.params["loss.w_ent"] == "0.3" and run.data.tags["kl_terms"] == "opt+ent"
    assert len(client.get_metric_history(result.run_id, "energy/diff")) == 4
    arts = {a.path for d in ("samples", "plots", "checkpoints") for a in client.list_artifacts(result.run_id, d)}
    assert {"plots/energy_diff.png", "plots/grad_norm.png", "samples/samples_ema.png"} <= arts
    assert any(a.startswith("checkpoints/ema_step_") for a in arts)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", result.tracking_uri)  # scoped to this test
    model = mlflow.pyfunc.load_model(f"runs:/{result.run_id}/model")
    assert model.predict(torch.rand(2, 3, 16, 16).numpy()).shape == (2,)


def test_unreachable_tracking_server_falls_back_to_the_store_in_the_run_root(ray_local, tmp_path):
    """Rank 0 checks the server itself (a worker elsewhere may not reach what the driver reaches) and falls back to
    the store inside the run's root, where the driver finds it afterwards."""
    cfg = get_preset("test").override({"train.run_dir": str(tmp_path / "run"), "train.iterations": 2,
                                       "jobs.tracking_uri": "http://127.0.0.1:9"})  # nothing listens on port 9
    result = fit(cfg)
    assert result.tracking_uri == f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    run = MlflowClient(result.tracking_uri).get_run(result.run_id)
    assert run.info.status == "FINISHED" and run.data.tags["run_root"] == str(tmp_path / "run")
    assert (tmp_path / "run" / "plots" / "energy_diff.png").is_file()
    with pytest.warns(UserWarning, match="unreachable from this node") as caught:  # said once, by the logging process
        start_run(cfg.override({"train.run_dir": str(tmp_path / "other")}))
    assert sum("unreachable" in str(w.message) for w in caught) == 1


def test_resume_run_continues_the_job_behind_an_mlflow_run(ray_local, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    cfg = get_preset("test").override({"train.run_dir": str(tmp_path / "run"), "train.iterations": 3,
                                       "jobs.tracking_uri": uri, "jobs.quality_samples": 32})
    first = fit(cfg)
    assert main(["--resume-run", first.run_id, "--iterations", "6", "--set", f"jobs.tracking_uri={uri}"]) == 0
    out = capsys.readouterr().out
    assert f"MLflow run {first.run_id}" in out  # the same run, continued
    # the final EMA model's quality figures beside held-out real splits: printed, in quality.json and in MLflow
    assert "quality of 1 draw of 32 EMA samples beside 8 held-out real splits of 32 images" in out, out
    assert "'shape': 1.0" in out
    assert re.search(r"recognisability +\d\.\d{3} +1\.000", out), out
    quality = json.loads((tmp_path / "run" / "quality.json").read_text())
    logged = MlflowClient(uri).get_run(first.run_id).data.metrics
    assert {"eval/recognisability", "real/recognisability", "eval/colour_distance", "judge/accuracy/shape"} <= set(logged)
    assert logged["eval/precision"] == pytest.approx(quality["eval/precision"])
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 7))
    assert sorted(m.step for m in MlflowClient(uri).get_metric_history(first.run_id, "energy/diff")) == list(range(1, 7))
    assert main(["--resume-run", "0" * 32, "--set", f"jobs.tracking_uri={uri}"]) == 2
    assert "no such run" in capsys.readouterr().err


def test_bad_inputs_fail_before_work(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    cfg = get_preset("test").override({"train.run_dir": str(tmp_path / "run"), "jobs.storage_path": str(blocker / "sub")})
    with pytest.raises(ConfigError, match="jobs.storage_path"):
        fit(cfg)
    assert blocker.read_text() == "keep me"
    assert main(["--preset", "test", "--set", "sampler.steps=-1"]) == 2
    assert "sampler.steps" in capsys.readouterr().err
    assert main(["--preset", "test", "--set", "jobs.num_workers=0"]) == 2


def test_a_run_is_named_after_what_it_is(tmp_path):
    """<preset>-<dataset>-<config hash>: the directory, the Ray run and the MLflow run share it; the same config
    again gets -2; another config another hash."""
    args = parser().parse_args(["--preset", "test", "--set", f"train.run_dir={tmp_path}"])
    cfg = config_from_args(args)
    first, second = run_dir_from_args(cfg, args), run_dir_from_args(cfg, args)
    assert re.fullmatch(r"test-shapes-[0-9a-f]{6}", first.name) and second.name == first.name + "-2"
    other = run_dir_from_args(cfg.override({"loss.w_ent": 0.5}), args)
    assert other.name != first.name and other.name.startswith("test-shapes-")
    assert run_dir_from_args(cfg.override({"train.progress": True}), args).name == first.name + "-3"  # not a setting
