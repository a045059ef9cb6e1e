"""The measurements of ``reproduce`` on trained runs (Du et al. 2021, Figs. 6-9, Tables 2-4).

Each function takes the runs (config x seed, with their histories and EMA models) and returns
plain numbers per seed, so the report can give the spread; pictures are saved as PNG grids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ebm_core.augment import Augment
from ebm_core.callbacks import image_grid
from ebm_core.config import Config
from ebm_core.data import ImageSet, load_dataset
from ebm_core.langevin import langevin, sample

from .composition import composition_table
from .features import DomainExtractor, domain_extractor
from .metrics import feature_stats, frechet_distance
from .ood import embedded_ood_sets, ood_table

Run = dict[str, Any]


def runs_of(runs: list[Run], group: str, label: str) -> list[Run]:
    """The runs (one per seed, in seed order) standing for ``label`` of ``group`` (e.g. table2/aug)."""
    return sorted((r for r in runs if (group, label) in [tuple(x) for x in r["roles"]]), key=lambda r: r["seed"])


def extractor_for(data: ImageSet, cfg: Config) -> DomainExtractor:
    """The cached domain classifier of ``ebm_eval.quick`` for this dataset (same key, trained once)."""
    d = cfg.data
    test = load_dataset(d, split="test")
    return domain_extractor(data, test, key=f"{d.name}-{d.resolution}px-seed{d.seed}-n{len(data)}", progress=False)


def fid_to_data(ext: DomainExtractor, x: Tensor, data: ImageSet, *, n_ref: int = 1000) -> float:
    real = data.images[torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:n_ref]].float() / 255
    return frechet_distance(*feature_stats(ext(x).features.numpy()), *feature_stats(ext(real).features.numpy()))


def mean_pairwise_distance(x: Tensor) -> float:
    """Mean L2 distance between distinct samples, per pixel (RMS): 0 when all chains agree."""
    return (torch.pdist(x.flatten(1)) / x[0].numel() ** 0.5).mean().item()


def mixing(model: nn.Module, cfg: Config, *, chains: int, seed: int, channels: int = 3) -> tuple[dict[str, float], Tensor]:
    """Fig. 6: ``chains`` copies of one noise image through Algorithm 2 with and without augmentation.

    Returns the mean pairwise distance of the final samples for each, and the two rows of samples.
    """
    g, R, C = cfg.generate, cfg.data.resolution, channels
    x0 = torch.rand(1, C, R, R, generator=torch.Generator().manual_seed(seed)).expand(chains, -1, -1, -1).clone()
    out, rows = {}, []
    for name, transition in (("without_aug", None), ("with_aug", Augment(cfg.augment, resolution=R, channels=C))):
        torch.manual_seed(seed)
        x = sample(model, x0, rounds=g.rounds, steps=g.steps, step_size=g.step_size or cfg.sampler.step_size,
                   noise=cfg.sampler.noise if g.noise is None else g.noise, transition=transition,
                   settle_rounds=g.settle_rounds)
        out[name] = mean_pairwise_distance(x)
        rows.append(x)
    return out, torch.cat(rows)


def low_temperature(model: nn.Module, cfg: Config, *, n: int, steps: int, seed: int, channels: int = 3) -> Tensor:
    """Fig. 7: ``steps`` noise-free gradient steps from uniform noise (no augmentation)."""
    R = cfg.data.resolution
    x0 = torch.rand(n, channels, R, R, generator=torch.Generator().manual_seed(seed))
    return langevin(model, x0, steps=steps, step_size=cfg.sampler.step_size, noise=0.0).x


def run_all(runs: list[Run], models: dict[str, nn.Module | None], *, base: Config, comp_base: Config, train: ImageSet,
            comp_data: ImageSet, scale: Any, figures: Path, log: Any = print) -> dict[str, Any]:
    """Fig. 6, Fig. 7, Table 3 and Table 4 on the stored models; pictures into ``figures``."""
    figures.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {}
    full, no_kl, baseline = "opt+ent+aug+ms", "aug+ms", "baseline"  # Table 2 rows
    C = train.images.shape[1]

    log("  Fig. 6 mixing")
    res["mixing"], grids = [], []
    for r in runs_of(runs, "table2", full):
        if models[r["name"]] is None:
            continue
        m, x = mixing(models[r["name"]], base, chains=scale.mixing_chains, seed=r["seed"], channels=C)
        res["mixing"].append({"run": r["name"], "seed": r["seed"], **m})
        grids.append(x)
    if grids:
        image_grid(torch.cat(grids), figures / "fig6_mixing.png", nrow=scale.mixing_chains)

    log("  Fig. 7 low temperature")
    ext = extractor_for(train, base)
    res["lowtemp"], grids = {}, []
    for label in (baseline, full):
        res["lowtemp"][label] = []
        for r in runs_of(runs, "table2", label):
            if models[r["name"]] is None:
                continue
            x = low_temperature(models[r["name"]], base, n=scale.lowtemp_samples, steps=scale.lowtemp_steps, seed=r["seed"],
                                channels=C)
            res["lowtemp"][label].append({"run": r["name"], "seed": r["seed"], "fid_domain": fid_to_data(ext, x, train),
                                          "saturated": (x.le(0.01) | x.ge(0.99)).float().mean().item()})
            grids.append(x[:16])
    if grids:
        image_grid(torch.cat(grids), figures / "fig7_lowtemp.png", nrow=16)

    log("  Table 3 OOD")
    test = load_dataset(base.data, split="test")
    n = min(len(test), scale.n_eval)
    x_in = test.images[:n].float() / 255
    sets = embedded_ood_sets(x_in, res=base.data.resolution, channels=x_in.shape[1], n=n, seed=0)
    res["ood"] = {}
    for name, label in (("KL", full), ("noKL", no_kl)):
        res["ood"][name] = [{"run": r["name"], "seed": r["seed"], "table": ood_table(models[r["name"]], x_in, sets)}
                            for r in runs_of(runs, "table2", label) if models[r["name"]] is not None]

    log("  Table 4 composition")
    comp_ext = extractor_for(comp_data, comp_base)
    res["composition"] = {"attributes": list(scale.comp_attributes), "KL": [], "noKL": []}
    for kl in ("KL", "noKL"):
        for seed in range(scale.comp_seeds):
            ms = {}
            for a in scale.comp_attributes:
                rs = [r for r in runs_of(runs, "table4", f"{a}-{kl}") if r["seed"] == seed]
                ms[a] = models[rs[0]["name"]] if rs else None
            if any(m is None for m in ms.values()):
                continue
            rows, grids = composition_table(ms, list(scale.comp_attributes), comp_data, comp_ext.predict, comp_base,
                                            n=scale.comp_samples, seed=seed)
            res["composition"][kl].append({"seed": seed, "rows": rows})
            image_grid(torch.cat([g[:8] for g in grids]), figures / f"table4_composition_{kl}_s{seed}.png", nrow=8)
    res["domain_classifier_accuracy"] = dict(zip(train.label_names, np.round(ext.accuracy, 3).tolist()))
    return res
