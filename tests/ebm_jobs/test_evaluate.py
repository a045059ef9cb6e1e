"""Evaluation jobs: a model stored in a real MLflow store gets its metrics and tables back; bad MODELs fail early."""

import os

import pytest
import torch
from mlflow.tracking import MlflowClient

from ebm_core.callbacks import RunDirWriter
from ebm_core.checkpoint import CheckpointError
from ebm_core.config import ConfigError
from ebm_core.presets import get_preset
from ebm_core.trainer import Trainer
from ebm_jobs.evaluate import evaluate, main
from ebm_jobs.tracking import MLflowCallback, start_run


@pytest.fixture
def stored_model(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no Inception weights: the domain path
    cfg = get_preset("test").override({"train.run_dir": str(tmp_path / "run"), "train.iterations": 2,
                                       "jobs.tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"})
    uri, run_id = start_run(cfg)
    writer = RunDirWriter(cfg.train.run_dir)
    tracker = MLflowCallback(tracking_uri=uri, run_id=run_id, writer=writer)
    trainer = Trainer(cfg, callbacks=[writer, tracker])
    trainer.fit()
    tracker.log_model(trainer)
    tracker.end()
    return uri, run_id, trainer


def test_eval_job_logs_back_to_the_model_run(stored_model, tmp_path):
    uri, run_id, _ = stored_model
    out = tmp_path / "eval"
    results = evaluate(f"runs:/{run_id}/model", ["fid", "is", "quality", "ood"], out=out, num_samples=32,
                       tracking_uri=uri, sampler={"rounds": 1, "steps": 3}).metrics
    assert {"eval/fid_domain", "eval/is_domain", "eval/ood_auroc/average", "eval/ood_auroc_grad/textures"} <= set(results)
    assert {"eval/recognisability", "eval/colour_distance", "eval/precision", "eval/recall", "eval/shape_agreement",
            "real/recognisability", "real/colour_distance", "judge/accuracy/shape"} <= set(results)
    assert "real/fid_domain" not in results  # FID is the fid metric's, from every sample
    assert "eval/fid" not in results  # domain scores are never reported under the Inception names
    assert "MLFLOW_TRACKING_URI" not in os.environ  # no process-wide tracking URI left behind
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.metrics["eval/fid_domain"] == pytest.approx(results["eval/fid_domain"])
    assert run.data.metrics["eval/recognisability"] == pytest.approx(results["eval/recognisability"])
    arts = {a.path for a in MlflowClient(uri).list_artifacts(run_id, "eval")}
    assert {"eval/ood.md", "eval/ood.json", "eval/eval.json", "eval/samples.png"} <= arts
    # a run id alone resolves to the same model
    again = evaluate(run_id, ["ood"], out=tmp_path / "eval2", num_samples=32, tracking_uri=uri).metrics
    assert again["eval/ood_auroc/average"] == pytest.approx(results["eval/ood_auroc/average"])
    # ...and so does the registered model's alias; the results are linked to the logged model
    evaluate("models:/ebm-test-shapes@latest", ["ood"], out=tmp_path / "eval3", num_samples=32, tracking_uri=uri)
    model_id = run.outputs.model_outputs[0].model_id
    linked = {m.key for m in MlflowClient(uri).get_logged_model(model_id).metrics}
    assert {"eval/fid_domain", "eval/ood_auroc/average"} <= linked


def test_ebm_sample_takes_a_registered_model(stored_model, tmp_path, capsys):
    from PIL import Image

    from ebm_core.cli import main as ebm

    uri, _, _ = stored_model
    out = tmp_path / "s.png"
    assert ebm(["sample", "models:/ebm-test-shapes@latest", "--tracking-uri", uri, "--out", str(out), "--num", "4",
                "--rounds", "1", "--steps", "2"]) == 0
    assert Image.open(out).size[0] > 16 and "4 samples written" in capsys.readouterr().out
    assert ebm(["sample", "models:/no-such-model@latest", "--tracking-uri", uri]) == 2


def test_bad_models_fail_before_sampling(stored_model, tmp_path, capsys):
    uri, run_id, trainer = stored_model
    with pytest.raises(ConfigError, match="expected an existing checkpoint path"):
        evaluate("not-a-model", ["fid"], out=tmp_path / "x")
    with pytest.raises(ConfigError, match="could not be fetched"):
        evaluate("runs:/0123456789abcdef0123456789abcdef/model", ["fid"], out=tmp_path / "x", tracking_uri=uri)
    with pytest.raises(ConfigError, match="unknown"):
        evaluate(str(trainer.last_checkpoint), ["fidd"], out=tmp_path / "x")
    bad = tmp_path / "bad.pt"
    torch.save({"weights": 1}, bad)
    with pytest.raises(CheckpointError, match="not an ebm_core checkpoint"):
        evaluate(str(bad), ["fid"], out=tmp_path / "x")
    cond = Trainer(get_preset("test").override({"model.num_classes": [3, 6, 3, 3, 3], "train.run_dir": str(tmp_path / "c")}))
    cond.step()
    path = cond.save_checkpoint()
    with pytest.raises(CheckpointError, match="conditional model: ood"):
        evaluate(str(path), ["ood"], out=tmp_path / "x")
    assert not (tmp_path / "x").exists()  # nothing written before the checks
    assert main(["--model", "nowhere.pt", "--metrics", "ood"]) == 2
    assert "expected an existing checkpoint path" in capsys.readouterr().err
