"""Data-augmentation transitions D(x) (Du et al. 2021, Sec. 2.3; DESIGN §2 reference set).

torchvision's ``transforms.v2`` ops, in their order: ``RandomResizedCrop``, ``RandomHorizontalFlip``,
``ColorJitter`` (its four adjustments in a random order) with probability ``jitter_p``, ``RandomGrayscale``,
and ``GaussianBlur`` for images of 64 px and more. Every image of the batch gets its own random draw, so
every chain its own transition. torchvision draws one parameter set per call, which means a Python loop
over the images: 70 ms for the 132 images of a demo iteration on 2 cores, a third of the iteration. Here
the same draws are made for the whole batch at once and applied by batched ops (``grid_sample`` at the
points bilinear resizing samples, torchvision's own colour conversions, a grouped convolution for the blur);
each op is checked against its torchvision counterpart with the same parameters in
tests/ebm_core/test_augment.py, and benchmarks/augment.py measures the two. The no-op mode returns its
input untouched.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchvision.transforms.v2 import functional as TF
from torchvision.transforms.v2.functional._color import _hsv_to_rgb, _rgb_to_hsv  # what TF.adjust_hue uses

from .config import AugmentConfig

CROP_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's default aspect-ratio range
CROP_ATTEMPTS = 10  # as RandomResizedCrop.get_params
BLUR_SIGMA = (0.1, 2.0)


def crop_boxes(n: int, size: int, scale: tuple[float, float]) -> Tensor:
    """RandomResizedCrop's parameters for ``n`` square images of side ``size``: boxes (n, 4) as x1, y1, x2, y2.

    ``get_params`` vectorised: up to 10 draws of area and log aspect ratio per image, the first that fits
    is kept; none fitting gives the whole image (its centre crop for a square image). An upper scale above 1
    (not in torchvision) also allows boxes larger than the image, placed so that they cover it: a zoom out.
    """
    area = torch.empty(n, CROP_ATTEMPTS).uniform_(*scale) * size * size
    ratio = torch.empty(n, CROP_ATTEMPTS).uniform_(math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1])).exp()
    w, h = (area * ratio).sqrt().round(), (area / ratio).sqrt().round()
    fits = (w > 0) & (h > 0) & ((scale[1] > 1) | ((w <= size) & (h <= size)))
    first = fits.float().argmax(1, keepdim=True)  # the first attempt that fits
    found = fits.any(1)
    w = torch.where(found, w.gather(1, first).squeeze(1), float(size))
    h = torch.where(found, h.gather(1, first).squeeze(1), float(size))
    # inside the image when smaller than it (torchvision's draw), covering it when larger
    top = (size - h).clamp(max=0) + (torch.rand(n) * ((size - h).abs() + 1)).floor()
    left = (size - w).clamp(max=0) + (torch.rand(n) * ((size - w).abs() + 1)).floor()
    return torch.stack([left, top, left + w, top + h], 1)


def resized_crop(x: Tensor, boxes: Tensor) -> Tensor:
    """Each image's box (x1, y1, x2, y2 in pixels) resized bilinearly to the image's size: ``TF.resized_crop``
    for a batch with one box per image. Bilinear resizing samples the crop at ``(o + 0.5) * side / size - 0.5``,
    clamped to the crop's edge pixels; the same points are sampled here with ``grid_sample``. A box larger than
    the image (a zoom out) samples outside it, where ``grid_sample`` repeats the image's edge pixels, and without
    the antialiasing filter torchvision applies when it shrinks an image."""
    n, _, H, W = x.shape
    left, top, right, bottom = boxes.to(x).unbind(1)

    def points(start: Tensor, side: Tensor, size: int) -> Tensor:  # (n, size) pixel coordinates in the image
        o = (torch.arange(size, dtype=x.dtype, device=x.device) + 0.5) / size
        src = (o[None] * side[:, None] - 0.5).clamp(min=0).minimum(side[:, None] - 1)
        return (2 * (start[:, None] + src) + 1) / size - 1  # grid_sample's units (align_corners=False)

    gx, gy = points(left, right - left, W), points(top, bottom - top, H)
    grid = torch.stack(torch.broadcast_tensors(gx[:, None, :], gy[:, :, None]), -1)  # (n, H, W, (x, y))
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _blend(a: Tensor, b: Tensor, factor: Tensor) -> Tensor:
    return (factor * a + (1 - factor) * b).clamp(0, 1)  # torchvision's _blend for float images


def adjust(x: Tensor, op: int, factor: Tensor) -> Tensor:
    """ColorJitter's op ``op`` (0 brightness, 1 contrast, 2 saturation, 3 hue) with one factor per image (n,)."""
    f = factor.to(x)[:, None, None, None]
    if op == 0:
        return (f * x).clamp(0, 1)
    if op == 1:
        grey = TF.rgb_to_grayscale(x) if x.shape[1] == 3 else x
        return _blend(x, grey.mean(dim=(-3, -2, -1), keepdim=True), f)
    if x.shape[1] == 1:  # saturation and hue leave grey images as they are
        return x
    if op == 2:
        return _blend(x, TF.rgb_to_grayscale(x), f)
    h, s, v = _rgb_to_hsv(x).unbind(-3)
    return _hsv_to_rgb(torch.stack([(h + f[:, 0]).remainder(1.0), s, v], -3))


def gaussian_blur(x: Tensor, kernel_size: int, sigma: Tensor) -> Tensor:
    """``TF.gaussian_blur`` with one sigma per image (n,): a separable grouped convolution, reflect padding."""
    n, C, H, W = x.shape
    t = torch.linspace(-(kernel_size - 1) / 2, (kernel_size - 1) / 2, kernel_size, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t[None] / sigma.to(x)[:, None]) ** 2)
    k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (n*C, k)
    p = kernel_size // 2
    y = torch.nn.functional.pad(x.reshape(1, n * C, H, W), (p, p, p, p), mode="reflect")
    y = torch.nn.functional.conv2d(y, k[:, None, None, :], groups=n * C)
    y = torch.nn.functional.conv2d(y, k[:, None, :, None], groups=n * C)
    return y.reshape(n, C, H, W)


class Augment:
    """Per-sample random augmentation of a (B, C, H, W) batch in [0, 1]; output in [0, 1], same shape."""

    def __init__(self, cfg: AugmentConfig, *, resolution: int, channels: int = 3) -> None:
        self.enabled, self.cfg, self.resolution = cfg.enabled, cfg, resolution
        # ColorJitter's factor ranges: brightness, contrast, saturation [max(0, 1-v), 1+v], hue [-v, v];
        # a grey image has no saturation or hue to jitter
        self.jitter_ops = [i for i, v in enumerate(cfg.color_jitter) if v > 0 and (channels == 3 or i < 2)]
        self.grayscale_p = cfg.grayscale_p if channels == 3 else 0.0
        on = cfg.blur == "on" or (cfg.blur == "auto" and resolution >= 64)
        # about a tenth of the side, odd; 3 at the least (1 is no blur)
        self.blur_kernel = max(3, 2 * (resolution // 20) + 1) if on else None

    def _jitter_factors(self, n: int) -> Tensor:
        """(n, 4) factors; the images not drawn for jitter (probability 1 - jitter_p) get the neutral ones."""
        b, c, s, h = self.cfg.color_jitter
        ranges = [(max(0.0, 1 - b), 1 + b), (max(0.0, 1 - c), 1 + c), (max(0.0, 1 - s), 1 + s), (-h, h)]
        f = torch.stack([torch.empty(n).uniform_(lo, hi) for lo, hi in ranges], 1)
        f[torch.rand(n) >= self.cfg.jitter_p] = torch.tensor([1.0, 1.0, 1.0, 0.0])
        return f

    def __call__(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return x
        x, n = x.detach(), len(x)
        x = resized_crop(x, crop_boxes(n, self.resolution, self.cfg.crop_scale))
        if self.cfg.flip:
            x = torch.where((torch.rand(n) < 0.5).to(x.device)[:, None, None, None], x.flip(-1), x)
        if self.jitter_ops:
            factors = self._jitter_factors(n)
            order = torch.rand(n, 4).argsort(1)  # ColorJitter's random order of its ops, per image
            for slot in range(4):
                for op in self.jitter_ops:
                    sel = (order[:, slot] == op).nonzero().squeeze(1)
                    if len(sel):
                        on = sel.to(x.device)
                        x = x.index_copy(0, on, adjust(x[on], op, factors[sel, op]))
        if self.grayscale_p > 0:
            grey = (torch.rand(n) < self.grayscale_p).to(x.device)[:, None, None, None]
            x = torch.where(grey, TF.rgb_to_grayscale(x, num_output_channels=3), x)
        if self.blur_kernel is not None:
            x = gaussian_blur(x, self.blur_kernel, torch.empty(n).uniform_(*BLUR_SIGMA))
        return x.clamp_(0, 1)
