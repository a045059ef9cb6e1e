"""The sample-quality and OOD metrics, as pure functions of features, logits and scores.

FID (Heusel et al. 2017) from feature means and covariances in float64 with ``scipy.linalg.sqrtm``;
IS (Salimans et al. 2016) from class probabilities; AUROC from scikit-learn.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg
from sklearn.metrics import roc_auc_score


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), accumulated in float64."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features: expected (N >= 2, D), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                     eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)); an offset is added when S1 S2 is singular."""
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(sigma1 @ sigma2, disp=False)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def inception_score(probs: np.ndarray, *, splits: int = 10) -> tuple[float, float]:
    """exp E_x KL(p(y|x) || p(y)), mean and standard deviation over ``splits`` chunks."""
    p = np.asarray(probs, dtype=np.float64)
    scores = []
    for chunk in np.array_split(p, max(1, min(splits, len(p)))):
        py = chunk.mean(axis=0, keepdims=True)
        kl = (chunk * (np.log(chunk + 1e-12) - np.log(py + 1e-12))).sum(axis=1)
        scores.append(np.exp(kl.mean()))
    return float(np.mean(scores)), float(np.std(scores))


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """AUROC with in-distribution as the positive class (higher score = more in-distribution)."""
    y = np.concatenate([np.ones(len(in_scores)), np.zeros(len(out_scores))])
    return float(roc_auc_score(y, np.concatenate([in_scores, out_scores])))
