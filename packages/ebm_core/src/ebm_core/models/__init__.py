"""Energy networks: the paper's ``ReferenceEnergy`` and the small ``ResNetEnergy`` (both conditional via FiLM),
``MultiScaleEnergy`` over either; ``build_model`` from config."""

from __future__ import annotations

from typing import Callable

from torch import Tensor, nn
from torch.func import functional_call

from ..config import ConfigError, ModelConfig
from .multiscale import MultiScaleEnergy
from .reference import PAIRS_PER_SCALE, ReferenceEnergy, reference_pool
from .resnet import MIN_FEATURE_RES, ResNetEnergy

__all__ = ["MultiScaleEnergy", "ReferenceEnergy", "ResNetEnergy", "build_model", "frozen", "per_scale_energies"]


def build_model(cfg: ModelConfig, *, resolution: int, in_channels: int = 3) -> nn.Module:
    """The energy network a config describes, for square images of ``resolution`` pixels."""
    if cfg.arch == "reference":
        return _reference(cfg, resolution=resolution, in_channels=in_channels)

    def net(res: int) -> ResNetEnergy:
        return ResNetEnergy(resolution=res, in_channels=in_channels, base_width=cfg.base_width,
                            channel_mults=cfg.channel_mults, blocks_per_stage=cfg.blocks_per_stage, norm=cfg.norm,
                            activation=cfg.activation, attention_res=cfg.attention_res,
                            spectral_norm=cfg.spectral_norm, num_classes=cfg.num_classes, unary_width=cfg.unary_width)

    if not cfg.multiscale:
        return net(resolution)
    factors = (1, 2, 4)
    if resolution % 4 or resolution // 4 < MIN_FEATURE_RES:
        raise ConfigError(f"model.multiscale: needs a resolution divisible by 4 and >= {4 * MIN_FEATURE_RES}, "
                          f"got {resolution}")
    return MultiScaleEnergy(nets=[net(resolution // f) for f in factors], factors=factors)


def _reference(cfg: ModelConfig, *, resolution: int, in_channels: int) -> nn.Module:
    """The reference network: 4 pairs at full scale (with attention), 3 at half, 2 at quarter (Sec. 2.4)."""
    if resolution < 16:
        raise ConfigError(f"model.arch=reference: needs a resolution >= 16, got {resolution}")
    pairs = PAIRS_PER_SCALE if cfg.multiscale else PAIRS_PER_SCALE[:1]
    nets = [ReferenceEnergy(resolution=-(-resolution // 2 ** s), pairs=p, in_channels=in_channels,
                            base_width=cfg.base_width, norm=cfg.norm, activation=cfg.activation,
                            attention_res=cfg.attention_res if s == 0 else None, spectral_norm=cfg.spectral_norm,
                            num_classes=cfg.num_classes) for s, p in enumerate(pairs)]
    if not cfg.multiscale:
        return nets[0]
    return MultiScaleEnergy(nets=nets, factors=(1, 2, 4), halve=reference_pool)


def per_scale_energies(model: nn.Module, x: Tensor, y: Tensor | None = None) -> Tensor:
    """Energies as (B, S): per scale for a multi-scale model, (B, 1) otherwise."""
    if isinstance(model, MultiScaleEnergy):
        return model.energies(x, y)
    return model(x, y).unsqueeze(1)


def frozen(model: nn.Module) -> Callable[..., Tensor]:
    """E_{Omega(theta)}: the same network with detached parameters (no copy), for Eq. 7 and the sampler.

    Gradients still flow through the input, so theta is reached only through x_hat; the detached
    tensors share storage with the live ones, so optimiser updates are seen.
    """
    params = {k: v.detach() for k, v in model.named_parameters()}

    def energy(*args: Tensor, **kwargs: Tensor) -> Tensor:
        return functional_call(model, params, args, kwargs, strict=False)

    return energy
