"""Augmentation transitions: range and shape kept, independent per sample, exact no-op."""

import torch

from ebm_core.augment import Augment
from ebm_core.config import AugmentConfig


def test_keeps_range_and_shape_and_differs_per_sample():
    torch.manual_seed(0)
    aug = Augment(AugmentConfig(), resolution=16)
    x = torch.rand(1, 3, 16, 16).expand(8, -1, -1, -1).contiguous()  # eight copies of one image
    out = aug(x)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    distinct = {tuple(o.flatten()[:20].tolist()) for o in out}
    assert len(distinct) == 8


def test_noop_is_exact():
    aug = Augment(AugmentConfig(enabled=False), resolution=16)
    x = torch.rand(4, 3, 16, 16)
    assert aug(x) is x


def test_blur_on_for_large_images_and_grayscale_only_for_rgb():
    big = Augment(AugmentConfig(), resolution=64)
    assert "GaussianBlur" in repr(big.transform)
    gray = Augment(AugmentConfig(), resolution=16, channels=1)
    assert "RandomGrayscale" not in repr(gray.transform)
    assert gray(torch.rand(2, 1, 16, 16)).shape == (2, 1, 16, 16)


def test_blur_on_blurs_small_images_too():
    """``augment.blur=on`` at 16 px: a 3x3 kernel at the least (the tenth-of-a-side rule gives 1, no blur)."""
    (blur,) = [t for t in Augment(AugmentConfig(blur="on"), resolution=16).transform.transforms
               if "GaussianBlur" in type(t).__name__]
    assert list(blur.kernel_size) == [3, 3]
