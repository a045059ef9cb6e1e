"""Single-process trainer for improved contrastive divergence (Du et al. 2021, Algorithm 1).

``Trainer.step()`` runs one iteration and returns its metrics; ``fit()`` loops with a progress
bar, callbacks, periodic checkpoints and the divergence guard. Distributed training plugs in
through ``grad_reduce`` (an in-place all-reduce of the gradient list) and ``rank``/``world_size``
(data sharding); the trainer never imports a launcher or a tracker.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .augment import Augment
from .buffer import ReplayBuffer
from .callbacks import Callback, bar_options, chain_image
from .checkpoint import CheckpointError, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .config import Config, ConfigError
from .data import ImageSet, dequantize, load_dataset
from .ema import make_ema
from .fastgrad import frozen_grad
from .langevin import langevin
from .losses import cd_loss, ent_loss, opt_loss
from .models import build_model, frozen, per_scale_energies
from .pipeline import generate

GradReduce = Callable[[list[Tensor]], None]


class DivergenceError(RuntimeError):
    """Training diverged: a non-finite energy or |energy/pos| past the configured bound."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"train.device: {name!r} asked for, but CUDA is not available here")
    return torch.device(name)


class Trainer:
    """Algorithm 1 around one energy network, its EMA, optimiser and replay buffer."""

    def __init__(self, cfg: Config, *, data: ImageSet | None = None, callbacks: Iterable[Callback] = (),
                 grad_reduce: GradReduce | None = None, rank: int = 0, world_size: int = 1,
                 device: str | torch.device | None = None) -> None:
        self.cfg, self.rank, self.world_size = cfg, rank, world_size
        self.device = torch.device(device) if device is not None else resolve_device(cfg.train.device)
        self.data = data if data is not None else load_dataset(cfg.data, split="train")
        per_rank = len(self.data) // world_size
        if per_rank < cfg.train.batch_size:
            raise ConfigError(f"train.batch_size: {cfg.train.batch_size} exceeds the {per_rank} training images "
                              f"each of {world_size} worker(s) holds")
        self.shape = tuple(self.data.images.shape[1:])  # (C, H, W)
        if cfg.model.num_classes and tuple(cfg.model.num_classes) != tuple(self.data.num_classes):
            raise ConfigError(f"model.num_classes: {list(cfg.model.num_classes)} does not match the dataset's "
                              f"label cardinalities {list(self.data.num_classes)}")

        torch.manual_seed(cfg.train.seed)  # same initial weights on every rank
        self.model = build_model(cfg.model, resolution=cfg.data.resolution, in_channels=self.shape[0]).to(self.device)
        if cfg.train.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        kind = cfg.train.sampler_grad  # built after any layout change: it holds views of the weights
        self.input_grad = None if kind == "plain" else frozen_grad(
            self.model, compile=kind == "compiled", channels_last=cfg.train.channels_last, bf16=cfg.train.sampler_bf16)
        self.n_scales = len(getattr(self.model, "factors", (1,)))
        self.ema = make_ema(self.model, decay=cfg.optim.ema_decay)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas)
        b = cfg.buffer
        self.buffer = ReplayBuffer(capacity=b.capacity, reinit_prob=b.reinit_prob, mode=b.mode, storage=b.storage,
                                   device=self.device)
        self.augment = Augment(cfg.augment, resolution=cfg.data.resolution, channels=self.shape[0])
        torch.manual_seed(cfg.train.seed * 1_000_003 + rank)  # chains differ across ranks

        self.callbacks = list(callbacks)
        self.grad_reduce = grad_reduce
        self.step_count = 0
        self.history: list[dict[str, float]] = []
        self.last_checkpoint: Path | None = None
        self.run_dir = Path(cfg.train.run_dir)
        self._last_negatives: Tensor | None = None  # x- of the latest step, for the image callbacks

    # data -----------------------------------------------------------------------------------------
    def batch_indices(self, step: int) -> Tensor:
        """Indices of this rank's batch at ``step``: a seeded permutation per epoch, sharded by rank.

        Derived from the step alone, so resuming needs no data-loader state.
        """
        B, n = self.cfg.train.batch_size, len(self.data)
        per_rank = n // self.world_size
        per_epoch = per_rank // B
        epoch, i = divmod(step, per_epoch)
        g = torch.Generator().manual_seed(self.cfg.data.seed * 1_000_003 + epoch)
        shard = torch.randperm(n, generator=g)[self.rank::self.world_size][:per_rank]
        return shard[i * B:(i + 1) * B]

    # one iteration ----------------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        """One iteration of Algorithm 1; returns its metrics (DESIGN §4 names)."""
        cfg, it = self.cfg, self.step_count + 1
        t0 = time.perf_counter()
        model, B = self.model, cfg.train.batch_size
        x_pos, y = self.data.batch(self.batch_indices(self.step_count))
        x_pos, y = dequantize(x_pos.to(self.device)), y.to(self.device)  # 1. x+ ~ p_D
        y = y if cfg.model.num_classes else None

        x0, start_idx, fresh = self.buffer.sample(B, self.shape, device=self.device)  # 2. starts from B or U
        use_opt = cfg.loss.opt_on
        use_ent = cfg.loss.ent_on and len(self.buffer) >= cfg.loss.ent_min_buffer
        X, own_start = None, None
        if use_ent:  # Eq. 8's set: drawn before this batch is added, augmented like the starts (as the reference)
            X, X_idx = self.buffer.reference_set(cfg.loss.ent_set_size, device=self.device)
            X = self.augment(X)
            own_start = start_idx[:, None] == X_idx[None, :]  # (B, n): a chain never neighbours its own start
        replayed = ~fresh  # on the CPU: testing it costs no device sync in the hot loop
        if replayed.any():  # 3. x~0 = D(x~0) for starts from the buffer; fresh noise stays noise (as the reference)
            x0 = torch.where(replayed.to(self.device)[:, None, None, None], self.augment(x0), x0)

        s = cfg.sampler  # 4-5. K Langevin steps; x- detached, x_hat through the last step
        fast = self.input_grad
        chains = langevin(lambda x: model(x, y), x0, steps=s.steps, step_size=s.step_size, noise=s.noise,
                          differentiable_last=use_opt or use_ent, grad_fn=(lambda x: fast(x, y)) if fast else None)
        x_neg, x_hat = chains.x, chains.x_hat

        # 6. losses: one forward for E(x+) and E(x-), per-scale energies (B, S)
        e = per_scale_energies(model, torch.cat([x_pos, x_neg]), None if y is None else torch.cat([y, y]))
        e_pos, e_neg = e[:B], e[B:]
        l_cd, l_reg = cd_loss(e_pos, e_neg, alpha=cfg.loss.alpha)  # Eq. 5
        zero = torch.zeros((), device=self.device)
        l_opt = opt_loss(frozen(model)(x_hat, y) / self.n_scales) if use_opt else zero  # Eq. 7
        l_ent = ent_loss(x_hat, X, eps=cfg.loss.ent_eps, exclude=own_start) if use_ent else zero  # Eq. 8

        loss_kl = cfg.loss.w_opt * l_opt + cfg.loss.w_ent * l_ent
        params = [p for p in model.parameters() if p.requires_grad]
        # the logged scalars, reduced with the gradients (one all-reduce): every rank sees the means over workers
        names = ["energy/pos", "energy/neg", "loss/cd", "loss/reg", "loss/kl_opt", "loss/kl_ent"]
        scalars = [e_pos.mean(), e_neg.mean(), l_cd, l_reg, l_opt, l_ent]
        every = cfg.train.grad_norm_every
        if every and (it % every == 0 or it == 1):  # Fig. 9: the gradients apart (L_CD alone, as the reference)
            g_cd = torch.autograd.grad(l_cd, params, retain_graph=True)
            g_reg = torch.autograd.grad(l_reg, params, retain_graph=True)
            g_kl = (torch.autograd.grad(loss_kl, params, allow_unused=True, materialize_grads=True)
                    if loss_kl.requires_grad else [torch.zeros_like(p) for p in params])
            names += ["grad_norm/cd", "grad_norm/reg", "grad_norm/kl"]
            scalars += [_norm(g_cd), _norm(g_reg), _norm(g_kl)]
            grads = [a + b + c for a, b, c in zip(g_cd, g_reg, g_kl)]
        else:
            grads = list(torch.autograd.grad(l_cd + l_reg + loss_kl, params))
        stats = torch.stack([s.detach().to(self.device, torch.float32) for s in scalars])
        if self.grad_reduce is not None:  # so every rank logs the same values, and the guard stops all together
            self.grad_reduce(grads + [stats])
        metrics = dict(zip(names, stats.tolist()))
        energies = stats[:2]
        self._guard(it, energies)
        for p, g in zip(params, grads):
            p.grad = g
        if cfg.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
        if cfg.optim.decay_fraction:  # a constant rate is left alone, so a callback may still set its own
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(cfg, it)
        metrics["optim/lr"] = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()  # 7. Adam, clipping, EMA
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update_parameters(model)
        self.buffer.add(x_neg)  # 8. B <- B u x-

        self.step_count = it
        metrics["energy/diff"] = metrics["energy/pos"] - metrics["energy/neg"]
        metrics["perf/images_per_s"] = B * self.world_size / (time.perf_counter() - t0)  # over all workers
        self.history.append({"step": it, **metrics})
        self._last_negatives = x_neg
        return metrics

    def _guard(self, it: int, energies: Tensor) -> None:
        """Divergence guard: stop before the update, pointing at the last good checkpoint."""
        e_p, e_n = energies.tolist()
        bound = self.cfg.train.energy_bound
        if math.isfinite(e_p) and math.isfinite(e_n) and abs(e_p) <= bound:
            return
        # the diverging step's energies end the history (and metrics.jsonl, plots): they show how it diverged
        self.history.append({"step": it, "energy/pos": e_p, "energy/neg": e_n, "energy/diff": e_p - e_n, "diverged": 1.0})
        hint = (f"; to continue with a smaller step: ebm train --resume {self.last_checkpoint} --set "
                f"optim.lr={self.cfg.optim.lr / 10:.3g}") if self.last_checkpoint else ""
        last = str(self.last_checkpoint) if self.last_checkpoint else "none written yet"
        raise DivergenceError(f"training diverged at iteration {it}: energy/pos={e_p:.4g}, energy/neg={e_n:.4g} "
                              f"(bound |energy/pos| <= {bound}, train.energy_bound). Last good checkpoint: {last}{hint}")

    # loop ----------------------------------------------------------------------------------------------
    def fit(self, iterations: int | None = None, *, write_checkpoints: bool | None = None) -> dict[str, float]:
        """Train until ``iterations`` (default ``cfg.train.iterations``) and return the last metrics. The learning-rate
        schedule spans ``cfg.train.iterations`` whatever ``iterations`` says (``learning_rate``)."""
        cfg = self.cfg.train
        total = iterations or cfg.iterations
        write = self.rank == 0 if write_checkpoints is None else write_checkpoints
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            self.cfg.to_yaml(self.run_dir / "config.yaml")
        for cb in self.callbacks:
            cb.on_fit_start(self)
        metrics: dict[str, float] = {}
        bar = tqdm(total=total, initial=self.step_count, desc="train", disable=not cfg.progress or self.rank != 0,
                   dynamic_ncols=True, **bar_options())
        try:
            while self.step_count < total:
                metrics = self.step()
                it = self.step_count
                for cb in self.callbacks:
                    cb.on_step_end(self, it, metrics)
                if it % cfg.image_every == 0:
                    self._emit_images(it, "negatives", self._last_negatives[:64])
                if write and (it % cfg.checkpoint_every == 0 or it == total):
                    self.save_checkpoint()
                bar.set_postfix({"E+": f"{metrics['energy/pos']:.3f}", "diff": f"{metrics['energy/diff']:.3f}"},
                                refresh=False)  # a refresh here would draw every step, whatever mininterval says
                bar.update(1)
        finally:  # a diverged run still gets its curves: they show how it diverged
            bar.close()
            for cb in self.callbacks:
                cb.on_fit_end(self)
        return metrics

    def generate_samples(self, *, chain: bool = True) -> Tensor:
        """Algorithm 2 with the EMA weights; emits 'samples_ema' (and 'chain') images to the callbacks."""
        steps: list[Tensor] = []
        x = generate(self.ema.module, self.cfg, labels_from=self.data, channels=self.shape[0], device=self.device,
                     chain=steps if chain else None, progress=self.cfg.train.progress)
        self._emit_images(self.step_count, "samples_ema", x)
        if chain:
            self._emit_images(self.step_count, "chain", chain_image(steps))
        return x

    def _emit_images(self, step: int, tag: str, images: Tensor) -> None:
        for cb in self.callbacks:
            cb.on_images(self, step, tag, images.detach().cpu())

    # state -----------------------------------------------------------------------------------------------
    def model_state(self) -> dict:
        """Weights, EMA, step and config: what a model export needs, without copying the replay buffer."""
        return {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "step": self.step_count,
                "config": self.cfg.to_dict(), "channels": self.shape[0]}

    def state_dict(self) -> dict:
        """Everything needed to resume exactly: weights, EMA, optimiser, buffer, RNG, step, config, history."""
        return {**self.model_state(), "optimizer": self.optimizer.state_dict(), "buffer": self.buffer.state_dict(),
                "rng": rng_state(), "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        """Restore a ``state_dict()``. The optimiser takes this trainer's ``optim.lr`` and ``optim.betas``,
        not the stored ones: a run resumed with a new learning rate uses it."""
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"], group["betas"] = self.cfg.optim.lr, tuple(self.cfg.optim.betas)
        self.buffer.load_state_dict(state["buffer"])
        set_rng_state(state["rng"])
        self.step_count = int(state["step"])
        self.history = list(state.get("history", []))

    def save_checkpoint(self, path: str | Path | None = None, *, keep: int = 3, state: dict | None = None) -> Path:
        """Atomically write ``checkpoints/step_<n>.pt`` (keeping the newest ``keep``) and tell the callbacks.

        ``state`` is a ``state_dict()`` the caller already made this step, so it is not built twice.
        """
        ckpt_dir = self.run_dir / "checkpoints"
        path = Path(path) if path is not None else ckpt_dir / f"step_{self.step_count:07d}.pt"
        save_checkpoint(state if state is not None else self.state_dict(), path)
        self.last_checkpoint = path
        if path.parent == ckpt_dir:
            for old in sorted(ckpt_dir.glob("step_*.pt"))[:-keep]:
                old.unlink()
        for cb in self.callbacks:
            cb.on_checkpoint(self, self.step_count, path)
        return path

    def resume(self, path: str | Path) -> None:
        """Continue from a checkpoint of this same configuration (weights_only load, validated)."""
        state = load_checkpoint(path, map_location=self.device)
        stored = Config.from_dict(state["config"])
        for section in ("model", "data"):
            if getattr(stored, section) != getattr(self.cfg, section):
                raise ConfigError(f"resume: checkpoint {path} was trained with a different {section} config")
        try:
            self.load_state_dict(state)
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError) as e:
            raise CheckpointError(f"checkpoint {path}: its contents do not fit this run ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0][:300]})") from None
        self.last_checkpoint = Path(path)


def learning_rate(cfg: Config, it: int) -> float:
    """``optim.lr`` for iteration ``it`` (1-based) of ``train.iterations``: held, then linearly towards 0 over the
    last ``optim.decay_fraction`` of the run (the last iteration takes 1 / (decay iterations) of it).

    A function of the step alone, so a resumed run needs no scheduler state and takes a new ``optim.lr`` as given;
    torch's ``LambdaLR`` would keep the base rate in its own state, which a resume would have to override.
    """
    o, total = cfg.optim, cfg.train.iterations
    if o.decay_fraction == 0:
        return o.lr
    return o.lr * min(1.0, max(0.0, (total - it + 1) / (o.decay_fraction * total)))


def _norm(grads: Iterable[Tensor]) -> Tensor:
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    ckpts = sorted((Path(run_dir) / "checkpoints").glob("step_*.pt"))
    return ckpts[-1] if ckpts else None
