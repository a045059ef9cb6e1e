"""``ebm sweep``, ``ebm eval`` and ``ebm reproduce``, added to the core ``ebm`` command through the
``ebm.commands`` entry point, and MLflow model URIs for the core's ``ebm sample``; Ray and MLflow are
imported only when one of them runs."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from .arguments import add_eval_arguments, add_reproduce_arguments, add_sweep_arguments


def _sweep(args: argparse.Namespace) -> int:
    from .sweep import run_from_args

    return run_from_args(args)


def _eval(args: argparse.Namespace) -> int:
    from .evaluate import run_from_args

    return run_from_args(args)


def _reproduce(args: argparse.Namespace) -> int:
    from .reproduce import run_from_args

    return run_from_args(args)


def mlflow_sample(sample: argparse.ArgumentParser) -> None:
    """Let the core's ``ebm sample`` take ``models:/<name>@<alias>``, ``runs:/<id>/model`` or a run id: the model
    is fetched from MLflow into a temporary directory, then the core command samples it."""
    core = sample.get_default("func")
    sample.add_argument("--tracking-uri", help="MLflow tracking URI for a model URI (default: $MLFLOW_TRACKING_URI)")

    def run(args: argparse.Namespace) -> int:
        if Path(args.checkpoint).expanduser().is_file():
            return core(args)
        from .evaluate import resolve_model

        with resolve_model(args.checkpoint, tracking_uri=args.tracking_uri) as resolved:
            if args.out is None:  # next to the checkpoint would be the temporary directory
                args.out = re.sub(r"[^\w@.-]+", "_", args.checkpoint).strip("_") + ".samples.png"
            args.checkpoint = str(resolved.path)
            return core(args)

    sample.set_defaults(func=run)


def register(sub: argparse._SubParsersAction) -> None:
    if "sample" in sub.choices:
        mlflow_sample(sub.choices["sample"])
    s = sub.add_parser("sweep", help="Ray Tune sweep or the Table 2 ablation, tracked in MLflow")
    add_sweep_arguments(s)
    s.set_defaults(func=_sweep)
    e = sub.add_parser("eval", help="FID/IS, OOD AUROC and composition on a stored model (local or MLflow)")
    add_eval_arguments(e)
    e.set_defaults(func=_eval)
    r = sub.add_parser("reproduce", help="reproduce the paper's claims: sweeps, evaluations, docs/RESULTS.md")
    add_reproduce_arguments(r)
    r.set_defaults(func=_reproduce)
