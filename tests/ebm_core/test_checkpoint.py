"""Checkpoints: atomic writes, weights_only reads, clear errors, and exact resumption."""

import pickle

import pytest
import torch

from ebm_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ebm_core.pipeline import load_model
from ebm_core.trainer import Trainer


def _state():
    return {k: torch.zeros(1) for k in ("model", "ema", "optimizer", "buffer", "rng", "step", "config")}


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "c.pt"
    save_checkpoint(_state(), path)
    before = path.read_bytes()

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        save_checkpoint({**_state(), "bad": Unpicklable()}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


def test_corrupt_foreign_and_missing_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt")
    trunc = tmp_path / "trunc.pt"
    save_checkpoint(_state(), trunc)
    trunc.write_bytes(trunc.read_bytes()[:50])
    with pytest.raises(CheckpointError, match="could not be read"):
        load_checkpoint(trunc)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="not an ebm_core checkpoint"):
        load_checkpoint(foreign)
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(object()))  # arbitrary pickles are refused by weights_only
    with pytest.raises(CheckpointError):
        load_checkpoint(evil)


def test_resume_gives_the_same_next_step(tiny_cfg, tmp_path):
    cfg = tiny_cfg.override({"train.checkpoint_every": 100})
    a = Trainer(cfg)
    for _ in range(3):
        a.step()
    path = a.save_checkpoint(tmp_path / "ck.pt")
    m_next = a.step()
    w_next = [p.detach().clone() for p in a.model.parameters()]

    b = Trainer(cfg)  # a fresh process would start from scratch like this
    b.step()  # and disturb its RNG, to show the checkpoint restores it
    b.resume(path)
    m_res = b.step()
    assert m_res["energy/pos"] == m_next["energy/pos"] and m_res["loss/kl_ent"] == m_next["loss/kl_ent"]
    for p, q in zip(b.model.parameters(), w_next):
        assert torch.equal(p, q)
    assert torch.equal(b.buffer.data, a.buffer.data)
    for p, q in zip(b.ema.parameters(), a.ema.parameters()):
        assert torch.equal(p, q)


def test_load_model_uses_ema_weights(tiny_cfg, tmp_path):
    t = Trainer(tiny_cfg)
    t.step()
    t.step()
    path = t.save_checkpoint(tmp_path / "ck.pt")
    model, cfg = load_model(path)
    assert cfg == tiny_cfg.override({"data.channels": 3})  # the stored config, its channel count made explicit
    for p, q in zip(model.parameters(), t.ema.module.parameters()):
        assert torch.equal(p, q)
    raw, _ = load_model(path, ema=False)
    assert any(not torch.equal(p, q) for p, q in zip(raw.parameters(), model.parameters()))


def test_model_export_holds_the_ema_weights_without_the_buffer(tiny_cfg, tmp_path):
    from ebm_core.pipeline import export_model

    t = Trainer(tiny_cfg)
    t.step()
    t.step()
    state = t.model_state()
    assert "buffer" not in state and "optimizer" not in state
    path = export_model(state, tmp_path / "export.pt")
    model, cfg = load_model(path)
    assert cfg == tiny_cfg.override({"data.channels": 3})
    for p, q in zip(model.parameters(), t.ema.module.parameters()):
        assert torch.equal(p, q)
    with pytest.raises(CheckpointError, match="is a model export.*not resumed"):
        load_checkpoint(path)  # an export cannot be mistaken for a resumable checkpoint
