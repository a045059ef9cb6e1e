"""Evaluation jobs on stored models: ``ebm eval`` and ``python -m ebm_jobs.evaluate`` (for ``ray job submit``).

    ebm eval --model runs/demo/<name>/checkpoints/step_0001000.pt --metrics fid,is,quality,ood
    ebm eval --model runs:/<run id>/model --metrics fid,is,ood,comp --tracking-uri http://127.0.0.1:5000
    ray job submit --address http://127.0.0.1:8265 --runtime-env infra/runtime_env.yaml -- python -m ebm_jobs.evaluate --model <MODEL> ...

MODEL is a checkpoint or model-export path, an MLflow run id, or an MLflow model URI (``runs:/...``,
``models:/name/version``). Everything is checked before any sampling starts. The measurements are
``ebm_eval.evaluate``'s; this layer fetches the model from MLflow and, for models that come from
MLflow, logs the results back to their run (metrics under ``eval/...``, tables as artifacts).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from ebm_core.checkpoint import CheckpointError
from ebm_core.config import ConfigError
from ebm_eval.evaluate import Evaluation, check_metrics, evaluate_file

from .arguments import add_eval_arguments, module_main

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class ResolvedModel:
    path: Path
    run_id: str | None  # the MLflow run to log results back to
    tracking_uri: str | None
    model_id: str | None = None  # the logged model the results are linked to (MLflow 3's model page shows them)


@contextmanager
def resolve_model(model: str, *, tracking_uri: str | None = None) -> Iterator[ResolvedModel]:
    """MODEL as a local model file for the duration of the block (MLflow artifacts go to a temporary
    directory that is removed afterwards)."""
    p = Path(model).expanduser()
    if p.is_file():
        yield ResolvedModel(p, None, None)
        return
    if RUN_ID.match(model):
        model = f"runs:/{model}/model"
    if not model.startswith(("runs:/", "models:/")):
        raise ConfigError(f"--model {model!r}: expected an existing checkpoint path, an MLflow run id (32 hex digits), "
                          "or an MLflow model URI (runs:/<run id>/model, models:/<name>/<version>, models:/<name>@<alias>)")
    import mlflow

    from .tracking import fluent_tracking_uri, server_reachable

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:  # MLflow's own default would create ./mlflow.db here
        raise ConfigError(f"--model {model}: an MLflow model; say where it is stored with --tracking-uri "
                          "(or $MLFLOW_TRACKING_URI)")
    if not server_reachable(uri):  # checked once, quickly: MLflow's client retries for minutes
        raise ConfigError(f"--tracking-uri {uri}: no MLflow server answers there (no reply to /health within 3 s)")
    with tempfile.TemporaryDirectory(prefix="ebm-eval-") as tmp:
        try:  # MLflow 3 resolves runs:/<id>/model to the logged model only through the fluent API
            with fluent_tracking_uri(uri):
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=tmp))
                info = mlflow.models.get_model_info(model)
        except Exception as e:
            raise ConfigError(f"--model {model}: could not be fetched from MLflow at {uri} ({e})") from e
        found = sorted(local.rglob("model.pt"))
        if not found:
            raise CheckpointError(f"--model {model}: the MLflow model holds no ebm_core model export "
                                  "(artifacts/model.pt); was it logged by ebm_jobs?")
        yield ResolvedModel(found[0], info.run_id, uri, info.model_id)


def evaluate(model_arg: str, metrics: list[str], *, out: Path | None, tracking_uri: str | None = None,
             ema: bool = True, sampler: dict[str, Any] | None = None, **kwargs: Any) -> Evaluation:
    """Fetch MODEL, measure it (``ebm_eval.evaluate.evaluate_model`` keywords), log back; returns what it measured."""
    check_metrics(metrics)
    with resolve_model(model_arg, tracking_uri=tracking_uri) as resolved:
        try:
            result = evaluate_file(resolved.path, metrics, out=out, ema=ema, sampler=sampler,
                                   meta={"model": model_arg}, **kwargs)
        except CheckpointError as e:
            raise CheckpointError(f"--model {model_arg}: {e}") from e
    if resolved.run_id:
        log_back(resolved, result)
        from .tracking import ui_address

        print(f"ebm eval: results logged to the model's run; MLflow UI {ui_address(resolved.tracking_uri, resolved.run_id)}")
    return result


def log_back(resolved: ResolvedModel, result: Evaluation) -> None:
    """Metrics under eval/... and the tables as artifacts, on the model's own MLflow run."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(resolved.tracking_uri)
    ts = int(time.time() * 1000)
    client.log_batch(resolved.run_id, metrics=[Metric(k, float(v), ts, 0, model_id=resolved.model_id)
                                               for k, v in result.metrics.items()])
    for f in result.files:
        client.log_artifact(resolved.run_id, str(f), "eval")


def run_from_args(args: argparse.Namespace) -> int:
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    result = evaluate(args.model, metrics, out=Path(args.out) if args.out else None,
                       num_samples=args.num_samples, batch_size=args.batch_size, device=args.device, ema=not args.no_ema,
                       tracking_uri=args.tracking_uri, fid_weights=args.fid_weights,
                       allow_download=args.allow_download,
                       sampler={"steps": args.steps, "rounds": args.rounds, "step_size": args.step_size, "noise": args.noise},
                       comp_iterations=args.comp_iterations, seed=args.seed)
    for k, v in result.metrics.items():
        print(f"{k:32s} {v:.4f}")
    print(f"ebm eval: tables and grids in {result.out.resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return module_main(argv, prog="python -m ebm_jobs.evaluate", doc=__doc__, add_arguments=add_eval_arguments,
                       run=run_from_args)


if __name__ == "__main__":
    sys.exit(main())
