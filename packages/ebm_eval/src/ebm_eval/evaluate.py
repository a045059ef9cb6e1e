"""The measurement suite on one stored model: FID, KID and IS, OOD AUROC and compositional generation.

Sample quality follows the field's protocol by default (``paper``): 50 000 generated samples, IS over
10 splits of 5 000, reference statistics from the full training split (cached on disk by the
images' content hash), torch-fidelity's FID Inception when its weights file is present. Fewer
samples are allowed; FID is then biased upward (3 424 against a true 266 for 500 samples of two
2048-d Gaussians), so a warning is printed and kept with the result, and KID, unbiased at any
count, stands beside it. ``quality`` judges the first 1 000 samples with the dataset's own classifier
(``ebm_eval.quality``: recognisability, colour distance, precision/recall) beside held-out real splits of
the same size (their mean). Plain inputs (a model file, or a model and its config) and a typed result;
tables as Markdown and JSON and sample grids as PNG under ``out``. Where models come from (MLflow
URIs) and where results go back to is the jobs layer's business (``ebm_jobs.evaluate``).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ebm_core.callbacks import image_grid
from ebm_core.checkpoint import CheckpointError
from ebm_core.config import Config, ConfigError
from ebm_core.data import ImageSet, load_dataset
from ebm_core.pipeline import generate, load_model
from ebm_core.runs import new_run_dir
from ebm_core.trainer import resolve_device

from .features import Extractor, InceptionExtractor, cache_dir, dataset_extractor, find_inception_weights
from .metrics import feature_stats, frechet_distance, inception_score, kernel_distance

METRICS = ("fid", "is", "quality", "ood", "comp")  # fid also gives KID, from the same features
QUALITY_SAMPLES = 1_000  # of the generated samples, judged for ``quality`` (recognisability, colour, precision/recall)
PAPER_NUM_SAMPLES = 50_000  # the paper's (and the field's) FID/IS sample count
IS_SPLITS = 10
KID_REFERENCE = 10_000  # real features kept for KID (a random subset of the training split)
Log = Callable[[str], Any]


@dataclass
class Evaluation:
    """What one evaluation measured: metric name -> value (``eval/...``), and the files it wrote."""

    metrics: dict[str, float]
    out: Path
    files: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Reference:
    """Real-image features of a dataset's training split: statistics for FID, a subset for KID."""

    mu: np.ndarray
    sigma: np.ndarray
    subset: np.ndarray  # (min(N, KID_REFERENCE), D)
    n: int


def check_metrics(metrics: list[str]) -> None:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise ConfigError(f"--metrics: unknown {unknown}; choose from {list(METRICS)}")


def reference(extractor: Extractor, data: ImageSet, *, batch_size: int = 500, log: Log = print) -> Reference:
    """Features of every image in ``data`` (the training split), computed once and cached under
    ``cache_dir()`` by the images' content hash and the extractor."""
    digest = hashlib.sha256(data.images.numpy().tobytes()).hexdigest()[:20]
    path = cache_dir() / f"reference-{extractor.name}-{digest}.npz"
    if path.is_file():
        z = np.load(path)
        return Reference(z["mu"], z["sigma"], z["subset"], int(z["n"]))
    log(f"reference features of the {len(data)} training images (cached in {path})")
    feats = np.concatenate([extractor(data.images[i:i + batch_size].float() / 255).features.float().numpy()
                            for i in tqdm(range(0, len(data), batch_size), desc="reference features", leave=False)])
    mu, sigma = feature_stats(feats)
    subset = feats[np.random.default_rng(0).permutation(len(feats))[:KID_REFERENCE]]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, mu=mu, sigma=sigma, subset=subset, n=len(feats))
    return Reference(mu, sigma, subset, len(feats))


def make_extractor(cfg: Config, train: ImageSet, test: ImageSet, *, weights: str | None, allow_download: bool,
                   device: torch.device | str = "cpu", log: Log = print) -> Extractor:
    """Inception when its weights are found (or may be downloaded), else the dataset's domain classifier."""
    path = find_inception_weights(weights)
    if path is not None:
        return InceptionExtractor(path, device=device)
    if allow_download:
        from torch.hub import load_state_dict_from_url
        from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

        load_state_dict_from_url(URL_INCEPTION_V3, progress=True)
        return InceptionExtractor(find_inception_weights(), device=device)
    log("FID Inception weights not found (give --fid-weights PATH, set EBM_FID_WEIGHTS, or put "
        "weights-inception-2015-12-05-6726825d.pth in $TORCH_HOME/hub/checkpoints, or pass --allow-download); "
        "using a domain classifier instead: scores are reported as eval/fid_domain and eval/is_domain")
    ext = dataset_extractor(cfg.data, progress=True, log=log)
    log(f"domain classifier test accuracy per label: {ext.accuracies}")
    return ext.to(device)


def evaluate_file(path: Path, metrics: list[str], *, out: Path | None, ema: bool = True, sampler: dict[str, Any] | None = None,
                  **kwargs: Any) -> Evaluation:
    """``evaluate_model`` on a checkpoint or model export (EMA weights by default); ``sampler`` overrides
    ``generate.{steps, rounds, step_size, noise}``."""
    model, cfg = load_model(path, ema=ema)
    if sampler:
        cfg = cfg.override({f"generate.{k}": v for k, v in sampler.items() if v is not None})
    return evaluate_model(model, cfg, metrics, out=out, **kwargs)


def evaluate_model(model: nn.Module, cfg: Config, metrics: list[str], *, out: Path | None,
                   num_samples: int = PAPER_NUM_SAMPLES, batch_size: int = 256, device: str = "auto",
                   fid_weights: str | None = None, allow_download: bool = False, comp_iterations: int = 300,
                   comp_samples: int = 64, seed: int = 0, meta: dict[str, Any] | None = None,
                   log: Log = print) -> Evaluation:
    """Run the requested metrics on ``model`` (trained with ``cfg``); every check comes before any sampling.
    ``num_samples``: generated images for FID, KID and IS (the paper's 50 000 by default) and test images
    per OOD set. ``out``: where tables and grids go (None: a new ``runs/eval/<date-time>``, made after the
    checks). ``meta`` (e.g. which model) is recorded beside the metrics in ``eval.json``."""
    check_metrics(metrics)
    if num_samples < 2:
        raise ConfigError(f"--num-samples: expected at least 2, got {num_samples}")
    dev = resolve_device(device)
    if cfg.model.num_classes and "ood" in metrics:
        raise CheckpointError("a conditional model: ood scores log p(x) and needs an unconditional one (fid, is and "
                              "quality sample a conditional model with labels drawn from its training data)")
    if "comp" in metrics and cfg.data.name != "shapes":
        raise ConfigError("--metrics comp: compositional evaluation is defined on the embedded shapes data")
    train, test = load_dataset(cfg.data, split="train"), load_dataset(cfg.data, split="test")  # missing data fails here
    out = new_run_dir("runs/eval") if out is None else out
    out.mkdir(parents=True, exist_ok=True)
    model.requires_grad_(False).to(dev)
    results: dict[str, float] = {}
    warnings: list[str] = []
    torch.manual_seed(seed)
    channels = train.images.shape[1]

    sampled = "fid" in metrics or "is" in metrics or "quality" in metrics
    if sampled or "comp" in metrics:
        extractor = make_extractor(cfg, train, test, weights=fid_weights, allow_download=allow_download, device=dev,
                                   log=log)
    if sampled:
        if "quality" in metrics and extractor.metric_suffix:
            judge = extractor  # the domain classifier already is the dataset's judge
        elif "quality" in metrics:
            judge = dataset_extractor(cfg.data, progress=True, log=log).to(dev)
        feats, probs, kept = sample_features(model, cfg, extractor, n=num_samples, batch_size=batch_size,
                                             channels=channels, device=dev, grid=out / "samples.png",
                                             labels_from=train, log=log)
    if "fid" in metrics or "is" in metrics:
        if num_samples < PAPER_NUM_SAMPLES:
            warnings.append(f"FID and IS from {num_samples} samples, fewer than the paper's {PAPER_NUM_SAMPLES}: FID is "
                            f"biased upward and not comparable with published numbers (KID is unbiased at any count)")
            log(f"warning: {warnings[-1]}")
        sfx = extractor.metric_suffix
        results["eval/fid_num_samples"] = float(num_samples)
        if "fid" in metrics:
            ref = reference(extractor, train, log=log)
            results[f"eval/fid{sfx}"] = frechet_distance(*feature_stats(feats), ref.mu, ref.sigma)
            results[f"eval/kid{sfx}"], results[f"eval/kid{sfx}_std"] = kernel_distance(feats, ref.subset, seed=seed)
        if "is" in metrics:
            results[f"eval/is{sfx}"], results[f"eval/is{sfx}_std"] = inception_score(probs, splits=IS_SPLITS)

    if "quality" in metrics:
        from .quality import HELD_OUT_SPLITS, held_out_quality, quality, real_subset, summary_lines

        ref_images = real_subset(train)
        figures = {k: v for k, v in {**quality(judge, kept, ref_images, dataset=cfg.data.name),
                                     **held_out_quality(judge, ref_images, test, len(kept), dataset=cfg.data.name)}.items()
                   if not k.endswith("/fid_domain")}  # FID is the fid metric's, from every sample
        results.update(figures)
        results.update({f"judge/accuracy/{k}": v for k, v in judge.accuracies.items()})
        log(f"quality of {len(kept)} samples beside {len(kept)} held-out real images (mean of {HELD_OUT_SPLITS} "
            f"splits), by the {cfg.data.name} judge "
            f"(test accuracy {judge.accuracies}):\n" + "\n".join(summary_lines(figures)))

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
        table = ood_table(model.cpu(), x_in, sets)  # the OOD scores are computed on the CPU
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
            models[a] = load_model(ckpt)[0].requires_grad_(False)  # composition samples on the CPU
        rows, grids = composition_table(models, order, train, extractor.predict, cfg, n=comp_samples, seed=seed)
        (out / "composition.md").write_text(composition_markdown(rows, order) + "\n")
        (out / "composition.json").write_text(json.dumps(rows, indent=2))
        image_grid(torch.cat([g[:8] for g in grids]), out / "composition.png", nrow=8)
        for r in rows:
            results[f"eval/comp_acc/{'+'.join(r['attributes'])}"] = r["all"]
        log(composition_markdown(rows, order))

    (out / "eval.json").write_text(json.dumps({**(meta or {}), "metrics": results, "warnings": warnings}, indent=2))
    files = sorted(f for f in out.glob("*") if f.is_file() and f.suffix in (".md", ".json", ".png"))
    return Evaluation(metrics=results, out=out, files=files, warnings=warnings)


def sample_features(model: nn.Module, cfg: Config, extractor: Extractor, *, n: int, batch_size: int, channels: int,
                    device: torch.device, grid: Path, keep: int = QUALITY_SAMPLES, labels_from: ImageSet | None = None,
                    log: Log = print) -> tuple[np.ndarray, np.ndarray, torch.Tensor]:
    """Generate ``n`` samples (Algorithm 2, in batches) and keep their features and class probabilities, and the
    first ``keep`` images themselves (on the CPU); the first 64 samples go to ``grid``. A conditional model is
    sampled with label rows drawn from ``labels_from`` (``draw_labels``)."""
    g = cfg.generate
    log(f"sampling {n} images on {device} (Algorithm 2: {g.rounds} rounds x {g.steps} steps, batches of {batch_size})")
    feats, probs, kept = [], [], []
    with tqdm(total=n, desc="generating", unit="img") as bar:
        for i in range(0, n, batch_size):
            x = generate(model, cfg, num_samples=min(batch_size, n - i), labels_from=labels_from, channels=channels,
                         device=device)
            if i == 0:
                image_grid(x[:64].cpu(), grid)
            if sum(map(len, kept)) < keep:
                kept.append(x[:keep - sum(map(len, kept))].cpu())
            e = extractor(x)
            feats.append(e.features.float().numpy())
            probs.append(e.probs.numpy())
            bar.update(len(x))
    return np.concatenate(feats), np.concatenate(probs), torch.cat(kept)
