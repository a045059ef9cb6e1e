"""Trainer: a short run stays finite and bounded, the metrics of DESIGN §4, the guard, the hooks."""

import functools
import io
import json
import math
import sys
import time

import pytest
import torch

from ebm_core.callbacks import Callback, bar_interval
from ebm_core.config import ConfigError
from ebm_core.trainer import DivergenceError, Trainer, learning_rate

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


class _StampedLog(io.StringIO):
    """A log file (not a TTY) that notes when each progress-bar line was written."""

    def __init__(self):
        super().__init__()
        self.redraws: list[tuple[float, str]] = []

    def write(self, s: str) -> int:
        if "train:" in s:
            self.redraws.append((time.monotonic(), s.strip()))
        return super().write(s)


def test_progress_off_a_terminal_is_one_line_per_interval_even_after_a_slow_step(tiny_cfg, monkeypatch):
    """A log file or ``ray job submit`` (stderr not a TTY) gets the bar once per interval, not a line per iteration.
    A slow step used to wake tqdm's monitor thread, which redrew without restarting the interval: two lines at once.
    Here the interval is 1 s (10 s in real logs) and the monitor is as quick, so a slow third step shows it."""
    import ebm_core.callbacks as callbacks
    import ebm_core.trainer as tr

    log = _StampedLog()
    monkeypatch.setattr(sys, "stderr", log)
    assert bar_interval() == 10.0
    monkeypatch.setattr(callbacks, "bar_interval", lambda: 1.0)
    monkeypatch.setattr(tr, "tqdm", functools.partial(tr.tqdm, maxinterval=1.0))  # tqdm's monitor wakes after 1 s
    monkeypatch.setattr(tr.tqdm.func, "monitor_interval", 0.05)  # and looks every 0.05 s
    if tr.tqdm.func.monitor is not None:  # a monitor started by an earlier bar sleeps 10 s between looks
        tr.tqdm.func.monitor.exit()
        monkeypatch.setattr(tr.tqdm.func, "monitor", None)

    class SlowSpell(Callback):
        def on_step_end(self, trainer, step, metrics):
            time.sleep({1: 0.6, 2: 0.6, 3: 1.2}[step])

    Trainer(tiny_cfg.override({"train.iterations": 3, "train.progress": True}), callbacks=[SlowSpell()]).fit()
    times = [t for t, _ in log.redraws]
    gaps = [b - a for a, b in zip(times, times[1:-1])]  # the last line is the close, drawn whenever the run ends
    assert all(g >= 0.9 for g in gaps) and "3/3" in log.redraws[-1][1], log.redraws


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


def test_learning_rate_decays_over_the_last_fraction_and_a_resume_continues_it(tiny_cfg, tmp_path):
    """optim.decay_fraction=0.5 of 6 iterations: the full rate up to step 4, then 2/3 and 1/3 of it, as the
    optimiser saw it, across a stop at step 3 and a resume (the rate follows the step); 0 keeps it constant."""
    cfg = tiny_cfg.override({"optim.lr": 1e-3, "optim.decay_fraction": 0.5, "train.iterations": 6})

    class Rates(Callback):
        def __init__(self) -> None:
            self.seen: list[float] = []

        def on_step_end(self, trainer, step, metrics):
            self.seen.append(trainer.optimizer.param_groups[0]["lr"])
            assert metrics["optim/lr"] == self.seen[-1]

    first, second = Rates(), Rates()
    stopped = Trainer(cfg.override({"train.run_dir": str(tmp_path / "a")}), callbacks=[first])
    stopped.fit(3)
    resumed = Trainer(cfg.override({"train.run_dir": str(tmp_path / "b")}), callbacks=[second])
    resumed.resume(stopped.last_checkpoint)
    resumed.fit()
    assert first.seen + second.seen == pytest.approx([1e-3, 1e-3, 1e-3, 1e-3, 1e-3 * 2 / 3, 1e-3 / 3])

    constant = cfg.override({"optim.decay_fraction": 0.0, "train.run_dir": str(tmp_path / "c")})
    assert [learning_rate(constant, it) for it in range(1, 7)] == [1e-3] * 6

    class Halve(Rates):  # with a constant rate, a callback's own schedule is what the optimiser uses
        def on_step_end(self, trainer, step, metrics):
            super().on_step_end(trainer, step, metrics)
            trainer.optimizer.param_groups[0]["lr"] /= 2

    own = Halve()
    Trainer(constant.override({"train.iterations": 3}), callbacks=[own]).fit()
    assert own.seen == pytest.approx([1e-3, 5e-4, 2.5e-4])
    with pytest.raises(ConfigError, match="optim.decay_fraction"):
        cfg.override({"optim.decay_fraction": 1.5})


def test_diverged_step_ends_the_metrics_file(tiny_cfg):
    from ebm_core.callbacks import RunDirWriter

    t = Trainer(tiny_cfg.override({"train.energy_bound": 1e-9}), callbacks=[RunDirWriter(tiny_cfg.train.run_dir)])
    with pytest.raises(DivergenceError, match="iteration 1"):
        t.fit()
    last = json.loads((t.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["step"] == 1 and last["diverged"] == 1.0 and abs(last["energy/pos"]) > 1e-9


def test_step_gradient_equals_the_losses_computed_by_hand(tiny_cfg, monkeypatch):
    """One Trainer.step against Eqs. 5, 7 and 8 written out here on the same chains: L_opt through weights frozen
    by a deep copy, L_ent over the full (B, n) distance table with each chain's own start left out, per-scale
    energies averaged over S = 3, the entropy set drawn from the buffer as it was before the step."""
    import copy

    import ebm_core.trainer as tr

    cfg = tiny_cfg.override({"sampler.noise": 0.0, "optim.grad_clip": None, "augment.enabled": False,
                             "buffer.reinit_prob": 0.0, "buffer.storage": "float32", "loss.ent_min_buffer": 16,
                             "loss.w_opt": 0.7, "loss.w_ent": 0.3, "train.grad_norm_every": 1})
    t = Trainer(cfg)
    t.buffer.add(torch.rand(32, *t.shape))
    before = t.buffer.data[: len(t.buffer)].clone()
    ref = copy.deepcopy(t.model)
    seen = {}
    real_langevin, real_ent, real_deq = tr.langevin, tr.ent_loss, tr.dequantize
    monkeypatch.setattr(tr, "langevin", lambda energy, x0, **kw: seen.setdefault("x0", x0.clone()) is not None
                        and real_langevin(energy, x0, **kw))
    monkeypatch.setattr(tr, "ent_loss", lambda x, X, **kw: seen.update(X=X.clone(), exclude=kw["exclude"]) or
                        real_ent(x, X, **kw))
    monkeypatch.setattr(tr, "dequantize", lambda x: seen.setdefault("x_pos", real_deq(x)))
    monkeypatch.setattr(t.optimizer, "step", lambda: seen.update(grads=[p.grad.clone() for p in t.model.parameters()]))
    metrics = t.step()

    S, lam, K = 3, cfg.sampler.step_size, cfg.sampler.steps
    x = seen["x0"]
    for _ in range(K - 1):  # the chain, noise-free
        x = x.detach().requires_grad_(True)
        x = (x - lam * torch.autograd.grad(ref(x).sum(), x)[0]).clamp(0, 1)
    x = x.detach().requires_grad_(True)
    x_hat = (x - lam * torch.autograd.grad(ref(x).sum(), x, create_graph=True)[0]).clamp(0, 1)  # theta via grad_x E
    e = ref.energies(torch.cat([seen["x_pos"], x_hat.detach()]))  # (2B, S)
    e_pos, e_neg = e[:16], e[16:]
    l_cd = e_pos.mean() - e_neg.mean()  # Eq. 5
    l_reg = cfg.loss.alpha * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
    frozen_copy = copy.deepcopy(ref).requires_grad_(False)
    l_opt = (frozen_copy(x_hat) / S).mean()  # Eq. 7: the sum over scales, averaged like the other losses
    d2 = (x_hat.flatten(1)[:, None, :] - seen["X"].flatten(1)[None]).pow(2).sum(-1)  # (B, n)
    nn_idx = d2.detach().masked_fill(seen["exclude"], float("inf")).argmin(1)
    l_ent = -(0.5 * torch.log(d2[torch.arange(16), nn_idx] + cfg.loss.ent_eps)).mean()  # Eq. 8
    total = l_cd + l_reg + cfg.loss.w_opt * l_opt + cfg.loss.w_ent * l_ent
    by_hand = torch.autograd.grad(total, list(ref.parameters()), retain_graph=True)
    for ours, theirs in zip(seen["grads"], by_hand):
        torch.testing.assert_close(ours, theirs, rtol=2e-4, atol=1e-6)
    norm = lambda gs: torch.linalg.vector_norm(torch.stack([g.norm() for g in gs])).item()  # noqa: E731
    assert metrics["grad_norm/cd"] == pytest.approx(norm(torch.autograd.grad(l_cd, list(ref.parameters()),
                                                                             retain_graph=True)), rel=1e-4)
    assert metrics["grad_norm/reg"] == pytest.approx(norm(torch.autograd.grad(l_reg, list(ref.parameters()))), rel=1e-4)
    # the entropy set came from the buffer as it was before this step's negatives were added
    old = {tuple(r.flatten().tolist()) for r in before}
    assert all(tuple(r.flatten().tolist()) in old for r in seen["X"])
    assert seen["exclude"].any()  # some chain met its own start in X, and was kept from choosing it


def test_fresh_noise_starts_are_not_augmented(tiny_cfg, monkeypatch):
    """As in the reference code, only starts drawn from the buffer pass through the augmentation transitions."""
    import ebm_core.trainer as tr

    t = Trainer(tiny_cfg.override({"buffer.reinit_prob": 0.5, "augment.enabled": True}))
    t.buffer.add(torch.rand(64, *t.shape))
    seen = {}
    real_sample, real_langevin = t.buffer.sample, tr.langevin
    monkeypatch.setattr(t.buffer, "sample", lambda *a, **k: seen.setdefault("drawn", real_sample(*a, **k)))
    monkeypatch.setattr(tr, "langevin", lambda energy, x0, **kw: seen.setdefault("x0", x0.clone()) is not None
                        and real_langevin(energy, x0, **kw))
    t.step()
    x_drawn, _, fresh = seen["drawn"]
    assert fresh.any() and (~fresh).any()
    torch.testing.assert_close(seen["x0"][fresh], x_drawn[fresh])  # noise as drawn
    assert not torch.allclose(seen["x0"][~fresh], x_drawn[~fresh])  # replayed starts transformed
