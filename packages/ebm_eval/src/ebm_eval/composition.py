"""Compositional generation (Du et al. 2021, Sec. 3.4, Table 4) on the embedded shapes data.

Independent conditional EBMs E(x | c_a), one per attribute, are trained separately and composed at
sampling time: AND is sum_a E(x | c_a) (step size divided by the number of models). An attribute
classifier trained on real data (the domain classifier) checks the result: for 1, 2, 3 and 4
composed attributes, the per-attribute accuracy and the fraction of images with every conditioned
attribute right.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from ebm_core.composition import AND
from ebm_core.config import Config
from ebm_core.data import ImageSet, select_labels
from ebm_core.langevin import sample
from ebm_core.pipeline import algorithm2, transitions
from ebm_core.trainer import Trainer

Energy = Callable[[Tensor], Tensor]


def attribute_view(data: ImageSet, attribute: str) -> ImageSet:
    """The same images labelled by one attribute only, for a model conditioned on it."""
    return select_labels(data, [attribute])


def train_attribute_model(cfg: Config, data: ImageSet, attribute: str, run_dir: Path, *, progress: bool = True) -> Path:
    """Train E(x | attribute) with the core trainer; returns its last checkpoint."""
    view = attribute_view(data, attribute)
    c = cfg.override({"model.num_classes": list(view.num_classes), "train.run_dir": str(run_dir),
                      "train.progress": progress})
    trainer = Trainer(c, data=view)
    trainer.fit()
    return trainer.last_checkpoint


def conditioned(model: nn.Module, labels: Tensor) -> Energy:
    """E(x | c) with fixed labels (N, 1), as an energy callable for the sampler."""
    return lambda x: model(x, labels)


def compose_and_sample(models: list[nn.Module], labels: list[Tensor], cfg: Config, *, n: int, channels: int = 3,
                       chain: list[Tensor] | None = None) -> Tensor:
    """Algorithm 2 on the AND of the conditioned models; step size scaled by 1/len(models)."""
    energy = AND([conditioned(m, y) for m, y in zip(models, labels)])
    R = cfg.data.resolution
    augment = transitions(cfg, channels=channels)
    settings = algorithm2(cfg)
    settings["step_size"] *= energy.step_scale
    return sample(energy, torch.rand(n, channels, R, R), **settings,
                  transition=augment if cfg.augment.enabled else None,
                  on_round=(lambda _, x: chain.append(x)) if chain is not None else None)


def score_composition(pred: Tensor, targets: Tensor, columns: list[int]) -> dict[str, float]:
    """Per-attribute accuracy and the all-correct fraction: ``pred`` (N, A) over all attributes,
    ``targets`` (N, k) for the conditioned ``columns``."""
    hits = torch.stack([pred[:, c] == targets[:, j] for j, c in enumerate(columns)], dim=1)  # (N, k)
    out = {f"acc/{j}": hits[:, j].float().mean().item() for j in range(len(columns))}
    out["all"] = hits.all(dim=1).float().mean().item()
    return out


def composition_table(models: dict[str, nn.Module], order: list[str], data: ImageSet, classify: Callable[[Tensor], Tensor],
                      cfg: Config, *, n: int = 64, seed: int = 0) -> tuple[list[dict], list[Tensor]]:
    """Rows for 1..len(order) composed attributes; also the sample batch of each row (for the grid)."""
    g = torch.Generator().manual_seed(seed)
    rows, grids = [], []
    for k in range(1, len(order) + 1):
        attrs = order[:k]
        cols = [data.label_names.index(a) for a in attrs]
        targets = torch.stack([torch.randint(data.num_classes[c], (n,), generator=g) for c in cols], dim=1)  # (n, k)
        x = compose_and_sample([models[a] for a in attrs], [targets[:, j:j + 1] for j in range(k)], cfg, n=n,
                               channels=data.images.shape[1])
        scores = score_composition(classify(x), targets, cols)
        rows.append({"attributes": attrs, **{a: scores[f"acc/{j}"] for j, a in enumerate(attrs)}, "all": scores["all"]})
        grids.append(x)
    return rows, grids


def composition_markdown(rows: list[dict], order: list[str]) -> str:
    """Table 4 layout: one row per composition, one column per attribute, plus all-correct."""
    lines = ["| Model | " + " | ".join(order) + " | all correct |", "| --- | " + " | ".join("---" for _ in order) + " | --- |"]
    for r in rows:
        cells = [f"{r[a]:.3f}" if a in r else "-" for a in order]
        lines.append(f"| Ours ({' & '.join(r['attributes'])}) | " + " | ".join(cells) + f" | {r['all']:.3f} |")
    return "\n".join(lines)
