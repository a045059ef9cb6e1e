"""Benchmarks of ebm_core's speed and memory, written to JSON (figures, not timed tests; issue 6).

    .venv/bin/python benchmarks/run.py                   # all, into benchmarks/results/core.json
    .venv/bin/python benchmarks/run.py --no-compile      # skip the torch.compile variants (minutes of compile)
    .venv/bin/python benchmarks/run.py --device cuda     # GPU: images/s of the training step, eager vs fast,
                                                         # into benchmarks/results/gpu.json (about 5 min)

Sections (``cifar10`` preset model by default, batch 32, float32, this machine's threads):
* memory: replay-buffer bytes per storage kind; peak RSS growth of one training step, fast trainer
  against the baseline, each in a fresh process.
* floor: one forward plus input gradient, eager (plain model) against the frozen-weight path,
  channels-last and ``torch.compile`` variants; speed-up over eager, and max |difference|.
* sampler_efficiency: K Langevin steps / (K x the floor of the same path); target <= 1.05.
* train_step: ``baseline.BaselineStep`` (last step twice, three forwards, float32 buffer, model
  copy, (B, n, D) entropy) / ``Trainer.step``, KL on, K = 40; target >= 1.5.
* kl_overhead: ``Trainer.step`` with L_opt + L_ent / without, at K = 40 (target <= 1.05) and 60.
* flops: achieved FLOP/s of the floor (FLOPs from ``torch.utils.flop_counter``) over the float32 peak of a
  2048x2048 matmul measured in the same run, beside the baseline and fast step times.

Every time is the median of ``--repeats`` calls after a warm-up call (which also compiles), with
min and max; ratios carry the extreme combinations of min and max as their range.
"""

from __future__ import annotations

import argparse
import copy
import json
import multiprocessing as mp
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from baseline import BaselineStep  # noqa: E402

from ebm_core.buffer import ReplayBuffer  # noqa: E402
from ebm_core.fastgrad import frozen_grad  # noqa: E402
from ebm_core.langevin import energy_grad, langevin  # noqa: E402
from ebm_core.models import build_model  # noqa: E402
from ebm_core.presets import get_preset  # noqa: E402
from ebm_eval.timing import kl_cost, ratio, timed, timed_interleaved, timing_trainer  # noqa: E402


def bench_cfg(preset: str, batch: int, steps: int, **over):
    """The preset's model and sampler on the embedded shapes at its resolution (no dataset files needed)."""
    cfg = get_preset(preset)
    return cfg.override({"data.name": "shapes", "data.root": None, "data.num_train": max(4 * batch, 256),
                         "train.batch_size": batch, "sampler.steps": steps, "train.progress": False, **over})


def grad_paths(model, compile: bool) -> dict:
    """name -> x -> grad_x sum E(x), for each way the sampler can take it."""
    paths = {"eager": lambda x: energy_grad(model, x), "frozen": (lambda f: lambda x: f(x, None))(frozen_grad(model))}
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    paths["frozen_channels_last"] = (lambda f: lambda x: f(x, None))(frozen_grad(nhwc, channels_last=True))
    if compile:
        paths["compiled"] = (lambda f: lambda x: f(x, None))(frozen_grad(model, compile=True))
        paths["compiled_channels_last"] = (lambda f: lambda x: f(x, None))(
            frozen_grad(nhwc, compile=True, channels_last=True))
    return paths


def flops_vs_peak(cfg, repeats: int, train_step: dict | None = None) -> dict:
    """How far the sampler's floor is from the hardware: FLOPs of one forward + input gradient (counted by
    ``torch.utils.flop_counter``) per second, over this machine's float32 matmul peak measured in the same run."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    B, R = cfg.train.batch_size, cfg.data.resolution
    model, x = build_model(cfg.model, resolution=R), torch.rand(B, 3, R, R)
    with FlopCounterMode(display=False) as counter:  # autograd.grad on a leaf is not supported under the counter:
        model(xg := x.clone().requires_grad_(True)).sum().backward(inputs=[xg])  # the same input-only backward
    flops = counter.get_total_flops()
    floor = timed(lambda: energy_grad(model, x), repeats)
    n = 2048
    a, b = torch.rand(n, n), torch.rand(n, n)
    matmul = timed(lambda: a @ b, max(repeats, 5))
    peak = 2 * n ** 3 / matmul["min_s"]  # the best matmul: the machine's attainable float32 rate
    out = {"batch": B, "flops_per_forward_and_input_grad": flops, "floor": floor,
           "achieved_flops_per_s": flops / floor["median_s"], "matmul_n": n, "matmul": matmul,
           "peak_matmul_flops_per_s": peak, "fraction_of_peak": flops / floor["median_s"] / peak}
    if train_step is not None:  # the step times this figure is read beside (B, K = 40, KL on)
        out["train_step_s"] = {k: train_step[k]["median_s"] for k in ("baseline", "frozen") if k in train_step}
    print(f"flops: {out['achieved_flops_per_s'] / 1e9:.1f} GFLOP/s achieved, {peak / 1e9:.1f} GFLOP/s matmul peak, "
          f"{100 * out['fraction_of_peak']:.1f} %", flush=True)
    return out


def floor_and_sampler(cfg, repeats: int, compile: bool) -> tuple[dict, dict]:
    """Each gradient path's floor, and K Langevin steps through it, all interleaved."""
    torch.manual_seed(0)
    B, R, s = cfg.train.batch_size, cfg.data.resolution, cfg.sampler
    model = build_model(cfg.model, resolution=R)
    x = torch.rand(B, 3, R, R)
    ref = energy_grad(model, x)
    paths = grad_paths(model, compile)
    floor = {"batch": B, "ref_grad_abs_max": ref.abs().max().item(),
             **timed_interleaved({k: (lambda g: lambda: g(x))(g) for k, g in paths.items()}, repeats * 4)}
    for name, grad in paths.items():
        floor[name]["max_abs_diff_vs_eager"] = (grad(x) - ref).abs().max().item()
        floor[name]["speedup_vs_eager"] = ratio(floor["eager"], floor[name]) if name != "eager" else None
        print(f"floor {name}: {floor[name]['median_s']:.4f} s", flush=True)

    def chain(grad):
        return lambda: langevin(model, x, steps=s.steps, step_size=s.step_size, noise=s.noise, grad_fn=grad)

    chained = [k for k in ("eager", "frozen", "compiled_channels_last") if k in paths]
    times = timed_interleaved({k: chain(None if k == "eager" else paths[k]) for k in chained}, repeats)
    sampler = {"batch": B, "steps": s.steps, "target": 1.05}
    for k in chained:
        sampler[k] = {"langevin": times[k], "ratio_to_own_floor": ratio(times[k], floor[k], s.steps)}
        print(f"sampler {k}: {sampler[k]['ratio_to_own_floor']['median']:.3f} x K x floor", flush=True)
    return floor, sampler


def baseline_with_buffer(cfg) -> BaselineStep:
    step = BaselineStep(cfg)
    step.buffer.add(torch.rand(4 * cfg.train.batch_size, *step.shape))
    return step


def train_step(preset: str, batch: int, steps: int, repeats: int, compile: bool) -> dict:
    """Baseline against the trainer's variants, interleaved step by step."""
    cfg = bench_cfg(preset, batch, steps)
    variants = {"frozen": {"train.sampler_grad": "frozen"}}
    if compile:
        variants["compiled_channels_last"] = {"train.sampler_grad": "compiled", "train.channels_last": True}
    fns = {"baseline": baseline_with_buffer(cfg)}
    fns.update({k: timing_trainer(cfg.override(v), device="cpu").step for k, v in variants.items()})
    out = {"batch": batch, "steps": steps, "kl": True, "target": 1.5, **timed_interleaved(fns, repeats)}
    for kind in variants:
        out[f"speedup_{kind}"] = ratio(out["baseline"], out[kind])
        print(f"train_step {kind}: {out[kind]['median_s']:.2f} s against {out['baseline']['median_s']:.2f} s, "
              f"x{out[f'speedup_{kind}']['median']:.3f}", flush=True)
    return out


def kl_overhead(preset: str, batch: int, steps: int, repeats: int) -> dict:
    cfg = bench_cfg(preset, batch, steps)
    out = {"batch": batch, "steps": steps, "target": 1.05 if steps <= 40 else 1.10, "paper": 1.20,
           **kl_cost(cfg, repeats=repeats, device="cpu")}
    print(f"kl_overhead K={steps}: x{out['ratio']['median']:.3f}", flush=True)
    return out


def gpu_throughput(preset: str, batch: int, steps: int, repeats: int, device: str) -> dict:
    """Images/s of the training step (KL on) on a GPU: eager float32 against compiled + bf16 sampling.

    "eager" is the plain trainer (the live model for every Langevin step); "fast" takes the steps
    without a graph through ``torch.compile`` under bfloat16 autocast, with channels-last weights.
    """
    cfg = bench_cfg(preset, batch, steps)
    out = {"batch": batch, "steps": steps, "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else device}
    variants = {"eager": {"train.sampler_grad": "plain"}, "frozen": {"train.sampler_grad": "frozen"},
                "fast": {"train.sampler_grad": "compiled", "train.sampler_bf16": True, "train.channels_last": True}}
    for name, over in variants.items():
        trainer = timing_trainer(cfg.override(over), device=device)

        def step() -> None:
            trainer.step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()

        if device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        t = timed(step, repeats)
        out[name] = {**t, "images_per_s": batch / t["median_s"]}
        if device.startswith("cuda"):
            out[name]["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 2**20
        print(f"{name}: {out[name]['images_per_s']:.1f} images/s", flush=True)
    out["speedup_fast"] = ratio(out["eager"], out["fast"])
    return out


def _step_peak_rss(args: tuple) -> dict:
    """In a fresh process: peak RSS before and after one training step of the given kind (MB)."""
    preset, batch, steps, kind = args
    cfg = bench_cfg(preset, batch, steps)
    step = baseline_with_buffer(cfg) if kind == "baseline" else timing_trainer(cfg, device="cpu").step
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    step()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_rss_growth_mb": (rss1 - rss0) / 1024, "process_peak_rss_mb": rss1 / 1024}


def memory(preset: str, batch: int, steps: int) -> dict:
    cfg = get_preset(preset)
    R = cfg.data.resolution
    sizes = {}
    for storage in ("uint8", "half", "float32"):
        buf = ReplayBuffer(capacity=cfg.buffer.capacity, storage=storage)
        buf.add(torch.rand(1, 3, R, R))
        sizes[storage] = buf.nbytes()
    out = {"buffer_capacity": cfg.buffer.capacity, "buffer_storage_default": cfg.buffer.storage,
           "buffer_bytes_at_capacity": sizes, "train_step": {"batch": batch, "steps": steps}}
    with mp.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        for kind in ("fast", "baseline"):
            out["train_step"][kind] = pool.apply(_step_peak_rss, ((preset, batch, steps, kind),))
    print("memory", json.dumps(out), flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="cifar10", help="preset whose model and resolution to use")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=40, help="K for the sampler and the training step")
    p.add_argument("--kl-steps", type=int, nargs="+", default=[40, 60], help="K values for the KL overhead")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-compile", dest="compile", action="store_false", help="skip the torch.compile variants")
    p.add_argument("--device", default="cpu", help="cpu: every section; cuda: the GPU throughput section only")
    p.add_argument("--out", help="JSON path (default benchmarks/results/core.json, or gpu.json with --device cuda)")
    args = p.parse_args()
    gpu = args.device != "cpu"
    out = Path(args.out or Path(__file__).parent / "results" / ("gpu.json" if gpu else "core.json"))
    cfg = bench_cfg(args.model, args.batch, args.steps)
    result = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
                    "torch": torch.__version__, "threads": torch.get_num_threads(), "device": args.device,
                    "cpu_capability": torch.backends.cpu.get_cpu_capability()},
        "model": {"preset": args.model, "resolution": cfg.data.resolution, "multiscale": cfg.model.multiscale,
                  "base_width": cfg.model.base_width, "attention_res": cfg.model.attention_res,
                  "parameters": sum(p.numel() for p in build_model(cfg.model, resolution=cfg.data.resolution).parameters())},
        "command": "python benchmarks/run.py " + " ".join(sys.argv[1:]),
    }
    t0 = time.perf_counter()
    if gpu:
        result["train_throughput"] = gpu_throughput(args.model, args.batch, args.steps, args.repeats, args.device)
    else:
        result["memory"] = memory(args.model, args.batch, args.steps)
        result["floor"], result["sampler_efficiency"] = floor_and_sampler(cfg, args.repeats, args.compile)
        result["train_step"] = train_step(args.model, args.batch, args.steps, args.repeats, args.compile)
        result["kl_overhead"] = {f"K{k}": kl_overhead(args.model, args.batch, k, args.repeats) for k in args.kl_steps}
        result["flops"] = flops_vs_peak(cfg, args.repeats, result["train_step"])
    result["wall_s"] = time.perf_counter() - t0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
