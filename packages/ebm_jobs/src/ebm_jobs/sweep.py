"""Hyperparameter and ablation sweeps on Ray Tune; every trial a nested MLflow run under one parent.

    ebm sweep --preset demo --ablation                      # the five rows of Table 2
    ebm sweep --preset test --grid loss.w_ent=0,0.3 --grid sampler.steps=5,10 --asha
    python -m ebm_jobs.sweep --preset demo --ablation      # the same, for `ray job submit`

A trial with ``jobs.num_workers == 1`` runs the core trainer inside the Tune trial (cheap on a
laptop); with more workers it fits a ``TorchTrainer`` reporting to Tune. The summary table (trial,
overrides, final ``energy/diff``, stability, quality) is printed and logged to the parent run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from ebm_core.callbacks import Callback  # noqa: E402
from ebm_core.config import Config, ConfigError  # noqa: E402
from ebm_core.recipes import TABLE2  # noqa: E402
from ebm_core.runs import config_from_args, new_run_dir  # noqa: E402
from ebm_core.trainer import Trainer  # noqa: E402

from .arguments import add_sweep_arguments, module_main  # noqa: E402
from .cluster import init_ray  # noqa: E402
from .run import train_run  # noqa: E402
from .tracking import start_run, terminal_status  # noqa: E402
from .train import prepare, storage_path  # noqa: E402


def grid_trials(grid: list[str]) -> list[tuple[str, dict[str, Any]]]:
    """``["loss.w_ent=0,0.3", "sampler.steps=5,10"]`` -> the cartesian product as named override sets."""
    import yaml

    axes = []
    for spec in grid:
        if "=" not in spec:
            raise ConfigError(f"--grid {spec!r}: expected section.field=v1,v2,...")
        key, values = spec.split("=", 1)
        axes.append([(key, yaml.safe_load(v)) for v in values.split(",")])
    trials = []
    for combo in itertools.product(*axes):
        trials.append((",".join(f"{k}={v}" for k, v in combo), dict(combo)))
    return trials


class TuneReport(Callback):
    """Report the trainer's metrics to Tune every ``log_every`` iterations (ASHA decides on them).

    The last iteration is left to the trial's final report, which carries the summary fields: a
    scheduler stops a trial once it reports ``step == max_t``.
    """

    def on_step_end(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        from ray import tune

        if step % trainer.cfg.train.log_every == 0 and step < trainer.cfg.train.iterations:
            tune.report({"step": step, **metrics})


def run_trial(params: dict[str, Any]) -> None:
    """One Tune trial: a nested MLflow run, the core trainer (or a TorchTrainer), a final report."""
    from ray import tune

    cfg = Config.from_dict(params["base"]).override(params["overrides"])
    cfg = prepare(cfg.override({"train.run_dir": str(Path(params["sweep_dir"]) / params["name"]), "train.progress": False}))
    if cfg.jobs.num_workers > 1:
        from .train import fit

        result = fit(cfg, run_name=params["name"], parent_run_id=params["parent_run_id"], tune_report=True)
        final = {**result.metrics, "diverged": float(result.diverged), "run_id": result.run_id}
        tune.report(final)
        return
    from ebm_eval.quick import quick_quality

    uri, run_id = start_run(cfg, run_name=params["name"], parent_run_id=params["parent_run_id"],
                            extra_tags={"trial": params["name"]})
    outcome = train_run(cfg, tracking_uri=uri, run_id=run_id, callbacks=[TuneReport()],
                        device="cpu" if not cfg.jobs.use_gpu else None, extra_metrics=quick_quality)
    tune.report({"step": outcome.trainer.step_count, "diverged": float(outcome.diverged), "run_id": run_id,
                 **_tail(outcome.trainer), **outcome.extra})


def _tail(trainer: Trainer) -> dict[str, float]:
    """The last iteration's metrics, plus the largest |energy/diff| over the last quarter of training."""
    if not trainer.history:
        return {}
    diffs = [h["energy/diff"] for h in trainer.history]
    last = {k: v for k, v in trainer.history[-1].items() if k != "step"}
    return {**last, "energy/diff_max_abs_last_quarter": max(abs(v) for v in diffs[-max(1, len(diffs) // 4):])}


def status(row: dict[str, Any]) -> str:
    """'yes' (finished stable), 'no (diverged at N)', or 'stopped at N' (early stopping, errors)."""
    if row.get("diverged"):
        return f"no (diverged at {row.get('step', '?')})"
    if "run_id" in row:  # only the trial's final report carries it
        return "yes"
    return f"stopped at {row.get('step', '?')}" + (f" ({row['error']})" if row.get("error") else "")


def summary_table(rows: list[dict[str, Any]]) -> str:
    lines = ["| trial | overrides | final energy/diff | max abs diff (last 1/4) | stable | quality |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        q = ", ".join(f"{k}={v:.3f}" for k, v in r.items() if k.startswith("eval/")) or "n/a"
        diff, tail = r.get("energy/diff"), r.get("energy/diff_max_abs_last_quarter")
        lines.append(f"| {r['trial']} | {r['overrides']} | {'n/a' if diff is None else f'{diff:.4f}'} | "
                     f"{'n/a' if tail is None else f'{tail:.4f}'} | {status(r)} | {q} |")
    return "\n".join(lines)


def sweep(cfg: Config, trials: list[tuple[str, dict[str, Any]]], *, sweep_dir: str | Path, asha: bool = False,
          max_concurrent: int | None = None, name: str | None = None,
          parent_run_id: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """Run ``trials`` (name, overrides) under one parent MLflow run; returns the summary rows and the parent run id.

    ``parent_run_id`` nests that parent run in turn (e.g. under a ``reproduce`` run).
    """
    import ray
    from mlflow.tracking import MlflowClient
    from ray import tune

    for _, over in trials:  # every trial's config is checked before anything starts
        cfg.override(over)
    sweep_dir = Path(sweep_dir).expanduser().resolve()
    parent_cfg = prepare(cfg.override({"train.run_dir": str(sweep_dir)}))
    storage = storage_path(parent_cfg)
    name = name or f"sweep-{cfg.preset}-{sweep_dir.name}"
    uri, parent_id = start_run(parent_cfg, run_name=name, parent_run_id=parent_run_id,
                               extra_tags={"sweep": "true", "trials": str(len(trials))})
    base = parent_cfg.override({"jobs.tracking_uri": uri}).to_dict()
    init_ray()  # $RAY_ADDRESS (set by `ray job submit`) or a private local Ray
    cpus = ray.cluster_resources().get("CPU", 1)
    per_trial = cfg.jobs.cpus_per_worker if cfg.jobs.num_workers == 1 else 0.01
    concurrency = max_concurrent or max(1, int(cpus // max(per_trial, 1)) if cfg.jobs.num_workers == 1 else 1)
    space = {"trial": tune.grid_search(list(range(len(trials))))}

    def trainable(config: dict[str, Any]) -> None:
        trial_name, overrides = trials[config["trial"]]
        run_trial({"base": base, "overrides": overrides, "name": trial_name, "sweep_dir": str(sweep_dir),
                   "parent_run_id": parent_id})

    scheduler = None
    if asha:
        from ray.tune.schedulers import ASHAScheduler

        scheduler = ASHAScheduler(time_attr="step", max_t=cfg.train.iterations, grace_period=max(1, cfg.train.iterations // 4))
    resources = {"cpu": per_trial}
    if cfg.jobs.use_gpu and cfg.jobs.num_workers == 1:  # the trial itself trains: it needs the GPU
        resources["gpu"] = 1
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space=space,
        tune_config=tune.TuneConfig(max_concurrent_trials=concurrency, scheduler=scheduler,
                                    metric="loss/cd" if asha else None, mode="min" if asha else None),
        run_config=tune.RunConfig(name=name, storage_path=storage),
    )
    grid = tuner.fit()
    rows = []
    for res in grid:
        idx = res.config["trial"]
        m = dict(res.metrics or {})
        rows.append({"trial": trials[idx][0], "overrides": json.dumps(trials[idx][1]), **{k: v for k, v in m.items()
                     if k in ("energy/diff", "energy/diff_max_abs_last_quarter", "diverged", "run_id", "step") or k.startswith("eval/")}})
        if res.error is not None:
            rows[-1]["error"] = str(res.error).splitlines()[0][:200]
    rows.sort(key=lambda r: [t[0] for t in trials].index(r["trial"]))
    table = summary_table(rows)
    (sweep_dir / "summary.md").write_text(table + "\n")
    (sweep_dir / "summary.json").write_text(json.dumps(rows, indent=2))
    client = MlflowClient(uri)
    for child in client.search_runs([client.get_run(parent_id).info.experiment_id],
                                    f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'RUNNING'"):
        client.set_tag(child.info.run_id, "stopped", "by the Tune scheduler or an error before the end")
        client.set_terminated(child.info.run_id, status="KILLED")  # trials Tune stopped never ended their runs
    client.log_artifact(parent_id, str(sweep_dir / "summary.md"))
    client.log_artifact(parent_id, str(sweep_dir / "summary.json"))
    client.set_terminated(parent_id, status=terminal_status(all(not r.get("error") for r in rows)))
    return rows, parent_id


def run_from_args(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    trials = [(v.name, dict(v.overrides)) for v in TABLE2] if args.ablation else []
    trials += grid_trials(args.grid) if args.grid else []
    if not trials:
        raise ConfigError("ebm sweep: give --ablation and/or at least one --grid axis")
    sweep_dir = args.sweep_dir or new_run_dir("runs/sweeps")
    rows, parent = sweep(cfg, trials, sweep_dir=sweep_dir, asha=args.asha, max_concurrent=args.max_concurrent)
    print(summary_table(rows))
    print(f"ebm sweep: parent MLflow run {parent}; summary in {Path(sweep_dir).resolve() / 'summary.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return module_main(argv, prog="python -m ebm_jobs.sweep", doc=__doc__, add_arguments=add_sweep_arguments,
                       run=run_from_args)


if __name__ == "__main__":
    sys.exit(main())
