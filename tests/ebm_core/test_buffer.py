"""Replay buffer: capacity, FIFO order, reinit rate, compact storage without colour wrap, save/restore."""

import pytest
import torch

from ebm_core.buffer import ReplayBuffer


def test_capacity_and_fifo_order():
    buf = ReplayBuffer(capacity=5, storage="float32")
    for i in range(3):
        buf.add(torch.full((3, 1, 2, 2), i / 10))
    assert len(buf) == 5
    stored = sorted(round(v, 3) for v in buf.data[:, 0, 0, 0].tolist())
    assert stored == [0.1, 0.1, 0.2, 0.2, 0.2]  # the oldest batch and one of the next are gone


def test_empty_buffer_gives_noise_and_reinit_rate():
    buf = ReplayBuffer(capacity=100, reinit_prob=0.2, storage="float32")
    x0, idx, reinit = buf.sample(8, (1, 2, 2))
    assert reinit.all() and (idx == -1).all()
    buf.add(torch.full((100, 1, 2, 2), 0.5))
    torch.manual_seed(0)
    _, idx, reinit = buf.sample(20_000, (1, 2, 2))
    assert abs(reinit.float().mean().item() - 0.2) < 0.01
    assert ((idx >= 0) == ~reinit).all()


@pytest.mark.parametrize("storage", ["uint8", "half", "float32"])
def test_storage_round_trip_keeps_colours(storage):
    buf = ReplayBuffer(capacity=4, storage=storage)
    x = torch.tensor([0.0, 1.0, 1.0 + 1e-6, 0.5]).view(4, 1, 1, 1).expand(4, 3, 2, 2).contiguous()
    buf.add(x)
    back = buf._decode(buf.data, dequantize=False)
    tol = {"uint8": 1 / 255, "half": 1e-3, "float32": 1e-7}[storage]
    assert (back - x.clamp(0, 1)).abs().max() <= tol  # 1.0 stays white: no wrap to black
    drawn, _, _ = buf.sample(64, (3, 2, 2))
    assert drawn.min() >= 0 and drawn.max() <= 1


def test_compact_storage_is_smaller():
    sizes = {}
    for storage in ("uint8", "half", "float32"):
        buf = ReplayBuffer(capacity=10, storage=storage)
        buf.add(torch.rand(1, 3, 8, 8))
        sizes[storage] = buf.nbytes()
    assert sizes["uint8"] * 4 == sizes["float32"] and sizes["half"] * 2 == sizes["float32"]


def test_state_dict_round_trip():
    buf = ReplayBuffer(capacity=6, storage="half")
    buf.add(torch.rand(4, 3, 4, 4))
    buf.add(torch.rand(4, 3, 4, 4))
    other = ReplayBuffer(capacity=6, storage="half")
    other.load_state_dict(buf.state_dict())
    assert (other.size, other.ptr, other.seen) == (buf.size, buf.ptr, buf.seen)
    assert torch.equal(other.data, buf.data)
    with pytest.raises(ValueError, match="capacity"):
        ReplayBuffer(capacity=7, storage="half").load_state_dict(buf.state_dict())


def test_reservoir_keeps_capacity_and_counts():
    torch.manual_seed(0)
    buf = ReplayBuffer(capacity=10, mode="reservoir", storage="float32")
    for i in range(20):
        buf.add(torch.full((5, 1, 1, 1), i / 100))
    assert len(buf) == 10 and buf.seen == 100
    assert len(set(buf.data.flatten().tolist())) > 1  # not just the newest batch


def test_reference_set_excludes_chain_starts():
    buf = ReplayBuffer(capacity=10, storage="float32")
    buf.add(torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1) / 10)
    X = buf.reference_set(100, exclude=torch.tensor([0, 1, 2, -1]))
    assert len(X) == 7
    assert not ({0.0, 0.1, 0.2} & {round(v, 3) for v in X.flatten().tolist()})
