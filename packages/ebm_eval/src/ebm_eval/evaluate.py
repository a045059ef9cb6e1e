"""The measurement suite on one stored model: FID/IS, OOD AUROC and compositional generation.

Plain inputs (a model file, or a model and its config) and a typed result; tables as Markdown and
JSON and sample grids as PNG under ``out``. Where models come from (MLflow URIs) and where results
go back to is the jobs layer's business (``ebm_jobs.evaluate``, the ``ebm eval`` command).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ebm_core.callbacks import image_grid
from ebm_core.checkpoint import CheckpointError
from ebm_core.config import Config, ConfigError
from ebm_core.data import ImageSet, load_dataset
from ebm_core.pipeline import generate, load_model

from .features import Extractor, InceptionExtractor, cache_dir, dataset_extractor, find_inception_weights
from .metrics import feature_stats, frechet_distance, inception_score

METRICS = ("fid", "is", "ood", "comp")
Log = Callable[[str], Any]


@dataclass
class Evaluation:
    """What one evaluation measured: metric name -> value (``eval/...``), and the files it wrote."""

    metrics: dict[str, float]
    out: Path
    files: list[Path] = field(default_factory=list)


def check_metrics(metrics: list[str]) -> None:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"--metrics: unknown {unknown}; choose from {list(METRICS)}")


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
                   log: Log = print) -> Extractor:
    """Inception when its weights are found (or may be downloaded), else the dataset's domain classifier."""
    path = find_inception_weights(weights)
    if path is not None:
        return InceptionExtractor(path)
    if allow_download:
        from torch.hub import load_state_dict_from_url
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

        load_state_dict_from_url(URL_INCEPTION_V3, progress=True)
        return InceptionExtractor(find_inception_weights())
    log("FID Inception weights not found (give --fid-weights PATH, set EBM_FID_WEIGHTS, or put "
        "weights-inception-2015-12-05-6726825d.pth in $TORCH_HOME/hub/checkpoints, or pass --allow-download); "
        "using a domain classifier instead: scores are reported as eval/fid_domain and eval/is_domain")
    ext = dataset_extractor(cfg.data, train, test=test, progress=True)
    log(f"domain classifier test accuracy per label: {dict(zip(train.label_names, [round(a, 3) for a in ext.accuracy]))}")
    return ext


def evaluate_file(path: Path, metrics: list[str], *, out: Path, ema: bool = True, sampler: dict[str, Any] | None = None,
                  **kwargs: Any) -> Evaluation:
    """``evaluate_model`` on a checkpoint or model export (EMA weights by default); ``sampler`` overrides
    ``generate.{steps, rounds, step_size, noise}``."""
    model, cfg = load_model(path, ema=ema)
    if sampler:
        cfg = cfg.override({f"generate.{k}": v for k, v in sampler.items() if v is not None})
    return evaluate_model(model, cfg, metrics, out=out, **kwargs)


def evaluate_model(model: nn.Module, cfg: Config, metrics: list[str], *, out: Path, num_samples: int = 500,
                   batch_size: int = 256, fid_weights: str | None = None, allow_download: bool = False,
                   comp_iterations: int = 300, comp_samples: int = 64, seed: int = 0, meta: dict[str, Any] | None = None,
                   log: Log = print) -> Evaluation:
    """Run the requested metrics on ``model`` (trained with ``cfg``); every check comes before any sampling.
    ``meta`` (e.g. which model) is recorded beside the metrics in ``eval.json``."""
    check_metrics(metrics)
    if cfg.model.num_classes and any(m in metrics for m in ("fid", "is", "ood")):
        raise CheckpointError("a conditional model: fid, is and ood need an unconditional one")
    if "comp" in metrics and cfg.data.name != "shapes":
        raise ConfigError("--metrics comp: compositional evaluation is defined on the embedded shapes data")
    train, test = load_dataset(cfg.data, split="train"), load_dataset(cfg.data, split="test")  # missing data fails here
    out.mkdir(parents=True, exist_ok=True)
    model.requires_grad_(False)
    results: dict[str, float] = {}
    torch.manual_seed(seed)
    channels = train.images.shape[1]

    if "fid" in metrics or "is" in metrics or "comp" in metrics:
        extractor = make_extractor(cfg, train, test, weights=fid_weights, allow_download=allow_download, log=log)
    if "fid" in metrics or "is" in metrics:
        g = cfg.generate
        log(f"sampling {num_samples} images (Algorithm 2: {g.rounds} rounds x {g.steps} steps)")
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
            models[a] = load_model(ckpt)[0].requires_grad_(False)
        rows, grids = composition_table(models, order, train, extractor.predict, cfg, n=comp_samples, seed=seed)
        (out / "composition.md").write_text(composition_markdown(rows, order) + "\n")
        (out / "composition.json").write_text(json.dumps(rows, indent=2))
        image_grid(torch.cat([g[:8] for g in grids]), out / "composition.png", nrow=8)
        for r in rows:
            results[f"eval/comp_acc/{'+'.join(r['attributes'])}"] = r["all"]
        log(composition_markdown(rows, order))

    (out / "eval.json").write_text(json.dumps({**(meta or {}), "metrics": results}, indent=2))
    files = sorted(f for f in out.glob("*") if f.is_file() and f.suffix in (".md", ".json", ".png"))
    return Evaluation(metrics=results, out=out, files=files)
