"""Langevin dynamics on an energy callable (Du et al. 2021, Algorithms 1 and 2; DESIGN §1).

    x^k = clamp(x^{k-1} - lambda * grad_x E(x^{k-1}) + omega, 0, 1),   omega ~ N(0, sigma^2)

Step size ``lambda`` and noise ``sigma`` are separate knobs. True Langevin at temperature 1 has
sigma = sqrt(2 * lambda); the reference CIFAR-10 setting (lambda=100, sigma=0.001) is not that, it is
a noisy gradient descent. Every step starts from a detached tensor (the Omega of Algorithm 1), and
only input gradients are taken (``autograd.grad`` w.r.t. x prunes all weight-gradient work). The
optional differentiable last step keeps its graph, so ``x_hat`` depends on theta through
grad_x E_theta(x^{K-1}) (Eq. 7).

The sampler knows nothing of models, buffers or training: it receives ``energy(x) -> (B,)`` and,
optionally, a cheaper ``grad_fn(x) = grad_x sum E(x)`` for the steps that keep no graph (e.g.
``fastgrad.frozen_grad``: detached weights, compiled); it must give the same gradient.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

Energy = Callable[[Tensor], Tensor]
Transition = Callable[[Tensor], Tensor]
InputGrad = Callable[[Tensor], Tensor]


@dataclass
class LangevinResult:
    x: Tensor  # x^- = detach(x^K)
    x_hat: Tensor | None  # x_hat^- = x^K with the last step's graph (differentiable_last only)


def energy_grad(energy: Energy, x: Tensor, *, create_graph: bool = False) -> Tensor:
    """grad_x sum_i E(x_i): one forward plus an input-only backward."""
    x = x if x.requires_grad else x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(energy(x).sum(), x, create_graph=create_graph)
    return g


def langevin_step(energy: Energy, x: Tensor, *, step_size: float, noise: float,
                  clamp: tuple[float, float] | None = (0.0, 1.0), create_graph: bool = False,
                  grad_fn: InputGrad | None = None) -> Tensor:
    """One step from x (Algorithm 1, inner loop). With ``create_graph`` the result stays differentiable."""
    x = x.detach()  # Omega(x^{k-1})
    if grad_fn is not None and not create_graph:
        g = grad_fn(x)
    else:
        g = energy_grad(energy, x.requires_grad_(True), create_graph=create_graph)
    out = x.detach() - step_size * g  # theta reaches the result only through g (Eq. 7)
    if noise > 0:
        out = out + noise * torch.randn_like(x)
    if clamp is not None:
        out = out.clamp(*clamp)
    return out if create_graph else out.detach()


def langevin(energy: Energy, x0: Tensor, *, steps: int, step_size: float, noise: float,
             clamp: tuple[float, float] | None = (0.0, 1.0), differentiable_last: bool = False,
             grad_fn: InputGrad | None = None, on_step: Callable[[int, Tensor], None] | None = None) -> LangevinResult:
    """K Langevin steps from x0; with ``differentiable_last`` also returns x_hat (Algorithm 1)."""
    x = x0.detach()
    with torch.enable_grad():
        for k in range(1, steps + 1):
            last_graph = differentiable_last and k == steps
            x = langevin_step(energy, x, step_size=step_size, noise=noise, clamp=clamp, create_graph=last_graph,
                              grad_fn=grad_fn)
            if on_step is not None:
                on_step(k, x.detach())
    if differentiable_last:
        return LangevinResult(x=x.detach(), x_hat=x)
    return LangevinResult(x=x, x_hat=None)


def sample(energy: Energy, x0: Tensor, *, rounds: int, steps: int, step_size: float, noise: float,
           transition: Transition | None = None, settle_rounds: int = 0,
           clamp: tuple[float, float] | None = (0.0, 1.0), grad_fn: InputGrad | None = None,
           on_round: Callable[[int, Tensor], None] | None = None, progress: bool = False) -> Tensor:
    """Algorithm 2: N rounds of (augment, K Langevin steps), then ``settle_rounds`` without augmentation."""
    from tqdm.auto import tqdm

    x = x0.detach()
    total = rounds + settle_rounds
    for n in tqdm(range(1, total + 1), desc="sampling", disable=not progress, leave=False):
        if transition is not None and n <= rounds:
            x = transition(x)  # x^0 = D(x^0)
        x = langevin(energy, x, steps=steps, step_size=step_size, noise=noise, clamp=clamp, grad_fn=grad_fn).x
        if on_round is not None:
            on_round(n, x)
    return x
