"""One training run as every job runs it: the Ray Train worker (``worker.py``) and the single-worker Tune
trial (``sweep.py``) both call ``train_run``.

Rank 0 writes the run directory and mirrors it to MLflow; every rank trains. A divergence ends the
run as FAILED with its curves kept; a finished run gets its Algorithm 2 samples, any extra metrics
and the logged model, then FINISHED.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch

from ebm_core.callbacks import Callback, RunDirWriter
from ebm_core.config import Config
from ebm_core.trainer import DivergenceError, GradReduce, Trainer

from .tracking import MLflowCallback, terminal_status


@dataclass
class RunOutcome:
    trainer: Trainer
    diverged: bool = False
    error: str | None = None  # the divergence message
    extra: dict[str, float] = field(default_factory=dict)  # metrics computed after training (rank 0)


def train_run(cfg: Config, *, tracking_uri: str, run_id: str, rank: int = 0, world_size: int = 1,
              grad_reduce: GradReduce | None = None, device: str | torch.device | None = None,
              callbacks: Iterable[Callback] = (), setup: Callable[[Trainer], None] | None = None,
              write_checkpoints: bool | None = None,
              extra_metrics: Callable[[Trainer], dict[str, float]] | None = None) -> RunOutcome:
    """Build the trainer with the run-dir writer and MLflow mirror (rank 0) before ``callbacks``, hand it to
    ``setup`` (weights from rank 0, or a checkpoint to restore), fit, and close the MLflow run."""
    torch.set_num_threads(cfg.jobs.cpus_per_worker)
    tracker = None
    own: list[Callback] = []
    if rank == 0:
        writer = RunDirWriter(cfg.train.run_dir)
        tracker = MLflowCallback(tracking_uri=tracking_uri, run_id=run_id, writer=writer, flush_every=cfg.train.log_every)
        own = [writer, tracker]
    trainer = Trainer(cfg, callbacks=[*own, *callbacks], grad_reduce=grad_reduce, rank=rank, world_size=world_size,
                      device=device)
    if setup is not None:
        setup(trainer)
    try:
        trainer.fit(write_checkpoints=write_checkpoints)
    except DivergenceError as e:  # the trainer has already written its curves; every rank stops here together
        if tracker is not None:
            tracker.end(terminal_status(False), error=str(e))
        return RunOutcome(trainer, diverged=True, error=str(e))
    extra = extra_metrics(trainer) if extra_metrics is not None and rank == 0 else {}
    if tracker is not None:
        tracker.finish(trainer, extra)
    return RunOutcome(trainer, extra=extra)
