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


def test_reference_set_returns_its_indices_and_each_chain_skips_its_own_start():
    from ebm_core.losses import nearest_neighbour_sq

    buf = ReplayBuffer(capacity=10, storage="float32")
    buf.add(torch.arange(10, dtype=torch.float32).view(10, 1, 1, 1) / 10)
    X, idx = buf.reference_set(100)
    assert len(X) == 10 and sorted(idx.tolist()) == list(range(10))
    torch.testing.assert_close(X.flatten(), idx.float() / 10)
    starts = torch.tensor([3, 7])  # two chains that began at stored samples 3 and 7 and have not moved
    x = X[(idx[None, :] == starts[:, None]).float().argmax(1)]
    assert nearest_neighbour_sq(x, X).tolist() == [0.0, 0.0]  # without the mask: their own copies
    own = starts[:, None] == idx[None, :]
    torch.testing.assert_close(nearest_neighbour_sq(x, X, exclude=own), torch.tensor([0.01, 0.01]))


def test_reservoir_keeps_every_sample_with_equal_probability():
    """Chi-square over where the 10 kept samples of a stream of 100 came from, across many buffers."""
    from scipy.stats import chisquare

    torch.manual_seed(0)
    counts = torch.zeros(100)
    for _ in range(400):
        buf = ReplayBuffer(capacity=10, mode="reservoir", storage="float32")
        buf.add(torch.arange(100, dtype=torch.float32).view(100, 1, 1, 1) / 100)  # stored values live in [0, 1]
        counts += torch.bincount((buf.data.flatten() * 100).round().long(), minlength=100)
    assert counts.sum() == 4000
    assert chisquare(counts.numpy()).pvalue > 1e-3  # uniform: each of the 100 kept 40 times on average
    early, late = counts[:50].sum().item(), counts[50:].sum().item()
    assert abs(early - late) < 0.1 * counts.sum().item()
