"""What a person sees in a sample grid, measured by the dataset's judge (``features.dataset_extractor``).

Beside FID-domain, four figures, each computed the same way on generated samples and on held-out real splits
of the same size (``held_out_quality``, the mean over ``HELD_OUT_SPLITS`` of them), so that every number has a
real-data yardstick:

- *recognisability*: the share of samples the judge classifies with confidence >= 0.9 on every label
  column; with the entropy of its predicted classes (first column) against the data's, for mode coverage;
- *colour fidelity*: the total-variation distance between the pooled RGB colour histograms of samples and
  data (4 bins per channel: with 8, noise of sd 0.05 on real images already scores 0.48, as the data's
  background sits near a bin edge); on greyscale data, how far from grey the samples are (mean channel spread);
- *precision / recall*: the k-NN manifold estimate of Kynkäänniemi et al. (2019) in the judge's features;
- *shape agreement* (shapes only): the share of confident samples whose judged shape is also the nearest
  of the three shapes rendered at the judged colour, size and position, a check that uses no learned model.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ebm_core.data import ImageSet

from .features import DomainExtractor
from .metrics import feature_stats, frechet_distance

CONFIDENT = 0.9  # a sample is recognised when every head's top probability reaches this
HIST_BINS = 4  # per channel: 64 cells, the coarsest grid that still separates the shapes data's six colours and background
NEAREST_K = 3  # Kynkäänniemi et al. (2019) use k = 3


def recognised(head_probs: list[Tensor], *, threshold: float = CONFIDENT) -> Tensor:
    """(N,) bool: every label column's top probability is at least ``threshold``."""
    return torch.stack([p.max(1).values >= threshold for p in head_probs], dim=1).all(1)


def class_entropy(classes: Tensor, num_classes: int) -> float:
    """Entropy in bits of the empirical distribution of ``classes`` (log2(K) when all K are equally common)."""
    p = torch.bincount(classes, minlength=num_classes).double() / max(len(classes), 1)
    p = p[p > 0]
    return float(-(p * p.log2()).sum())


def is_greyscale(images: Tensor) -> bool:
    """One channel, or three channels that are equal to within one 8-bit level everywhere."""
    return images.shape[1] == 1 or bool((images.amax(1) - images.amin(1)).max() <= 1 / 255 + 1e-6)


def colour_histogram(images: Tensor, *, bins: int = HIST_BINS) -> Tensor:
    """The pooled joint RGB histogram of (N, 3, H, W) images in [0, 1], normalised to sum to 1: (bins**3,)."""
    q = (images.clamp(0, 1) * bins).long().clamp_(max=bins - 1)  # (N, 3, H, W) bin per channel
    cell = (q[:, 0] * bins + q[:, 1]) * bins + q[:, 2]
    h = torch.bincount(cell.flatten(), minlength=bins**3).double()
    return h / h.sum()


def colour_distance(x: Tensor, real: Tensor) -> float:
    """Colour fidelity of samples ``x`` to ``real`` images, both (N, C, H, W) in [0, 1].

    Colour data: total variation between the colour histograms, in [0, 1]. Greyscale data: the samples'
    mean spread between channels (max - min), 0 for grey; always 0 for one-channel samples.
    """
    if is_greyscale(real):
        return 0.0 if x.shape[1] == 1 else float((x.amax(1) - x.amin(1)).mean())
    return float(0.5 * (colour_histogram(x) - colour_histogram(real)).abs().sum())


def precision_recall(fake: Tensor, real: Tensor, *, k: int = NEAREST_K) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of feature sets (N, D) and (M, D).

    Each set's manifold is the union of balls around its points with radius the distance to the k-th nearest
    neighbour within the set. Precision: the share of ``fake`` points inside the real manifold; recall: the
    share of ``real`` points inside the fake manifold.
    """
    def radii(f: Tensor) -> Tensor:
        d = torch.cdist(f, f)
        return d.kthvalue(k + 1, dim=1).values  # the 1st smallest is the point itself

    fake, real = fake.double(), real.double()
    d = torch.cdist(fake, real)  # (N, M)
    r_real, r_fake = radii(real), radii(fake)
    precision = (d <= r_real[None, :]).any(1).double().mean()
    recall = (d <= r_fake[:, None]).any(0).double().mean()
    return float(precision), float(recall)


def shape_agreement(x: Tensor, attrs: Tensor) -> float:
    """Of shapes-set samples ``x`` (N, 3, R, R) with judged attributes ``attrs`` (N, 5), the share whose judged
    shape is the nearest (in pixels) of the three shapes rendered at the judged colour, size and position."""
    from ebm_core.data.shapes import SHAPES, render

    if len(x) == 0:
        return float("nan")
    a = attrs.numpy()
    dist = []
    for s in range(len(SHAPES)):
        cand = a.copy()
        cand[:, 0] = s
        dist.append(((render(cand, x.shape[-1]) - x.cpu().float()) ** 2).flatten(1).sum(1))
    nearest = torch.stack(dist, dim=1).argmin(1)
    return float((nearest == attrs[:, 0]).double().mean())


def quality(judge: DomainExtractor, x: Tensor, real: Tensor, *, dataset: str) -> dict[str, float]:
    """The figures of the module docstring for samples ``x`` against reference images ``real`` (both in [0, 1]).

    Use about 1 000 reference images whatever ``len(x)``: with fewer, the real manifold's k-NN balls grow until
    uniform noise counts as precise (0.84 with 256 shapes images, 0.0 with 1 000). Keys are ``eval/<figure>``;
    ``eval/class_entropy_data`` is the entropy of the judge's classes on ``real``.
    """
    x, real = x.float().cpu(), real.float().cpu()
    (fx, px), (fr, pr) = judge.outputs(x), judge.outputs(real)  # one pass each: features and every head
    ok = recognised(px)
    k = px[0].shape[1]
    confident_classes = px[0].argmax(1)[ok]
    prec, rec = precision_recall(fx, fr)
    out = {
        "eval/fid_domain": frechet_distance(*feature_stats(fx.numpy()), *feature_stats(fr.numpy())),
        "eval/recognisability": float(ok.double().mean()),
        "eval/class_entropy": class_entropy(px[0].argmax(1), k),
        "eval/class_entropy_data": class_entropy(pr[0].argmax(1), k),
        "eval/classes_present": float(len(confident_classes.unique())),
        "eval/colour_distance": colour_distance(x, real),
        "eval/precision": prec,
        "eval/recall": rec,
    }
    if dataset == "shapes":
        attrs = torch.stack([p.argmax(1) for p in px], dim=1)
        out["eval/shape_agreement"] = shape_agreement(x[ok], attrs[ok])
    return {key: v for key, v in out.items() if not math.isnan(v)}


REFERENCE = 1_000  # real images every figure is measured against


def real_subset(data: ImageSet, n: int = REFERENCE, *, seed: int = 0) -> Tensor:
    """``n`` images of ``data`` (a seeded random subset; all of them if fewer) as floats in [0, 1]."""
    idx = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return data.images[idx].float() / 255


def mean_figures(draws: list[dict[str, float]]) -> dict[str, float]:
    """The mean of each figure over several draws' ``quality`` dicts (a figure missing from one draw is left out)."""
    keys = set(draws[0]).intersection(*draws[1:])
    return {key: sum(d[key] for d in draws) / len(draws) for key in sorted(keys)}


HELD_OUT_SPLITS = 8  # one split of 256 shapes images scores colour distance 0.009-0.028 (mean 0.020, sd 0.005)


def held_out_quality(judge: DomainExtractor, reference: Tensor, test: ImageSet, n: int, *, dataset: str,
                     splits: int = HELD_OUT_SPLITS) -> dict[str, float]:
    """The same figures for ``n`` held-out real images (the test split) against the same ``reference``: what a
    perfect model would score with this many samples, estimated as the mean over ``splits`` seeded subsets, since
    one subset's figures are themselves a draw (docs/demo-tuning.md, twenty-seventh round). Keys are
    ``real/<figure>``."""
    if n >= len(test):
        splits = 1  # every subset is the whole test split (ebm eval's 1 000 samples): one pass, not eight equal ones
    figures = mean_figures([quality(judge, real_subset(test, n, seed=s), reference, dataset=dataset)
                            for s in range(1, splits + 1)])
    return {key.replace("eval/", "real/", 1): v for key, v in figures.items()}


def summary_lines(figures: dict[str, float]) -> list[str]:
    """The figures as a short table: generated beside held-out real (when present), one line per figure."""
    names = ["fid_domain", "recognisability", "classes_present", "class_entropy", "colour_distance", "precision",
             "recall", "shape_agreement"]
    lines = [f"{'figure':<18} {'samples':>9} {'real':>9}"]
    for name in names:
        if f"eval/{name}" in figures:
            real = figures.get(f"real/{name}")
            lines.append(f"{name:<18} {figures[f'eval/{name}']:>9.3f} {'' if real is None else format(real, '.3f'):>9}")
    return lines
