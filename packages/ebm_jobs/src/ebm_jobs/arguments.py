"""The flags of ``ebm sweep``, ``ebm eval`` and ``ebm reproduce``, shared by the ``ebm`` command (``commands.py``)
and by their ``python -m ebm_jobs.<module>`` forms, which ``ray job submit`` runs."""

from __future__ import annotations

import argparse
from typing import Callable

from ebm_core.cli import report_error
from ebm_core.runs import add_config_args


def module_main(argv: list[str] | None, *, prog: str, doc: str | None,
                add_arguments: Callable[[argparse.ArgumentParser], None],
                run: Callable[[argparse.Namespace], int]) -> int:
    """``python -m ebm_jobs.<module>`` (the form ``ray job submit`` runs): the same flags as the ``ebm`` command."""
    p = argparse.ArgumentParser(prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    try:
        return run(p.parse_args(argv))
    except BaseException as e:
        return report_error(prog, e)


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    add_config_args(p)
    p.add_argument("--ablation", action="store_true", help="the five rows of the paper's Table 2")
    p.add_argument("--grid", action="append", default=[], metavar="SECTION.FIELD=V1,V2",
                   help="a grid axis (repeatable; the trials are the cartesian product)")
    p.add_argument("--space", action="append", default=[], metavar="SECTION.FIELD=SAMPLER(ARGS)",
                   help="a sampled axis for --search random|optuna: uniform(a,b), loguniform(a,b), randint(a,b), "
                        "quniform(a,b,q), choice(v1,v2,...) (repeatable)")
    p.add_argument("--search", default="grid", choices=["grid", "random", "optuna"],
                   help="grid (every combination), random (Tune's sampler) or optuna (Tune's Optuna integration)")
    p.add_argument("--num-samples", type=int, default=1, help="random: repeats of the grid; optuna: trials")
    p.add_argument("--asha", action="store_true", help="stop weak trials early with ASHA")
    p.add_argument("--asha-metric", default="stability", choices=["stability", "fid_domain"],
                   help="what ASHA and Optuna minimise: stability = mean |energy/diff| over the last 5 reports; "
                        "fid_domain = FID-domain of 256 samples at each report (slower)")
    p.add_argument("--max-concurrent", type=int,
                   help="trials at once (default: as many as their resource requests fit on the cluster)")
    p.add_argument("--sweep-dir", help="a new or empty directory for the sweep (default: runs/sweeps/<date-time>; "
                                       "with jobs.storage_path, its last part names the sweep there)")
    p.add_argument("--resume", metavar="SWEEP_ROOT", help="finish an interrupted sweep: its directory or URI")


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint path, MLflow run id, runs:/<id>/model, models:/<name>/<ver> "
                                                  "or models:/<name>@<alias> (latest, best)")
    p.add_argument("--metrics", default="fid,is,quality,ood",
                   help="comma-separated, from fid,is,quality,ood,comp (quality: recognisability, colour distance, "
                        "precision/recall by the dataset's judge, beside held-out real splits)")
    p.add_argument("--out", help="output directory (default: runs/eval/<date-time>)")
    p.add_argument("--num-samples", type=int, default=50_000,
                   help="generated samples for FID, KID and IS (default: the paper's 50 000; fewer is allowed, with a "
                        "warning, as FID is then biased); test images per OOD set")
    p.add_argument("--batch-size", type=int, default=256, help="chains sampled at once")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda[:N]: generation and features")
    p.add_argument("--no-ema", action="store_true", help="evaluate the raw weights instead of the EMA")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI)")
    p.add_argument("--fid-weights", help="path of the FID Inception weights (pt_inception-2015-12-05)")
    p.add_argument("--allow-download", action="store_true", help="download the Inception weights if missing")
    p.add_argument("--steps", type=int, help="Langevin steps K per round (default: the model's generate.steps)")
    p.add_argument("--rounds", type=int, help="augmentation rounds N")
    p.add_argument("--step-size", type=float)
    p.add_argument("--noise", type=float)
    p.add_argument("--comp-iterations", type=int, default=300, help="training iterations of each attribute model")
    p.add_argument("--seed", type=int, default=0)


def add_reproduce_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scale", default="small", choices=["small", "full", "test"],
                   help="small: embedded shapes, < 60 min on a 2-core CPU; full: cifar10 preset on a GPU; test: smoke")
    p.add_argument("--out", help="a new or empty working directory: runs, MLflow store, results.json "
                                 "(default runs/reproduce/<scale>-<time>)")
    p.add_argument("--report", default="docs/RESULTS.md", help="the report; its figures go to results/ beside it")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override on every run's config")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else a local store in --out)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: CPUs / jobs.cpus_per_worker)")
