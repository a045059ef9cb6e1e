"""Composing independent EBMs at sampling time (Du et al. 2021, Sec. 3.4; Du et al. 2020).

AND is the product of experts, sum_i E_i(x); NOT is E_1 - beta * E_2; OR is the soft minimum
-logsumexp(-T * E_i) / T. Each returns an energy callable for the sampler. ``step_scale`` is the
factor to apply to the Langevin step size (1/n for AND of n models, DESIGN §1).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

Energy = Callable[[Tensor], Tensor]


class Composition:
    """An energy callable built from others, with the step-size factor it needs."""

    def __init__(self, fn: Energy, *, step_scale: float = 1.0) -> None:
        self.fn, self.step_scale = fn, step_scale

    def __call__(self, x: Tensor) -> Tensor:
        return self.fn(x)


def AND(energies: Sequence[Energy]) -> Composition:
    if not energies:
        raise ValueError("AND: expected at least one energy")
    return Composition(lambda x: torch.stack([e(x) for e in energies]).sum(0), step_scale=1.0 / len(energies))


def NOT(e1: Energy, e2: Energy, *, beta: float = 1.0) -> Composition:
    return Composition(lambda x: e1(x) - beta * e2(x))


def OR(energies: Sequence[Energy], *, temperature: float = 1.0) -> Composition:
    if not energies:
        raise ValueError("OR: expected at least one energy")
    T = temperature
    return Composition(lambda x: -torch.logsumexp(-T * torch.stack([e(x) for e in energies]), dim=0) / T)
