"""The Ray Train worker loop: it runs ``run.train_run`` (the core trainer) with four marked touches.

(1) data sharded by rank, gradients averaged with ``all_reduce_mean`` over the process group that
    ``TorchTrainer`` set up (gloo on CPU, NCCL on GPU); one replay buffer per worker;
(2) start from rank 0's weights (broadcast), or restore from ``ray.train.get_checkpoint()`` after a
    failure or on a resubmitted job: shared state from ``shared.pt``, this rank's buffer and RNG states
    from ``rank_<r>.pt``; rank 0 writes the run directory on the run's storage (``storage.py``);
(3) report: every ``train.checkpoint_every`` iterations all ranks write their part of one Ray
    checkpoint and call ``ray.train.report`` (a barrier); rank 0 also writes an ``ebm_core``
    checkpoint in the run directory and mirrors everything to MLflow;
(4) fit.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import ray.train
import ray.train.torch
import torch

from ebm_core.callbacks import Callback
from ebm_core.checkpoint import load_checkpoint, save_checkpoint
from ebm_core.config import Config
from ebm_core.distributed import all_reduce_mean, broadcast_from_rank0
from ebm_core.trainer import Trainer
from ebm_eval.quick import quick_quality

from .run import STABILITY, stability, train_run
from .storage import RunStorage

SHARED = "shared.pt"


def rank_file(rank: int) -> str:
    return f"rank_{rank}.pt"


class RayReport(Callback):
    """(3) Every checkpoint interval: a Ray checkpoint holding every worker's buffer, EMA, optimiser, RNG."""

    def __init__(self, rank: int) -> None:
        self.rank = rank

    def on_step_end(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        cfg = trainer.cfg.train
        if step % cfg.checkpoint_every and step != cfg.iterations:
            return
        state = trainer.state_dict()
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint({"buffer": state["buffer"], "rng": state["rng"], "step": step}, Path(tmp) / rank_file(self.rank))
            if self.rank == 0:
                save_checkpoint({k: v for k, v in state.items() if k not in ("buffer", "rng")} | {"buffer": {}, "rng": {}},
                                Path(tmp) / SHARED)
                trainer.save_checkpoint(state=state)  # the ebm_core checkpoint in the run dir (and MLflow's EMA export)
            ray.train.report({"step": step, **metrics, STABILITY: stability(trainer)},  # Tune's ASHA/Optuna see it
                             checkpoint=ray.train.Checkpoint.from_directory(tmp))


def restore(trainer: Trainer, checkpoint_dir: Path, rank: int) -> None:
    """(2) Shared state plus this rank's own buffer and RNG states."""
    mine = checkpoint_dir / rank_file(rank)
    if not mine.is_file():
        raise RuntimeError(f"checkpoint {checkpoint_dir} has no {mine.name}: it was written by fewer workers "
                           f"than this run has; restart with the same jobs.num_workers")
    shared = load_checkpoint(checkpoint_dir / SHARED)
    own = torch.load(mine, weights_only=True)
    trainer.load_state_dict({**shared, "buffer": own["buffer"], "rng": own["rng"]})


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Runs in every Ray Train worker. ``loop_config``: config dict, the run's storage, the MLflow parent run and
    tags, extra callbacks."""
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    storage = RunStorage(**loop_config["storage"])
    local = storage.local_dir()  # the run's root on a shared path; on a URI, this node's scratch copy
    if rank == 0 and storage.is_uri:  # a fresh copy of the root: this node may be new to the run
        shutil.rmtree(local, ignore_errors=True)
        storage.download(local)
    cfg = Config.from_dict(loop_config["config"]).override({"train.run_dir": str(local)})
    factory: Callable[[int], list[Callback]] | None = loop_config.get("extra_callbacks")
    checkpoint = ray.train.get_checkpoint()

    def start(trainer: Trainer) -> None:  # (2) rank 0's weights everywhere, or the latest checkpoint after a failure
        if checkpoint is None:
            broadcast_from_rank0(trainer.model, trainer.ema)
            return
        with checkpoint.as_directory() as d:
            restore(trainer, Path(d), rank)

    outcome = train_run(cfg, rank=rank, world_size=world, storage=storage, parent_run_id=loop_config.get("parent_run_id"),
                        extra_tags=loop_config.get("tags"),
                        grad_reduce=all_reduce_mean, device=ray.train.torch.get_device(),  # (1)
                        callbacks=[*(factory(rank) if factory else []), RayReport(rank)],  # (3) last: it has seen the rest
                        setup=start, extra_metrics=quick_quality,  # the final EMA model's quality figures
                        write_checkpoints=False)  # (4) fit; RayReport writes the checkpoints
    if outcome.diverged:
        ray.train.report({"step": outcome.trainer.step_count, "diverged": 1.0, "error": outcome.error})
