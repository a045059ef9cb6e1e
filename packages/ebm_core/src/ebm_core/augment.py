"""Data-augmentation transitions D(x) (Du et al. 2021, Sec. 2.3; DESIGN §2 reference set).

Built on ``torchvision.transforms.v2``: random resized crop, horizontal flip, colour jitter,
random grayscale, and Gaussian blur for images of 64 px and more. v2 draws one set of random
parameters per call, so the batch is transformed image by image to give every chain its own
transition. The no-op mode returns its input untouched.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.transforms import v2

from .config import AugmentConfig


class Augment:
    """Per-sample random augmentation of a (B, C, H, W) batch in [0, 1]; output in [0, 1], same shape."""

    def __init__(self, cfg: AugmentConfig, *, resolution: int, channels: int = 3) -> None:
        self.enabled = cfg.enabled
        ops: list[v2.Transform] = [v2.RandomResizedCrop(resolution, scale=cfg.crop_scale, antialias=True)]
        if cfg.flip:
            ops.append(v2.RandomHorizontalFlip())
        if any(cfg.color_jitter):
            jitter = v2.ColorJitter(*cfg.color_jitter) if channels == 3 else v2.ColorJitter(*cfg.color_jitter[:2])
            ops.append(v2.RandomApply([jitter], p=cfg.jitter_p))
        if cfg.grayscale_p > 0 and channels == 3:
            ops.append(v2.RandomGrayscale(p=cfg.grayscale_p))
        if cfg.blur == "on" or (cfg.blur == "auto" and resolution >= 64):
            k = max(3, 2 * (resolution // 20) + 1)  # about a tenth of the side, odd; 3 at the least (1 is no blur)
            ops.append(v2.GaussianBlur(kernel_size=k, sigma=(0.1, 2.0)))
        self.transform = v2.Compose(ops)

    def __call__(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        out = torch.stack([self.transform(img) for img in x.detach()])  # one random draw per image
        return out.clamp_(0, 1)
