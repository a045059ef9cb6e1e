"""Checkpoints: written atomically (temp file, fsync, rename), read with ``weights_only=True``.

A checkpoint is a plain dict of tensors and primitives: model, EMA, optimiser, replay buffer,
RNG states, step and config, enough to resume exactly where a run stopped.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

REQUIRED_KEYS = ("format", "model", "ema", "optimizer", "buffer", "rng", "step", "config")
FORMAT = "ebm_core.checkpoint/1"
MODEL_FORMAT = "ebm_core.model/1"  # weights (EMA by default) and config only: what trackers store and evaluators read
MODEL_KEYS = ("format", "model", "step", "config")


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or not one of ours; the message names the path."""


def save_checkpoint(state: dict[str, Any], path: str | Path, *, fmt: str = FORMAT) -> Path:
    """Write ``state`` to ``path`` atomically: a crash leaves the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format": fmt, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, *, map_location: str | torch.device = "cpu",
                    allow_model: bool = False) -> dict[str, Any]:
    """Read and validate a training checkpoint (or, with ``allow_model``, a model export too)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        # torch's own message suggests weights_only=False, which would run code from the file: not passed on.
        raise CheckpointError(f"checkpoint {path} could not be read: not a torch checkpoint, truncated, or holding "
                              f"objects other than tensors and plain values (refused unloaded, for safety; "
                              f"{type(e).__name__})") from None
    formats = {FORMAT: REQUIRED_KEYS, **({MODEL_FORMAT: MODEL_KEYS} if allow_model else {})}
    if isinstance(state, dict) and state.get("format") == MODEL_FORMAT and not allow_model:
        raise CheckpointError(f"checkpoint {path} is a model export (weights and config only): it can be sampled or "
                              f"evaluated, not resumed; resume from a run's checkpoints/step_<n>.pt")
    if not isinstance(state, dict) or state.get("format") not in formats:
        raise CheckpointError(f"checkpoint {path} is not an ebm_core checkpoint (expected format {' or '.join(formats)})")
    missing = [k for k in formats[state["format"]] if k not in state]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}")
    return state


def rng_state() -> dict[str, Any]:
    """torch (CPU and CUDA), NumPy and Python RNG states, as weights_only-loadable values."""
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
