"""Benchmarks of ebm_core, written to JSON (figures, not timed tests).

    .venv/bin/python benchmarks/run.py                 # all, results in benchmarks/results/core.json
    .venv/bin/python benchmarks/run.py --batch 32 --model cifar10

* sampler_efficiency: time of K Langevin steps / (K x time of one forward + input gradient of the
  same network on the same batch). 1.0 is the floor; target <= 1.05.
* kl_overhead: one training step with L_opt + L_ent / one without, at K = 60 (the paper reports
  about 1.20; target <= 1.10).
* memory: replay-buffer footprint per storage kind; peak RSS growth of a training step.

Each figure is the median of ``--repeats`` runs, with min and max, measured in one process.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from pathlib import Path

import torch

from ebm_core.buffer import ReplayBuffer
from ebm_core.langevin import energy_grad, langevin
from ebm_core.models import build_model
from ebm_core.presets import get_preset
from ebm_core.trainer import Trainer


def timed(fn, repeats: int) -> dict[str, float]:
    """Median, min and max seconds of ``fn`` over ``repeats`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "repeats": repeats}


def ratio(a: dict, b: dict, scale: float = 1.0) -> dict[str, float]:
    return {"median": a["median_s"] / (scale * b["median_s"]), "min": a["min_s"] / (scale * b["max_s"]),
            "max": a["max_s"] / (scale * b["min_s"])}


def sampler_efficiency(cfg, batch: int, steps: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_model(cfg.model, resolution=cfg.data.resolution)
    x = torch.rand(batch, 3, cfg.data.resolution, cfg.data.resolution)
    floor = timed(lambda: energy_grad(model, x), repeats * 5)
    chain = timed(lambda: langevin(model, x, steps=steps, step_size=cfg.sampler.step_size, noise=cfg.sampler.noise),
                  repeats)
    return {"batch": batch, "steps": steps, "floor_forward_plus_input_grad": floor, "langevin": chain,
            "ratio": ratio(chain, floor, steps), "target": 1.05}


def bench_cfg(cfg, batch: int, steps: int):
    """The preset's model and sampler on the embedded shapes at its resolution (no dataset files needed)."""
    return cfg.override({"data.name": "shapes", "data.root": None, "data.num_train": max(4 * batch, 256),
                         "train.batch_size": batch, "sampler.steps": steps, "train.grad_norm_every": 10**9,
                         "loss.ent_min_buffer": batch, "train.progress": False})


def kl_overhead(cfg, batch: int, steps: int, repeats: int) -> dict:
    base = bench_cfg(cfg, batch, steps)
    out = {}
    for name, over in (("with_kl", {}), ("without_kl", {"loss.use_opt": False, "loss.use_ent": False})):
        trainer = Trainer(base.override(over), device="cpu")
        trainer.buffer.add(torch.rand(4 * batch, 3, cfg.data.resolution, cfg.data.resolution))  # L_ent active
        trainer.step_count = 1  # keep off the grad-norm iteration 1
        out[name] = timed(trainer.step, repeats)
    out["ratio"] = ratio(out["with_kl"], out["without_kl"])
    out.update({"batch": batch, "steps": steps, "target": 1.10, "paper": 1.20})
    return out


def memory(cfg, batch: int, steps: int) -> dict:
    R = cfg.data.resolution
    sizes = {}
    for storage in ("uint8", "half", "float32"):
        buf = ReplayBuffer(capacity=cfg.buffer.capacity, storage=storage)
        buf.add(torch.rand(1, 3, R, R))
        sizes[storage] = buf.nbytes()
    trainer = Trainer(bench_cfg(cfg, batch, steps), device="cpu")
    trainer.buffer.add(torch.rand(4 * batch, 3, R, R))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    trainer.step()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"buffer_bytes_at_capacity": {k: v for k, v in sizes.items()}, "buffer_capacity": cfg.buffer.capacity,
            "train_step_peak_rss_growth_mb": (rss1 - rss0) / 1024, "process_peak_rss_mb": rss1 / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cifar10", help="preset whose model and resolution to use")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=60, help="K for the KL-overhead step")
    p.add_argument("--sampler-steps", type=int, default=40)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "core.json"))
    args = p.parse_args()
    cfg = get_preset(args.model)
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "device": "cpu"},
        "model": {"preset": args.model, "resolution": cfg.data.resolution, "multiscale": cfg.model.multiscale,
                  "base_width": cfg.model.base_width, "attention_res": cfg.model.attention_res},
        "command": "python benchmarks/run.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
    }
    result["sampler_efficiency"] = sampler_efficiency(cfg, args.batch, args.sampler_steps, args.repeats)
    print("sampler_efficiency", json.dumps(result["sampler_efficiency"]["ratio"]), flush=True)
    result["kl_overhead"] = kl_overhead(cfg, args.batch, args.steps, args.repeats)
    print("kl_overhead", json.dumps(result["kl_overhead"]["ratio"]), flush=True)
    result["memory"] = memory(cfg, args.batch, args.steps)
    print("memory", json.dumps(result["memory"]), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
