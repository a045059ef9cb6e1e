"""Reproduce the paper's claims at a chosen scale: one command, Ray Tune sweeps, MLflow runs, a report.

    ebm reproduce --scale small                    # embedded shapes, about 30 min on a 2-core CPU
    ebm reproduce --scale full                     # the same structure, cifar10 preset, for a GPU machine
    python -m ebm_jobs.reproduce --scale small     # the same, for `ray job submit`

Four stages: (1) the KL term's step-time cost (Sec. 4), measured alone before anything else runs;
(2) one Tune sweep over every training run: Table 2's rows, Fig. 8's configurations and Table 4's
attribute models (``ebm_core.recipes``), each configuration x seed a nested MLflow run, identical
configurations trained once; (3) ``ebm_eval``'s measurements on the stored EMA checkpoints: mixing
(Fig. 6), low temperature (Fig. 7), OOD (Table 3) and composition (Table 4); (4) ``ebm_eval.report``
writes the report with its figures and a verdict per claim, logged to the parent MLflow run.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ebm_core.config import Config, ConfigError
from ebm_core.data import load_dataset
from ebm_core.pipeline import load_model
from ebm_core.recipes import FIG8, SCALES, TABLE2, Scale, Variant, table4
from ebm_core.runs import check_new_run, new_run_dir
from ebm_core.trainer import latest_checkpoint
from ebm_eval import evaluations, report as report_mod
from ebm_eval.evaluations import RunResult
from ebm_eval.features import dataset_extractor
from ebm_eval.timing import kl_cost

from .arguments import add_reproduce_arguments, module_main
from .sweep import sweep
from .tracking import describe_commit, log_reproduction, source_tags, start_run


@dataclasses.dataclass
class Trial:
    """One training run of the sweep and every variant it stands for."""

    name: str
    overrides: dict[str, Any]
    seed: int
    roles: list[Variant] = dataclasses.field(default_factory=list)


def plan(scale: Scale, base: Config, models: dict[tuple[str, bool], Variant]) -> list[Trial]:
    """Every training run: Table 2 rows and Fig. 8 configurations per seed, Table 4 ``models`` per seed.

    Variants that resolve to the same config (e.g. Table 2's ``aug`` row and Fig. 8's ``noKL`` on a
    single-scale preset with augmentation) are trained once and serve both.
    """
    trials: dict[str, Trial] = {}

    def add(variant: Variant, seed: int) -> None:
        over = {**variant.overrides, "train.seed": seed}
        key = json.dumps(base.override(over).to_dict(), sort_keys=True)
        if key not in trials:
            trials[key] = Trial(name=f"{variant.group}-{variant.name}-s{seed}", overrides=over, seed=seed)
        trials[key].roles.append(variant)

    for seed in range(scale.seeds):
        for variant in (*TABLE2, *FIG8):
            add(variant, seed)
    for seed in range(scale.comp_seeds):
        for a in scale.comp_attributes:
            for kl in (True, False):
                add(models[(a, kl)], seed)
    return list(trials.values())


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


def machine() -> dict[str, Any]:
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def reproduce(scale_name: str, *, out: Path | None = None, report: Path, overrides: list[str] | None = None,
              tracking_uri: str | None = None, max_concurrent: int | None = None, command: str | None = None,
              log: Callable[[str], Any] = functools.partial(print, flush=True)) -> report_mod.Reproduction:
    """Run every stage and write the report; returns what was measured. ``out`` must be new or empty
    (default: a new ``runs/reproduce/<scale>-<date-time>``)."""
    if scale_name not in SCALES:
        raise ConfigError(f"--scale: expected one of {sorted(SCALES)}, got {scale_name!r}")
    scale = SCALES[scale_name]
    t_start = time.perf_counter()
    commit = describe_commit()  # now: the report's own figures change the tree before it is written
    if out is not None:
        out = check_new_run(out)
    base = scale.base(overrides)
    if tracking_uri:
        base = base.override({"jobs.tracking_uri": tracking_uri})
    train_data = load_dataset(base.data, split="train")  # a missing dataset fails here, before any work
    comp_base = base.override(scale.comp_overrides)
    comp_data = load_dataset(comp_base.data, split="train")
    attributes = dict(zip(comp_data.label_names, comp_data.num_classes))
    unknown = [a for a in scale.comp_attributes if a not in attributes]
    if unknown:
        raise ConfigError(f"scale {scale_name}: attributes {unknown} not in {list(attributes)}")
    models = table4({a: attributes[a] for a in scale.comp_attributes}, scale.comp_overrides)
    trials = plan(scale, base, models)
    for t in trials:
        base.override(t.overrides)  # every configuration is checked before anything starts
    out = out if out is not None else new_run_dir("runs/reproduce", prefix=f"{scale_name}-")
    out.mkdir(parents=True, exist_ok=True)
    base = base.override({"train.run_dir": str(out)})
    report.parent.mkdir(parents=True, exist_ok=True)
    command = command or f"reproduce({scale_name!r}, out={str(out)!r}, report={str(report)!r})"
    uri, run_id = start_run(base, run_name=f"reproduce-{scale_name}", extra_tags={**source_tags(), "reproduce": scale_name})
    base = base.override({"jobs.tracking_uri": uri})
    log(f"reproduce {scale_name}: {len(trials)} training runs; MLflow run {run_id} at {uri}")

    log("the judges (domain classifiers) of the quality figures (trained once, cached)")
    for data in (base.data, comp_base.data):
        log(f"  {data.name} {data.resolution}px judge test accuracy: {dataset_extractor(data, log=log).accuracies}")
    log("stage 1/4: cost of the KL term (alone on the machine)")
    cost = {f"K{K}": kl_cost(base.override({"sampler.steps": K, "train.run_dir": str(out / "kl_cost")}),
                             repeats=scale.kl_cost_repeats, device="cpu" if not torch.cuda.is_available() else None)
            for K in scale.kl_cost_steps}
    log(json.dumps({k: round(v["ratio"]["median"], 3) for k, v in cost.items()}))

    log(f"stage 2/4: one Tune sweep of {len(trials)} runs")
    t0 = time.perf_counter()
    rows, sweep_id = sweep(base, [(t.name, t.overrides) for t in trials], sweep_dir=out / "sweep",
                           max_concurrent=max_concurrent, name=f"reproduce-{scale_name}-sweep", parent_run_id=run_id)
    sweep_wall = time.perf_counter() - t0
    by_name = {r["trial"]: r for r in rows}
    runs = [RunResult(name=t.name, seed=t.seed, roles=t.roles, overrides=t.overrides, row=by_name.get(t.name, {}),
                      history=read_history(out / "sweep" / t.name), run_dir=str(out / "sweep" / t.name))
            for t in trials]

    log("stage 3/4: evaluations on the stored models")
    t0 = time.perf_counter()
    ema = {r.name: load_ema(Path(r.run_dir)) for r in runs}
    ev = evaluations.run_all(runs, ema, base=base, comp_base=comp_base, train=train_data, comp_data=comp_data,
                             scale=scale, table4=models, figures=report.parent / "results", log=log)
    ev.wall_s = time.perf_counter() - t0

    log("stage 4/4: report")
    rep = report_mod.Reproduction(scale_name=scale_name, scale=scale, command=command, commit=commit,
                                  machine=machine(), mlflow_uri=uri, mlflow_run_id=run_id, kl_cost=cost,
                                  sweep_parent_run_id=sweep_id, sweep_wall_s=sweep_wall, runs=runs, evaluations=ev,
                                  table4=models, wall_s=time.perf_counter() - t_start)
    report_mod.write(rep, report=report, config=base)
    results_json = json.dumps(_jsonable(rep), indent=2, default=str)
    (out / "results.json").write_text(results_json)
    verdicts = {v: sum(c.verdict.startswith(v) for c in rep.claims) for v in ("reproduced", "not reproduced", "inconclusive")}
    log_reproduction(uri, run_id, results_json, report, verdicts, {k: r["ratio"]["median"] for k, r in cost.items()})
    log(f"reproduce {scale_name}: report {report}, {rep.wall_s / 60:.1f} min in all")
    return rep


def _jsonable(rep: report_mod.Reproduction) -> dict[str, Any]:
    """``results.json``: the reproduction with variants written as their group/name and Table 4's keys as text."""
    d = dataclasses.asdict(dataclasses.replace(rep, table4={}))
    d["table4"] = {f"{a}-{'KL' if kl else 'noKL'}": dataclasses.asdict(v) for (a, kl), v in rep.table4.items()}
    for r in d["runs"]:
        r["roles"] = [f"{v['group']}/{v['name']}" for v in r["roles"]]
        r.pop("history")
    return d


def run_from_args(args: argparse.Namespace, *, prog: str = "ebm reproduce") -> int:
    command = " ".join([prog, "--scale", args.scale] + [f"--set {s}" for s in args.set or []] +
                       ([f"--report {args.report}"] if args.report != "docs/RESULTS.md" else []))
    reproduce(args.scale, out=Path(args.out) if args.out else None, report=Path(args.report).expanduser().resolve(),
              overrides=args.set, tracking_uri=args.tracking_uri, max_concurrent=args.max_concurrent, command=command)
    return 0


def main(argv: list[str] | None = None) -> int:
    prog = "python -m ebm_jobs.reproduce"
    return module_main(argv, prog=prog, doc=__doc__, add_arguments=add_reproduce_arguments,
                       run=functools.partial(run_from_args, prog=prog))


if __name__ == "__main__":
    sys.exit(main())
