"""The quality figures of a model while it trains, for sweeps and the end of a run: ``quality`` of a few
hundred EMA samples (the mean over ``jobs.quality_draws`` such draws) beside held-out real splits of the same size
(never Inception FID)."""

from __future__ import annotations

from typing import Any, Callable

from ebm_core.config import Config

from ebm_core.data import load_dataset
from ebm_core.pipeline import generate
from ebm_core.trainer import Trainer

from .features import dataset_extractor
from .quality import held_out_quality, mean_figures, quality, real_subset


def quick_quality(trainer: Trainer, *, n: int | None = None, draws: int | None = None) -> dict[str, float]:
    """``eval/*`` figures of ``n`` EMA samples against 1 000 training images, each the mean over ``draws``
    independent draws of ``n``, and ``real/*`` of ``n`` test images (the mean over held-out splits), plus the
    judge's test accuracy per label (``judge/accuracy/<label>``), for a trainer on a labelled dataset; {} when
    ``n`` < 2. ``n`` and ``draws``: ``jobs.quality_samples`` and ``jobs.quality_draws`` by default. A conditional
    model's samples are drawn with label rows of the training data (``draw_labels``); the judge never sees them."""
    cfg = trainer.cfg
    n = cfg.jobs.quality_samples if n is None else n
    draws = cfg.jobs.quality_draws if draws is None else draws
    if n < 2:
        return {}
    judge = dataset_extractor(cfg.data)
    reference = real_subset(trainer.data)
    figures = mean_figures([
        quality(judge, generate(trainer.ema.module, cfg, num_samples=n, labels_from=trainer.data,
                                channels=trainer.shape[0], device=trainer.device).cpu(), reference, dataset=cfg.data.name)
        for _ in range(draws)])
    real = held_out_quality(judge, reference, load_dataset(cfg.data, split="test"), n, dataset=cfg.data.name)
    return {**figures, **real, "eval/num_samples": float(n), "eval/quality_draws": float(draws),
            **{f"judge/accuracy/{k}": v for k, v in judge.accuracies.items()}}


def prepare_judge(cfg: Config, *, log: Callable[[str], Any] = print) -> None:
    """Train (or find cached) the judge ``quick_quality`` will need, here and now with every core and a progress
    bar, instead of silently inside a one-thread worker; a no-op when no quality figures will be asked for."""
    if cfg.jobs.quality_samples:
        dataset_extractor(cfg.data, progress=True, log=log)
