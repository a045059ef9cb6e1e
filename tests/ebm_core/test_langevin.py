"""The sampler against known distributions, its gradient bookkeeping, Algorithm 2 and composition."""

import math

import torch

from ebm_core.composition import AND, NOT, OR
from ebm_core.langevin import langevin, sample
from ebm_core.models import ResNetEnergy


def test_true_langevin_reaches_gaussian_mean_and_variance():
    torch.manual_seed(0)
    mu, s = 0.5, 0.05
    lam = 0.05 * s**2
    energy = lambda x: ((x - mu) ** 2).flatten(1).sum(1) / (2 * s**2)  # noqa: E731
    x = torch.rand(20_000, 1, 2, 2, dtype=torch.float64)
    x = langevin(energy, x, steps=400, step_size=lam, noise=math.sqrt(2 * lam)).x  # sigma = sqrt(2 lambda): T = 1
    # the unadjusted Langevin chain's exact stationary variance for a Gaussian target
    var_ula = s**2 / (1 - lam / (2 * s**2))
    assert abs(x.mean().item() - mu) < 0.002
    assert abs(x.var().item() / var_ula - 1) < 0.03
    assert abs(x.var().item() / s**2 - 1) < 0.06


def test_wrong_noise_gives_wrong_variance():
    torch.manual_seed(0)
    s, lam = 0.05, 0.05 * 0.05**2
    energy = lambda x: ((x - 0.5) ** 2).flatten(1).sum(1) / (2 * s**2)  # noqa: E731
    x = langevin(energy, torch.rand(5000, 1, 1, 1, dtype=torch.float64), steps=400, step_size=lam,
                 noise=math.sqrt(lam)).x
    assert x.var().item() < 0.7 * s**2


def test_sampling_does_no_weight_gradient_work_and_last_step_is_differentiable():
    torch.manual_seed(0)
    model = ResNetEnergy(resolution=8, base_width=4, channel_mults=(1, 2), attention_res=4)
    res = langevin(model, torch.rand(3, 3, 8, 8), steps=3, step_size=1.0, noise=0.01, differentiable_last=True)
    assert all(p.grad is None for p in model.parameters())
    assert not res.x.requires_grad and res.x_hat.requires_grad
    torch.testing.assert_close(res.x, res.x_hat.detach())
    assert 0 <= res.x.min() and res.x.max() <= 1
    plain = langevin(model, torch.rand(3, 3, 8, 8), steps=2, step_size=1.0, noise=0.01)
    assert plain.x_hat is None and not plain.x.requires_grad


def test_algorithm2_applies_transition_each_round_then_settles():
    calls = []

    def transition(x):
        calls.append(1)
        return x

    x = sample(lambda x: x.flatten(1).sum(1), torch.rand(2, 3, 4, 4), rounds=3, steps=2, step_size=0.1, noise=0.0,
               transition=transition, settle_rounds=2)
    assert len(calls) == 3 and x.shape == (2, 3, 4, 4)


def test_composition_operators():
    e1 = lambda x: x.flatten(1).sum(1)  # noqa: E731
    e2 = lambda x: x.flatten(1).pow(2).sum(1)  # noqa: E731
    x = torch.rand(4, 3)
    torch.testing.assert_close(AND([e1, e2])(x), e1(x) + e2(x))
    assert AND([e1, e2]).step_scale == 0.5
    torch.testing.assert_close(NOT(e1, e2, beta=0.5)(x), e1(x) - 0.5 * e2(x))
    T = 2.0
    expected = -torch.log(torch.exp(-T * e1(x)) + torch.exp(-T * e2(x))) / T
    torch.testing.assert_close(OR([e1, e2], temperature=T)(x), expected)
