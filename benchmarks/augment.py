"""The augmentation transition, batched (``ebm_core.augment.Augment``) against torchvision's transforms image by
image (the same ops, one ``v2.Compose`` call per image: what Augment did before), into benchmarks/results/augment.json.

    .venv/bin/python benchmarks/augment.py [--repeats 30]

Per preset, one call on the images a training iteration augments (the batch plus L_ent's set of 100); the two
are timed interleaved, call by call, and the figures are medians with min and max.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from torchvision.transforms import v2

from ebm_core.augment import BLUR_SIGMA, Augment
from ebm_core.config import AugmentConfig
from ebm_core.presets import get_preset


def per_image(cfg: AugmentConfig, resolution: int):
    """torchvision's ops composed as Augment composes them, applied image by image."""
    ops: list[v2.Transform] = [v2.RandomResizedCrop(resolution, scale=cfg.crop_scale, antialias=True)]
    if cfg.flip:
        ops.append(v2.RandomHorizontalFlip())
    if any(cfg.color_jitter):
        ops.append(v2.RandomApply([v2.ColorJitter(*cfg.color_jitter)], p=cfg.jitter_p))
    if cfg.grayscale_p > 0:
        ops.append(v2.RandomGrayscale(p=cfg.grayscale_p))
    k = Augment(cfg, resolution=resolution).blur_kernel
    if k is not None:
        ops.append(v2.GaussianBlur(kernel_size=k, sigma=BLUR_SIGMA))
    t = v2.Compose(ops)
    return lambda x: torch.stack([t(img) for img in x]).clamp_(0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "augment.json"))
    args = ap.parse_args()
    results = {"machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                           "torch": torch.__version__}, "presets": {}}
    for name in ("demo", "cifar10"):
        cfg = get_preset(name)
        R, n = cfg.data.resolution, cfg.train.batch_size + cfg.loss.ent_set_size
        x = torch.rand(n, 3, R, R)
        fns = {"batched": Augment(cfg.augment, resolution=R), "per_image": per_image(cfg.augment, R)}
        times: dict[str, list[float]] = {k: [] for k in fns}
        for f in fns.values():
            f(x)  # warm-up
        for _ in range(args.repeats):
            for k, f in fns.items():  # interleaved
                t = time.perf_counter()
                f(x)
                times[k].append(time.perf_counter() - t)
        ratios = [a / b for a, b in zip(times["per_image"], times["batched"])]
        results["presets"][name] = {
            "images": n, "resolution": R,
            **{f"{k}_ms": {"median": 1e3 * statistics.median(v), "min": 1e3 * min(v), "max": 1e3 * max(v)}
               for k, v in times.items()},
            "speedup_median": statistics.median(ratios), "speedup_min": min(ratios), "speedup_max": max(ratios),
        }
        print(name, json.dumps(results["presets"][name]))
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
