"""The sample-quality and OOD metrics, as pure functions of features, class probabilities and scores.

FID (Heusel et al. 2017) from feature means and covariances in float64; KID (Binkowski et al. 2018,
unbiased at any sample count) and IS (Salimans et al. 2016) from torch-fidelity; AUROC from
scikit-learn.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from torch_fidelity.metric_fid import fid_features_to_statistics
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), in float64 (torch-fidelity's statistics)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"features: expected (N >= 2, D), got {f.shape}")
    stats = fid_features_to_statistics(torch.from_numpy(f))
    return stats["mu"], stats["sigma"]


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *,
                     rtol: float = 1e-5) -> float:
    """||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1 S2)^(1/2)).

    Tr((S1 S2)^(1/2)) is the sum of the square roots of the eigenvalues of S1 S2, which are real and
    >= 0 for covariances. torch-fidelity's ``fid_statistics_to_metric`` computes the same sum but keeps
    only the real part of each complex root; here a spectrum that is not (numerically) real and
    non-negative is an error that names the culprit, rather than a number that looks fine. No
    ``scipy.linalg.sqrtm`` (its ``disp`` argument is deprecated and leaves SciPy in 1.18).
    """
    diff = mu1 - mu2
    eig = np.linalg.eigvals(sigma1 @ sigma2)
    scale = max(float(np.abs(eig).max()), 1e-30)
    if np.abs(eig.imag).max() > rtol * scale or eig.real.min() < -rtol * scale:
        raise ValueError(f"FID: the covariances' product has eigenvalues off the non-negative real line "
                         f"(largest imaginary part {np.abs(eig.imag).max():.3g}, smallest real part {eig.real.min():.3g}, "
                         f"against a scale of {scale:.3g}); are both covariance matrices finite and symmetric?")
    tr_covmean = np.sqrt(np.clip(eig.real, 0, None)).sum()
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def kernel_distance(f1: np.ndarray, f2: np.ndarray, *, subsets: int = 100, subset_size: int = 1000,
                    seed: int = 0) -> tuple[float, float]:
    """KID: mean and std over ``subsets`` random subsets of the unbiased MMD^2 with the cubic polynomial kernel
    (torch-fidelity's); the subset size is capped by the smaller set."""
    size = min(subset_size, len(f1), len(f2))
    out = kid_features_to_metric(torch.as_tensor(np.asarray(f1)), torch.as_tensor(np.asarray(f2)), kid_subsets=subsets,
                                 kid_subset_size=size, kid_kernel="poly", kid_kernel_poly_degree=3, kid_kernel_poly_gamma=None,
                                 kid_kernel_poly_coef0=1,
                                 rng_seed=seed, verbose=False)
    return out["kernel_inception_distance_mean"], out["kernel_inception_distance_std"]


def inception_score(probs: np.ndarray, *, splits: int = 10) -> tuple[float, float]:
    """exp E_x KL(p(y|x) || p(y)), mean and standard deviation over ``splits`` consecutive chunks (torch-fidelity's)."""
    p = torch.as_tensor(np.asarray(probs, dtype=np.float64))
    splits = max(1, min(splits, len(p)))
    out = isc_features_to_metric(p.clamp_min(1e-30).log(), splits=splits, shuffle=False)  # log p: softmax gives p back
    return out["inception_score_mean"], out["inception_score_std"]


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """AUROC with in-distribution as the positive class (higher score = more in-distribution)."""
    y = np.concatenate([np.ones(len(in_scores)), np.zeros(len(out_scores))])
    return float(roc_auc_score(y, np.concatenate([in_scores, out_scores])))
