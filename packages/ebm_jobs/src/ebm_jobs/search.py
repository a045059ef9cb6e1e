"""A sweep's search space in Ray Tune's own terms, over the config's dotted keys, so Tune's results table, its
search algorithms and its schedulers see the hyperparameters themselves.

    --ablation                          variant = grid_search(Table 2's row names)
    --grid loss.w_ent=0,0.3             loss.w_ent = grid_search([0, 0.3])
    --space optim.lr=loguniform(1e-5,1e-3) --space sampler.steps=choice(20,40) --space loss.w_ent=uniform(0,1)
    --search random|optuna --num-samples N      (Optuna through Tune's integration; its grid axes become choices)
"""

from __future__ import annotations

import math
import re
from typing import Any

import yaml

from ebm_core.config import ConfigError

SAMPLERS = {"uniform": "(low, high)", "loguniform": "(low, high)", "randint": "(low, high)",
            "quniform": "(low, high, q)", "choice": "(v1, v2, ...)"}
SPACE = re.compile(r"^([a-z_]+\.[a-z_0-9]+)=(" + "|".join(SAMPLERS) + r")\((.*)\)$")


def value(text: str) -> Any:
    """A command-line value: int, float (``1e-5`` too, which YAML reads as a string), else a YAML scalar."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return yaml.safe_load(text)


def parse_grid(specs: list[str]) -> dict[str, list[Any]]:
    """``["loss.w_ent=0,0.3"]`` -> ``{"loss.w_ent": [0, 0.3]}`` (values read as YAML scalars)."""
    grid: dict[str, list[Any]] = {}
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"--grid {spec!r}: expected section.field=v1,v2,...")
        key, values = spec.split("=", 1)
        grid[key] = [value(v) for v in values.split(",")]
    return grid


def parse_space(specs: list[str]) -> dict[str, tuple[str, list[Any]]]:
    """``["optim.lr=loguniform(1e-5,1e-3)"]`` -> ``{"optim.lr": ("loguniform", [1e-05, 0.001])}``."""
    space = {}
    for spec in specs:
        m = SPACE.match(spec.replace(" ", ""))
        if not m:
            raise ConfigError(f"--space {spec!r}: expected section.field=SAMPLER(args), SAMPLER one of {', '.join(SAMPLERS)}")
        key, sampler, args = m.group(1), m.group(2), [value(a) for a in m.group(3).split(",") if a]
        if len(args) != SAMPLERS[sampler].count(",") + 1 and not (sampler == "choice" and args):
            raise ConfigError(f"--space {spec!r}: {sampler} takes {SAMPLERS[sampler]}")
        space[key] = (sampler, args)
    return space


def tune_space(variants: list[str], grid: dict[str, list[Any]], space: dict[str, tuple[str, list[Any]]],
               search: str) -> dict[str, Any]:
    """Tune's ``param_space``: grid axes as ``grid_search`` (``choice`` for Optuna, which samples every axis)."""
    from ray import tune

    axis = tune.choice if search == "optuna" else tune.grid_search
    out: dict[str, Any] = {}
    if len(variants) > 1 or (variants and variants[0]):
        out["variant"] = axis(variants)
    out.update({k: axis(v) for k, v in grid.items()})
    for key, (sampler, args) in space.items():
        out[key] = tune.choice(args) if sampler == "choice" else getattr(tune, sampler)(*args)
    return out


def trial_count(variants: list[str], grid: dict[str, list[Any]], search: str, num_samples: int) -> int:
    """How many trials the sweep runs: Tune repeats the grid ``num_samples`` times; Optuna draws ``num_samples``."""
    if search == "optuna":
        return num_samples
    return max(1, len(variants)) * math.prod(len(v) for v in grid.values()) * num_samples


def trial_overrides(config: dict[str, Any], variants: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """A Tune trial's config as config overrides: its variant's, then its own dotted keys."""
    over = dict(variants.get(config.get("variant", ""), {}))
    over.update({k: v for k, v in config.items() if "." in k})
    return over


def trial_name(config: dict[str, Any]) -> str:
    """``baseline``, ``loss.w_ent=0.3,sampler.steps=5``, ``baseline,optim.lr=0.000123``: what the trial varies."""
    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    parts = [config["variant"]] if config.get("variant") else []
    parts += [f"{k}={fmt(v)}" for k, v in sorted(config.items()) if "." in k]
    return ",".join(parts) or "base"
