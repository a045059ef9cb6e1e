"""Feature extractors for FID/IS: the standard FID Inception (torch-fidelity) or a domain classifier.

The Inception weights (``pt_inception-2015-12-05``) are read from a local file: an explicit path,
``$EBM_FID_WEIGHTS``, or torch's hub cache; nothing is downloaded unless ``allow_download`` is set.
Without them, the dataset's *judge* gives features and class probabilities: a small classifier trained
on the dataset's own labels/attributes to near-perfect test accuracy (every shapes attribute 1.000 at
16 and 32 px, digits 0.994 at 8 px), cached by the content hash of its data and settings. Its scores
are reported as ``fid_domain`` / ``is_domain``, never mixed with Inception scores; ``quality.py``
builds the figures a person would check by eye on it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from filelock import FileLock
from torch import Tensor, nn
from tqdm.auto import tqdm

from ebm_core.callbacks import bar_options
from ebm_core.config import DataConfig
from ebm_core.data import ImageSet, load_dataset

from .metrics import feature_stats, frechet_distance

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"


class WeightsError(FileNotFoundError):
    """The FID Inception weights are missing or unreadable; the message says where they were looked for."""


def cache_dir() -> Path:
    return Path(os.environ.get("EBM_CACHE_DIR", Path.home() / ".cache" / "ebm")).expanduser()


@dataclass
class Extracted:
    features: Tensor  # (N, D)
    probs: Tensor  # (N, K): class probabilities for IS


class Extractor:
    """Maps images (N, C, H, W) in [0, 1] to features and class probabilities."""

    name: str  # "inception" or "domain-..."; part of the reference-statistics cache key
    metric_suffix: str  # "" for Inception, "_domain" otherwise

    def __call__(self, images: Tensor, *, batch_size: int = 100) -> Extracted:
        raise NotImplementedError


def find_inception_weights(path: str | Path | None = None) -> Path | None:
    """The first existing of: ``path``, $EBM_FID_WEIGHTS, $TORCH_HOME/hub/checkpoints/<file>."""
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    for cand in (path, os.environ.get("EBM_FID_WEIGHTS"), torch_home / "hub" / "checkpoints" / INCEPTION_FILE):
        if cand and Path(cand).expanduser().is_file():
            return Path(cand).expanduser()
    if path:
        raise WeightsError(f"FID Inception weights: no file at {path} (expected torch-fidelity's {INCEPTION_FILE})")
    return None


class InceptionExtractor(Extractor):
    """torch-fidelity's TF-compatible Inception v3: 2048-d pool features and unbiased logits."""

    name, metric_suffix = "inception", ""

    def __init__(self, weights: str | Path, *, device: str | torch.device = "cpu") -> None:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

        try:  # torch-fidelity reads with weights_only=False: refuse anything that is not a plain state dict
            torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as e:
            raise WeightsError(f"FID Inception weights {weights} could not be read as a state dict ({e})") from e
        self.device = torch.device(device)
        self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"],
                                               feature_extractor_weights_path=str(weights)).to(self.device).eval()

    @torch.no_grad()
    def __call__(self, images: Tensor, *, batch_size: int = 100) -> Extracted:
        feats, logits = [], []
        for i in tqdm(range(0, len(images), batch_size), desc="inception", leave=False):
            x = (images[i:i + batch_size].clamp(0, 1) * 255).round().to(torch.uint8)
            x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
            f, lg = self.net(x.to(self.device))
            feats.append(f.cpu())
            logits.append(lg.cpu())
        return Extracted(torch.cat(feats).double(), torch.softmax(torch.cat(logits).double(), dim=1))


class DomainNet(nn.Module):
    """A small CNN with one classification head per label column; features are its 128-d code.

    The last feature map is pooled to 4x4, not 1x1, so position (an attribute of the shapes set) is kept.
    """

    def __init__(self, *, in_channels: int, num_classes: tuple[int, ...], width: int = 32) -> None:
        super().__init__()
        self.num_classes = tuple(num_classes)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * width), nn.SiLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * width), nn.SiLU(),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(16 * 4 * width, 128), nn.SiLU())  # (B, 128)
        self.heads = nn.ModuleList(nn.Linear(128, k) for k in self.num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = self.body(x)
        return h, [head(h) for head in self.heads]


def joint_probs(probs: list[Tensor], *, max_classes: int = 4096) -> Tensor:
    """p(y|x) over the joint label space as the product of the heads' distributions (first head if too big)."""
    size = 1
    for p in probs:
        size *= p.shape[1]
    if size > max_classes:
        return probs[0]
    joint = probs[0]
    for p in probs[1:]:
        joint = (joint[:, :, None] * p[:, None, :]).flatten(1)  # (N, K1*K2)
    return joint


@dataclass(frozen=True)
class JudgeSettings:
    """How a judge is trained; part of its cache key with the content hash of its training data."""

    steps: int = 500  # optimiser steps, whatever the dataset's size (about 3 epochs of shapes, 45 of digits)
    batch_size: int = 128
    lr: float = 3e-3
    max_noise: float = 0.06  # per-image Gaussian noise std drawn from U(0, max_noise): samples are not noise-free
    max_shift: int = 1  # random translation in pixels (digits and image data; the shapes' position is a label)
    seed: int = 0
    version: int = 2  # bump when the network or the recipe changes


def train_domain_net(train: ImageSet, test: ImageSet, *, settings: JudgeSettings = JudgeSettings(),
                     shift: bool = True, progress: bool = True) -> tuple[DomainNet, list[float]]:
    """Fit the classifier on real training images with noise (and shifts when ``shift``), so that generated
    samples are in its domain; one-cycle Adam. Returns the net and its accuracy per head on ``test``."""
    s = settings
    g = torch.Generator().manual_seed(s.seed)
    torch.manual_seed(s.seed)
    net = DomainNet(in_channels=train.images.shape[1], num_classes=train.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=s.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=s.steps)
    epochs = math.ceil(s.steps * s.batch_size / len(train))
    batches = (idx for _ in range(epochs) for idx in torch.randperm(len(train), generator=g).split(s.batch_size))
    for idx in tqdm(itertools.islice(batches, s.steps), total=s.steps, desc="judge", disable=not progress,
                    leave=False, **bar_options()):
        x, y = train.batch(idx)
        if shift and s.max_shift:
            dx, dy = torch.randint(-s.max_shift, s.max_shift + 1, (2,), generator=g).tolist()
            x = torch.roll(x, (dy, dx), dims=(2, 3))
        x = (x + s.max_noise * torch.rand(len(x), 1, 1, 1, generator=g) * torch.randn_like(x)).clamp(0, 1)
        _, logits = net(x)
        loss = sum(F.cross_entropy(lg, y[:, a]) for a, lg in enumerate(logits))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    net.eval()
    return net, head_accuracy(net, test)


@torch.no_grad()
def head_accuracy(net: DomainNet, data: ImageSet) -> list[float]:
    correct = torch.zeros(len(net.num_classes))
    for idx in torch.arange(len(data)).split(500):
        x, y = data.batch(idx)
        _, logits = net(x)
        correct += torch.tensor([(lg.argmax(1) == y[:, a]).sum().item() for a, lg in enumerate(logits)])
    return (correct / len(data)).tolist()


class DomainExtractor(Extractor):
    """Features and joint class probabilities of a trained ``DomainNet``: the dataset's judge.

    ``accuracy``: its accuracy per label column (``label_names``) on the dataset's real test split.
    """

    metric_suffix = "_domain"

    def __init__(self, net: DomainNet, *, key: str, accuracy: list[float], label_names: tuple[str, ...] = ()) -> None:
        self.net, self.name, self.accuracy = net.eval(), f"domain-{key}", accuracy
        self.label_names = tuple(label_names) or tuple(f"label{i}" for i in range(len(accuracy)))

    @property
    def accuracies(self) -> dict[str, float]:
        """Test accuracy per label column, e.g. {'shape': 0.995, 'colour': 1.0, ...}."""
        return dict(zip(self.label_names, (round(a, 4) for a in self.accuracy)))

    def to(self, device: str | torch.device) -> "DomainExtractor":
        self.net.to(device)
        return self

    @torch.no_grad()
    def outputs(self, images: Tensor, *, batch_size: int = 500) -> tuple[Tensor, list[Tensor]]:
        """One pass of the network: features (N, 128) and p(label column a | x) for every column, (N, K_a) each."""
        device = next(self.net.parameters()).device
        feats, heads = [], [[] for _ in self.net.num_classes]
        for i in range(0, len(images), batch_size):
            h, logits = self.net(images[i:i + batch_size].float().to(device))
            feats.append(h.double().cpu())
            for a, lg in enumerate(logits):
                heads[a].append(lg.double().cpu())
        return torch.cat(feats), [torch.softmax(torch.cat(lg), dim=1) for lg in heads]

    def __call__(self, images: Tensor, *, batch_size: int = 500) -> Extracted:
        feats, heads = self.outputs(images, batch_size=batch_size)
        return Extracted(feats, joint_probs(heads))

    def head_probs(self, images: Tensor) -> list[Tensor]:
        """p(label column a | x) for every column: a list of (N, K_a) tensors."""
        return self.outputs(images)[1]

    def predict(self, images: Tensor) -> Tensor:
        """Predicted label columns (N, A)."""
        return torch.stack([p.argmax(1) for p in self.head_probs(images)], dim=1)


JUDGE_SHAPES_TRAIN = 20_000  # shapes are procedural: the judge gets its own larger draw, not the model's train split
JUDGE_SHAPES_SEED = 7_000_003


def judge_data(data: DataConfig) -> tuple[ImageSet, ImageSet]:
    """The judge's training and test images for a dataset, with every label column (``data.labels`` ignored).

    Shapes: its own draw of ``JUDGE_SHAPES_TRAIN`` images (and of a fifth as many test images) at the config's
    resolution, the same for every shapes config; others: the dataset's own train and test splits.
    """
    full = dataclasses.replace(data, labels=())
    if data.name == "shapes":  # the same generator as every shapes config; the test draw is disjoint from training
        full = dataclasses.replace(full, num_train=JUDGE_SHAPES_TRAIN, seed=JUDGE_SHAPES_SEED)
    return load_dataset(full, split="train"), load_dataset(full, split="test")


def dataset_extractor(data: DataConfig, *, settings: JudgeSettings = JudgeSettings(), cache: Path | None = None,
                      progress: bool = False, log: Callable[[str], Any] | None = None) -> DomainExtractor:
    """The dataset's judge (domain classifier): trained once, then cached under ``cache_dir()`` by the content
    hash of its training images and labels and its settings. Its test accuracies travel with it."""
    train, test = judge_data(data)
    return domain_extractor(train, test, settings=settings, cache=cache, progress=progress, log=log,
                            shift=data.name != "shapes")


def _load_judge(path: Path, key: str, train: ImageSet) -> DomainExtractor:
    """A cached judge: its weights, and the accuracies it was measured with when it was trained."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = DomainNet(in_channels=int(state["in_channels"]), num_classes=tuple(state["num_classes"]))
    net.load_state_dict(state["weights"])
    return DomainExtractor(net, key=key, accuracy=list(state["accuracy"]), label_names=train.label_names)


def domain_extractor(train: ImageSet, test: ImageSet, *, settings: JudgeSettings = JudgeSettings(), shift: bool = True,
                     cache: Path | None = None, progress: bool = True,
                     log: Callable[[str], Any] | None = None) -> DomainExtractor:
    """The judge for ``train``/``test``, cached as ``domain-<name>-<R>px-<content hash>.pt``."""
    h = hashlib.sha256()
    for t in (train.images, train.labels, test.images, test.labels):
        h.update(t.contiguous().numpy().tobytes())
    h.update(repr((settings, shift, train.num_classes)).encode())
    key = f"{train.name}-{train.images.shape[-1]}px-{h.hexdigest()[:16]}"
    path = (cache or cache_dir()) / f"domain-{key}.pt"
    if path.is_file():  # cached: no lock, so a read-only cache (a shared, pre-filled one) serves as well
        return _load_judge(path, key, train)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Processes that need the same judge at once (a sweep's concurrent trials on a new machine, the test suite's
    # workers) train it once: the others wait here, then load it. An OS lock, released if its holder dies.
    with FileLock(f"{path}.lock"):
        if path.is_file():
            return _load_judge(path, key, train)
        if log:
            log(f"training the {train.name} judge on {len(train)} images (once; cached in {path})")
        net, acc = train_domain_net(train, test, settings=settings, shift=shift, progress=progress)
        from ebm_core.checkpoint import save_checkpoint

        save_checkpoint({"weights": net.state_dict(), "num_classes": list(net.num_classes), "accuracy": acc,
                         "in_channels": train.images.shape[1]}, path, fmt="ebm_eval.domain/2")
    ext = DomainExtractor(net, key=key, accuracy=acc, label_names=train.label_names)
    if log:
        log(f"{train.name} judge test accuracy: {ext.accuracies}")
    return ext


def fid_to_data(ext: Extractor, x: Tensor, data: ImageSet, *, n_ref: int = 1000, seed: int = 0) -> float:
    """Fréchet distance in ``ext``'s feature space between samples ``x`` and ``n_ref`` real images (a seeded subset)."""
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n_ref]
    real = data.images[idx].float() / 255
    return frechet_distance(*feature_stats(ext(x).features.numpy()), *feature_stats(ext(real).features.numpy()))
