"""A Tune sweep of tiny trials: nested MLflow runs under one parent, metrics, plots and a summary."""

from mlflow.tracking import MlflowClient

from ebm_core.presets import get_preset
from ebm_core.recipes import TABLE2
from ebm_jobs.sweep import grid_trials, sweep



def test_grid_parsing():
    trials = grid_trials(["loss.w_ent=0,0.3", "sampler.steps=2,3"])
    assert [t[1] for t in trials] == [{"loss.w_ent": 0, "sampler.steps": 2}, {"loss.w_ent": 0, "sampler.steps": 3},
                                      {"loss.w_ent": 0.3, "sampler.steps": 2}, {"loss.w_ent": 0.3, "sampler.steps": 3}]
    assert len(TABLE2) == 5 and TABLE2.full.overrides == {"loss.use_opt": True, "loss.use_ent": True,
                                                         "augment.enabled": True, "model.multiscale": True}


def test_sweep_makes_nested_runs_with_metrics_and_plots(ray_local, tmp_path):
    trials = [(v.name, dict(v.overrides)) for v in (TABLE2.baseline, TABLE2.full)]
    rows, parent = sweep(get_preset("test").override({"train.iterations": 4}), trials, sweep_dir=tmp_path / "sweep")
    assert [r["trial"] for r in rows] == ["baseline", "opt+ent+aug+ms"]
    assert all(r["step"] == 4 and r["diverged"] == 0.0 for r in rows)
    client = MlflowClient(f"sqlite:///{tmp_path / 'sweep' / 'mlflow.db'}")
    parent_run = client.get_run(parent)
    children = client.search_runs([parent_run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 2
    for child in children:
        assert {"loss/cd", "energy/diff", "grad_norm/cd", "grad_norm/kl", "perf/images_per_s"} <= set(child.data.metrics)
        plots = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
        assert plots == {"plots/energy_diff.png", "plots/grad_norm.png"}
    base = next(c for c in children if c.data.tags["trial"] == "baseline")
    assert base.data.tags["kl_terms"] == "none" and base.data.params["augment.enabled"] == "False"
    assert {a.path for a in client.list_artifacts(parent)} >= {"summary.md", "summary.json"}
    assert "| baseline |" in (tmp_path / "sweep" / "summary.md").read_text()


def test_asha_sweep_completes_and_leaves_no_run_open(ray_local, tmp_path):
    trials = grid_trials(["loss.w_ent=0,0.3,0.6"])
    rows, parent = sweep(get_preset("test").override({"train.iterations": 8}), trials, sweep_dir=tmp_path / "sweep",
                         asha=True)
    assert len(rows) == 3 and all(r["step"] <= 8 for r in rows)
    assert all("loss/cd" not in r for r in rows)  # the summary keeps its own columns only
    client = MlflowClient(f"sqlite:///{tmp_path / 'sweep' / 'mlflow.db'}")
    exp = client.get_run(parent).info.experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 3 and all(c.info.status in ("FINISHED", "KILLED") for c in children)
