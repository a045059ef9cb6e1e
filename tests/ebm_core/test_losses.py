"""Gradients of L_CD, L_opt and L_ent against analytic values on E_theta(x) = 1/2 theta ||x||^2."""

import torch

from ebm_core.langevin import langevin
from ebm_core.losses import cd_loss, ent_loss, nearest_neighbour_sq, opt_loss
from ebm_core.models import frozen

LAM, SIGMA = 0.1, 0.01


def _chains(model, x0, steps=3):
    seen = []
    res = langevin(model, x0, steps=steps, step_size=LAM, noise=SIGMA, clamp=None, differentiable_last=True,
                   on_step=lambda k, x: seen.append(x))
    x_prev = seen[-2] if steps > 1 else x0  # x^{K-1}
    return res, x_prev


def test_cd_gradient_is_analytic_and_has_no_path_through_samples(quadratic):
    torch.manual_seed(0)
    x_pos = torch.rand(6, 2, 3, dtype=torch.float64)
    res, _ = _chains(quadratic, torch.rand(6, 2, 3, dtype=torch.float64))
    assert not res.x.requires_grad
    alpha = 0.3
    l_cd, l_reg = cd_loss(quadratic(x_pos)[:, None], quadratic(res.x)[:, None], alpha=alpha)
    (g,) = torch.autograd.grad(l_cd + l_reg, quadratic.theta)
    th = quadratic.theta.item()
    sq_pos, sq_neg = x_pos.flatten(1).pow(2).sum(1), res.x.flatten(1).pow(2).sum(1)
    expected = 0.5 * sq_pos.mean() - 0.5 * sq_neg.mean()  # d/dtheta of Eq. 5
    expected += alpha * (0.5 * th * sq_pos.pow(2).mean() + 0.5 * th * sq_neg.pow(2).mean())  # d/dtheta of theta^2 s^2/4
    torch.testing.assert_close(g, expected, rtol=1e-10, atol=1e-12)


def test_opt_gradient_is_exactly_the_last_step_path(quadratic):
    torch.manual_seed(1)
    res, x_prev = _chains(quadratic, torch.rand(5, 4, dtype=torch.float64), steps=4)
    l_opt = opt_loss(frozen(quadratic)(res.x_hat))
    (g,) = torch.autograd.grad(l_opt, quadratic.theta)
    th = quadratic.theta.item()
    # x_hat = x^{K-1} - lam * theta * x^{K-1} + omega  =>  d x_hat / d theta = -lam * x^{K-1}
    expected = (th * res.x_hat.detach() * (-LAM * x_prev)).sum(1).mean()
    torch.testing.assert_close(g, expected, rtol=1e-10, atol=1e-12)
    direct = 0.5 * res.x_hat.detach().pow(2).sum(1).mean()  # the dE/dtheta term that must be absent
    assert not torch.allclose(g, expected + direct)
    assert quadratic.theta.grad is None  # sampling left no weight gradient behind


def test_opt_frozen_energy_takes_no_direct_parameter_gradient(quadratic):
    x = torch.rand(3, 4, dtype=torch.float64)  # a sample that does not depend on theta
    e = frozen(quadratic)(x)
    assert not e.requires_grad


def test_ent_gradient_is_analytic_and_pushes_points_apart(quadratic):
    torch.manual_seed(2)
    res, x_prev = _chains(quadratic, torch.rand(4, 5, dtype=torch.float64), steps=2)
    X = torch.rand(7, 5, dtype=torch.float64)
    eps = 1e-8
    l_ent = ent_loss(res.x_hat, X, eps=eps)
    (g_theta,) = torch.autograd.grad(l_ent, quadratic.theta, retain_graph=True)
    (g_x,) = torch.autograd.grad(l_ent, res.x_hat)
    xh = res.x_hat.detach()
    nn_pt = X[torch.cdist(xh, X).argmin(1)]
    d2 = (xh - nn_pt).pow(2).sum(1, keepdim=True)
    expected_x = -(xh - nn_pt) / (d2 + eps) / len(xh)  # d/dx of -1/2 log(d^2 + eps), averaged
    torch.testing.assert_close(g_x, expected_x, rtol=1e-8, atol=1e-12)
    expected_theta = (expected_x * (-LAM * x_prev)).sum()
    torch.testing.assert_close(g_theta, expected_theta, rtol=1e-8, atol=1e-12)
    moved = xh - 1e-3 * g_x  # a descent step on L_ent
    assert (nearest_neighbour_sq(moved, X) > d2.squeeze(1)).all()


def test_ent_is_finite_when_points_coincide():
    X = torch.rand(5, 8)
    x = X[:2].clone().requires_grad_(True)
    loss = ent_loss(x, X)
    (g,) = torch.autograd.grad(loss, x)
    assert torch.isfinite(loss) and torch.isfinite(g).all()


def test_nearest_neighbour_matches_brute_force():
    x, X = torch.rand(6, 3, 4, 4), torch.rand(20, 3, 4, 4)
    brute = (x.flatten(1)[:, None] - X.flatten(1)[None]).pow(2).sum(-1).min(1).values
    torch.testing.assert_close(nearest_neighbour_sq(x, X), brute, rtol=1e-5, atol=1e-5)
