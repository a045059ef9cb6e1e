"""Evaluation jobs on stored models: FID/IS, OOD AUROC and compositional generation.

    ebm eval --model runs/demo/<time>/checkpoints/step_0000450.pt --metrics fid,is,ood
    ebm eval --model runs:/<run id>/model --metrics fid,is,ood,comp --tracking-uri http://127.0.0.1:5000
    ray job submit --address http://127.0.0.1:8265 --working-dir . -- python -m ebm_eval.job --model <MODEL> ...

MODEL is a checkpoint or model-export path, an MLflow run id, or an MLflow model URI (``runs:/...``,
``models:/name/version``). Everything is checked before any sampling starts. Results are printed,
written under ``--out`` (tables as Markdown and JSON, sample grids as PNG) and, for models that
come from MLflow, logged back to their run (metrics under ``eval/...``, tables as artifacts).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ebm_core.callbacks import image_grid
from ebm_core.checkpoint import CheckpointError
from ebm_core.config import Config, ConfigError
from ebm_core.data import DatasetError, ImageSet, load_dataset
from ebm_core.pipeline import generate, load_model

from .commands import add_arguments
from .features import Extractor, InceptionExtractor, WeightsError, cache_dir, domain_extractor, find_inception_weights
from .metrics import feature_stats, frechet_distance, inception_score

METRICS = ("fid", "is", "ood", "comp")
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


@dataclass
class ResolvedModel:
    path: Path
    run_id: str | None  # the MLflow run to log results back to
    tracking_uri: str | None


def resolve_model(model: str, *, tracking_uri: str | None = None) -> ResolvedModel:
    """Turn MODEL into a local model file (downloading MLflow artifacts from the tracking store)."""
    p = Path(model).expanduser()
    if p.is_file():
        return ResolvedModel(p, None, None)
    if RUN_ID.match(model):
        model = f"runs:/{model}/model"
    if not model.startswith(("runs:/", "models:/")):
        raise ConfigError(f"--model {model!r}: expected an existing checkpoint path, an MLflow run id (32 hex digits), "
                          "or an MLflow model URI (runs:/<run id>/model, models:/<name>/<version>)")
    import mlflow

    from ebm_jobs.tracking import fluent_tracking_uri

    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
    try:  # MLflow 3 resolves runs:/<id>/model to the logged model only through the fluent API
        with fluent_tracking_uri(uri):
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model,
                                                             dst_path=tempfile.mkdtemp(prefix="ebm-eval-")))
            run_id = mlflow.models.get_model_info(model).run_id
    except Exception as e:
        raise ConfigError(f"--model {model}: could not be fetched from MLflow at {uri} ({e})") from e
    found = sorted(local.rglob("model.pt"))
    if not found:
        raise CheckpointError(f"--model {model}: the MLflow model holds no ebm_core model export (artifacts/model.pt); "
                              "was it logged by ebm_jobs?")
    return ResolvedModel(found[0], run_id, uri)


def reference_stats(extractor: Extractor, data: ImageSet, cfg: Config, split: str, *, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Feature statistics of real images, computed once and cached by dataset, split, resolution and extractor."""
    key = f"stats-{cfg.data.name}-{split}-{cfg.data.resolution}px-seed{cfg.data.seed}-n{n}-{extractor.name}.npz"
    path = cache_dir() / key
    if path.is_file():
        z = np.load(path)
        return z["mu"], z["sigma"]
    mu, sigma = feature_stats(extractor(data.images[:n].float() / 255).features.numpy())
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=mu, sigma=sigma)
    return mu, sigma


def make_extractor(cfg: Config, train: ImageSet, test: ImageSet, *, weights: str | None, allow_download: bool,
                   log: Any = print) -> Extractor:
    """Inception when its weights are found (or may be downloaded), else the dataset's domain classifier."""
    path = find_inception_weights(weights)
    if path is not None:
        return InceptionExtractor(path)
    if allow_download:
        from torch.hub import load_state_dict_from_url
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

        load_state_dict_from_url(URL_INCEPTION_V3, progress=True)
        return InceptionExtractor(find_inception_weights())
    d = cfg.data
    key = f"{d.name}-{d.resolution}px-seed{d.seed}-n{len(train)}"
    log("FID Inception weights not found (give --fid-weights PATH, set EBM_FID_WEIGHTS, or put "
        "weights-inception-2015-12-05-6726825d.pth in $TORCH_HOME/hub/checkpoints, or pass --allow-download); "
        "using a domain classifier instead: scores are reported as eval/fid_domain and eval/is_domain")
    ext = domain_extractor(train, test, key=key)
    log(f"domain classifier test accuracy per label: {dict(zip(train.label_names, [round(a, 3) for a in ext.accuracy]))}")
    return ext


def evaluate(model_arg: str, metrics: list[str], *, out: Path, num_samples: int = 500, batch_size: int = 256,
             ema: bool = True, tracking_uri: str | None = None,
             fid_weights: str | None = None, allow_download: bool = False, sampler: dict[str, Any] | None = None,
             comp_iterations: int = 300, comp_samples: int = 64, seed: int = 0, log: Any = print) -> dict[str, Any]:
    """Run the requested metrics on a stored model; returns {metric name: value} and writes the tables."""
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"--metrics: unknown {unknown}; choose from {list(METRICS)}")
    resolved = resolve_model(model_arg, tracking_uri=tracking_uri)
    model, cfg = load_model(resolved.path, ema=ema)
    if sampler:
        cfg = cfg.override({f"generate.{k}": v for k, v in sampler.items() if v is not None})
    if cfg.model.num_classes and any(m in metrics for m in ("fid", "is", "ood")):
        raise CheckpointError(f"--model {model_arg}: a conditional model; fid, is and ood need an unconditional one")
    if "comp" in metrics and cfg.data.name != "shapes":
        raise ConfigError("--metrics comp: compositional evaluation is defined on the embedded shapes data")
    train, test = load_dataset(cfg.data, split="train"), load_dataset(cfg.data, split="test")  # missing data fails here
    out.mkdir(parents=True, exist_ok=True)
    for p in model.parameters():
        p.requires_grad_(False)
    results: dict[str, Any] = {}
    torch.manual_seed(seed)
    channels = train.images.shape[1]

    if "fid" in metrics or "is" in metrics or "comp" in metrics:
        extractor = make_extractor(cfg, train, test, weights=fid_weights, allow_download=allow_download, log=log)
    if "fid" in metrics or "is" in metrics:
        log(f"sampling {num_samples} images (Algorithm 2: {cfg.generate.rounds} rounds x {cfg.generate.steps} steps, "
            f"{'EMA' if ema else 'raw'} weights)")
        x = torch.cat([generate(model, cfg, num_samples=min(batch_size, num_samples - i), channels=channels, progress=True)
                       for i in range(0, num_samples, batch_size)])
        image_grid(x[:64], out / "samples.png")
        feats = extractor(x)
        sfx = extractor.metric_suffix
        if "fid" in metrics:
            mu, sigma = reference_stats(extractor, train, cfg, "train", n=min(len(train), 10_000))
            results[f"eval/fid{sfx}"] = frechet_distance(*feature_stats(feats.features.numpy()), mu, sigma)
        if "is" in metrics:
            results[f"eval/is{sfx}"], results[f"eval/is{sfx}_std"] = inception_score(feats.probs.numpy())

    if "ood" in metrics:
        from .ood import cifar10_ood_sets, embedded_ood_sets, ood_markdown, ood_table

        n = min(len(test), num_samples)
        x_in = test.images[:n].float() / 255
        if cfg.data.name == "cifar10":
            roots = {k: os.environ.get(f"EBM_{k.upper()}_ROOT") for k in ("svhn", "textures", "cifar100")}
            sets, skipped = cifar10_ood_sets(cfg, x_in, n=n, roots=roots)
            for s in skipped:
                log(f"OOD set skipped: {s}")
        else:
            sets = embedded_ood_sets(x_in, res=cfg.data.resolution, channels=channels, n=n, seed=seed)
        table = ood_table(model, x_in, sets)
        (out / "ood.md").write_text(ood_markdown(table) + "\n")
        (out / "ood.json").write_text(json.dumps(table, indent=2))
        for name, row in table.items():
            results[f"eval/ood_auroc/{name}"] = row["energy"]
            results[f"eval/ood_auroc_grad/{name}"] = row["grad_norm"]
        log(ood_markdown(table))

    if "comp" in metrics:
        from .composition import composition_markdown, composition_table, train_attribute_model

        order = ["shape", "colour", "size", "x"]
        models = {}
        for a in order:
            ckpt = train_attribute_model(cfg.override({"train.iterations": comp_iterations,
                                                       "train.checkpoint_every": comp_iterations}),
                                         train, a, out / "attribute_models" / a)
            models[a] = load_model(ckpt)[0]
            for p in models[a].parameters():
                p.requires_grad_(False)
        rows, grids = composition_table(models, order, train, extractor.predict, cfg, n=comp_samples, seed=seed)
        (out / "composition.md").write_text(composition_markdown(rows, order) + "\n")
        (out / "composition.json").write_text(json.dumps(rows, indent=2))
        image_grid(torch.cat([g[:8] for g in grids]), out / "composition.png", nrow=8)
        for r in rows:
            results[f"eval/comp_acc/{'+'.join(r['attributes'])}"] = r["all"]
        log(composition_markdown(rows, order))

    (out / "eval.json").write_text(json.dumps({"model": model_arg, "metrics": results}, indent=2))
    if resolved.run_id:
        _log_back(resolved, results, out)
    return results


def _log_back(resolved: ResolvedModel, results: dict[str, float], out: Path) -> None:
    """Metrics under eval/... and the tables as artifacts, on the model's own MLflow run."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(resolved.tracking_uri)
    ts = int(time.time() * 1000)
    client.log_batch(resolved.run_id, metrics=[Metric(k, float(v), ts, 0) for k, v in results.items()])
    for f in sorted(out.glob("*")):
        if f.is_file() and f.suffix in (".md", ".json", ".png"):
            client.log_artifact(resolved.run_id, str(f), "eval")


def run_from_args(args: argparse.Namespace) -> int:
    out = Path(args.out or f"runs/eval/{time.strftime('%Y%m%d-%H%M%S')}")
    results = evaluate(args.model, [m.strip() for m in args.metrics.split(",") if m.strip()], out=out,
                       num_samples=args.num_samples, batch_size=args.batch_size, ema=not args.no_ema,
                       tracking_uri=args.tracking_uri, fid_weights=args.fid_weights,
                       allow_download=args.allow_download,
                       sampler={"steps": args.steps, "rounds": args.rounds, "step_size": args.step_size, "noise": args.noise},
                       comp_iterations=args.comp_iterations, seed=args.seed)
    for k, v in results.items():
        print(f"{k:32s} {v:.4f}")
    print(f"ebm eval: tables and grids in {out.resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ebm_eval.job", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    try:
        return run_from_args(p.parse_args(argv))
    except (ConfigError, CheckpointError, DatasetError, WeightsError) as e:
        print(f"ebm_eval.job: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
