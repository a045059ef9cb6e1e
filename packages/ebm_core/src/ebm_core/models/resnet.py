"""The small ResNet energy network E_theta(x | c) -> R (``model.arch=small``: CPU presets), and the layers
the reference network (``reference.py``) shares with it.

Residual blocks with instance norm (group norm above 128 channels), optional self-attention at one
resolution, optional spectral norm (torch's parametrization), Swish or LeakyReLU, global mean
pooling and a linear head, plus an optional per-pixel (unary) energy (``UnaryEnergy``, not in the
paper). A conditional variant applies FiLM gain and bias from a label vector after every
normalisation. Attention is written out (not SDPA) because L_opt needs its double
backward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _sn

MIN_FEATURE_RES = 4  # stages stop downsampling once features are this small


def _maybe_sn(module: nn.Module, on: bool) -> nn.Module:
    return _sn(module) if on else module


def _groups(channels: int) -> int:
    return next(g for g in (32, 16, 8, 4, 2, 1) if channels % g == 0)


def make_norm(kind: str, channels: int, affine: bool) -> nn.Module:
    """Instance norm up to 128 channels and group norm above (DESIGN §2), or a fixed kind."""
    if kind == "none":
        return nn.Identity()
    if kind == "instance" and channels <= 128:
        return nn.InstanceNorm2d(channels, affine=affine)
    return nn.GroupNorm(_groups(channels), channels, affine=affine)


def make_act(kind: str) -> nn.Module:
    return nn.SiLU() if kind == "swish" else nn.LeakyReLU(0.2)


class FiLM(nn.Module):
    """Feature-wise gain and bias from a condition vector: h * (1 + gain(c)) + bias(c)."""

    def __init__(self, *, cond_dim: int, channels: int) -> None:
        super().__init__()
        self.proj = nn.Linear(cond_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: Tensor, c: Tensor) -> Tensor:
        gain, bias = self.proj(c).chunk(2, dim=1)  # (B, C) each
        return h * (1 + gain[:, :, None, None]) + bias[:, :, None, None]


class ResBlock(nn.Module):
    """conv-norm-FiLM-act twice, plus a (1x1 conv) skip."""

    def __init__(self, *, c_in: int, c_out: int, norm: str, act: str, sn: bool, cond_dim: int) -> None:
        super().__init__()
        self.conv1 = _maybe_sn(nn.Conv2d(c_in, c_out, 3, padding=1), sn)
        self.conv2 = _maybe_sn(nn.Conv2d(c_out, c_out, 3, padding=1), sn)
        self.norm1 = make_norm(norm, c_out, affine=cond_dim == 0)
        self.norm2 = make_norm(norm, c_out, affine=cond_dim == 0)
        self.film1 = FiLM(cond_dim=cond_dim, channels=c_out) if cond_dim else None
        self.film2 = FiLM(cond_dim=cond_dim, channels=c_out) if cond_dim else None
        self.act = make_act(act)
        self.skip = _maybe_sn(nn.Conv2d(c_in, c_out, 1), sn) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, c: Tensor | None) -> Tensor:
        h = self.norm1(self.conv1(x))
        h = self.act(self.film1(h, c) if self.film1 is not None else h)
        h = self.norm2(self.conv2(h))
        h = self.film2(h, c) if self.film2 is not None else h
        return self.act(self.skip(x) + h)


def one_hot_condition(num_classes: tuple[int, ...], y: Tensor | None) -> Tensor | None:
    """Labels (B, A) of ints -> concatenated one-hot condition vector (B, sum(num_classes)); None if unconditional."""
    if not num_classes:
        return None
    if y is None:
        raise ValueError(f"this model is conditional on {len(num_classes)} attribute(s): pass labels y")
    y = y.view(y.shape[0], -1)
    if y.shape[1] != len(num_classes):
        raise ValueError(f"labels: expected (B, {len(num_classes)}), got {tuple(y.shape)}")
    return torch.cat([F.one_hot(y[:, a].long(), k) for a, k in enumerate(num_classes)], dim=1).float()


class SelfAttention(nn.Module):
    """SAGAN self-attention; gamma starts at 0 so the block starts as the identity. ``scaled`` divides the
    logits by sqrt(d) (transformer style); SAGAN and the reference EBM do not."""

    def __init__(self, *, channels: int, sn: bool, scaled: bool = True) -> None:
        super().__init__()
        self.scale = 1 / math.sqrt(max(channels // 8, 1)) if scaled else 1.0
        self.d = max(channels // 8, 1)
        self.q = _maybe_sn(nn.Conv2d(channels, self.d, 1), sn)
        self.k = _maybe_sn(nn.Conv2d(channels, self.d, 1), sn)
        self.v = _maybe_sn(nn.Conv2d(channels, channels, 1), sn)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        B, C, H, W = x.shape
        q = self.q(x).flatten(2)  # (B, d, HW)
        k = self.k(x).flatten(2)  # (B, d, HW)
        v = self.v(x).flatten(2)  # (B, C, HW)
        attn = torch.softmax(q.transpose(1, 2) @ k * self.scale, dim=-1)  # (B, HW, HW)
        out = (v @ attn.transpose(1, 2)).view(B, C, H, W)
        return x + self.gamma * out


class UnaryEnergy(nn.Module):
    """A per-pixel energy, averaged over the image: mean_ij u(x_ij), u an MLP on one pixel's channels.

    The unary potential of a Markov random field, beside the network's. Its input gradient moves each pixel
    towards the colours the data has, independently of its neighbours; the last layer starts at zero, so
    the term starts switched off and training turns it on.
    """

    def __init__(self, *, in_channels: int, width: int, act: str) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Conv2d(in_channels, width, 1), make_act(act), nn.Conv2d(width, width, 1),
                                 make_act(act), nn.Conv2d(width, 1, 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x).mean(dim=(1, 2, 3))  # (B,)


class ResNetEnergy(nn.Module):
    """E_theta(x | c): one scalar energy per image, shape (B,). Low energy = likely."""

    def __init__(self, *, resolution: int, in_channels: int = 3, base_width: int = 64,
                 channel_mults: tuple[int, ...] = (1, 2, 2, 2), blocks_per_stage: int = 1, norm: str = "instance",
                 activation: str = "swish", attention_res: int | None = 8, spectral_norm: bool = False,
                 num_classes: tuple[int, ...] = (), unary_width: int = 0) -> None:
        super().__init__()
        if resolution < MIN_FEATURE_RES:
            raise ValueError(f"resolution: expected >= {MIN_FEATURE_RES}, got {resolution}")
        self.resolution, self.in_channels, self.num_classes = resolution, in_channels, tuple(num_classes)
        cond_dim = sum(self.num_classes)
        self.conv_in = _maybe_sn(nn.Conv2d(in_channels, base_width, 3, padding=1), spectral_norm)
        self.stages = nn.ModuleList()
        self.attn = nn.ModuleDict()
        self.downsample: list[bool] = []
        res, c_prev = resolution, base_width
        for i, mult in enumerate(channel_mults):
            c = base_width * mult
            blocks = nn.ModuleList(ResBlock(c_in=c_prev if b == 0 else c, c_out=c, norm=norm, act=activation,
                                            sn=spectral_norm, cond_dim=cond_dim) for b in range(blocks_per_stage))
            self.stages.append(blocks)
            if attention_res is not None and res == attention_res and not self.attn:
                self.attn[str(i)] = SelfAttention(channels=c, sn=spectral_norm)
            c_prev = c
            last = i == len(channel_mults) - 1 or res // 2 < MIN_FEATURE_RES
            self.downsample.append(not last)
            if last:
                break
            res //= 2
        self.act = make_act(activation)
        self.head = _maybe_sn(nn.Linear(c_prev, 1), spectral_norm)
        self.unary = UnaryEnergy(in_channels=in_channels, width=unary_width, act=activation) if unary_width else None

    def forward(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        c = one_hot_condition(self.num_classes, y)
        h = self.conv_in(x)  # (B, C0, H, W)
        for i, blocks in enumerate(self.stages):
            for block in blocks:
                h = block(h, c)
            if str(i) in self.attn:
                h = self.attn[str(i)](h)
            if self.downsample[i]:
                h = F.avg_pool2d(h, 2)  # (B, C, H/2, W/2)
        h = self.act(h).mean(dim=(2, 3))  # global mean pool, (B, C)
        e = self.head(h).squeeze(1)  # (B,)
        return e if self.unary is None else e + self.unary(x)
