"""Trainer: a short run stays finite and bounded, the metrics of DESIGN §4, the guard, the hooks."""

import json
import math

import pytest
import torch

from ebm_core.callbacks import Callback
from ebm_core.config import ConfigError
from ebm_core.trainer import DivergenceError, Trainer

METRICS = {"loss/cd", "loss/reg", "loss/kl_opt", "loss/kl_ent", "energy/pos", "energy/neg", "energy/diff",
           "perf/images_per_s"}


def test_short_run_is_finite_and_bounded(tiny_cfg):
    cfg = tiny_cfg.override({"train.iterations": 12})
    t = Trainer(cfg)
    last = t.fit()
    assert METRICS <= set(last)
    for h in t.history:
        assert all(math.isfinite(v) for v in h.values())
        assert abs(h["energy/diff"]) < cfg.train.energy_bound
    assert any(h["loss/kl_ent"] != 0 for h in t.history)  # the entropy term switched on once the buffer filled
    norms = [h for h in t.history if "grad_norm/cd" in h]
    assert [h["step"] for h in norms] == [1, 2, 4, 6, 8, 10, 12]
    assert all(h["grad_norm/kl"] > 0 for h in norms)
    assert (t.run_dir / "checkpoints").is_dir()


def test_kl_off_skips_the_differentiable_step(tiny_cfg, monkeypatch):
    import ebm_core.trainer as tr

    seen = []
    real = tr.langevin
    monkeypatch.setattr(tr, "langevin", lambda *a, **k: seen.append(k["differentiable_last"]) or real(*a, **k))
    t = Trainer(tiny_cfg.override({"loss.use_opt": False, "loss.use_ent": False}))
    m = t.step()
    t.step()
    assert seen == [False, False] and m["loss/kl_opt"] == 0 and m["grad_norm/kl"] == 0


def test_divergence_guard_stops_cleanly_and_keeps_the_checkpoint(tiny_cfg):
    t = Trainer(tiny_cfg)
    t.fit(3)
    good = t.last_checkpoint
    before = good.read_bytes()
    t.cfg = t.cfg.override({"train.energy_bound": 1e-9})
    with torch.no_grad():
        for p in t.model.parameters():
            p.add_(0.5)
    with pytest.raises(DivergenceError) as e:
        t.fit(6)
    assert "iteration 4" in str(e.value) and str(good) in str(e.value)
    assert good.read_bytes() == before and t.step_count == 3


def test_nan_energy_is_caught(tiny_cfg):
    t = Trainer(tiny_cfg)
    with torch.no_grad():
        next(t.model.parameters()).fill_(float("nan"))
    with pytest.raises(DivergenceError, match="iteration 1.*none written yet"):
        t.step()


def test_grad_reduce_hook_and_callbacks(tiny_cfg):
    calls = []

    class Spy(Callback):
        def __init__(self):
            self.events = []

        def on_step_end(self, trainer, step, metrics):
            self.events.append(("step", step))

        def on_images(self, trainer, step, tag, images):
            self.events.append((tag, step))

        def on_checkpoint(self, trainer, step, path):
            self.events.append(("ckpt", step))

    spy = Spy()

    def reduce(grads):
        calls.append(len(grads))
        for g in grads:
            g.zero_()  # a reducer that zeroes gradients must freeze the weights

    t = Trainer(tiny_cfg, callbacks=[spy], grad_reduce=reduce)
    before = [p.detach().clone() for p in t.model.parameters()]
    t.fit(3)
    assert len(calls) == 3 and calls[0] == len(before) + 1  # the gradients and the guard energies
    assert all(torch.equal(a, b) for a, b in zip(before, t.model.parameters()))
    assert ("negatives", 3) in spy.events and ("ckpt", 3) in spy.events and ("step", 1) in spy.events


def test_sharding_gives_disjoint_batches(tiny_cfg):
    a = Trainer(tiny_cfg, rank=0, world_size=2)
    b = Trainer(tiny_cfg, rank=1, world_size=2)
    assert not set(a.batch_indices(0).tolist()) & set(b.batch_indices(0).tolist())
    with pytest.raises(ConfigError, match="batch_size"):
        Trainer(tiny_cfg.override({"train.batch_size": 400}), world_size=2)


def test_resume_takes_the_configs_learning_rate(tiny_cfg, tmp_path):
    """After a divergence at a large step, resuming with a smaller optim.lr must use it, not the stored one."""
    t = Trainer(tiny_cfg.override({"optim.lr": 1.0, "optim.betas": [0.5, 0.9]}))
    t.step()
    ckpt = t.save_checkpoint()
    again = Trainer(tiny_cfg.override({"optim.lr": 2e-4, "train.run_dir": str(tmp_path / "again")}))
    again.resume(ckpt)
    assert [(g["lr"], tuple(g["betas"])) for g in again.optimizer.param_groups] == [(2e-4, (0.0, 0.9))]
    assert again.optimizer.state_dict()["state"]  # the moments themselves are kept


def test_diverged_step_ends_the_metrics_file(tiny_cfg):
    from ebm_core.callbacks import RunDirWriter

    t = Trainer(tiny_cfg.override({"train.energy_bound": 1e-9}), callbacks=[RunDirWriter(tiny_cfg.train.run_dir)])
    with pytest.raises(DivergenceError, match="iteration 1"):
        t.fit()
    last = json.loads((t.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 1 and last["diverged"] == 1.0 and abs(last["energy/pos"]) > 1e-9
