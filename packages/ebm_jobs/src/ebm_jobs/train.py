"""Distributed training on Ray Train, recorded in MLflow; the entry point of ``ray job submit``.

    python -m ebm_jobs.train --preset demo --set jobs.num_workers=2
    ray job submit --address http://127.0.0.1:8265 --runtime-env-json "$(.venv/bin/python -m ebm_jobs.runtime_env)" -- \
        python -m ebm_jobs.train --preset demo --run-name mine --resume --set jobs.storage_path=/shared/runs
    python -m ebm_jobs.train --resume-run <MLflow run id>

The driver checks the config and the run's root on its storage (``storage.py``: new and empty, or with
``--resume`` a run to continue; seen by every node), records ``job.json``, then fits a ``TorchTrainer``
whose workers run ``worker.train_loop_per_worker``; rank 0 opens the MLflow run. With
``jobs.max_failures`` > 0 a dead worker restarts the group from the latest checkpoint; the same
command submitted again continues from it too.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from ebm_core.cli import report_error  # noqa: E402
from ebm_core.config import Config, ConfigError  # noqa: E402
from ebm_core.runs import (add_config_args, check_new_run, config_from_args, new_named_dir, numbered,  # noqa: E402
                           overrides_from_args)
from ebm_eval.quick import prepare_judge  # noqa: E402

from .cluster import init_ray  # noqa: E402
from .storage import JOB_FILE, QUALITY_FILE, TRACKING_FILE, RunStorage, check_shared, check_writable, storage_for  # noqa: E402
from .tracking import config_params, source_tags, ui_address  # noqa: E402


@dataclass
class TrainResult:
    run_dir: str  # the run's root: a path, or a URI on object storage
    tracking_uri: str | None
    run_id: str | None
    metrics: dict[str, Any]
    checkpoint_path: str | None
    diverged: bool
    already_finished: bool = False  # a resubmitted job whose run had finished: nothing ran
    quality: dict[str, float] = field(default_factory=dict)  # the final EMA model's figures (ebm_eval.quality)


RESUMABLE_CHANGES = {"train.iterations", "train.progress", "train.run_dir", "jobs.max_failures", "jobs.tracking_uri"}


def prepare(cfg: Config, *, resume: bool = False) -> tuple[Config, RunStorage]:
    """The run's storage and config, checked before any work: a new run's root must be empty; with ``resume`` a
    root that holds a run continues it, with the config it started with (only ``RESUMABLE_CHANGES`` may differ)."""
    storage = storage_for(cfg.jobs.storage_path, cfg.train.run_dir)
    check_writable(storage)
    if not storage.is_uri:  # absolute: workers do not share the driver's working directory
        cfg = cfg.override({"train.run_dir": str(storage.local_dir())})
    held = [n for n in storage.entries() if not n.startswith(".")]
    if not held:
        return cfg, storage
    job = storage.read_json(JOB_FILE)
    if not resume:
        shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
        raise ConfigError(f"run root {storage.uri} is not empty (it holds {shown}); choose a new run name, or continue "
                          f"the run there with --resume (nothing was overwritten)")
    if job is None:
        raise ConfigError(f"--resume: {storage.uri} holds files but no {JOB_FILE}, so it is not a run of this job; "
                          f"choose a new run name (nothing was overwritten)")
    stored = Config.from_dict(job["config"])
    changed = sorted(k for k, v in cfg.flat().items() if stored.flat().get(k) != v and k not in RESUMABLE_CHANGES)
    if changed:
        raise ConfigError(f"--resume: the run in {storage.uri} was started with another config ({', '.join(changed)} "
                          f"differ); resume it with the same flags, or start a new run (nothing was overwritten)")
    return cfg, storage


def record_job(storage: RunStorage, cfg: Config) -> None:
    """``job.json`` at a new run's root: its name, command line and config (what ``--resume`` checks against)."""
    if storage.read_json(JOB_FILE) is None:
        storage.write_json(JOB_FILE, {"name": storage.name, "command": sys.argv, "config": cfg.to_dict()})


def with_tracking_uri(cfg: Config) -> Config:
    """``$MLFLOW_TRACKING_URI`` written into the config: workers on other nodes do not see the driver's variables."""
    uri = cfg.jobs.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return cfg.override({"jobs.tracking_uri": uri}) if uri else cfg


def fit(cfg: Config, *, resume: bool = False, parent_run_id: str | None = None, tags: dict[str, str] | None = None,
        extra_callbacks: Callable[[int], list] | None = None, tune_report: bool = False) -> TrainResult:
    """Train ``cfg`` on Ray Train under its run root (``storage.py``); returns where everything went and the last
    reported metrics. With ``resume`` a root that holds this run continues from its latest checkpoint (Ray restores
    every worker's state, rank 0 reopens the MLflow run); a finished run is not trained again. ``tags`` go on the
    MLflow run (default: the source tags of this process's command line)."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .worker import train_loop_per_worker

    cfg, storage = prepare(with_tracking_uri(cfg), resume=resume)
    done = storage.read_json(TRACKING_FILE)
    if done and done["status"] == "FINISHED" and done["step"] >= cfg.train.iterations:
        return TrainResult(run_dir=storage.uri, tracking_uri=done["tracking_uri"], run_id=done["run_id"],
                           metrics={"step": done["step"]}, checkpoint_path=None, diverged=False, already_finished=True)
    init_ray(log_to_driver=True)  # $RAY_ADDRESS (set by `ray job submit`) or a private local Ray
    check_shared(storage)
    record_job(storage, cfg)
    prepare_judge(cfg, log=functools.partial(print, "ebm_jobs.train:"))  # cached where this node's workers find it
    j = cfg.jobs
    callbacks = []
    if tune_report:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "storage": {"root": storage.root, "name": storage.name},
                           "parent_run_id": parent_run_id, "tags": tags or source_tags(),
                           "extra_callbacks": extra_callbacks},
        scaling_config=ScalingConfig(num_workers=j.num_workers, use_gpu=j.use_gpu, placement_strategy=j.placement,
                                     resources_per_worker={"CPU": j.cpus_per_worker, **({"GPU": 1} if j.use_gpu else {})}),
        run_config=RunConfig(name=storage.name, storage_path=storage.root,  # the same root: Ray restores a resubmitted job
                             failure_config=FailureConfig(max_failures=j.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2), callbacks=callbacks),
    )
    result = trainer.fit()
    metrics = dict(result.metrics or {})
    tracking = storage.read_json(TRACKING_FILE) or {}
    return TrainResult(run_dir=storage.uri, tracking_uri=tracking.get("tracking_uri"), run_id=tracking.get("run_id"),
                       metrics=metrics, checkpoint_path=result.checkpoint.path if result.checkpoint else None,
                       diverged=bool(metrics.get("diverged")), quality=storage.read_json(QUALITY_FILE) or {})


def judge_accuracy(figures: dict[str, float]) -> dict[str, float]:
    """{'shape': 1.0, ...} from the ``judge/accuracy/<label>`` entries of quality figures."""
    return {k.removeprefix("judge/accuracy/"): v for k, v in figures.items() if k.startswith("judge/accuracy/")}


def default_run_name(cfg: Config) -> str:
    """``<preset>-<dataset>-<config hash>``: what the run is, in six hex digits for everything it sets."""
    params = json.dumps(config_params(cfg), sort_keys=True)
    return f"{cfg.preset}-{cfg.data.name}-{hashlib.sha256(params.encode()).hexdigest()[:6]}"


def run_dir_from_args(cfg: Config, args: argparse.Namespace) -> Path:
    """``--run-dir``, else ``<train.run_dir>/<--run-name>``, else a new ``<train.run_dir>/<default_run_name>``
    (``-2``, ``-3``, ... when a run of that config is already there).

    The last part is the run's name everywhere: its directory (or ``<jobs.storage_path>/<name>``), the Ray run
    and the MLflow run. Only a local default is created here; every root is checked in ``prepare``."""
    if args.run_dir and args.run_name:
        raise ConfigError("give --run-dir or --run-name, not both")
    if args.run_dir:
        return Path(args.run_dir).expanduser().resolve() if args.resume else check_new_run(args.run_dir)
    if args.run_name:
        if "/" in args.run_name or args.run_name in (".", ".."):
            raise ConfigError(f"--run-name {args.run_name!r}: a name, not a path")
        return Path(cfg.train.run_dir).expanduser().resolve() / args.run_name
    if args.resume:
        raise ConfigError("--resume continues a named run: give --run-name (or --run-dir)")
    name = default_run_name(cfg)
    if cfg.jobs.storage_path is not None:  # the run lives elsewhere: create nothing here
        taken = lambda n: bool(storage_for(cfg.jobs.storage_path, n).entries())  # noqa: E731
        return Path(cfg.train.run_dir) / next(n for n in numbered(name) if not taken(n))
    return new_named_dir(cfg.train.run_dir, name)


def config_from_mlflow(run_id: str, cfg: Config, overrides: list[str]) -> Config:
    """The config of the job behind an MLflow run (its ``run_root`` tag names the run's root) with the command
    line's ``overrides``, for ``--resume-run``; ``cfg`` (the command line's config) says where MLflow is."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    uri = cfg.jobs.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise ConfigError("--resume-run: say which tracking server holds the run (--set jobs.tracking_uri=... or "
                          "$MLFLOW_TRACKING_URI)")
    try:
        root = MlflowClient(uri).get_run(run_id).data.tags.get("run_root")
    except MlflowException as e:
        raise ConfigError(f"--resume-run {run_id}: no such run at {uri} ({str(e).splitlines()[0][:200]})") from None
    if not root:
        raise ConfigError(f"--resume-run {run_id}: the run has no run_root tag, so it was not started by this job")
    stored = RunStorage.at(root).read_json(JOB_FILE)
    if stored is None:
        raise ConfigError(f"--resume-run {run_id}: its root {root} holds no {JOB_FILE} (moved or deleted?)")
    return Config.from_dict(stored["config"]).override([*overrides, f"jobs.tracking_uri={uri}"])


def parser() -> argparse.ArgumentParser:
    """The flags of ``python -m ebm_jobs.train`` (the entry point of ``ray job submit`` and of the RayJob)."""
    p = argparse.ArgumentParser(prog="python -m ebm_jobs.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--run-name", help="the run's name: its directory under train.run_dir (or jobs.storage_path), the "
                                      "Ray run and the MLflow run (default: the date and time)")
    p.add_argument("--run-dir", help="the run's directory, on storage every node sees (instead of --run-name)")
    p.add_argument("--resume", action="store_true",
                   help="continue the named run from its latest checkpoint if it exists, else start it: the same "
                        "command can be submitted again (a KubeRay retry, a re-submit) without losing work")
    p.add_argument("--resume-run", metavar="MLFLOW_RUN_ID", help="continue the job behind this MLflow run")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = config_from_args(args)
        if args.resume_run:
            cfg = config_from_mlflow(args.resume_run, cfg, overrides_from_args(args))
            result = fit(cfg, resume=True)
        else:
            cfg = cfg.override({"train.run_dir": str(run_dir_from_args(cfg, args))})
            result = fit(cfg, resume=args.resume)
    except BaseException as e:
        return report_error("python -m ebm_jobs.train", e)
    print(f"ebm_jobs.train: run {result.run_dir}")
    if result.run_id:
        print(f"ebm_jobs.train: MLflow run {result.run_id} at {result.tracking_uri}")
        print(f"ebm_jobs.train: MLflow UI {ui_address(result.tracking_uri, result.run_id)}")
    if result.already_finished:
        print(f"ebm_jobs.train: the run had already finished at step {result.metrics['step']}; nothing to do")
        return 0
    if result.diverged:
        print(f"ebm_jobs.train: {result.metrics.get('error')}", file=sys.stderr)
        return 3
    print(f"ebm_jobs.train: final energy/diff {result.metrics.get('energy/diff'):.4f} at step {result.metrics.get('step')}")
    if result.quality:
        from ebm_eval.quality import HELD_OUT_SPLITS, summary_lines

        n, draws = result.quality.get("eval/num_samples", 0), result.quality.get("eval/quality_draws", 1)
        print(f"ebm_jobs.train: quality of {draws:.0f} draw{'s' * (draws != 1)} of {n:.0f} EMA samples beside "
              f"{HELD_OUT_SPLITS} held-out real splits of {n:.0f} images, the means of each (ebm_eval.quality); "
              f"judge test accuracy {judge_accuracy(result.quality)}")
        for line in summary_lines(result.quality):
            print(f"ebm_jobs.train:   {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
