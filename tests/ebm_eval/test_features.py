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


def test_judge_training_off_a_terminal_is_a_few_lines_not_one_per_step(capsys):
    """A log file or ``ray job submit`` (stderr not a TTY) gets the judge's bar every 10 s, as the trainer's."""
    from ebm_core.config import DataConfig
    from ebm_core.data import load_dataset
    from ebm_eval.features import JudgeSettings, train_domain_net

    data = DataConfig(name="shapes", resolution=16, num_train=256)
    train, test = load_dataset(data, split="train"), load_dataset(data, split="test")
    train_domain_net(train, test, settings=JudgeSettings(steps=60, batch_size=32), progress=True)
    err = capsys.readouterr().err
    assert 1 <= err.count("judge:") <= 3, err


TRAIN_A_JUDGE = """
import sys
from pathlib import Path
from ebm_core.config import DataConfig
from ebm_core.data import load_dataset
from ebm_eval.features import JudgeSettings, domain_extractor

data = DataConfig(name="shapes", resolution=16, num_train=256)
domain_extractor(load_dataset(data, split="train"), load_dataset(data, split="test"), cache=Path(sys.argv[1]),
                 settings=JudgeSettings(steps=200, batch_size=32), progress=False, log=print)
"""


def test_processes_wanting_the_same_judge_at_once_train_it_once(tmp_path):
    """Two sweep trials starting together on a new machine: one trains the judge, the other waits and loads it."""
    import subprocess
    import sys

    cmd = [sys.executable, "-c", TRAIN_A_JUDGE, str(tmp_path)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    assert sum("training the shapes judge" in out for out, _ in outs) == 1, outs
    assert len(list(tmp_path.glob("domain-*.pt"))) == 1

    # a cache someone filled before (read-only for this user, say) serves without a lock: no lock file appears
    shared = tmp_path / "shared"
    shared.mkdir()
    (judge,) = tmp_path.glob("domain-*.pt")
    (shared / judge.name).write_bytes(judge.read_bytes())
    out = subprocess.run([sys.executable, "-c", TRAIN_A_JUDGE, str(shared)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "training" not in out.stdout, out.stderr[-2000:]
    assert [p.name for p in shared.iterdir()] == [judge.name]
