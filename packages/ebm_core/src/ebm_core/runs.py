"""The front end every entry point shares (``ebm train``, ``ebm sweep``, ``python -m ebm_jobs.train``,
``ebm reproduce``): which config (``--preset``/``--config``/``--set``) and which run directory.

A run directory is either new (``<parent>/<date-time>``, created exclusively, so two runs started in
the same second never share one) or named by the user, and then it must be empty: a run is never
written over another.
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path
from typing import Iterator

from .config import Config, ConfigError
from .presets import PRESETS, get_preset


def add_config_args(p: argparse.ArgumentParser, *, default_preset: str = "demo") -> None:
    """``--preset``, ``--config``, ``--set`` and the ``--iterations`` shortcut."""
    p.add_argument("--preset", default=default_preset, choices=sorted(PRESETS),
                   help=f"named configuration (default: {default_preset})")
    p.add_argument("--config", help="YAML config file (from `ebm config`); replaces --preset")
    p.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                   help="override one field, e.g. --set loss.w_ent=0.3 (repeatable)")
    p.add_argument("--iterations", type=int, help="shortcut for --set train.iterations=N")


def config_from_args(args: argparse.Namespace) -> Config:
    """Preset or YAML file, then ``--set`` overrides, then ``--iterations``; validated before any work."""
    cfg = Config.from_yaml(args.config) if args.config else get_preset(args.preset)
    overrides = overrides_from_args(args)
    return cfg.override(overrides) if overrides else cfg


def overrides_from_args(args: argparse.Namespace) -> list[str]:
    """The ``--set`` overrides, then ``--iterations`` as ``train.iterations=N``."""
    overrides = list(args.set or [])
    if getattr(args, "iterations", None) is not None:
        overrides.append(f"train.iterations={args.iterations}")
    return overrides


def new_run_dir(parent: str | Path, *, prefix: str = "") -> Path:
    """Create and return ``parent/<prefix><YYYYmmdd-HHMMSS>`` (``-2``, ``-3``, ... when that name is taken)."""
    return new_named_dir(parent, prefix + time.strftime("%Y%m%d-%H%M%S"))


def numbered(name: str) -> Iterator[str]:
    """``name``, ``name-2``, ``name-3``, ..."""
    yield name
    for i in itertools.count(2):
        yield f"{name}-{i}"


def new_named_dir(parent: str | Path, name: str) -> Path:
    """Create and return ``parent/<name>``, or the first free ``parent/<name>-<n>``: created exclusively, so two
    runs started at once never share one."""
    parent = Path(parent).expanduser().resolve()
    parent.mkdir(parents=True, exist_ok=True)
    for candidate in numbered(name):
        path = parent / candidate
        try:
            path.mkdir()  # exclusive: fails if another run took the name first
            return path
        except FileExistsError:
            continue
    raise AssertionError("unreachable")


def check_new_run(run_dir: str | Path) -> Path:
    """The absolute path of a run directory the user named, refused when it already holds anything."""
    path = Path(run_dir).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run directory {path} is a file, not a directory (nothing was written)")
    held = sorted(p.name for p in path.iterdir()) if path.is_dir() else []
    if held:
        shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
        raise ConfigError(f"run directory {path} is not empty (it holds {shown}); choose a new directory, or "
                          f"continue a run with `ebm train --resume <its checkpoint>` (nothing was overwritten)")
    return path


def run_dir_for(cfg: Config, run_dir: str | Path | None) -> Path:
    """The named run directory (new or empty), else a new one under ``cfg.train.run_dir``."""
    return new_run_dir(cfg.train.run_dir) if run_dir is None else check_new_run(run_dir)


def resume_run_dir(checkpoint: str | Path, run_dir: str | Path | None) -> tuple[Path, Path | None]:
    """Where a resumed run writes, and the checkpoint it was forked from (None when it continues in place).

    A run continues in its own directory (``<run>/checkpoints/step_<n>.pt``) from its newest checkpoint.
    Any other ``run_dir``, or an older checkpoint, forks: a new or empty directory that records the
    checkpoint it came from (``forked_from.txt``), so no other run's files are ever touched.
    """
    ckpt = Path(checkpoint).expanduser().resolve()
    own = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None
    target = Path(run_dir).expanduser().resolve() if run_dir is not None else own
    if target is None:
        raise ConfigError(f"--resume {ckpt}: not in a run's checkpoints/ directory; give --run-dir, a new or empty "
                          f"directory for the continued run")
    if target == own:
        newest = max(own.joinpath("checkpoints").glob("step_*.pt"), default=ckpt)
        if newest.resolve() == ckpt:
            return own, None
        raise ConfigError(f"--resume {ckpt}: its run has a newer checkpoint ({newest.name}) that continuing in place "
                          f"would overwrite; give --run-dir, a new or empty directory, to fork from it")
    return check_new_run(target), ckpt
