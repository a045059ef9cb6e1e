"""Exponential moving average of the weights, from ``torch.optim.swa_utils`` (DESIGN §1 step 7)."""

from __future__ import annotations

from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def make_ema(model: nn.Module, *, decay: float) -> AveragedModel:
    """theta_ema <- decay * theta_ema + (1 - decay) * theta after every ``update_parameters(model)``.

    The copy lives on the model's device; buffers are averaged too.
    """
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
