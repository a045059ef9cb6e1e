"""The eager, straightforward training step that ``run.py`` measures the fast one against (issue 6).

The same Algorithm 1 and the same losses as ``ebm_core.trainer.Trainer.step``, written the obvious
way: K plain Langevin steps with the live model, then the last step computed again with
``create_graph`` for x_hat; three separate forwards for E(x+), E(x-) and the KL energy; the
frozen-weight energy from a deep copy of the model; the entropy term through the full
(B, n, D) difference tensor; a float32 replay buffer. Kept only for the benchmark.
"""

from __future__ import annotations

import copy

import torch

from ebm_core.augment import Augment
from ebm_core.buffer import ReplayBuffer
from ebm_core.config import Config
from ebm_core.data import dequantize, load_dataset
from ebm_core.langevin import langevin_step
from ebm_core.models import build_model


class BaselineStep:
    """One eager training iteration per call, with the waste the fast trainer removes."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.data = load_dataset(cfg.data, split="train")
        torch.manual_seed(cfg.train.seed)
        self.model = build_model(cfg.model, resolution=cfg.data.resolution)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas)
        self.buffer = ReplayBuffer(capacity=cfg.buffer.capacity, reinit_prob=cfg.buffer.reinit_prob, storage="float32")
        self.augment = Augment(cfg.augment, resolution=cfg.data.resolution, channels=3)
        self.shape = tuple(self.data.images.shape[1:])

    def __call__(self) -> float:
        cfg, model, B = self.cfg, self.model, self.cfg.train.batch_size
        x_pos, _ = self.data.batch(torch.randint(len(self.data), (B,)))
        x_pos = dequantize(x_pos)
        x0, _, _ = self.buffer.sample(B, self.shape)
        X, _ = self.buffer.reference_set(cfg.loss.ent_set_size)
        x = self.augment(x0)
        s = cfg.sampler
        for _ in range(s.steps):  # K plain steps
            x_prev = x
            x = langevin_step(model, x, step_size=s.step_size, noise=s.noise)
        x_neg = x
        x_hat = langevin_step(model, x_prev, step_size=s.step_size, noise=s.noise, create_graph=True)  # step K again

        e_pos, e_neg = model(x_pos), model(x_neg)  # forwards 1 and 2
        l_cd = e_pos.mean() - e_neg.mean() + cfg.loss.alpha * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
        frozen = copy.deepcopy(model).requires_grad_(False)
        l_opt = frozen(x_hat).mean()  # forward 3, on a copy
        diff = x_hat.flatten(1)[:, None, :] - X.flatten(1)[None, :, :]  # (B, n, D)
        l_ent = -torch.log(diff.pow(2).sum(-1).min(dim=1).values.add(cfg.loss.ent_eps).sqrt()).mean()
        loss = l_cd + cfg.loss.w_opt * l_opt + cfg.loss.w_ent * l_ent
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.buffer.add(x_neg)
        return loss.item()
