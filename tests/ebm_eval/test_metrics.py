"""FID, IS and AUROC against direct computations, with a small random extractor (no weights needed)."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from ebm_eval.features import DomainNet, joint_probs
from ebm_eval.metrics import auroc, feature_stats, frechet_distance, inception_score, kernel_distance


def fid_from_features(f1, f2):
    return frechet_distance(*feature_stats(f1), *feature_stats(f2))


def test_inception_score_is_the_direct_formula():
    p = np.random.default_rng(2).dirichlet(np.ones(5) * 0.3, size=100)
    direct = [np.exp((c * (np.log(c) - np.log(c.mean(0, keepdims=True)))).sum(1).mean()) for c in np.split(p, 4)]
    mean, std = inception_score(p, splits=4)
    assert mean == pytest.approx(np.mean(direct), rel=1e-9) and std == pytest.approx(np.std(direct), rel=1e-6)


def random_features(n, seed):
    torch.manual_seed(seed)
    net = DomainNet(in_channels=3, num_classes=(4,), width=8).eval()
    with torch.no_grad():
        return net(torch.rand(n, 3, 16, 16))[0].double().numpy()


def fid_by_symmetric_eigh(mu1, s1, mu2, s2):
    """An independent form: Tr((S1 S2)^(1/2)) = Tr((S1^(1/2) S2 S1^(1/2))^(1/2)), with symmetric eigendecompositions."""
    w, v = np.linalg.eigh(s1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    return ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum()


@pytest.mark.parametrize("n1,n2,d", [(200, 150, 128), (40, 30, 128), (129, 129, 128)])  # full rank, singular, near-singular
def test_fid_against_torch_fidelity_and_an_eigh_form(n1, n2, d):
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    rng = np.random.default_rng(d + n1)
    f1, f2 = rng.normal(size=(n1, d)), rng.normal(0.1, 1.2, size=(n2, d))
    (mu1, s1), (mu2, s2) = feature_stats(f1), feature_stats(f2)
    ours = frechet_distance(mu1, s1, mu2, s2)
    library = fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, False)["frechet_inception_distance"]
    assert ours == pytest.approx(library, rel=1e-6)
    assert ours == pytest.approx(fid_by_symmetric_eigh(mu1, s1, mu2, s2), rel=1e-5)
    assert ours > 0


def test_fid_refuses_matrices_that_are_no_covariances():
    s = np.eye(3)
    skew = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # eigenvalues +-i, 1
    with pytest.raises(ValueError, match="off the non-negative real line"):
        frechet_distance(np.zeros(3), s, np.zeros(3), skew)


def test_fid_bias_at_small_sample_counts_and_kid_without_it():
    """Two Gaussians in 64-d: FID from few samples is far above the population value; KID's mean is near its value."""
    rng = np.random.default_rng(0)
    d, shift = 64, 0.3
    population = d * shift ** 2  # equal identity covariances: the Frechet distance is ||mu1 - mu2||^2
    small = frechet_distance(*feature_stats(rng.normal(size=(100, d))), *feature_stats(rng.normal(shift, 1, size=(100, d))))
    assert small > 2 * population
    same = kernel_distance(rng.normal(size=(400, d)), rng.normal(size=(400, d)), subsets=20, subset_size=200)
    assert abs(same[0]) < 3 * same[1] + 1e-3  # unbiased: zero in expectation for equal distributions


def test_kid_equals_an_unbiased_mmd_with_the_cubic_kernel():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 8)), rng.normal(0.5, 1, size=(50, 8))
    k = lambda a, b: (a @ b.T / a.shape[1] + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    n = len(x)
    mmd = ((kxx.sum() - np.trace(kxx)) / (n * (n - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
           - 2 * kxy.mean())
    mean, std = kernel_distance(x, y, subsets=3, subset_size=50)  # a subset of all 50 is a permutation: the same MMD
    assert mean == pytest.approx(mmd, rel=1e-6) and std == pytest.approx(0, abs=1e-9)


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
    joint = joint_probs([torch.softmax(a.double(), 1), torch.softmax(b.double(), 1)])
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
