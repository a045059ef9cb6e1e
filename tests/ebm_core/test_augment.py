"""Augmentation transitions: range and shape kept, independent per sample, exact no-op."""

import torch

from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ebm_core.augment import Augment, adjust, crop_boxes, gaussian_blur, resized_crop
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
    assert Augment(AugmentConfig(), resolution=64).blur_kernel is not None
    assert Augment(AugmentConfig(), resolution=16).blur_kernel is None
    gray = Augment(AugmentConfig(), resolution=16, channels=1)
    assert gray.grayscale_p == 0 and gray.jitter_ops == [0, 1]  # brightness and contrast only
    assert gray(torch.rand(2, 1, 16, 16)).shape == (2, 1, 16, 16)


def test_blur_on_blurs_small_images_too():
    """``augment.blur=on`` at 16 px: a 3x3 kernel at the least (the tenth-of-a-side rule gives 1, no blur)."""
    assert Augment(AugmentConfig(blur="on"), resolution=16).blur_kernel == 3


def test_each_batched_op_is_torchvisions_with_the_same_parameters():
    """Crop-and-resize, the four colour adjustments and the blur, one random parameter per image, against
    torchvision's functional op applied image by image with that parameter."""
    torch.manual_seed(0)
    n = 64
    x = torch.rand(n, 3, 16, 16)
    boxes = crop_boxes(n, 16, (0.08, 1.0))
    left, top, right, bottom = boxes.long().unbind(1)
    want = [TF.resized_crop(x[i], top[i].item(), left[i].item(), (bottom - top)[i].item(), (right - left)[i].item(),
                            [16, 16], antialias=True) for i in range(n)]
    torch.testing.assert_close(resized_crop(x, boxes), torch.stack(want))
    factors = {0: TF.adjust_brightness, 1: TF.adjust_contrast, 2: TF.adjust_saturation, 3: TF.adjust_hue}
    for op, fn in factors.items():
        f = torch.empty(n).uniform_(-0.4, 0.4) if op == 3 else torch.empty(n).uniform_(0.2, 1.8)
        torch.testing.assert_close(adjust(x, op, f), torch.stack([fn(x[i], f[i].item()) for i in range(n)]))
    grey = x[:, :1]
    f = torch.empty(n).uniform_(0.2, 1.8)
    torch.testing.assert_close(adjust(grey, 1, f), torch.stack([TF.adjust_contrast(grey[i], f[i].item()) for i in range(n)]))
    sigma = torch.empty(n).uniform_(0.1, 2.0)
    torch.testing.assert_close(gaussian_blur(x, 5, sigma),
                               torch.stack([TF.gaussian_blur(x[i], [5, 5], [sigma[i].item()] * 2) for i in range(n)]))


def test_crop_boxes_follow_random_resized_crops_law():
    """The vectorised draw against ``v2.RandomResizedCrop.get_params``, 4 000 draws each (scale 0.08-1, 16 px):
    the same mean width, height and offsets, within 4 standard errors."""
    torch.manual_seed(1)
    ours = crop_boxes(4000, 16, (0.08, 1.0))
    ours = torch.stack([ours[:, 1], ours[:, 0], ours[:, 3] - ours[:, 1], ours[:, 2] - ours[:, 0]], 1)  # i, j, h, w
    img = torch.zeros(3, 16, 16)
    theirs = torch.tensor([v2.RandomResizedCrop.get_params(img, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)],
                          dtype=torch.float)
    se = (ours.var(0) / 4000 + theirs.var(0) / 4000).sqrt()
    assert ((ours.mean(0) - theirs.mean(0)).abs() < 4 * se).all(), (ours.mean(0), theirs.mean(0))
    assert ours[:, 2:].min() >= 1 and (ours[:, :2] + ours[:, 2:]).max() <= 16  # every box inside the image


def test_crops_above_scale_one_zoom_out():
    """An upper scale above 1 (not in torchvision): boxes larger than the image cover it, and resizing one shrinks the
    picture towards the box's centre, the image's edge repeated outside it. A centred 8-px square seen through a box
    twice the image's side is a centred 4-px square, exactly (bilinear points fall between two equal pixels)."""
    torch.manual_seed(3)
    boxes = crop_boxes(2000, 16, (4.0, 4.0))  # area 4x: sides about 32 px (aspect ratio 3/4-4/3)
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert (w > 16).all() and (h > 16).all() and (w * h / 256 - 4).abs().max() < 0.3
    assert (boxes[:, :2] <= 0).all() and (boxes[:, 2:] >= 16).all()  # each covers the image
    centre = (boxes[:, :2] + boxes[:, 2:]) / 2
    assert (centre.mean(0) - 8).abs().max() < 0.3  # placed uniformly over the covering positions
    x = torch.zeros(1, 1, 16, 16)
    x[..., 4:12, 4:12] = 1
    expected = torch.zeros(1, 1, 16, 16)
    expected[..., 6:10, 6:10] = 1
    torch.testing.assert_close(resized_crop(x, torch.tensor([[-8.0, -8.0, 24.0, 24.0]])), expected)


def test_jitter_is_drawn_per_image_with_probability_jitter_p():
    """Whole-image crops (scale 1: no box of another aspect ratio fits), no flip, brightness only, p = 0.3."""
    torch.manual_seed(2)
    aug = Augment(AugmentConfig(crop_scale=(1.0, 1.0), flip=False, color_jitter=(0.5, 0, 0, 0), jitter_p=0.3,
                                grayscale_p=0.0), resolution=16)
    x = torch.rand(2000, 3, 16, 16) * 0.5
    changed = ((aug(x) - x).abs().amax((1, 2, 3)) > 1e-6).float().mean().item()
    assert abs(changed - 0.3) < 4 * (0.3 * 0.7 / 2000) ** 0.5, changed
