"""Generation from a trained model (Algorithm 2) and loading models from checkpoints.

The pipeline ties a model, the augmentation transition and the sampler together, the way a
diffusers pipeline ties a network to a scheduler; none of the three knows of the others.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .augment import Augment
from .checkpoint import FORMAT, MODEL_FORMAT, CheckpointError, load_checkpoint, save_checkpoint
from .config import Config, ConfigError
from .data import ImageSet
from .langevin import sample
from .models import build_model


def algorithm2(cfg: Config) -> dict[str, Any]:
    """Algorithm 2's sampler settings: ``cfg.generate``, with the training sampler's step size and noise
    where it leaves them unset; keyword arguments for ``langevin.sample``."""
    g = cfg.generate
    return {"rounds": g.rounds, "steps": g.steps, "step_size": g.step_size or cfg.sampler.step_size,
            "noise": cfg.sampler.noise if g.noise is None else g.noise, "settle_rounds": g.settle_rounds}


def transitions(cfg: Config, *, channels: int = 3) -> Augment:
    """Algorithm 2's transitions D(x): the training augmentation, with ``generate.crop_scale`` for its crops where set."""
    aug = cfg.augment
    if cfg.generate.crop_scale is not None:
        aug = dataclasses.replace(aug, crop_scale=cfg.generate.crop_scale)
    return Augment(aug, resolution=cfg.data.resolution, channels=channels)


def generate(model: nn.Module, cfg: Config, *, num_samples: int | None = None, labels: Tensor | None = None,
             labels_from: ImageSet | None = None, channels: int = 3, device: str | torch.device = "cpu",
             chain: list[Tensor] | None = None, progress: bool = False) -> Tensor:
    """Algorithm 2 with ``cfg.generate`` settings: from U(0, 1), N rounds of (augment, K steps), then settle.

    A conditional model (``cfg.model.num_classes``) is sampled with ``labels``, or else with label rows drawn from
    ``labels_from`` (``draw_labels``); an unconditional one ignores both. With ``chain`` a list, the state after
    every round is appended to it (sampling-chain pictures).
    """
    n = num_samples or cfg.generate.num_samples
    if not cfg.model.num_classes:
        labels = None
    elif labels is None:
        if labels_from is None:
            raise ConfigError("generate: a conditional model needs labels, or labels_from to draw them from")
        labels = draw_labels(labels_from, n, device=device)
    R = cfg.data.resolution
    x0 = torch.rand((n, channels, R, R), device=device)
    augment = transitions(cfg, channels=channels)
    was_training = model.training
    model.eval()
    try:
        return sample(lambda x: model(x, labels), x0, **algorithm2(cfg),
                      transition=augment if cfg.augment.enabled else None,
                      on_round=(lambda _, x: chain.append(x.cpu())) if chain is not None else None, progress=progress)
    finally:
        model.train(was_training)


def draw_labels(data: ImageSet, n: int, *, device: str | torch.device = "cpu") -> Tensor:
    """``n`` label rows drawn uniformly, with replacement, from the dataset's own: what a conditional model is
    sampled with, so that its samples follow the data's label frequencies, p(x) = sum_y p(y) p(x | y)."""
    return data.labels[torch.randint(len(data), (n,))].to(device)


def load_model(path: str | Path, *, ema: bool = True, device: str | torch.device = "cpu") -> tuple[nn.Module, Config]:
    """The energy network stored in a checkpoint (EMA weights by default) or a model export, and its config, whose
    ``data.channels`` is the channel count the model was trained on (``generate(..., channels=cfg.data.channels)``)."""
    state = load_checkpoint(path, map_location=device, allow_model=True)
    channels = int(state.get("channels", 3))
    try:
        cfg = Config.from_dict(state["config"]).override({"data.channels": channels})
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {path}: stored config is invalid ({e})") from e
    model = build_model(cfg.model, resolution=cfg.data.resolution, in_channels=channels)
    weights = state["model"]
    if ema and state["format"] == FORMAT:  # AveragedModel keys are "module.<name>" plus its "n_averaged" counter
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"checkpoint {path}: weights do not fit the stored model config ({e})") from e
    return model.to(device).eval(), cfg


def export_model(state: dict, path: str | Path, *, ema: bool = True) -> Path:
    """Write a model export (EMA weights by default, config, step) from a trainer's ``model_state()`` (or
    ``state_dict()``): small, enough for sampling and evaluation, loadable by ``load_model``."""
    weights = state["model"]
    if ema:
        weights = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
    return save_checkpoint({"model": weights, "config": state["config"], "step": state["step"],
                            "channels": state.get("channels", 3), "ema": ema}, path, fmt=MODEL_FORMAT)
