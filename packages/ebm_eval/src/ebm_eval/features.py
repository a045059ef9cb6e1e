"""Feature extractors for FID/IS: the standard FID Inception (torch-fidelity) or a domain classifier.

The Inception weights (``pt_inception-2015-12-05``) are read from a local file: an explicit path,
``$EBM_FID_WEIGHTS``, or torch's hub cache; nothing is downloaded unless ``allow_download`` is set.
Without them, a small classifier trained on the dataset's own labels/attributes (cached after
training) gives features and class probabilities; its scores are reported as ``fid_domain`` /
``is_domain`` and never mixed with Inception scores.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

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
    """A small CNN with one classification head per label column; features are its pooled 128-d code."""

    def __init__(self, *, in_channels: int, num_classes: tuple[int, ...], width: int = 32) -> None:
        super().__init__()
        self.num_classes = tuple(num_classes)
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.GroupNorm(8, width), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * width), nn.SiLU(),
            nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * width), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())  # (B, 4w)
        self.heads = nn.ModuleList(nn.Linear(4 * width, k) for k in self.num_classes)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        h = self.body(x)
        return h, [head(h) for head in self.heads]


def joint_probs(logits: list[Tensor], *, max_classes: int = 4096) -> Tensor:
    """p(y|x) over the joint label space as the product of the heads' distributions (first head if too big)."""
    probs = [torch.softmax(lg.double(), dim=1) for lg in logits]
    size = 1
    for p in probs:
        size *= p.shape[1]
    if size > max_classes:
        return probs[0]
    joint = probs[0]
    for p in probs[1:]:
        joint = (joint[:, :, None] * p[:, None, :]).flatten(1)  # (N, K1*K2)
    return joint


def train_domain_net(train: ImageSet, test: ImageSet, *, epochs: int = 6, batch_size: int = 128, seed: int = 0,
                     progress: bool = True) -> tuple[DomainNet, list[float]]:
    """Fit the classifier on real training images (with light noise, so samples are in its domain)."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    net = DomainNet(in_channels=train.images.shape[1], num_classes=train.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    n = len(train)
    for _ in tqdm(range(epochs), desc="domain classifier", disable=not progress, leave=False):
        for idx in torch.randperm(n, generator=g).split(batch_size):
            x, y = train.batch(idx)
            x = (x + 0.02 * torch.randn_like(x)).clamp(0, 1)
            _, logits = net(x)
            loss = sum(F.cross_entropy(lg, y[:, a]) for a, lg in enumerate(logits))
            opt.zero_grad()
            loss.backward()
            opt.step()
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
    """Features and joint class probabilities of a trained ``DomainNet``."""

    metric_suffix = "_domain"

    def __init__(self, net: DomainNet, *, key: str, accuracy: list[float]) -> None:
        self.net, self.name, self.accuracy = net.eval(), f"domain-{key}", accuracy

    def to(self, device: str | torch.device) -> "DomainExtractor":
        self.net.to(device)
        return self

    @torch.no_grad()
    def __call__(self, images: Tensor, *, batch_size: int = 500) -> Extracted:
        device = next(self.net.parameters()).device
        feats, probs = [], []
        for i in range(0, len(images), batch_size):
            h, logits = self.net(images[i:i + batch_size].float().to(device))
            feats.append(h.double().cpu())
            probs.append(joint_probs(logits).cpu())
        return Extracted(torch.cat(feats), torch.cat(probs))

    def predict(self, images: Tensor) -> Tensor:
        """Predicted label columns (N, A)."""
        with torch.no_grad():
            _, logits = self.net(images.float().to(next(self.net.parameters()).device))
        return torch.stack([lg.argmax(1) for lg in logits], dim=1).cpu()


def dataset_extractor(data: DataConfig, train: ImageSet, *, test: ImageSet | None = None,
                      progress: bool = False) -> DomainExtractor:
    """The domain classifier of a dataset (``train`` as loaded from ``data``), trained once, then cached
    under ``cache_dir()`` by dataset, resolution, seed and size; scored on the test split."""
    key = f"{data.name}-{data.resolution}px-seed{data.seed}-n{len(train)}"
    return domain_extractor(train, test if test is not None else load_dataset(data, split="test"), key=key,
                            progress=progress)


def fid_to_data(ext: Extractor, x: Tensor, data: ImageSet, *, n_ref: int = 1000, seed: int = 0) -> float:
    """Fréchet distance in ``ext``'s feature space between samples ``x`` and ``n_ref`` real images (a seeded subset)."""
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n_ref]
    real = data.images[idx].float() / 255
    return frechet_distance(*feature_stats(ext(x).features.numpy()), *feature_stats(ext(real).features.numpy()))


def domain_extractor(train: ImageSet, test: ImageSet, *, key: str, cache: Path | None = None,
                     progress: bool = True) -> DomainExtractor:
    """The domain classifier for a dataset, trained once and cached under ``cache_dir()`` as ``domain-<key>.pt``."""
    path = (cache or cache_dir()) / f"domain-{key}.pt"
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = DomainNet(in_channels=int(state["in_channels"]), num_classes=tuple(state["num_classes"]))
        net.load_state_dict(state["weights"])
        return DomainExtractor(net, key=key, accuracy=list(state["accuracy"]))
    net, acc = train_domain_net(train, test, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    from ebm_core.checkpoint import save_checkpoint

    save_checkpoint({"weights": net.state_dict(), "num_classes": list(net.num_classes), "accuracy": acc,
                     "in_channels": train.images.shape[1]}, path, fmt="ebm_eval.domain/1")
    return DomainExtractor(net, key=key, accuracy=acc)
