"""Reproduce the paper's claims at a chosen scale: one command, Ray Tune sweeps, MLflow runs, a report.

    ebm reproduce --scale small                    # embedded shapes, < 60 min on a 2-core CPU
    ebm reproduce --scale full                     # the same structure, cifar10 preset, for a GPU machine
    python -m ebm_eval.reproduce --scale small     # the same, for `ray job submit`

Four stages: (1) the KL term's step-time cost (Sec. 4), measured alone before anything else runs;
(2) one Tune sweep over every training run: Table 2's rows, Fig. 8's configurations and Table 4's
attribute models, each configuration x seed a nested MLflow run, identical configurations trained
once; (3) evaluations on the stored EMA checkpoints: mixing (Fig. 6), low temperature (Fig. 7),
OOD (Table 3) and composition (Table 4), with and without the KL term; (4) ``report.py`` writes
the report with its figures and a verdict per claim, and logs both to the parent MLflow run.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ebm_core.config import Config, ConfigError
from ebm_core.data import load_dataset
from ebm_core.pipeline import load_model
from ebm_core.presets import get_preset
from ebm_core.trainer import Trainer, latest_checkpoint

from .commands import add_reproduce_arguments

KL = {"loss.use_opt": True, "loss.use_ent": True}
NO_KL = {"loss.use_opt": False, "loss.use_ent": False}
ATTN = 8  # feature resolution of the self-attention block in Fig. 8's configurations

# Fig. 8: with / without L_KL, self-attention and spectral norm, on the scale's preset.
STABILITY: list[tuple[str, dict[str, Any]]] = [
    ("noKL", {**NO_KL, "model.attention_res": None, "model.spectral_norm": False}),
    ("noKL+attn", {**NO_KL, "model.attention_res": ATTN, "model.spectral_norm": False}),
    ("noKL+SN", {**NO_KL, "model.attention_res": None, "model.spectral_norm": True}),
    ("SN+attn", {**NO_KL, "model.attention_res": ATTN, "model.spectral_norm": True}),
    ("KL+attn", {**KL, "model.attention_res": ATTN, "model.spectral_norm": False}),
]


@dataclass(frozen=True)
class Scale:
    """How big each part of the reproduction is; ``small`` and ``full`` differ only in these numbers."""

    preset: str
    overrides: dict[str, Any]  # on the preset, for every training run
    seeds: int  # per configuration (Table 2 rows and Fig. 8 configurations)
    comp_overrides: dict[str, Any]  # the attribute models of Table 4 (embedded shapes data)
    comp_attributes: tuple[str, ...]
    comp_seeds: int
    n_eval: int  # samples for the quality metric, test images per OOD set, low-temperature samples
    comp_samples: int  # per composition row
    lowtemp_steps: int  # noise-free gradient steps for Fig. 7 (the paper: 1000)
    lowtemp_samples: int
    mixing_chains: int  # chains from one start for Fig. 6
    kl_cost_steps: tuple[int, ...] = (40, 60)
    kl_cost_repeats: int = 15
    note: str = ""


SCALES: dict[str, Scale] = {
    "small": Scale(
        preset="demo",
        overrides={"train.iterations": 200, "train.log_every": 5, "train.grad_norm_every": 5, "train.image_every": 100,
                   "train.checkpoint_every": 200, "data.num_train": 2_000, "jobs.cpus_per_worker": 1},
        seeds=3,
        comp_overrides={"train.iterations": 150, "train.checkpoint_every": 150, "augment.enabled": True},
        comp_attributes=("shape", "colour"), comp_seeds=2,
        n_eval=256, comp_samples=64, lowtemp_steps=300, lowtemp_samples=128, mixing_chains=16,
        note="demo preset (16x16 shapes, width-16 ResNet, K=20), 200 iterations per run, 2 single-thread trials at once",
    ),
    "full": Scale(
        preset="cifar10",
        overrides={"train.iterations": 10_000, "train.checkpoint_every": 1_000, "train.image_every": 1_000,
                   "jobs.use_gpu": True, "jobs.cpus_per_worker": 4},
        seeds=3,
        comp_overrides={"data.name": "shapes", "data.root": None, "data.num_train": 20_000,
                        "train.iterations": 5_000, "train.checkpoint_every": 1_000, "model.multiscale": False},
        comp_attributes=("shape", "colour", "size", "x"), comp_seeds=3,
        n_eval=2_000, comp_samples=256, lowtemp_steps=1_000, lowtemp_samples=512, mixing_chains=16,
        note="cifar10 preset (needs data/cifar10), 10k iterations per run; 48 runs: tens of GPU-hours (an estimate; never run here)",
    ),
    "test": Scale(  # the smoke scale the test suite runs: every stage in about a minute
        preset="test",
        overrides={"train.iterations": 4, "train.log_every": 1, "train.grad_norm_every": 1, "train.image_every": 4,
                   "train.checkpoint_every": 4, "jobs.cpus_per_worker": 1, "generate.rounds": 1, "generate.steps": 3},
        seeds=1,
        comp_overrides={"train.iterations": 3, "train.checkpoint_every": 3, "model.multiscale": False},
        comp_attributes=("shape", "colour"), comp_seeds=1,
        n_eval=16, comp_samples=8, lowtemp_steps=5, lowtemp_samples=8, mixing_chains=4, kl_cost_steps=(4, 6), kl_cost_repeats=1,
        note="smoke test only: numbers mean nothing",
    ),
}


@dataclass
class Trial:
    """One training run of the sweep and every (group, label) it stands for."""

    name: str
    overrides: dict[str, Any]
    seed: int
    roles: list[tuple[str, str]] = field(default_factory=list)  # ("table2", "aug"), ("fig8", "noKL"), ...


def plan(scale: Scale, base: Config, attributes: dict[str, int]) -> list[Trial]:
    """Every training run: Table 2 rows and Fig. 8 configurations per seed, attribute models per seed.

    Configurations that resolve to the same config (e.g. Table 2's ``aug`` row and Fig. 8's
    ``noKL`` on a single-scale preset with augmentation) are trained once and serve both.
    """
    from ebm_jobs.sweep import ABLATION

    trials: dict[str, Trial] = {}

    def add(group: str, label: str, over: dict[str, Any], seed: int) -> None:
        over = {**over, "train.seed": seed}
        key = json.dumps(base.override(over).to_dict(), sort_keys=True)
        if key not in trials:
            trials[key] = Trial(name=f"{group}-{label}-s{seed}", overrides=over, seed=seed)
        trials[key].roles.append((group, label))

    for seed in range(scale.seeds):
        for label, over in ABLATION:
            add("table2", label, over, seed)
        for label, over in STABILITY:
            add("fig8", label, over, seed)
    for seed in range(scale.comp_seeds):
        for attr in scale.comp_attributes:
            for kl, over in (("KL", KL), ("noKL", NO_KL)):
                add("table4", f"{attr}-{kl}", {**scale.comp_overrides, **over, "data.labels": [attr],
                                                "model.num_classes": [attributes[attr]]}, seed)
    return list(trials.values())


def base_config(scale: Scale, overrides: list[str] | None = None) -> Config:
    return get_preset(scale.preset).override(scale.overrides).override(overrides or [])


def kl_cost(cfg: Config, scale: Scale) -> dict[str, Any]:
    """Step time with and without L_KL at each K in ``scale.kl_cost_steps``: median, min, max seconds.

    The two trainers step in turn (with, without, with, ...), so machine drift hits both alike.
    """
    out: dict[str, Any] = {}
    for K in scale.kl_cost_steps:
        trainers = {}
        for name, over in (("with_kl", KL), ("without_kl", NO_KL)):
            c = cfg.override({**over, "sampler.steps": K, "train.grad_norm_every": 10**9, "train.progress": False,
                              "loss.ent_min_buffer": cfg.train.batch_size})
            trainer = Trainer(c, device="cpu" if not torch.cuda.is_available() else None)
            trainer.buffer.add(torch.rand(4 * c.train.batch_size, *trainer.shape))  # L_ent active at once
            trainer.step_count = 1
            trainer.step()  # warm-up
            trainers[name] = trainer
        times: dict[str, list[float]] = {name: [] for name in trainers}
        for _ in range(scale.kl_cost_repeats):
            for name, trainer in trainers.items():
                t0 = time.perf_counter()
                trainer.step()
                times[name].append(time.perf_counter() - t0)
        row: dict[str, Any] = {name: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t)}
                               for name, t in times.items()}
        row["ratio"] = row["with_kl"]["median_s"] / row["without_kl"]["median_s"]
        row["ratio_range"] = [row["with_kl"]["min_s"] / row["without_kl"]["max_s"],
                              row["with_kl"]["max_s"] / row["without_kl"]["min_s"]]
        out[f"K{K}"] = row
    return out


def read_history(run_dir: Path) -> list[dict[str, float]]:
    path = run_dir / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def load_ema(run_dir: Path) -> torch.nn.Module | None:
    """The EMA model of a run's last checkpoint (None when it diverged before writing one)."""
    ckpt = latest_checkpoint(run_dir)
    if ckpt is None:
        return None
    model, _ = load_model(ckpt, ema=True)
    return model.requires_grad_(False).eval()


def git_commit() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True).stdout
        return sha + (" (with uncommitted changes)" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def reproduce(scale_name: str, *, out: Path, report: Path, overrides: list[str] | None = None,
              tracking_uri: str | None = None, max_concurrent: int | None = None, command: str | None = None,
              log: Any = functools.partial(print, flush=True)) -> dict[str, Any]:
    """Run every stage and write the report; returns the collected results."""
    from ebm_jobs.sweep import sweep
    from ebm_jobs.tracking import start_run

    from . import evaluations, report as report_mod

    if scale_name not in SCALES:
        raise ConfigError(f"--scale: expected one of {sorted(SCALES)}, got {scale_name!r}")
    scale = SCALES[scale_name]
    t_start = time.perf_counter()
    out = out.expanduser().resolve()
    if out.exists() and any(out.iterdir()):
        raise ConfigError(f"--out {out}: not empty; give a new directory (nothing was written)")
    base = base_config(scale, overrides).override({"train.run_dir": str(out)})
    if tracking_uri:
        base = base.override({"jobs.tracking_uri": tracking_uri})
    train_data = load_dataset(base.data, split="train")  # a missing dataset fails here, before any work
    comp_base = base.override(scale.comp_overrides)
    comp_data = load_dataset(comp_base.data, split="train")
    attributes = dict(zip(comp_data.label_names, comp_data.num_classes))
    unknown = [a for a in scale.comp_attributes if a not in attributes]
    if unknown:
        raise ConfigError(f"scale {scale_name}: attributes {unknown} not in {list(attributes)}")
    trials = plan(scale, base, attributes)
    for t in trials:
        base.override(t.overrides)  # every configuration is checked before anything starts
    out.mkdir(parents=True, exist_ok=True)
    report.parent.mkdir(parents=True, exist_ok=True)
    command = command or f"reproduce({scale_name!r}, out={str(out)!r}, report={str(report)!r})"
    uri, run_id = start_run(base, run_name=f"reproduce-{scale_name}", extra_tags={"reproduce": scale_name})
    base = base.override({"jobs.tracking_uri": uri})
    log(f"reproduce {scale_name}: {len(trials)} training runs; MLflow run {run_id} at {uri}")

    results: dict[str, Any] = {"scale": scale_name, "scale_spec": scale.__dict__, "command": command,
                               "commit": git_commit(), "machine": machine(), "mlflow": {"uri": uri, "run_id": run_id}}
    log("domain classifiers for the quality metric (trained once, cached)")
    evaluations.extractor_for(train_data, base)
    evaluations.extractor_for(comp_data, comp_base)
    log("stage 1/4: cost of the KL term (alone on the machine)")
    results["kl_cost"] = kl_cost(base.override({"train.run_dir": str(out / "kl_cost")}), scale)
    log(json.dumps({k: round(v["ratio"], 3) for k, v in results["kl_cost"].items()}))

    log(f"stage 2/4: one Tune sweep of {len(trials)} runs")
    t0 = time.perf_counter()
    rows, sweep_id = sweep(base, [(t.name, t.overrides) for t in trials], sweep_dir=out / "sweep",
                           max_concurrent=max_concurrent, name=f"reproduce-{scale_name}-sweep", parent_run_id=run_id)
    results["sweep"] = {"parent_run_id": sweep_id, "wall_s": time.perf_counter() - t0, "rows": rows}
    by_name = {r["trial"]: r for r in rows}
    runs = []
    for t in trials:
        run_dir = out / "sweep" / t.name
        runs.append({"name": t.name, "seed": t.seed, "roles": t.roles, "overrides": t.overrides,
                     "row": by_name.get(t.name, {}), "history": read_history(run_dir), "run_dir": str(run_dir)})

    log("stage 3/4: evaluations on the stored models")
    t0 = time.perf_counter()
    models = {r["name"]: load_ema(Path(r["run_dir"])) for r in runs}
    results["evaluations"] = evaluations.run_all(runs, models, base=base, comp_base=comp_base, train=train_data,
                                                 comp_data=comp_data, scale=scale, figures=report.parent / "results",
                                                 log=log)
    results["evaluations"]["wall_s"] = time.perf_counter() - t0
    results["runs"] = [{k: v for k, v in r.items() if k != "history"} for r in runs]
    results["wall_s"] = time.perf_counter() - t_start

    log("stage 4/4: report")
    report_mod.write(results, runs, report=report, config=base)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    report_mod.log_to_mlflow(uri, run_id, results, report)
    log(f"reproduce {scale_name}: report {report}, {results['wall_s'] / 60:.1f} min in all")
    return results


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run_from_args(args: argparse.Namespace, *, prog: str = "ebm reproduce") -> int:
    out = Path(args.out or f"runs/reproduce/{args.scale}-{time.strftime('%Y%m%d-%H%M%S')}")
    command = " ".join([prog, "--scale", args.scale] + [f"--set {s}" for s in args.set or []] +
                       ([f"--report {args.report}"] if args.report != "docs/RESULTS.md" else []))
    reproduce(args.scale, out=out, report=Path(args.report).expanduser().resolve(), overrides=args.set,
              tracking_uri=args.tracking_uri, max_concurrent=args.max_concurrent, command=command)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ebm_eval.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_reproduce_arguments(p)
    try:
        return run_from_args(p.parse_args(argv), prog="python -m ebm_eval.reproduce")
    except (ConfigError, FileNotFoundError) as e:
        print(f"ebm reproduce: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
