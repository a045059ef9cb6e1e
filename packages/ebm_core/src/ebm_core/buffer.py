"""Replay buffer of past Langevin samples (Algorithm 1; IGEBM's persistent chains).

A FIFO ring by default (the reference code's reservoir default is listed as a fault in DESIGN §2;
reservoir sampling is an option). Samples are stored compactly: ``uint8`` rounds to the nearest of
256 levels after clamping to [0, 1], so a value at 1.0 can never wrap to 0 (the colour-inversion
fault of the reference code), and is dequantised with U(0, 1/256) noise when drawn; ``half``
keeps ~3 significant digits; ``float32`` is exact.
"""

from __future__ import annotations

import torch
from torch import Tensor

_DTYPES = {"uint8": torch.uint8, "half": torch.float16, "float32": torch.float32}


class ReplayBuffer:
    """Chain starts from past samples, each replaced by U(0, 1) noise with probability ``reinit_prob``."""

    def __init__(self, *, capacity: int = 10_000, reinit_prob: float = 0.001, mode: str = "fifo",
                 storage: str = "half", device: str | torch.device = "cpu") -> None:
        if mode not in ("fifo", "reservoir"):
            raise ValueError(f"mode: expected 'fifo' or 'reservoir', got {mode!r}")
        if storage not in _DTYPES:
            raise ValueError(f"storage: expected one of {list(_DTYPES)}, got {storage!r}")
        self.capacity, self.reinit_prob, self.mode, self.storage = capacity, reinit_prob, mode, storage
        self.device = torch.device(device)
        self.data: Tensor | None = None  # (capacity, C, H, W) in the storage dtype, allocated on first add
        self.size = 0  # filled slots
        self.ptr = 0  # next FIFO slot
        self.seen = 0  # samples ever offered (reservoir sampling)

    def __len__(self) -> int:
        return self.size

    def nbytes(self) -> int:
        return 0 if self.data is None else self.data.numel() * self.data.element_size()

    # storage codec -----------------------------------------------------------------------------
    def _encode(self, x: Tensor) -> Tensor:
        x = x.detach().clamp(0, 1)
        if self.storage == "uint8":
            return (x * 255).round().to(torch.uint8)  # in {0..255}: no wrap-around
        return x.to(_DTYPES[self.storage])

    def _decode(self, s: Tensor, *, dequantize: bool) -> Tensor:
        if self.storage == "uint8":
            x = s.float() / 255
            if dequantize:
                x = (x * 255 / 256 + torch.rand_like(x) / 256).clamp(0, 1)
            return x
        return s.float()

    # adding and drawing --------------------------------------------------------------------------
    def add(self, x: Tensor) -> None:
        """B <- B u x (FIFO ring, or reservoir sampling once full)."""
        x = self._encode(x).to(self.device)
        if self.data is None:
            self.data = torch.zeros((self.capacity, *x.shape[1:]), dtype=x.dtype, device=self.device)
        elif x.shape[1:] != self.data.shape[1:]:
            raise ValueError(f"samples: expected shape (B, {', '.join(map(str, self.data.shape[1:]))}), got {tuple(x.shape)}")
        if self.mode == "fifo":
            n = min(x.shape[0], self.capacity)
            idx = (self.ptr + torch.arange(n)) % self.capacity
            self.data[idx.to(self.device)] = x[-n:]
            self.ptr = int((self.ptr + n) % self.capacity)
            self.size = min(self.size + n, self.capacity)
            self.seen += x.shape[0]
            return
        for i in range(x.shape[0]):  # reservoir: every sample ever offered is kept with equal probability
            self.seen += 1
            if self.size < self.capacity:
                self.data[self.size] = x[i]
                self.size += 1
            else:
                j = int(torch.randint(self.seen, ()).item())
                if j < self.capacity:
                    self.data[j] = x[i]

    def sample(self, n: int, shape: tuple[int, ...], *, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor, Tensor]:
        """Draw n chain starts. Returns (x0, buffer indices (-1 for noise), reinit mask).

        While the buffer is empty every start is noise; otherwise each start comes from a random
        stored sample and is replaced by U(0, 1) with probability ``reinit_prob``.
        """
        noise = torch.rand((n, *shape), device=device)
        if self.size == 0:
            return noise, torch.full((n,), -1, dtype=torch.long), torch.ones(n, dtype=torch.bool)
        idx = torch.randint(self.size, (n,))
        x0 = self._decode(self.data[idx.to(self.device)], dequantize=True).to(device)
        reinit = torch.rand(n) < self.reinit_prob
        x0 = torch.where(reinit.to(device)[:, None, None, None], noise, x0)
        return x0, torch.where(reinit, -1, idx), reinit

    def reference_set(self, n: int, *, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
        """X for Eq. 8: up to n stored samples drawn without replacement, and their buffer indices (so each
        chain can leave out its own start). Drawn before the current batch is added."""
        if self.size == 0:
            raise ValueError("reference_set: the buffer is empty")
        pick = torch.randperm(self.size)[:n]
        return self._decode(self.data[pick.to(self.device)], dequantize=False).to(device), pick

    # state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        data = None if self.data is None else self.data[: self.size].cpu().clone()
        return {"data": data, "size": self.size, "ptr": self.ptr, "seen": self.seen, "capacity": self.capacity,
                "storage": self.storage, "mode": self.mode}

    def load_state_dict(self, state: dict) -> None:
        for key in ("capacity", "storage"):
            if state[key] != getattr(self, key):
                raise ValueError(f"buffer state: {key} is {state[key]!r}, this buffer has {getattr(self, key)!r}")
        self.size, self.ptr, self.seen, self.mode = int(state["size"]), int(state["ptr"]), int(state["seen"]), state["mode"]
        self.data = None
        if state["data"] is not None:
            d = state["data"]
            self.data = torch.zeros((self.capacity, *d.shape[1:]), dtype=d.dtype, device=self.device)
            self.data[: self.size] = d.to(self.device)
