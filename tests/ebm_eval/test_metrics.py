"""FID, IS and AUROC against direct computations, with a small random extractor (no weights needed)."""

import numpy as np
import pytest
import torch
from scipy import linalg
from sklearn.metrics import roc_auc_score

from ebm_eval.features import DomainNet, joint_probs
from ebm_eval.metrics import auroc, feature_stats, frechet_distance, inception_score


def fid_from_features(f1, f2):
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


def random_features(n, seed):
    torch.manual_seed(seed)
    net = DomainNet(in_channels=3, num_classes=(4,), width=8).eval()
    with torch.no_grad():
        return net(torch.rand(n, 3, 16, 16))[0].double().numpy()


def test_fid_equals_a_direct_scipy_computation():
    f1, f2 = random_features(200, 0), random_features(150, 1) + 0.05
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    direct = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * linalg.sqrtm(s1 @ s2).real)
    assert fid_from_features(f1, f2) == pytest.approx(direct, rel=1e-6)
    assert fid_from_features(f1, f2) > 0


def test_fid_of_a_set_with_itself_is_zero():
    f = random_features(300, 2)
    assert abs(fid_from_features(f, f)) < 1e-6 * max(1.0, np.trace(np.cov(f, rowvar=False)))


def test_fid_is_the_mean_distance_for_equal_covariances():
    s = np.eye(3)
    assert frechet_distance(np.zeros(3), s, np.array([3.0, 4.0, 0.0]), s) == pytest.approx(25.0)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_stats(np.zeros((1, 4)))


def test_inception_score_limits():
    uniform = np.full((1000, 10), 0.1)
    assert inception_score(uniform)[0] == pytest.approx(1.0)
    confident = np.eye(10)[np.arange(1000) % 10] * 0.999 + 0.0001
    assert inception_score(confident, splits=1)[0] == pytest.approx(10.0, rel=0.02)


def test_joint_probs_multiplies_heads():
    a, b = torch.tensor([[2.0, 0.0]]), torch.tensor([[0.0, 1.0, 3.0]])
    joint = joint_probs([a, b])
    expected = torch.softmax(a.double(), 1)[:, :, None] * torch.softmax(b.double(), 1)[:, None, :]
    torch.testing.assert_close(joint, expected.flatten(1))
    assert joint.sum().item() == pytest.approx(1.0)


def test_auroc_matches_scikit_learn_and_perfect_separation():
    rng = np.random.default_rng(0)
    a, b = rng.normal(1, 1, 300), rng.normal(0, 1, 200)
    expected = roc_auc_score(np.r_[np.ones(300), np.zeros(200)], np.r_[a, b])
    assert auroc(a, b) == pytest.approx(expected)
    assert auroc(np.array([5.0, 6.0]), np.array([1.0, 2.0])) == 1.0
    assert auroc(np.array([1.0, 2.0]), np.array([5.0, 6.0])) == 0.0
