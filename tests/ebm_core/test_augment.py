"""Augmentation transitions: range and shape kept, independent per sample, exact no-op."""

import colorsys

import pytest
import torch

from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from ebm_core.augment import Augment, adjust, crop_boxes, gaussian_blur, resized_crop
from ebm_core.config import AugmentConfig, ConfigError


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


@pytest.mark.parametrize("ratio", [(3 / 4, 4 / 3), (1.0, 1.0), (1 / 2, 1.0)])
def test_crop_boxes_follow_random_resized_crops_law(ratio):
    """The vectorised draw against ``v2.RandomResizedCrop.get_params``, 4 000 draws each (scale 0.08-1, 16 px,
    torchvision's aspect ratios, square crops and tall ones): the same mean width, height and offsets, within 4
    standard errors."""
    torch.manual_seed(1)
    ours = crop_boxes(4000, 16, (0.08, 1.0), ratio)
    ours = torch.stack([ours[:, 1], ours[:, 0], ours[:, 3] - ours[:, 1], ours[:, 2] - ours[:, 0]], 1)  # i, j, h, w
    img = torch.zeros(3, 16, 16)
    theirs = torch.tensor([v2.RandomResizedCrop.get_params(img, [0.08, 1.0], list(ratio)) for _ in range(4000)],
                          dtype=torch.float)
    se = (ours.var(0) / 4000 + theirs.var(0) / 4000).sqrt()
    assert ((ours.mean(0) - theirs.mean(0)).abs() < 4 * se).all(), (ours.mean(0), theirs.mean(0))
    assert ours[:, 2:].min() >= 1 and (ours[:, :2] + ours[:, 2:]).max() <= 16  # every box inside the image


def test_square_crops_keep_a_shapes_proportions():
    """``crop_ratio=(1, 1)``: every box is square (side rounded as torchvision rounds), so a circle stays round."""
    torch.manual_seed(3)
    boxes = crop_boxes(2000, 16, (0.6, 1.0), (1.0, 1.0))
    assert torch.equal(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    assert not torch.equal(crop_boxes(2000, 16, (0.6, 1.0))[:, 2:] - boxes[:, :2], boxes[:, 2:] - boxes[:, :2])
    # and Augment uses it: on ramps across (channel 0) and down (channel 1) the image, a crop of w x h pixels
    # resized to 16 px makes neighbouring pixels differ by w / 16 / 15 across and h / 16 / 15 down
    ramp = torch.arange(16.0) / 15
    x = torch.stack([ramp[None].expand(16, 16), ramp[:, None].expand(16, 16), torch.zeros(16, 16)])[None]
    x = x.expand(200, -1, -1, -1).contiguous()
    for ratio, square in (((1.0, 1.0), True), ((3 / 4, 4 / 3), False)):
        aug = Augment(AugmentConfig(crop_scale=(0.6, 1.0), crop_ratio=ratio, flip=False, color_jitter=(0, 0, 0, 0),
                                    grayscale_p=0.0), resolution=16)
        out = aug(x)
        across = out[:, 0, 8, 5:11].diff().median(1).values
        down = out[:, 1, 5:11, 8].diff(dim=1).median(1).values
        assert torch.allclose(across, down, atol=1e-5) == square


def test_hue_steps_turn_by_whole_sixths_and_map_the_primaries_onto_each_other():
    """``hue_steps=6`` with hue 0.4: every shift is one of -2/6 ... 2/6, each about equally often; a sixth of a
    turn takes pure red to yellow and two sixths to green (colorsys, an independent HSV), a shift ColorJitter's
    continuous draw would almost never make."""
    torch.manual_seed(4)
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), flip=False, color_jitter=(0, 0, 0, 0.4), jitter_p=1.0,
                        grayscale_p=0.0, hue_steps=6)
    aug = Augment(cfg, resolution=16)
    h = aug._jitter_factors(6000)[:, 3]
    k = h * 6
    torch.testing.assert_close(k, k.round())
    counts = torch.bincount((k.round() + 2).long(), minlength=5)
    assert len(counts) == 5 and (counts - 1200).abs().max() < 4 * (6000 * 0.2 * 0.8) ** 0.5, counts
    red = torch.tensor([1.0, 0.0, 0.0])[None, :, None, None].expand(3, 3, 2, 2)
    out = adjust(red, 3, torch.tensor([1 / 6, 2 / 6, -1 / 6]))[:, :, 0, 0]
    want = torch.tensor([colorsys.hsv_to_rgb(t % 1.0, 1.0, 1.0) for t in (1 / 6, 2 / 6, -1 / 6)])
    torch.testing.assert_close(out, want, atol=1e-5, rtol=0)
    continuous = Augment(AugmentConfig(color_jitter=(0, 0, 0, 0.4), jitter_p=1.0), resolution=16)._jitter_factors(6000)[:, 3] * 6
    assert ((continuous - continuous.round()).abs() > 1e-3).float().mean() > 0.95


@pytest.mark.parametrize("change, field", [({"hue_steps": -1}, "augment.hue_steps"),
                                           ({"hue_steps": 2.5}, "augment.hue_steps"),
                                           ({"hue_steps": 2, "color_jitter": (0, 0, 0, 0.4)}, "augment.hue_steps"),
                                           ({"crop_ratio": (4 / 3, 3 / 4)}, "augment.crop_ratio"),
                                           ({"crop_ratio": (0.0, 1.0)}, "augment.crop_ratio")])
def test_bad_crop_ratio_or_hue_steps_are_refused_by_name(change, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        AugmentConfig(**change)


def test_jitter_is_drawn_per_image_with_probability_jitter_p():
    """Whole-image crops (scale 1: no box of another aspect ratio fits), no flip, brightness only, p = 0.3."""
    torch.manual_seed(2)
    aug = Augment(AugmentConfig(crop_scale=(1.0, 1.0), flip=False, color_jitter=(0.5, 0, 0, 0), jitter_p=0.3,
                                grayscale_p=0.0), resolution=16)
    x = torch.rand(2000, 3, 16, 16) * 0.5
    changed = ((aug(x) - x).abs().amax((1, 2, 3)) > 1e-6).float().mean().item()
    assert abs(changed - 0.3) < 4 * (0.3 * 0.7 / 2000) ** 0.5, changed
