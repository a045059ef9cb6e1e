"""The sampler's floor, made cheaper: grad_x E(x) with frozen weights, optionally compiled.

Each Langevin step that needs no graph (all but the differentiable last one) only needs the input
gradient. Evaluating the network with detached weights (``torch.func.functional_call``, no copy:
the detached tensors share storage, so optimiser updates are seen) lets autograd skip all
weight-gradient bookkeeping. ``compile=True`` traces forward and input-gradient into one graph
(``torch.func.grad`` under ``torch.compile``), so Inductor can fuse the normalisation and
activation around the convolutions; ``channels_last`` stores chains and weights NHWC.

Both give the same numbers as ``langevin.energy_grad`` up to float rounding (tests check it).
``bf16=True`` (for GPUs) runs the network under bfloat16 autocast: faster, and no longer equal.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .models import frozen


def frozen_grad(model: nn.Module, *, compile: bool = False, channels_last: bool = False,
                bf16: bool = False) -> Callable[[Tensor, Tensor | None], Tensor]:
    """(x, y) -> grad_x sum_i E_Omega(theta)(x_i | y): input gradient at the current weights, no weight grads.

    Build it once per model: the compiled graph lives in the returned function.
    """
    energy = frozen(model)

    def total_energy(x: Tensor, y: Tensor | None) -> Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            e = energy(x, y)
        return (e.float() if bf16 else e).sum()

    if compile:
        grad = torch.compile(torch.func.grad(total_energy), dynamic=False)
    else:
        def grad(x: Tensor, y: Tensor | None) -> Tensor:
            x = x.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(total_energy(x, y), x)
            return g

    if not channels_last:
        return grad

    def grad_nhwc(x: Tensor, y: Tensor | None) -> Tensor:
        return grad(x.contiguous(memory_format=torch.channels_last), y)

    return grad_nhwc
