"""``ebm eval`` and ``ebm reproduce``, registered through the ``ebm.commands`` entry point; heavy imports only when run."""

from __future__ import annotations

import argparse
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from .job import run_from_args

    return run_from_args(args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint path, MLflow run id, runs:/<id>/model or models:/<name>/<ver>")
    p.add_argument("--metrics", default="fid,is,ood", help="comma-separated, from fid,is,ood,comp")
    p.add_argument("--out", help="output directory (default: runs/eval/<date-time>)")
    p.add_argument("--num-samples", type=int, default=500, help="generated samples for FID/IS; test images for OOD")
    p.add_argument("--batch-size", type=int, default=256, help="chains sampled at once")
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
    p.add_argument("--out", help="working directory: runs, MLflow store, results.json (default runs/reproduce/<scale>-<time>)")
    p.add_argument("--report", default="docs/RESULTS.md", help="the report; its figures go to results/ beside it")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE", help="override on every run's config")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else a local store in --out)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: CPUs / jobs.cpus_per_worker)")


def _reproduce(args: argparse.Namespace) -> int:
    from .reproduce import run_from_args

    return run_from_args(args)


def register(sub: argparse._SubParsersAction, config_args: Any) -> None:
    s = sub.add_parser("eval", help="FID/IS, OOD AUROC and composition on a stored model (ebm_eval)")
    add_arguments(s)
    s.set_defaults(func=_run)
    r = sub.add_parser("reproduce", help="reproduce the paper's claims: sweeps, evaluations, docs/RESULTS.md")
    add_reproduce_arguments(r)
    r.set_defaults(func=_reproduce)
