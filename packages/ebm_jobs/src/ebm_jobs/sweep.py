"""Hyperparameter and ablation sweeps on Ray Tune; every trial a nested MLflow run under one parent.

    ebm sweep --preset shapes --ablation                    # the five rows of Table 2
    ebm sweep --preset test --grid loss.w_ent=0,0.3 --grid sampler.steps=5,10 --asha
    ebm sweep --preset test --search optuna --num-samples 4 --space optim.lr=loguniform(1e-5,1e-3)
    python -m ebm_jobs.sweep --preset shapes --ablation    # the same, for `ray job submit`
    ebm sweep --resume runs/sweeps/<name>                   # finish an interrupted sweep (Tuner.restore)

A trial with ``jobs.num_workers == 1`` runs the core trainer inside the Tune trial (cheap on a
laptop); with more workers it fits a ``TorchTrainer`` reporting to Tune. The summary table (trial,
overrides, final ``energy/diff``, stability, quality) is printed and logged to the parent run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow.tracking import MlflowClient  # noqa: E402

from ebm_core.callbacks import Callback  # noqa: E402
from ebm_core.checkpoint import load_checkpoint  # noqa: E402
from ebm_core.config import Config, ConfigError  # noqa: E402
from ebm_core.recipes import TABLE2  # noqa: E402
from ebm_core.runs import config_from_args, new_run_dir  # noqa: E402
from ebm_core.trainer import Trainer  # noqa: E402
from ebm_eval.quick import prepare_judge, quick_quality  # noqa: E402

from .arguments import add_sweep_arguments, module_main  # noqa: E402
from .cluster import init_ray  # noqa: E402
from .run import STABILITY, stability, train_run  # noqa: E402
from .search import parse_grid, parse_space, trial_count, trial_name, trial_overrides, tune_space  # noqa: E402
from .storage import TRIAL_RESULT_FILE, RunStorage, check_shared  # noqa: E402
from .sweep_summary import log_summary, summary_table  # noqa: E402
from .tracking import source_tags, start_run, terminal_status, ui_address  # noqa: E402
from .train import prepare, record_job  # noqa: E402


TRIAL_CHECKPOINT = "trainer.pt"


METRICS = {"stability": STABILITY, "fid_domain": "eval/fid_domain"}  # --asha-metric: what ASHA and Optuna minimise


class TuneReport(Callback):
    """Report the trainer's metrics to Tune every ``log_every`` iterations (ASHA decides on them), with a trial
    checkpoint every ``checkpoint_every`` (a retried or restored trial continues from it). Each report carries
    ``energy/diff_abs_avg``; with ``fid_domain`` also the quality figures of ``jobs.quality_samples`` EMA samples
    (seconds per report).

    The last iteration is left to the trial's final report, which carries the summary fields: a
    scheduler stops a trial once it reports ``step == max_t``.
    """

    def __init__(self, metric: str = "stability") -> None:
        self.metric = metric

    def figures(self, trainer: Trainer, metrics: dict[str, float]) -> dict[str, float]:
        out = {"step": trainer.step_count, **metrics, STABILITY: stability(trainer)}
        if self.metric == "fid_domain":
            out.update(quick_quality(trainer))
        return out

    def on_step_end(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        from ray import tune

        cfg = trainer.cfg.train
        if step % cfg.checkpoint_every == 0 or step == cfg.iterations:
            saved = trainer.save_checkpoint()  # the run directory's own checkpoint (and MLflow's EMA export)
            if step < cfg.iterations:
                with tempfile.TemporaryDirectory() as tmp:
                    shutil.copyfile(saved, Path(tmp) / TRIAL_CHECKPOINT)  # the same bytes, not serialised twice
                    tune.report(self.figures(trainer, metrics), checkpoint=tune.Checkpoint.from_directory(tmp))
                return
        if step % cfg.log_every == 0 and step < cfg.iterations:
            tune.report(self.figures(trainer, metrics))


def trial_config(params: dict[str, Any]) -> Config:
    """A trial's config: the sweep's base, its overrides, and its run root ``<sweep root>/<trial name>``."""
    cfg = Config.from_dict(params["base"]).override(params["overrides"])
    root = params["sweep_root"]
    if "://" in root:
        return cfg.override({"jobs.storage_path": root, "train.run_dir": params["name"], "train.progress": False})
    return cfg.override({"train.run_dir": str(Path(root) / params["name"]), "train.progress": False})


def run_trial(params: dict[str, Any]) -> None:
    """One Tune trial: a nested MLflow run, the core trainer (or a TorchTrainer), a final report. The trial owns its
    run root, so a retried or restored trial resumes there (from its Tune checkpoint) and reopens its MLflow run; the
    final report is kept there too (``trial_result.json``), so a finished trial started again trains nothing."""
    from ray import tune

    cfg, storage = prepare(trial_config(params), resume=True)
    final = storage.read_json(TRIAL_RESULT_FILE)
    if final is not None:  # it finished, but Ctrl-C stopped the sweep before Tune recorded that: report, do not rerun
        tune.report(final)
        return
    if cfg.jobs.num_workers > 1:
        from .train import fit

        result = fit(cfg, resume=True, parent_run_id=params["parent_run_id"], tags=params["tags"], tune_report=True)
        final = {**result.metrics, **result.quality, "diverged": float(result.diverged), "run_id": result.run_id}
    else:
        final = _fit_one_worker(cfg, storage, params)
    storage.write_json(TRIAL_RESULT_FILE, final)
    tune.report(final)


def _fit_one_worker(cfg: Config, storage: RunStorage, params: dict[str, Any]) -> dict[str, Any]:
    """The core trainer in this trial's own process, continued from the trial's Tune checkpoint if it has one;
    returns the trial's final report."""
    from ray import tune

    record_job(storage, cfg)
    local = storage.local_dir()
    if storage.is_uri:  # this node's scratch copy, filled from the root
        shutil.rmtree(local, ignore_errors=True)
        storage.download(local)
    cfg = cfg.override({"train.run_dir": str(local)})
    checkpoint = tune.get_checkpoint()

    def restore(trainer: Trainer) -> None:
        if checkpoint is not None:
            with checkpoint.as_directory() as d:
                trainer.load_state_dict(load_checkpoint(Path(d) / TRIAL_CHECKPOINT))

    outcome = train_run(cfg, storage=storage, parent_run_id=params["parent_run_id"], extra_tags=params["tags"],
                        callbacks=[TuneReport(params["metric"])], setup=restore, write_checkpoints=False,
                        device="cpu" if not cfg.jobs.use_gpu else None, extra_metrics=quick_quality)
    return {"step": outcome.trainer.step_count, "diverged": float(outcome.diverged), "run_id": outcome.run_id,
            **_tail(outcome.trainer), **outcome.extra}


def _tail(trainer: Trainer) -> dict[str, float]:
    """The last iteration's metrics, the stability figure, and the largest |energy/diff| over the last quarter."""
    if not trainer.history:
        return {}
    diffs = [h["energy/diff"] for h in trainer.history]
    last = {k: v for k, v in trainer.history[-1].items() if k != "step"}
    return {**last, STABILITY: stability(trainer),
            "energy/diff_max_abs_last_quarter": max(abs(v) for v in diffs[-max(1, len(diffs) // 4):])}


SWEEP_FILE = "sweep.json"


def sweep(cfg: Config, trials: list[tuple[str, dict[str, Any]]] = (), *, sweep_dir: str | Path,
          grid: dict[str, list[Any]] | None = None, space: dict[str, tuple[str, list[Any]]] | None = None,
          search: str = "grid", num_samples: int = 1, asha: bool = False, metric: str = "stability",
          max_concurrent: int | None = None, name: str | None = None,
          parent_run_id: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """Run a sweep under one parent MLflow run; returns the summary rows and the parent run id.

    ``trials`` are named variants (Table 2's rows: name, overrides); ``grid`` and ``space`` are axes over dotted
    config keys (``search.py``), crossed with the variants; ``search`` is ``grid``/``random`` (Tune's variant
    generator, ``num_samples`` repeats) or ``optuna``. ASHA and Optuna minimise ``metric`` (``METRICS``). The
    sweep's root is ``sweep_dir`` (or ``<jobs.storage_path>/<its name>``); it holds Tune's experiment state,
    ``sweep.json`` (what ``resume_sweep`` needs) and every trial's run root. ``name`` names the parent MLflow run;
    ``parent_run_id`` nests it in turn (e.g. under a ``reproduce`` run).
    """
    grid, space, variants = grid or {}, space or {}, dict(trials)
    if search not in ("grid", "random", "optuna") or metric not in METRICS:
        raise ConfigError(f"ebm sweep: --search is grid, random or optuna and --asha-metric one of {sorted(METRICS)}")
    if space and search == "grid":
        raise ConfigError("ebm sweep: --space samples values: use it with --search random or --search optuna")
    if metric == "fid_domain" and cfg.jobs.num_workers > 1 and (asha or search == "optuna"):
        raise ConfigError("ebm sweep: --asha-metric fid_domain is measured in one-worker trials; with "
                          "jobs.num_workers > 1 use --asha-metric stability")
    for over in list(variants.values()) or [{}]:  # every axis value is checked against the config before anything
        cfg.override(over)
        for key, values in grid.items():
            for v in values:
                cfg.override({**over, key: v})
        for key, (_, args) in space.items():
            cfg.override({**over, key: args[0]})
    parent_cfg, storage = prepare(cfg.override({"train.run_dir": str(Path(sweep_dir).expanduser().resolve())}))
    prepare_judge(cfg)  # every trial's quality figures use it: trained once, here, with every core
    tags = source_tags()
    total = trial_count(list(variants), grid, search, num_samples)
    uri, parent_id = start_run(parent_cfg, run_name=name or f"sweep-{cfg.preset}-{storage.name}", parent_run_id=parent_run_id,
                               extra_tags={**tags, "sweep": "true", "trials": str(total), "run_root": storage.uri})
    spec = {"name": storage.name, "root": storage.uri, "local_dir": parent_cfg.train.run_dir,
            "variants": [[k, v] for k, v in variants.items()], "grid": grid, "space": space, "search": search,
            "num_samples": num_samples, "trials": total, "metric": metric,
            "base": parent_cfg.override({"jobs.tracking_uri": uri}).to_dict(), "tracking_uri": uri,
            "parent_run_id": parent_id, "tags": tags, "asha": asha, "max_concurrent": max_concurrent}
    storage.write_json(SWEEP_FILE, spec)
    return _run(spec, restore=False)


def resume_sweep(root: str | Path) -> tuple[list[dict[str, Any]], str]:
    """Finish an interrupted sweep (``Tuner.restore``): finished trials stay as they are, unfinished and failed
    ones continue from their latest trial checkpoints, trials never started run now."""
    root = str(root) if "://" in str(root) else str(Path(root).expanduser().resolve())
    spec = RunStorage.at(root).read_json(SWEEP_FILE)
    if spec is None:
        raise ConfigError(f"ebm sweep --resume {root}: no {SWEEP_FILE} there, so it is not a sweep's root")
    MlflowClient(spec["tracking_uri"]).update_run(spec["parent_run_id"], status="RUNNING")
    return _run(spec, restore=True)


def _run(spec: dict[str, Any], *, restore: bool) -> tuple[list[dict[str, Any]], str]:
    """Fit (or restore) the Tuner of a sweep described by ``spec``, then write and log its summary."""
    import ray
    from ray import tune

    cfg = Config.from_dict(spec["base"])
    variants = {k: v for k, v in spec["variants"]}
    storage = RunStorage.at(spec["root"])
    init_ray()  # $RAY_ADDRESS (set by `ray job submit`) or a private local Ray
    check_shared(storage)

    def trainable(config: dict[str, Any]) -> None:
        name = trial_name(config)
        run_trial({"base": spec["base"], "overrides": trial_overrides(config, variants), "name": name,
                   "sweep_root": spec["root"], "parent_run_id": spec["parent_run_id"], "metric": spec["metric"],
                   "tags": {**spec["tags"], "trial": name}})

    j = cfg.jobs
    if j.num_workers == 1:  # the trial trains itself: Tune runs as many as their requests fit, as the cluster grows
        resources: dict[str, float] = {"cpu": j.cpus_per_worker, **({"gpu": 1} if j.use_gpu else {})}
        concurrency = spec["max_concurrent"]
    else:  # the trial starts a TorchTrainer that asks for its workers itself: cap the trials to what fits now
        resources = {"cpu": 0.01}
        have = ray.cluster_resources()
        fits = [have.get("CPU", 0) // (j.num_workers * j.cpus_per_worker)]
        fits += [have.get("GPU", 0) // j.num_workers] if j.use_gpu else []
        concurrency = spec["max_concurrent"] or max(1, int(min(fits)))
    fn = tune.with_resources(trainable, resources)
    target = METRICS[spec["metric"]]
    if restore:
        tuner = tune.Tuner.restore(storage.uri, trainable=fn, resume_unfinished=True, resume_errored=True)
    else:
        scheduler = search_alg = None
        if spec["asha"]:
            from ray.tune.schedulers import ASHAScheduler

            scheduler = ASHAScheduler(time_attr="step", max_t=cfg.train.iterations,
                                      grace_period=max(1, cfg.train.iterations // 4))
        if spec["search"] == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            search_alg = OptunaSearch(seed=cfg.train.seed)
        ranked = spec["asha"] or spec["search"] == "optuna"
        tuner = tune.Tuner(
            fn,
            param_space=tune_space(list(variants), spec["grid"], {k: tuple(v) for k, v in spec["space"].items()},
                                   spec["search"]),
            tune_config=tune.TuneConfig(num_samples=spec["num_samples"], max_concurrent_trials=concurrency,
                                        scheduler=scheduler, search_alg=search_alg,
                                        metric=target if ranked else None, mode="min" if ranked else None,
                                        # a finished trial's process takes the next trial: no new interpreter and
                                        # torch import per trial (the smoke reproduction's 12 trials: 70 s -> 25 s,
                                        # identical figures); a trial resets what it sets (threads, MLflow's URI)
                                        reuse_actors=True),
            run_config=tune.RunConfig(name=storage.name, storage_path=storage.root,
                                      failure_config=tune.FailureConfig(max_failures=cfg.jobs.max_failures),
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
        )
    grid = tuner.fit()
    client = MlflowClient(spec["tracking_uri"])
    parent_id = spec["parent_run_id"]
    # Interrupted (Ctrl-C)? The state Tune saved says so; in memory it marks the stopped trials TERMINATED.
    saved = tune.ExperimentAnalysis(storage.uri).trials
    unfinished = spec["trials"] - sum(t.status in ("TERMINATED", "ERROR") for t in saved)
    if unfinished > 0:
        client.set_tag(parent_id, "interrupted", f"resume with: ebm sweep --resume {storage.uri}")
        client.set_terminated(parent_id, status="KILLED")
        raise SweepInterrupted(f"the sweep was interrupted with {unfinished} of {spec['trials']} trials unfinished; "
                               f"finish it with: ebm sweep --resume {storage.uri}")
    rows = []
    for res in sorted(grid, key=lambda r: Path(r.path).name.split("_")[2]):  # <fn>_<exp>_<index>_...: creation order
        m = dict(res.metrics or {})
        rows.append({"trial": trial_name(res.config), "overrides": json.dumps(trial_overrides(res.config, variants)),
                     **{k: v for k, v in m.items() if k in ("energy/diff", "energy/diff_max_abs_last_quarter", STABILITY,
                                                            "diverged", "run_id", "step") or k.startswith(("eval/", "real/"))}})
        if res.error is not None:
            rows[-1]["error"] = str(res.error).splitlines()[0][:200]
    local = Path(spec["local_dir"])
    local.mkdir(parents=True, exist_ok=True)
    for child in client.search_runs([client.get_run(parent_id).info.experiment_id],
                                    f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'RUNNING'"):
        client.set_tag(child.info.run_id, "stopped", "by the Tune scheduler or an error before the end")
        client.set_terminated(child.info.run_id, status="KILLED")  # trials Tune stopped never ended their runs
    best = log_summary(client, parent_id, rows, local)
    storage.upload(local)
    client.set_terminated(parent_id, status=terminal_status(all(not r.get("error") for r in rows)))
    if best is not None:
        print(f"ebm sweep: best trial {best['trial']}; its registered model is now @best")
    print(f"ebm sweep: MLflow UI {ui_address(spec['tracking_uri'], parent_id)}")
    return rows, parent_id


class SweepInterrupted(RuntimeError):
    """Tune stopped on Ctrl-C with trials unfinished; its state is saved for ``ebm sweep --resume``."""


def run_from_args(args: argparse.Namespace) -> int:
    try:
        return _run_from_args(args)
    except SweepInterrupted as e:
        print(f"ebm sweep: {e}", file=sys.stderr)
        return 130


def _run_from_args(args: argparse.Namespace) -> int:
    if args.resume:
        rows, parent = resume_sweep(args.resume)
        print(summary_table(rows))
        print(f"ebm sweep: parent MLflow run {parent}; summary in {args.resume}")
        return 0
    cfg = config_from_args(args)
    variants = [(v.name, dict(v.overrides)) for v in TABLE2] if args.ablation else []
    grid, space = parse_grid(args.grid), parse_space(args.space)
    if not (variants or grid or space):
        raise ConfigError("ebm sweep: give --ablation, --grid or --space axes (or --resume <sweep root>)")
    sweep_dir = args.sweep_dir or (new_run_dir("runs/sweeps") if cfg.jobs.storage_path is None
                                   else Path("runs/sweeps") / f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
    rows, parent = sweep(cfg, variants, sweep_dir=sweep_dir, grid=grid, space=space, search=args.search,
                         num_samples=args.num_samples, asha=args.asha, metric=args.asha_metric,
                         max_concurrent=args.max_concurrent)
    print(summary_table(rows))
    print(f"ebm sweep: parent MLflow run {parent}; summary in {Path(sweep_dir).resolve() / 'summary.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return module_main(argv, prog="python -m ebm_jobs.sweep", doc=__doc__, add_arguments=add_sweep_arguments,
                       run=run_from_args)


if __name__ == "__main__":
    sys.exit(main())
