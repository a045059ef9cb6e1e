"""Wall-clock measurements of training steps: interleaved timings and the cost of the KL term (Sec. 4).

Used by ``ebm reproduce`` (its KL-cost claim) and by ``benchmarks/run.py``. Times are medians with
min and max; functions compared are called in turn (A B A B ...), so machine drift hits all alike.
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch

from ebm_core.config import Config
from ebm_core.recipes import KL, NO_KL
from ebm_core.trainer import Trainer


def timed_interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, dict[str, float]]:
    """Median, min and max seconds of each function over ``repeats`` rounds, after one warm-up call each."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {k: {"median_s": statistics.median(v), "min_s": min(v), "max_s": max(v), "repeats": repeats}
            for k, v in times.items()}


def timed(fn: Callable[[], Any], repeats: int) -> dict[str, float]:
    """``timed_interleaved`` of one function."""
    return timed_interleaved({"fn": fn}, repeats)["fn"]


def ratio(a: dict[str, float], b: dict[str, float], scale: float = 1.0) -> dict[str, float]:
    """a / (scale * b): median over median, with the widest min/max combination as the range."""
    return {"median": a["median_s"] / (scale * b["median_s"]), "min": a["min_s"] / (scale * b["max_s"]),
            "max": a["max_s"] / (scale * b["min_s"])}


def timing_trainer(cfg: Config, *, device: str | torch.device | None = None) -> Trainer:
    """A trainer whose every step costs the same: the buffer already holds enough samples for L_ent, and the
    two gradients are never measured apart (``train.grad_norm_every=0``)."""
    B = cfg.train.batch_size
    trainer = Trainer(cfg.override({"train.grad_norm_every": 0, "loss.ent_min_buffer": B, "train.progress": False}),
                      device=device)
    trainer.buffer.add(torch.rand(4 * B, *trainer.shape, device=trainer.device))
    return trainer


def kl_cost(cfg: Config, *, repeats: int, device: str | torch.device | None = None) -> dict[str, Any]:
    """Training-step time with and without L_KL (L_opt + L_ent), interleaved: each side's times and their ratio."""
    trainers = {name: timing_trainer(cfg.override(over), device=device)
                for name, over in (("with_kl", KL), ("without_kl", NO_KL))}
    out: dict[str, Any] = timed_interleaved({name: t.step for name, t in trainers.items()}, repeats)
    out["ratio"] = ratio(out["with_kl"], out["without_kl"])
    return out
