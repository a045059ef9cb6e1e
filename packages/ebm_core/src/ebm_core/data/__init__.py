"""Datasets as in-memory uint8 image tensors with integer labels/attributes (DESIGN §5).

The embedded shapes and scikit-learn's bundled digits need nothing on disk. CIFAR-10/100, SVHN,
an image folder and ImageNet 32x32 are read from local files only; a missing or malformed path
raises ``DatasetError`` naming the path and the layout expected. Nothing is ever downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from ..config import ConfigError, DataConfig
from .shapes import ATTRIBUTES, make_shapes

__all__ = ["DatasetError", "ImageSet", "load_dataset", "dequantize", "resize"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MAX_IMAGE_PIXELS = 50_000_000  # larger files (or decompression bombs) are refused: the models see 8-128 px

LAYOUTS = {
    "cifar10": "ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta} (the python version from the CIFAR site)",
    "cifar100": "ROOT/cifar-100-python/{train, test, meta} (the python version from the CIFAR site)",
    "svhn": "ROOT/{train_32x32.mat, test_32x32.mat} (the cropped-digits format)",
    "imagefolder": "ROOT/[CLASS/]*.png|jpg|jpeg|bmp|webp (optional one level of class folders)",
    "imagenet32": "ROOT/{train_data_batch_1..10.npz, val_data.npz} (downsampled ImageNet 32x32, arrays 'data' (N, 3072) and 'labels')",
}


class DatasetError(FileNotFoundError):
    """A dataset path is missing or malformed; the message names the path and the expected layout."""


@dataclass
class ImageSet:
    """Images (N, C, R, R) uint8 and labels (N, A) int64 with their cardinalities."""

    images: Tensor
    labels: Tensor
    num_classes: tuple[int, ...]
    label_names: tuple[str, ...]
    name: str

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Float images in [0, 1] and labels for the given indices."""
        return self.images[idx].float() / 255, self.labels[idx]


def dequantize(x: Tensor) -> Tensor:
    """x * 255/256 + U(0, 1/256) (DESIGN §1 step 1)."""
    return x * 255 / 256 + torch.rand_like(x) / 256


def resize(images: Tensor, resolution: int) -> Tensor:
    """(N, C, H, W) -> (N, C, R, R), uint8 or float: resize the short side (antialiased), centre-crop."""
    if images.shape[-2:] == (resolution, resolution):
        return images
    out = TF.resize(images, [resolution], antialias=True)
    return TF.center_crop(out, [resolution, resolution])


def _missing(name: str, path: Path, what: str) -> DatasetError:
    return DatasetError(f"{name}: {what} at {path}. Expected layout: {LAYOUTS[name]}. "
                        "Nothing is downloaded at run time: place the files there or set data.root.")


def _cifar(cfg: DataConfig, train: bool, root: Path) -> ImageSet:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if cfg.name == "cifar10" else CIFAR100
    try:
        ds = cls(str(root), train=train, download=False)
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        raise _missing(cfg.name, root, f"missing or corrupt files ({e})") from e
    images = torch.from_numpy(np.asarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # (N, 3, 32, 32)
    k = 10 if cfg.name == "cifar10" else 100
    return ImageSet(resize(images, cfg.resolution), torch.tensor(ds.targets).long()[:, None], (k,), ("class",), cfg.name)


def _svhn(cfg: DataConfig, train: bool, root: Path) -> ImageSet:
    from torchvision.datasets import SVHN

    try:
        ds = SVHN(str(root), split="train" if train else "test", download=False)
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        raise _missing("svhn", root, f"missing or corrupt files ({e})") from e
    images = torch.from_numpy(np.asarray(ds.data))  # (N, 3, 32, 32)
    return ImageSet(resize(images, cfg.resolution), torch.from_numpy(ds.labels).long()[:, None], (10,), ("digit",), "svhn")


GREY_MODES = ("1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # PIL modes without colour


def _imagefolder(cfg: DataConfig, train: bool, root: Path) -> ImageSet:
    """Every image file under ``root``; one channel when every file is greyscale (any split), else RGB."""
    from PIL import UnidentifiedImageError

    if not root.is_dir():
        raise _missing("imagefolder", root, "no such directory")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise _missing("imagefolder", root, "no image files")
    classes = sorted({p.parent.relative_to(root).as_posix() for p in files})
    perm = np.random.default_rng(cfg.seed).permutation(len(files))
    n_test = max(1, len(files) // 10)
    chosen = perm[n_test:] if train and len(files) > 1 else perm[:n_test]
    grey = all(_is_grey(f) for f in files)  # every split gets the same channel count
    images, labels = [], []
    for i in chosen:
        try:
            with Image.open(files[i]) as im:
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise _missing("imagefolder", files[i], f"image of {im.width}x{im.height} pixels, more than "
                                   f"{MAX_IMAGE_PIXELS:,} (refused unread; shrink it first)")
                t = TF.pil_to_tensor(to_rgb(im))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            raise _missing("imagefolder", files[i], f"unreadable image ({e})") from e
        images.append(resize(t[None], cfg.resolution)[0])
        labels.append(classes.index(files[i].parent.relative_to(root).as_posix()))
    x = torch.stack(images)
    return ImageSet(x[:, :1] if grey else x, torch.tensor(labels)[:, None], (max(len(classes), 2),), ("class",),
                    "imagefolder")


def _is_grey(path: Path) -> bool:
    """A greyscale file: a grey PIL mode, or a palette of greys (the header only; unreadable files say no)."""
    try:
        with Image.open(path) as im:
            if im.mode != "P":
                return im.mode in GREY_MODES
            pal = np.asarray(im.getpalette() or [], dtype=np.int64).reshape(-1, 3)
            return bool(len(pal)) and bool((pal.max(1) == pal.min(1)).all())
    except (OSError, ValueError):
        return False


def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode: 16/32-bit greyscale scaled by its bit depth (not clipped to white),
    palettes through their colours, transparency composited over white, greyscale repeated."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):  # 16-bit PNGs open as I;16 or I
        depth = 65535 if im.mode.startswith("I;16") or np.asarray(im).max() > 255 else 255
        grey = (np.asarray(im, dtype=np.float64) * (255 / depth)).clip(0, 255).round().astype(np.uint8)
        return Image.fromarray(grey, mode="L").convert("RGB")
    if im.mode == "F":
        return Image.fromarray((np.asarray(im).clip(0, 1) * 255).round().astype(np.uint8), mode="L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _imagenet32(cfg: DataConfig, train: bool, root: Path) -> ImageSet:
    files = sorted(root.glob("train_data_batch_*.npz")) if train else [root / "val_data.npz"]
    if not files or not files[0].is_file():
        raise _missing("imagenet32", root, "no npz files")
    images, labels = [], []
    for f in files:
        try:
            with np.load(f) as z:
                data, lab = z["data"], z["labels"]
        except (OSError, ValueError, KeyError) as e:
            raise _missing("imagenet32", f, f"unreadable npz ({e})") from e
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise _missing("imagenet32", f, f"array 'data' of shape {data.shape}, not (N, 3072)")
        images.append(torch.from_numpy(data).view(-1, 3, 32, 32))
        labels.append(torch.from_numpy(np.asarray(lab)).long() - 1)  # labels are 1-based
    return ImageSet(resize(torch.cat(images), cfg.resolution), torch.cat(labels)[:, None], (1000,), ("class",), "imagenet32")


def _digits(cfg: DataConfig, train: bool) -> ImageSet:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.from_numpy(d.images / 16.0).float()[:, None]  # (1797, 1, 8, 8): greyscale
    images = (TF.resize(images, [cfg.resolution], antialias=True).clamp(0, 1) * 255).round().to(torch.uint8)
    perm = torch.from_numpy(np.random.default_rng(cfg.seed).permutation(len(images)))
    n_test = len(images) // 5
    idx = perm[n_test:] if train else perm[:n_test]
    return ImageSet(images[idx], torch.from_numpy(d.target).long()[idx, None], (10,), ("digit",), "digits")


def _shapes(cfg: DataConfig, train: bool) -> ImageSet:
    n = cfg.num_train if train else max(cfg.num_train // 5, 1)
    seed = cfg.seed if train else cfg.seed + 1_000_003  # disjoint draws for train and test
    images, attrs = make_shapes(n, resolution=cfg.resolution, seed=seed)
    return ImageSet(images, attrs, tuple(ATTRIBUTES.values()), tuple(ATTRIBUTES), "shapes")


def load_dataset(cfg: DataConfig, *, split: str = "train") -> ImageSet:
    """The dataset a config names, at its resolution; ``split`` is 'train' or 'test'."""
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    train = split == "train"
    if cfg.name == "shapes":
        data = _shapes(cfg, train)
    elif cfg.name == "digits":
        data = _digits(cfg, train)
    else:
        root = Path(cfg.root).expanduser()
        if not root.exists():
            raise _missing(cfg.name, root, "no such path")
        loaders = {"cifar10": _cifar, "cifar100": _cifar, "svhn": _svhn, "imagefolder": _imagefolder, "imagenet32": _imagenet32}
        data = loaders[cfg.name](cfg, train, root)
    data = with_channels(data, cfg.channels)
    return select_labels(data, cfg.labels) if cfg.labels else data


def with_channels(data: ImageSet, channels: int | None) -> ImageSet:
    """The images with ``channels`` channels (None: unchanged): RGB to greyscale by ITU-R 601 luma, grey repeated."""
    have = data.images.shape[1]
    if channels is None or channels == have:
        return data
    images = TF.rgb_to_grayscale(data.images) if channels == 1 else data.images.expand(-1, 3, -1, -1).contiguous()
    return ImageSet(images, data.labels, data.num_classes, data.label_names, data.name)


def select_labels(data: ImageSet, names: tuple[str, ...] | list[str]) -> ImageSet:
    """The same images with only the named label columns (a model conditioned on those attributes)."""
    unknown = [n for n in names if n not in data.label_names]
    if unknown:
        raise ConfigError(f"data.labels: {unknown} not among the {data.name} labels {list(data.label_names)}")
    cols = [data.label_names.index(n) for n in names]
    return ImageSet(data.images, data.labels[:, cols], tuple(data.num_classes[c] for c in cols), tuple(names), data.name)
