"""Multi-scale energy (Du et al. 2021, Sec. 2.4, Fig. 3): E(x) = sum_s E_s(pool_s(x)).

Separate networks that share no weights see the image at full, 1/2 and 1/4 resolution (average
pooling, differentiable); per-scale energies are exposed for the losses and for logging.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def box_pool(x: Tensor) -> Tensor:
    """2x2 average pooling: one halving of the resolution."""
    return F.avg_pool2d(x, 2)


class MultiScaleEnergy(nn.Module):
    """Sum of per-scale energy networks; ``energies`` returns them side by side, (B, S).

    Scale ``f`` (1, 2, 4) sees the image after ``log2 f`` applications of ``halve``.
    """

    def __init__(self, *, nets: list[nn.Module], factors: tuple[int, ...] = (1, 2, 4),
                 halve: Callable[[Tensor], Tensor] = box_pool) -> None:
        super().__init__()
        if len(nets) != len(factors):
            raise ValueError(f"nets and factors: expected equal lengths, got {len(nets)} and {len(factors)}")
        self.nets = nn.ModuleList(nets)
        self.factors = tuple(factors)
        self.halve = halve

    def energies(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        per_scale = []
        for net, f in zip(self.nets, self.factors):
            xs = x
            for _ in range(f.bit_length() - 1):  # log2(f) halvings
                xs = self.halve(xs)
            per_scale.append(net(xs, y))
        return torch.stack(per_scale, dim=1)  # (B, S)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        return self.energies(x, y).sum(dim=1)  # (B,)
