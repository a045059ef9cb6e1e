"""The measurements of ``reproduce`` on trained runs (Du et al. 2021, Figs. 6-7, Tables 3-4).

Each function takes the runs (config x seed, with their histories and EMA models) and returns typed
numbers per seed, so the report can give the spread; pictures are saved as PNG grids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ebm_core.callbacks import image_grid
from ebm_core.config import Config
from ebm_core.data import ImageSet, load_dataset
from ebm_core.langevin import langevin, sample
from ebm_core.pipeline import algorithm2, transitions
from ebm_core.recipes import TABLE2, Scale, Variant

from .composition import composition_table
from .features import dataset_extractor, fid_to_data
from .ood import embedded_ood_sets, ood_table


@dataclass
class RunResult:
    """One training run of a reproduction: the variants it stands for, its sweep summary row and its curves."""

    name: str
    seed: int
    roles: list[Variant]
    overrides: dict[str, Any]
    row: dict[str, Any]  # the sweep's summary row: final metrics, diverged, run_id, eval/...
    history: list[dict[str, float]]
    run_dir: str

    @property
    def diverged(self) -> bool:
        return bool(self.row.get("diverged"))

    @property
    def finished(self) -> bool:
        return "run_id" in self.row  # only a trial's final report carries it


def runs_of(runs: list[RunResult], variant: Variant) -> list[RunResult]:
    """The runs (one per seed, in seed order) standing for ``variant``."""
    return sorted((r for r in runs if variant in r.roles), key=lambda r: r.seed)


@dataclass
class Mixing:  # Fig. 6
    run: str
    seed: int
    with_aug: float  # mean pairwise RMS distance of the chains' final samples
    without_aug: float


@dataclass
class LowTemp:  # Fig. 7
    run: str
    seed: int
    fid_domain: float
    saturated: float  # fraction of pixels <= 0.01 or >= 0.99


@dataclass
class OOD:  # Table 3
    run: str
    seed: int
    table: dict[str, dict[str, float]]  # OOD set -> score -> AUROC


@dataclass
class Composition:  # Table 4
    seed: int
    rows: list[dict[str, Any]]


@dataclass
class Evaluations:
    mixing: list[Mixing] = field(default_factory=list)
    lowtemp_baseline: list[LowTemp] = field(default_factory=list)
    lowtemp_full: list[LowTemp] = field(default_factory=list)
    ood_kl: list[OOD] = field(default_factory=list)
    ood_no_kl: list[OOD] = field(default_factory=list)
    composition_attributes: list[str] = field(default_factory=list)
    composition_kl: list[Composition] = field(default_factory=list)
    composition_no_kl: list[Composition] = field(default_factory=list)
    domain_classifier_accuracy: dict[str, float] = field(default_factory=dict)
    wall_s: float = 0.0


def mean_pairwise_distance(x: Tensor) -> float:
    """Mean L2 distance between distinct samples, per pixel (RMS): 0 when all chains agree."""
    return (torch.pdist(x.flatten(1)) / x[0].numel() ** 0.5).mean().item()


def mixing(model: nn.Module, cfg: Config, *, chains: int, seed: int, channels: int = 3) -> tuple[dict[str, float], Tensor]:
    """Fig. 6: ``chains`` copies of one noise image through Algorithm 2 with and without augmentation.

    Returns the mean pairwise distance of the final samples for each, and the two rows of samples.
    """
    R, C = cfg.data.resolution, channels
    x0 = torch.rand(1, C, R, R, generator=torch.Generator().manual_seed(seed)).expand(chains, -1, -1, -1).clone()
    out, rows = {}, []
    for name, transition in (("without_aug", None), ("with_aug", transitions(cfg, channels=C))):
        torch.manual_seed(seed)
        x = sample(model, x0, **algorithm2(cfg), transition=transition)
        out[name] = mean_pairwise_distance(x)
        rows.append(x)
    return out, torch.cat(rows)


def low_temperature(model: nn.Module, cfg: Config, *, n: int, steps: int, seed: int, channels: int = 3) -> Tensor:
    """Fig. 7: ``steps`` noise-free gradient steps from uniform noise (no augmentation)."""
    R = cfg.data.resolution
    x0 = torch.rand(n, channels, R, R, generator=torch.Generator().manual_seed(seed))
    return langevin(model, x0, steps=steps, step_size=cfg.sampler.step_size, noise=0.0).x


def run_all(runs: list[RunResult], models: dict[str, nn.Module | None], *, base: Config, comp_base: Config,
            train: ImageSet, comp_data: ImageSet, scale: Scale, table4: dict[tuple[str, bool], Variant],
            figures: Path, log: Callable[[str], Any] = print) -> Evaluations:
    """Fig. 6, Fig. 7, Table 3 and Table 4 on the stored models; pictures into ``figures``."""
    figures.mkdir(parents=True, exist_ok=True)
    res = Evaluations()
    C = train.images.shape[1]
    trained = lambda v: [r for r in runs_of(runs, v) if models[r.name] is not None]  # noqa: E731

    log("  Fig. 6 mixing")
    grids = []
    for r in trained(TABLE2.full):
        m, x = mixing(models[r.name], base, chains=scale.mixing_chains, seed=r.seed, channels=C)
        res.mixing.append(Mixing(r.name, r.seed, with_aug=m["with_aug"], without_aug=m["without_aug"]))
        grids.append(x)
    if grids:
        image_grid(torch.cat(grids), figures / "fig6_mixing.png", nrow=scale.mixing_chains)

    log("  Fig. 7 low temperature")
    ext = dataset_extractor(base.data, log=log)
    grids = []
    for variant, out in ((TABLE2.baseline, res.lowtemp_baseline), (TABLE2.full, res.lowtemp_full)):
        for r in trained(variant):
            x = low_temperature(models[r.name], base, n=scale.lowtemp_samples, steps=scale.lowtemp_steps, seed=r.seed,
                                channels=C)
            out.append(LowTemp(r.name, r.seed, fid_domain=fid_to_data(ext, x, train),
                               saturated=(x.le(0.01) | x.ge(0.99)).float().mean().item()))
            grids.append(x[:16])
    if grids:
        image_grid(torch.cat(grids), figures / "fig7_lowtemp.png", nrow=16)

    log("  Table 3 OOD")
    test = load_dataset(base.data, split="test")
    n = min(len(test), scale.n_eval)
    x_in = test.images[:n].float() / 255
    sets = embedded_ood_sets(x_in, res=base.data.resolution, channels=x_in.shape[1], n=n, seed=0)
    for variant, out in ((TABLE2.full, res.ood_kl), (TABLE2.aug_ms, res.ood_no_kl)):
        out.extend(OOD(r.name, r.seed, ood_table(models[r.name], x_in, sets)) for r in trained(variant))

    log("  Table 4 composition")
    comp_ext = dataset_extractor(comp_base.data, log=log)
    res.composition_attributes = list(scale.comp_attributes)
    for kl, out in ((True, res.composition_kl), (False, res.composition_no_kl)):
        for seed in range(scale.comp_seeds):
            ms = {}
            for a in scale.comp_attributes:
                rs = [r for r in runs_of(runs, table4[(a, kl)]) if r.seed == seed]
                ms[a] = models[rs[0].name] if rs else None
            if any(m is None for m in ms.values()):
                continue
            rows, grids = composition_table(ms, list(scale.comp_attributes), comp_data, comp_ext.predict, comp_base,
                                            n=scale.comp_samples, seed=seed)
            out.append(Composition(seed, rows))
            image_grid(torch.cat([g[:8] for g in grids]), figures / f"table4_composition_{'KL' if kl else 'noKL'}_s{seed}.png",
                       nrow=8)
    res.domain_classifier_accuracy = ext.accuracies
    return res
