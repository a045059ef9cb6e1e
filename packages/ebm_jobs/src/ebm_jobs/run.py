"""One training run as every job runs it: the Ray Train worker (``worker.py``) and the single-worker Tune
trial (``sweep.py``) both call ``train_run``.

Rank 0 opens (or reopens) the MLflow run itself, writes the run directory, mirrors it to MLflow and,
on URI storage, uploads it to the run's root; every rank trains. A divergence ends the run as FAILED
with its curves kept; a finished run gets its Algorithm 2 samples, any extra metrics and the logged
model, then FINISHED. ``tracking.json`` in the run directory records the outcome.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from ebm_core.callbacks import Callback, RunDirWriter
from ebm_core.config import Config
from ebm_core.trainer import DivergenceError, GradReduce, Trainer

from .storage import QUALITY_FILE, Mirror, RunStorage
from .tracking import MLflowCallback, record_tracking, start_run, terminal_status


STABILITY = "energy/diff_abs_avg"  # what Tune's schedulers and searchers see of a run's stability
WINDOW = 5


def stability(trainer: Trainer) -> float:
    """Mean |energy/diff| over the last WINDOW logged steps: near 0 while training is stable (``loss/cd`` itself
    rewards drifting toward divergence)."""
    every = trainer.cfg.train.log_every
    diffs = [abs(h["energy/diff"]) for h in trainer.history if h["step"] % every == 0][-WINDOW:]
    if diffs:
        return sum(diffs) / len(diffs)
    return abs(trainer.history[-1]["energy/diff"]) if trainer.history else 0.0


@dataclass
class RunOutcome:
    trainer: Trainer
    tracking_uri: str | None = None  # rank 0: where the run is recorded (the server, or the fallback store)
    run_id: str | None = None
    diverged: bool = False
    error: str | None = None  # the divergence message
    extra: dict[str, float] = field(default_factory=dict)  # metrics computed after training (rank 0)


def train_run(cfg: Config, *, rank: int = 0, world_size: int = 1, storage: RunStorage | None = None,
              parent_run_id: str | None = None, extra_tags: dict[str, str] | None = None,
              grad_reduce: GradReduce | None = None, device: str | torch.device | None = None,
              callbacks: Iterable[Callback] = (), setup: Callable[[Trainer], None] | None = None,
              write_checkpoints: bool | None = None,
              extra_metrics: Callable[[Trainer], dict[str, float]] | None = None) -> RunOutcome:
    """Build the trainer with the run-dir writer, MLflow mirror and storage upload (rank 0) before ``callbacks``,
    hand it to ``setup`` (weights from rank 0, or a checkpoint to restore), fit, and close the MLflow run."""
    torch.set_num_threads(cfg.jobs.cpus_per_worker)
    tracker = uri = run_id = None
    own: list[Callback] = []
    if rank == 0:
        tags = {**(extra_tags or {}), **({"run_root": storage.uri} if storage is not None else {})}  # --resume-run
        uri, run_id = start_run(cfg, parent_run_id=parent_run_id, extra_tags=tags)
        writer = RunDirWriter(cfg.train.run_dir)
        tracker = MLflowCallback(tracking_uri=uri, run_id=run_id, writer=writer, flush_every=10 * cfg.train.log_every)
        own = [writer, tracker] + ([Mirror(storage, writer.run_dir)] if storage is not None and storage.is_uri else [])
    trainer = Trainer(cfg, callbacks=[*own, *callbacks], grad_reduce=grad_reduce, rank=rank, world_size=world_size,
                      device=device)
    if setup is not None:
        setup(trainer)
    outcome = RunOutcome(trainer, tracking_uri=uri, run_id=run_id)
    try:
        trainer.fit(write_checkpoints=write_checkpoints)
    except DivergenceError as e:  # the trainer has already written its curves; every rank stops here together
        outcome.diverged, outcome.error = True, str(e)
        if tracker is not None:
            tracker.end(terminal_status(False), error=str(e))
    else:
        outcome.extra = extra_metrics(trainer) if extra_metrics is not None and rank == 0 else {}
        if outcome.extra:
            (trainer.run_dir / QUALITY_FILE).write_text(json.dumps(outcome.extra, indent=2))
        if tracker is not None:
            tracker.finish(trainer, outcome.extra)
    if rank == 0:
        record_tracking(cfg.train.run_dir, uri, run_id, status=terminal_status(not outcome.diverged),
                        step=trainer.step_count)
        if storage is not None:
            storage.upload(trainer.run_dir)
    return outcome
