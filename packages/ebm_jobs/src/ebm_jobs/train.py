"""Distributed training on Ray Train, recorded in MLflow; the entry point of ``ray job submit``.

    python -m ebm_jobs.train --preset demo --set jobs.num_workers=2
    ray job submit --address http://127.0.0.1:8265 --runtime-env infra/runtime_env.yaml -- python -m ebm_jobs.train --preset demo

The driver checks the config, the run directory and the storage path, creates the MLflow run,
then fits a ``TorchTrainer`` whose workers run ``worker.train_loop_per_worker``. With
``jobs.max_failures`` > 0 a dead worker restarts the group from the latest checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from ebm_core.cli import report_error  # noqa: E402
from ebm_core.config import Config, ConfigError  # noqa: E402
from ebm_core.runs import add_config_args, check_new_run, config_from_args, run_dir_for  # noqa: E402

from .cluster import init_ray  # noqa: E402
from .tracking import start_run  # noqa: E402


@dataclass
class TrainResult:
    run_dir: Path
    tracking_uri: str
    run_id: str
    metrics: dict[str, Any]
    checkpoint_path: str | None
    diverged: bool


def storage_path(cfg: Config) -> str:
    """Ray's storage: absolute local directory (created) or a URI (s3://, gs://, ...); checked before Ray starts."""
    raw = cfg.jobs.storage_path or str(Path(cfg.train.run_dir) / "ray_results")
    if "://" in raw:
        return raw
    path = Path(raw).expanduser().resolve()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"jobs.storage_path: cannot create {path} ({e.strerror})") from e
    if not os.access(path, os.W_OK):
        raise ConfigError(f"jobs.storage_path: {path} is not writable")
    return str(path)


def prepare(cfg: Config) -> Config:
    """Absolute run directory (workers do not share the driver's working directory); never written over a run."""
    return cfg.override({"train.run_dir": str(check_new_run(cfg.train.run_dir))})


def fit(cfg: Config, *, run_name: str | None = None, parent_run_id: str | None = None,
        extra_callbacks: Callable[[int], list] | None = None, tune_report: bool = False) -> TrainResult:
    """Train ``cfg`` on Ray Train; returns where everything went and the last reported metrics."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from .worker import train_loop_per_worker

    cfg = prepare(cfg)
    storage = storage_path(cfg)
    uri, run_id = start_run(cfg, run_name=run_name, parent_run_id=parent_run_id)
    init_ray(log_to_driver=True)  # $RAY_ADDRESS (set by `ray job submit`) or a private local Ray
    j = cfg.jobs
    callbacks = []
    if tune_report:
        from ray.tune.integration.ray_train import TuneReportCallback

        callbacks.append(TuneReportCallback())
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"config": cfg.to_dict(), "tracking_uri": uri, "run_id": run_id,
                           "extra_callbacks": extra_callbacks},
        scaling_config=ScalingConfig(num_workers=j.num_workers, use_gpu=j.use_gpu,
                                     resources_per_worker={"CPU": j.cpus_per_worker, **({"GPU": 1} if j.use_gpu else {})}),
        run_config=RunConfig(name=run_name or f"ebm-{cfg.preset}-{Path(cfg.train.run_dir).name}", storage_path=storage,
                             failure_config=FailureConfig(max_failures=j.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2), callbacks=callbacks),
    )
    result = trainer.fit()
    metrics = dict(result.metrics or {})
    return TrainResult(run_dir=Path(cfg.train.run_dir), tracking_uri=uri, run_id=run_id, metrics=metrics,
                       checkpoint_path=result.checkpoint.path if result.checkpoint else None,
                       diverged=bool(metrics.get("diverged")))


def ui_address(uri: str, run_id: str) -> str:
    """Where to look at a run: its page on a tracking server, or how to open a local store."""
    if not uri.startswith("http"):
        return f"run `mlflow ui --backend-store-uri {uri}`, then open http://127.0.0.1:5000"
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(uri).get_run(run_id).info.experiment_id
    return f"{uri.rstrip('/')}/#/experiments/{exp}/runs/{run_id}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ebm_jobs.train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(p)
    p.add_argument("--run-dir", help="a new or empty directory, on storage every node sees "
                                     "(default: <train.run_dir>/<date-time>)")
    args = p.parse_args(argv)
    try:
        cfg = config_from_args(args)
        cfg = cfg.override({"train.run_dir": str(run_dir_for(cfg, args.run_dir))})
        result = fit(cfg)
    except BaseException as e:
        return report_error("python -m ebm_jobs.train", e)
    print(f"ebm_jobs.train: run directory {result.run_dir}")
    print(f"ebm_jobs.train: MLflow run {result.run_id} at {result.tracking_uri}")
    print(f"ebm_jobs.train: MLflow UI {ui_address(result.tracking_uri, result.run_id)}")
    if result.diverged:
        print(f"ebm_jobs.train: {result.metrics.get('error')}", file=sys.stderr)
        return 3
    print(f"ebm_jobs.train: final energy/diff {result.metrics.get('energy/diff'):.4f} at step {result.metrics.get('step')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
