"""The improved CD objective L = L_CD + L_KL (Du et al. 2021, Eqs. 5-8; DESIGN §1 step 6).

Energies arrive as (B, S): per scale for multi-scale models, S = 1 otherwise; every mean below is
over batch and scales, as the reference code averages its per-scale energies.
"""

from __future__ import annotations

import torch
from torch import Tensor


def cd_loss(e_pos: Tensor, e_neg: Tensor, *, alpha: float = 1.0) -> tuple[Tensor, Tensor]:
    """L_CD = mean E(x+) - mean E(x-) (Eq. 5) and the regulariser alpha * mean(E(x+)^2 + E(x-)^2).

    ``e_neg`` must come from detached samples x^- = stop_grad(q_theta): no gradient through samples.
    """
    l_cd = e_pos.mean() - e_neg.mean()  # Eq. 5
    l_reg = alpha * (e_pos.pow(2).mean() + e_neg.pow(2).mean())
    return l_cd, l_reg


def opt_loss(e_hat_frozen: Tensor) -> Tensor:
    """L_opt = mean E_{Omega(theta)}(x_hat^-) (Eq. 7): pass energies from ``models.frozen(model)`` at x_hat."""
    return e_hat_frozen.mean()  # Eq. 7


def nearest_neighbour_sq(x: Tensor, X: Tensor, *, exclude: Tensor | None = None) -> Tensor:
    """Squared L2 distance from each x_i to its nearest neighbour in X, (B,); ``exclude`` (B, n) bool marks
    pairs that may not be neighbours (a chain and its own start).

    The neighbour is chosen without gradient on the (B, n) distance matrix from matrix products,
    then its exact distance is recomputed with gradient: no (B, n, D) difference tensor is made.
    """
    xf, Xf = x.flatten(1), X.flatten(1).to(x.dtype)  # (B, D), (n, D)
    with torch.no_grad():
        d2 = torch.cdist(xf.detach(), Xf, compute_mode="use_mm_for_euclid_dist")  # (B, n)
        if exclude is not None:
            d2 = d2.masked_fill(exclude.to(d2.device), float("inf"))
        nn_idx = d2.argmin(dim=1)  # (B,)
    return (xf - Xf[nn_idx]).pow(2).sum(dim=1)  # (B,)


def ent_loss(x_hat: Tensor, X: Tensor, *, eps: float = 1e-8, exclude: Tensor | None = None) -> Tensor:
    """L_ent = -mean log NN(x_hat^-, X) (Eq. 8), with NN = sqrt(d^2 + eps) so coinciding points stay finite."""
    d2 = nearest_neighbour_sq(x_hat, X, exclude=exclude)
    return -(0.5 * torch.log(d2 + eps)).mean()  # Eq. 8
