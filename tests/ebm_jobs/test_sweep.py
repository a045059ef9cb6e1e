"""A Tune sweep of tiny trials: nested MLflow runs under one parent, metrics, plots and a summary."""

import json

from mlflow.tracking import MlflowClient

from ebm_core.presets import get_preset
from ebm_core.recipes import TABLE2
from ebm_jobs.search import parse_grid, parse_space, trial_name, trial_overrides, tune_space
from ebm_jobs.sweep import SWEEP_FILE, _run, sweep



def test_search_space_in_tunes_terms():
    from ray import tune

    grid = parse_grid(["loss.w_ent=0,0.3", "optim.lr=1e-4,2e-4"])
    assert grid == {"loss.w_ent": [0, 0.3], "optim.lr": [1e-4, 2e-4]}
    space = tune_space(["baseline", "full"], grid, parse_space(["sampler.steps=choice(5,10)"]), "random")
    assert space["variant"] == tune.grid_search(["baseline", "full"]) and space["loss.w_ent"] == tune.grid_search([0, 0.3])
    assert tune_space([], grid, {}, "optuna")["loss.w_ent"].categories == [0, 0.3]  # Optuna samples every axis
    lr = tune_space([], {}, parse_space(["optim.lr=loguniform(1e-5,1e-3)"]), "optuna")["optim.lr"]
    assert (lr.lower, lr.upper) == (1e-5, 1e-3)
    config = {"variant": "baseline", "loss.w_ent": 0.3, "optim.lr": 0.000123456}
    assert trial_name(config) == "baseline,loss.w_ent=0.3,optim.lr=0.0001235"
    assert trial_overrides(config, {"baseline": {"loss.use_opt": False}}) == {
        "loss.use_opt": False, "loss.w_ent": 0.3, "optim.lr": 0.000123456}
    assert len(TABLE2) == 5 and TABLE2.full.overrides == {"loss.use_opt": True, "loss.use_ent": True,
                                                         "augment.enabled": True, "model.multiscale": True}


def test_sweep_makes_nested_runs_with_metrics_and_plots(ray_local, tmp_path):
    trials = [(v.name, dict(v.overrides)) for v in (TABLE2.baseline, TABLE2.full)]
    rows, parent = sweep(get_preset("test").override({"train.iterations": 4, "jobs.quality_samples": 32}), trials,
                         sweep_dir=tmp_path / "sweep")
    assert [r["trial"] for r in rows] == ["baseline", "opt+ent+aug+ms"]
    assert all(r["step"] == 4 and r["diverged"] == 0.0 for r in rows)
    assert all({"eval/recognisability", "eval/precision", "real/recognisability"} <= set(r) for r in rows)
    assert "*held-out real images*" in (tmp_path / "sweep" / "summary.md").read_text()
    client = MlflowClient(f"sqlite:///{tmp_path / 'sweep' / 'mlflow.db'}")
    parent_run = client.get_run(parent)
    children = client.search_runs([parent_run.info.experiment_id], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 2
    for child in children:
        assert {"loss/cd", "energy/diff", "grad_norm/cd", "grad_norm/kl", "perf/images_per_s"} <= set(child.data.metrics)
        plots = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
        assert plots == {"plots/energy_diff.png", "plots/grad_norm.png"}
    base = next(c for c in children if c.data.tags["trial"] == "baseline")
    assert base.data.tags["kl_terms"] == "none" and base.data.params["augment.enabled"] == "false"
    assert {a.path for a in client.list_artifacts(parent)} >= {"summary.md", "summary.json"}
    assert "| baseline |" in (tmp_path / "sweep" / "summary.md").read_text()


def test_asha_sweep_completes_and_leaves_no_run_open(ray_local, tmp_path):
    rows, parent = sweep(get_preset("test").override({"train.iterations": 8}), sweep_dir=tmp_path / "sweep",
                         grid=parse_grid(["loss.w_ent=0,0.3,0.6"]), asha=True,
                         max_concurrent=1)  # one trial process for all three: the suite's 2 cores are busy anyway
    assert len(rows) == 3 and all(r["step"] <= 8 for r in rows)
    assert all("loss/cd" not in r for r in rows)  # the summary keeps its own columns only
    client = MlflowClient(f"sqlite:///{tmp_path / 'sweep' / 'mlflow.db'}")
    exp = client.get_run(parent).info.experiment_id
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 3 and all(c.info.status in ("FINISHED", "KILLED") for c in children)


def test_a_finished_trial_started_again_reports_its_result_and_trains_nothing(ray_local, tmp_path):
    """Ctrl-C can reach Tune after a trial has finished but before Tune has recorded that; the restored sweep then
    starts the trial again. It reports the result it wrote and leaves its files as they were."""
    rows, _ = sweep(get_preset("test").override({"train.iterations": 4}), sweep_dir=tmp_path / "sweep",
                    grid=parse_grid(["loss.w_ent=0.3"]))
    trial = tmp_path / "sweep" / "loss.w_ent=0.3"
    kept = {p: p.read_bytes() for p in trial.rglob("*") if p.is_file()}
    assert json.loads((trial / "trial_result.json").read_text())["step"] == 4
    again, _ = _run(json.loads((tmp_path / "sweep" / SWEEP_FILE).read_text()), restore=False)  # a Tuner with no record of it
    assert {p: p.read_bytes() for p in trial.rglob("*") if p.is_file()} == kept
    assert again == rows


def test_optuna_search_shows_the_hyperparameters_and_marks_the_best_model(ray_local, tmp_path):
    from ray import tune

    rows, parent = sweep(get_preset("test").override({"train.iterations": 4, "jobs.quality_samples": 32}),
                         sweep_dir=tmp_path / "sweep", search="optuna", num_samples=4, max_concurrent=1,
                         space=parse_space(["optim.lr=loguniform(1e-5,1e-3)", "sampler.steps=choice(3,5)"]))
    assert len(rows) == 4 and len({r["trial"] for r in rows}) == 4
    table = tune.ExperimentAnalysis(str(tmp_path / "sweep")).dataframe()  # what Tune's results table shows
    assert {"config/optim.lr", "config/sampler.steps"} <= set(table.columns)
    assert table["config/optim.lr"].between(1e-5, 1e-3).all()
    assert table["pid"].nunique() < len(rows)  # a finished trial's process runs a later one (reuse_actors)
    client = MlflowClient(f"sqlite:///{tmp_path / 'sweep' / 'mlflow.db'}")
    assert {"summary.md", "summary_table.json", "parallel_coordinates.png"} <= {a.path for a in client.list_artifacts(parent)}
    best = min((r for r in rows if r.get("run_id")), key=lambda r: r["eval/fid_domain"])
    assert client.get_model_version_by_alias("ebm-test-shapes", "best").run_id == best["run_id"]


def test_parallel_coordinates_draws_switches_and_skips_what_is_not_a_number(tmp_path):
    from ebm_jobs.sweep_summary import best_row, parallel_coordinates

    rows = [{"trial": "a", "overrides": json.dumps({"loss.use_opt": False, "generate.noise": None, "optim.lr": 1e-4}),
             "eval/fid_domain": 3.0, "run_id": "x", "diverged": 0.0},
            {"trial": "b", "overrides": json.dumps({"loss.use_opt": True, "optim.lr": 1e-4}),
             "eval/fid_domain": 2.0, "run_id": "y", "diverged": 0.0},
            {"trial": "c", "overrides": json.dumps({"loss.use_opt": True}), "diverged": 1.0, "step": 3}]
    assert parallel_coordinates(rows, tmp_path / "p.png").stat().st_size > 1000
    assert best_row(rows)["trial"] == "b"  # lowest FID-domain among the stable, finished trials


def test_summary_table_shows_the_quality_figures_beside_held_out_real_images():
    from ebm_jobs.sweep_summary import summary_table

    rows = [{"trial": "a", "overrides": "{}", "energy/diff": 0.01, "run_id": "x", "eval/fid_domain": 900.0,
             "eval/recognisability": 0.41, "eval/precision": 0.3, "real/fid_domain": 61.0,
             "real/recognisability": 1.0, "real/precision": 0.96},
            {"trial": "b", "overrides": "{}", "diverged": 1.0, "step": 3}]
    lines = summary_table(rows).splitlines()
    assert lines[0].split(" | ")[-3:] == ["fid_domain", "recognisability", "precision |"]
    assert lines[2].endswith("| 900.000 | 0.410 | 0.300 |") and lines[3].endswith("| n/a | n/a | n/a |")
    assert lines[4].startswith("| *held-out real images*") and lines[4].endswith("| 61.000 | 1.000 | 0.960 |")
    plain = summary_table([{"trial": "c", "overrides": "{}", "energy/diff": 0.01}]).splitlines()  # no figures
    assert [line.count("|") for line in plain] == [6, 6, 6]  # five columns, no empty sixth
