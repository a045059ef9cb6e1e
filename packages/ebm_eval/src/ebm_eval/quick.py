"""A cheap quality figure for sweeps: domain FID of a few hundred EMA samples (never Inception FID)."""

from __future__ import annotations

from ebm_core.pipeline import generate
from ebm_core.trainer import Trainer

from .features import dataset_extractor, fid_to_data


def quick_quality(trainer: Trainer, *, n: int = 256) -> dict[str, float]:
    """{'eval/fid_domain': ...} for an unconditional trainer on a labelled dataset; {} otherwise."""
    cfg = trainer.cfg
    if cfg.model.num_classes:
        return {}
    ext = dataset_extractor(cfg.data, trainer.data)
    x = generate(trainer.ema.module, cfg, num_samples=n, channels=trainer.shape[0], device=trainer.device).cpu()
    return {"eval/fid_domain": fid_to_data(ext, x, trainer.data)}
