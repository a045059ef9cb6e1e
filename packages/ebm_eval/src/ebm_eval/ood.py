"""Out-of-distribution detection with an EBM (Du et al. 2021, Sec. 3.3, Table 3).

Scores: ``-E(x)`` (log-likelihood up to the constant log Z) and, beside it, JEM's ``-||grad_x E(x)||``.
AUROC takes the in-distribution test split as the positive class. OOD sets for the embedded data are
made offline; for CIFAR-10 models, SVHN, Textures (DTD), CIFAR-100 and CIFAR-10 interpolations are
used when their files exist locally.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor, nn
from ebm_core.config import Config, DataConfig
from ebm_core.data import DatasetError, load_dataset, resize

from .metrics import auroc

SCORES: dict[str, str] = {"energy": "-E(x)", "grad_norm": "-||grad_x E(x)||"}


@torch.no_grad()
def score_energy(model: nn.Module, x: Tensor, *, batch_size: int = 256) -> np.ndarray:
    return np.concatenate([-model(x[i:i + batch_size]).double().numpy() for i in range(0, len(x), batch_size)])


def score_grad_norm(model: nn.Module, x: Tensor, *, batch_size: int = 256) -> np.ndarray:
    out = []
    for i in range(0, len(x), batch_size):
        xb = x[i:i + batch_size].detach().requires_grad_(True)
        (g,) = torch.autograd.grad(model(xb).sum(), xb)
        out.append(-g.flatten(1).norm(dim=1).double().numpy())
    return np.concatenate(out)


SCORE_FNS: dict[str, Callable[[nn.Module, Tensor], np.ndarray]] = {"energy": score_energy, "grad_norm": score_grad_norm}


def interpolations(x: Tensor, *, seed: int = 0) -> Tensor:
    """Midpoints of random pairs of test images (the paper's 'CIFAR-10 Interp' construction)."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(x), generator=g)
    return 0.5 * x + 0.5 * x[perm]


def _fit(x: Tensor, res: int, channels: int) -> Tensor:
    """Float images to the model's resolution and channel count (greyscale repeated)."""
    x = resize(x, res).clamp(0, 1)
    return x.expand(-1, channels, -1, -1) if x.shape[1] == 1 else x


def texture_crops(n: int, res: int, *, channels: int = 3, seed: int = 0) -> Tensor:
    """Random crops of scikit-image's bundled texture photographs (brick, grass, gravel)."""
    from skimage import data as skdata

    rng = np.random.default_rng(seed)
    photos = [np.asarray(getattr(skdata, name)(), dtype=np.float32) / 255 for name in ("brick", "grass", "gravel")]
    crops = []
    for i in range(n):
        img = photos[i % len(photos)]
        size = int(rng.integers(48, 160))
        y, x = rng.integers(0, img.shape[0] - size), rng.integers(0, img.shape[1] - size)
        c = torch.from_numpy(img[y:y + size, x:x + size].copy())
        crops.append(_fit(c[None, None] if c.ndim == 2 else c.permute(2, 0, 1)[None], res, channels))
    return torch.cat(crops)


def embedded_ood_sets(test: Tensor, *, res: int, channels: int, n: int, seed: int = 0) -> dict[str, Tensor]:
    """OOD sets made offline for the embedded data: no file, no download."""
    from sklearn.datasets import load_digits

    g = torch.Generator().manual_seed(seed)
    digits = torch.from_numpy(load_digits().images[:n] / 16.0).float()[:, None]  # (n, 1, 8, 8)
    constant = torch.rand(n, channels, 1, 1, generator=g).expand(-1, -1, res, res).contiguous()
    return {
        "interpolations": interpolations(test[:n], seed=seed),
        "uniform_noise": torch.rand(n, channels, res, res, generator=g),
        "constant_colour": constant,
        "textures": texture_crops(n, res, channels=channels, seed=seed),
        "digits": _fit(digits, res, channels),
    }


def cifar10_ood_sets(cfg: Config, test: Tensor, *, n: int, roots: dict[str, str]) -> tuple[dict[str, Tensor], list[str]]:
    """The paper's sets for a CIFAR-10 model, from local files; returns the sets and what was skipped."""
    sets, skipped = {"cifar10_interp": interpolations(test[:n])}, []
    res = cfg.data.resolution
    for name, data_name in (("svhn", "svhn"), ("textures", "imagefolder"), ("cifar100", "cifar100")):
        root = roots.get(name)
        if not root:
            skipped.append(f"{name} (no path given)")
            continue
        try:
            ds = load_dataset(DataConfig(name=data_name, root=root, resolution=res), split="test")
        except DatasetError as e:
            skipped.append(f"{name} ({e})")
            continue
        sets[name] = ds.images[:n].float() / 255
    return sets, skipped


def ood_table(model: nn.Module, in_dist: Tensor, ood_sets: dict[str, Tensor]) -> dict[str, dict[str, float]]:
    """AUROC per OOD set and score, plus their average: {set: {score: auroc}}."""
    in_scores = {s: fn(model, in_dist) for s, fn in SCORE_FNS.items()}
    table = {name: {s: auroc(in_scores[s], fn(model, x)) for s, fn in SCORE_FNS.items()} for name, x in ood_sets.items()}
    table["average"] = {s: float(np.mean([row[s] for row in table.values()])) for s in SCORE_FNS}
    return table


def ood_markdown(table: dict[str, dict[str, float]], *, model_name: str = "Ours") -> str:
    """Table 3 layout: one row per OOD set, one column per score."""
    lines = ["| OOD set | " + " | ".join(f"{model_name} {SCORES[s]}" for s in SCORE_FNS) + " |",
             "| --- | " + " | ".join("---" for _ in SCORE_FNS) + " |"]
    for name, row in table.items():
        label = "**Average**" if name == "average" else name
        lines.append(f"| {label} | " + " | ".join(f"{row[s]:.3f}" for s in SCORE_FNS) + " |")
    return "\n".join(lines)

