"""The Inception path reads a local weights file (made here, so nothing is downloaded); clear errors otherwise."""

import pytest
import torch

import torch_fidelity.feature_extractor_inceptionv3 as tfi
from ebm_eval.features import InceptionExtractor, WeightsError, find_inception_weights


@pytest.fixture
def fake_weights(tmp_path, monkeypatch):
    """A state dict with the FID Inception's exact keys and shapes, random values."""
    with monkeypatch.context() as m:
        m.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: {})
        m.setattr(tfi.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        net = tfi.FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"])
    path = tmp_path / "pt_inception.pth"
    torch.save(net.state_dict(), path)
    return path


def test_inception_loads_from_a_given_path(fake_weights, monkeypatch):
    monkeypatch.setattr(tfi, "load_state_dict_from_url", lambda *a, **k: pytest.fail("tried to download"))
    assert find_inception_weights(fake_weights) == fake_weights
    ext = InceptionExtractor(fake_weights)
    out = ext(torch.rand(2, 3, 16, 16))
    assert out.features.shape == (2, 2048) and out.probs.shape[0] == 2
    torch.testing.assert_close(out.probs.sum(1), torch.ones(2, dtype=torch.float64))


def test_missing_or_unsafe_weights_are_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("EBM_FID_WEIGHTS", raising=False)
    assert find_inception_weights() is None
    with pytest.raises(WeightsError, match=str(tmp_path / "nope.pth")):
        find_inception_weights(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x80\x04not a state dict")
    with pytest.raises(WeightsError, match="could not be read"):
        InceptionExtractor(bad)
