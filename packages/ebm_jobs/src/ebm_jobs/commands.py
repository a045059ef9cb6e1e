"""``ebm sweep``, registered through the ``ebm.commands`` entry points; imports Ray and MLflow only when run."""

from __future__ import annotations

import argparse
from typing import Any


def _run(args: argparse.Namespace) -> int:
    from .sweep import run_from_args

    return run_from_args(args)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ablation", action="store_true", help="the five rows of the paper's Table 2")
    p.add_argument("--grid", action="append", default=[], metavar="SECTION.FIELD=V1,V2",
                   help="a grid axis (repeatable; the trials are the cartesian product)")
    p.add_argument("--asha", action="store_true", help="stop weak trials early with ASHA (on loss/cd)")
    p.add_argument("--max-concurrent", type=int, help="trials at once (default: what the CPUs allow)")
    p.add_argument("--sweep-dir", help="directory for the sweep (default: runs/sweeps/<date-time>)")
    p.add_argument("--iterations", type=int, help="shortcut for --set train.iterations=N")


def register(sub: argparse._SubParsersAction, config_args: Any) -> None:
    s = sub.add_parser("sweep", help="Ray Tune sweep or the Table 2 ablation, tracked in MLflow (ebm_jobs)")
    config_args(s)
    add_arguments(s)
    s.set_defaults(func=_run)
