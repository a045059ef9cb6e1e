"""The sampler's fast input-gradient paths give the plain numbers (issue 6); turning them off works."""

from __future__ import annotations

import copy

import pytest
import torch

from ebm_core.config import ConfigError
from ebm_core.fastgrad import frozen_grad
from ebm_core.langevin import energy_grad
from ebm_core.models import build_model
from ebm_core.trainer import Trainer


def _model(cfg, **over):
    torch.manual_seed(0)
    return build_model(cfg.model.__class__(**{**cfg.model.__dict__, **over}), resolution=cfg.data.resolution)


@pytest.mark.parametrize("over", [{}, {"num_classes": (3, 2)}, {"spectral_norm": True, "multiscale": False}])
@pytest.mark.parametrize("channels_last", [False, True])
def test_frozen_grad_equals_plain(tiny_cfg, over, channels_last):
    model = _model(tiny_cfg, **over)
    x = torch.rand(5, 3, tiny_cfg.data.resolution, tiny_cfg.data.resolution)
    y = torch.stack([torch.randint(0, 3, (5,)), torch.randint(0, 2, (5,))], 1) if over.get("num_classes") else None
    plain = copy.deepcopy(model)  # spectral norm's power iteration mutates buffers: one copy per path
    fast = model.to(memory_format=torch.channels_last) if channels_last else model
    g = frozen_grad(fast, channels_last=channels_last)(x, y)
    torch.testing.assert_close(g, energy_grad(lambda v: plain(v, y), x), rtol=1e-5, atol=1e-7)


def test_frozen_grad_sees_weight_updates_and_leaves_weight_grads_alone(tiny_cfg):
    model = _model(tiny_cfg)
    grad = frozen_grad(model)
    x = torch.rand(4, 3, tiny_cfg.data.resolution, tiny_cfg.data.resolution)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)  # an optimiser step, in place
    torch.testing.assert_close(grad(x, None), energy_grad(model, x), rtol=1e-5, atol=1e-7)
    assert all(p.grad is None for p in model.parameters())


FAST = {"frozen": {"train.sampler_grad": "frozen"}, "compiled": {"train.sampler_grad": "compiled"},
        "frozen_nhwc": {"train.sampler_grad": "frozen", "train.channels_last": True}}


@pytest.mark.parametrize("kind", sorted(FAST))
def test_training_step_matches_the_plain_sampler(tiny_cfg, kind):
    """Same seed: the same losses and the same parameter gradients (the L_CD + L_KL update)."""
    cfg = tiny_cfg.override({"model.multiscale": False})  # one scale: a quicker compile, same code path
    runs = {}
    for k, over in (("plain", {"train.sampler_grad": "plain"}), (kind, FAST[kind])):
        grads: list[torch.Tensor] = []
        trainer = Trainer(cfg.override(over), device="cpu",
                          grad_reduce=lambda gs: grads.extend(g.clone() for g in gs))
        trainer.buffer.add(torch.rand(64, *trainer.shape))  # L_ent active from the first step
        runs[k] = (trainer.step(), grads)
    (m0, g0), (m1, g1) = runs["plain"], runs[kind]
    assert m0["loss/kl_ent"] != 0 and m0["grad_norm/kl"] > 0
    for name in ("loss/cd", "loss/kl_opt", "loss/kl_ent", "energy/diff", "grad_norm/cd", "grad_norm/kl"):
        assert m1[name] == pytest.approx(m0[name], rel=1e-4, abs=1e-7), name
    scale = torch.cat([g.flatten() for g in g0]).norm()  # compiled kernels round differently:
    for a, b in zip(g0, g1):  # (biases before a norm have zero gradient up to rounding)
        assert (b - a).norm() <= 1e-4 * (a.norm() + scale)


def test_bad_sampler_grad_is_rejected(tiny_cfg):
    with pytest.raises(ConfigError, match="train.sampler_grad"):
        tiny_cfg.override({"train.sampler_grad": "fast"})


def test_bf16_grad_is_close_not_equal(tiny_cfg):
    """bfloat16 autocast (meant for GPUs) stays near the float32 gradient, in float32."""
    model = _model(tiny_cfg)
    x = torch.rand(4, 3, tiny_cfg.data.resolution, tiny_cfg.data.resolution)
    g, ref = frozen_grad(model, bf16=True)(x, None), energy_grad(model, x)
    assert g.dtype == torch.float32
    assert (g - ref).norm() < 0.1 * ref.norm()
