"""A cheap quality figure for sweeps: domain FID of a few hundred EMA samples (never Inception FID)."""

from __future__ import annotations

import torch

from ebm_core.data import load_dataset
from ebm_core.pipeline import generate
from ebm_core.trainer import Trainer

from .features import domain_extractor
from .metrics import feature_stats, frechet_distance


def quick_quality(trainer: Trainer, *, n: int = 256) -> dict[str, float]:
    """{'eval/fid_domain': ...} for an unconditional trainer on a labelled dataset; {} otherwise."""
    cfg = trainer.cfg
    if cfg.model.num_classes:
        return {}
    test = load_dataset(cfg.data, split="test")
    d = cfg.data
    ext = domain_extractor(trainer.data, test, key=f"{d.name}-{d.resolution}px-seed{d.seed}-n{len(trainer.data)}",
                           progress=False)
    x = generate(trainer.ema.module, cfg, num_samples=n, channels=trainer.shape[0], device=trainer.device).cpu()
    real = trainer.data.images[torch.randperm(len(trainer.data))[: max(n, 1000)]].float() / 255
    fid = frechet_distance(*feature_stats(ext(x).features.numpy()), *feature_stats(ext(real).features.numpy()))
    return {"eval/fid_domain": fid}
