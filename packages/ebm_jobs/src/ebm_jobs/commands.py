"""``ebm sweep``, ``ebm eval`` and ``ebm reproduce``, added to the core ``ebm`` command through the
``ebm.commands`` entry point; Ray and MLflow are imported only when one of them runs."""

from __future__ import annotations

import argparse

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


def register(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser("sweep", help="Ray Tune sweep or the Table 2 ablation, tracked in MLflow")
    add_sweep_arguments(s)
    s.set_defaults(func=_sweep)
    e = sub.add_parser("eval", help="FID/IS, OOD AUROC and composition on a stored model (local or MLflow)")
    add_eval_arguments(e)
    e.set_defaults(func=_eval)
    r = sub.add_parser("reproduce", help="reproduce the paper's claims: sweeps, evaluations, docs/RESULTS.md")
    add_reproduce_arguments(r)
    r.set_defaults(func=_reproduce)
