"""The paper's CIFAR-10 energy network: the authors' ``ResNetModel`` (``filter_dim=64``, ``norm``,
``self_attn``, ``multiscale``), one scale at a time.

A scale is an input conv (+ swish), then *pairs* of residual blocks; the second block of each pair
ends in a 3x3 conv (to twice the width, or the same width for the first pair), ``AvgPool2d(3, 2, 1)``
and swish; then swish, a spatial mean and a linear head. At 32x32 the full-scale net runs
64@32 -> 64@16, 64@16 -> 128@8, self-attention at 8x8, 128@8 -> 256@4, 256@4 -> 512@2.
Block convolutions are weight-standardised (a torch parametrization) unless spectral norm is on;
normalisation is affine instance norm up to 128 channels and ``GroupNorm(32, .)`` above.
The reference's per-block conditioning layers are built only for conditional models (here FiLM).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from .resnet import FiLM, SelfAttention, _maybe_sn, make_act, make_norm, one_hot_condition

PAIRS_PER_SCALE = (4, 3, 2)  # full, half and quarter scale (Sec. 2.4; the reference's main/mid/small models)


class WeightStandardization(nn.Module):
    """w -> (w - mean) / (std + 1e-5) per output channel (Qiao et al. 2019), as the reference's ``WSConv2d``."""

    def forward(self, w: Tensor) -> Tensor:
        w = w - w.mean(dim=(1, 2, 3), keepdim=True)
        return w / (w.flatten(1).std(dim=1).view(-1, 1, 1, 1) + 1e-5)


def block_conv(channels: int, *, sn: bool) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, 3, padding=1)
    if sn:
        return _maybe_sn(conv, True)
    parametrize.register_parametrization(conv, "weight", WeightStandardization())
    return conv


def reference_pool(x: Tensor) -> Tensor:
    """The reference's downsampling of images and features: 3x3 average, stride 2, zero padding counted."""
    return F.avg_pool2d(x, 3, stride=2, padding=1)


class PairBlock(nn.Module):
    """conv-norm-(FiLM)-act twice plus the identity; with ``c_out``, then conv3x3 to c_out, pool, act."""

    def __init__(self, channels: int, *, c_out: int | None, norm: str, act: str, sn: bool, cond_dim: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = block_conv(channels, sn=sn), block_conv(channels, sn=sn)
        self.norm1 = make_norm(norm, channels, affine=True)
        self.norm2 = make_norm(norm, channels, affine=True)
        self.film1 = FiLM(cond_dim=cond_dim, channels=channels) if cond_dim else None
        self.film2 = FiLM(cond_dim=cond_dim, channels=channels) if cond_dim else None
        self.act = make_act(act)
        self.down = nn.Conv2d(channels, c_out, 3, padding=1) if c_out is not None else None

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        h = self.norm1(self.conv1(x))
        h = self.act(self.film1(h, c) if self.film1 is not None else h)
        h = self.norm2(self.conv2(h))
        h = self.act(self.film2(h, c) if self.film2 is not None else h)
        h = h + x
        if self.down is not None:
            h = self.act(reference_pool(self.down(h)))
        return h


class ReferenceEnergy(nn.Module):
    """One scale of the reference network: E_theta(x | c), shape (B,)."""

    def __init__(self, *, resolution: int, pairs: int, in_channels: int = 3, base_width: int = 64, norm: str = "instance",
                 activation: str = "swish", attention_res: int | None = 8, spectral_norm: bool = False,
                 num_classes: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.resolution, self.in_channels, self.num_classes = resolution, in_channels, tuple(num_classes)
        cond_dim = sum(self.num_classes)
        f = base_width
        self.conv_in = nn.Conv2d(in_channels, f, 3, padding=1)
        self.blocks = nn.ModuleList()
        self.attn = nn.ModuleDict()  # str(pair) -> attention after that pair
        res = resolution
        for p in range(pairs):
            width, out = f * max(1, 2 ** (p - 1)), f * 2 ** p  # 64, 64, 128, 256 -> 64, 128, 256, 512
            for c_out in (None, out):
                self.blocks.append(PairBlock(width, c_out=c_out, norm=norm, act=activation, sn=spectral_norm,
                                             cond_dim=cond_dim))
            res = (res + 1) // 2
            if attention_res is not None and res == attention_res and not self.attn:
                self.attn[str(p)] = SelfAttention(channels=out, sn=False, scaled=False)  # SAGAN, as the reference
        self.act = make_act(activation)
        self.head = nn.Linear(f * 2 ** (pairs - 1), 1)

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        c = one_hot_condition(self.num_classes, y)
        h = self.act(self.conv_in(x))
        for i, block in enumerate(self.blocks):
            h = block(h, c)
            if i % 2 and str(i // 2) in self.attn:
                h = self.attn[str(i // 2)](h)
        h = self.act(h).mean(dim=(2, 3))  # (B, 8f)
        return self.head(h).squeeze(1)  # (B,)
