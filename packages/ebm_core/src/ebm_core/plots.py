"""The two curves the paper plots: energy difference (Fig. 8) and gradient norms of L_CD and L_KL (Fig. 9)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _series(history: list[dict[str, float]], key: str) -> tuple[list[int], list[float]]:
    pts = [(h["step"], h[key]) for h in history if key in h]
    return [p[0] for p in pts], [p[1] for p in pts]


def plot_energy_diff(history: list[dict[str, float]], path: str | Path) -> Path:
    """mean E(x+) - mean E(x-) per iteration; stable training keeps it near 0 (Fig. 8)."""
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    ax1.plot(*_series(history, "energy/pos"), label="E(x+)", lw=1)
    ax1.plot(*_series(history, "energy/neg"), label="E(x-)", lw=1)
    ax1.set_ylabel("mean energy")
    ax1.legend()
    ax2.plot(*_series(history, "energy/diff"), color="k", lw=1)
    ax2.axhline(0, color="grey", ls="--", lw=0.8)
    ax2.set_xlabel("iteration")
    ax2.set_ylabel("energy/diff")
    fig.suptitle("Energy difference (Fig. 8)")
    return _save(fig, path)


def plot_grad_norms(history: list[dict[str, float]], path: str | Path) -> Path:
    """Parameter-gradient norms of L_CD and L_KL measured separately (Fig. 9)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("grad_norm/cd", "L_CD"), ("grad_norm/kl", "L_KL")):
        steps, vals = _series(history, key)
        if steps:
            ax.plot(steps, vals, label=label, lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("gradient norm")
    ax.legend()
    ax.set_title("Gradient magnitude of L_CD and L_KL (Fig. 9)")
    return _save(fig, path)


def _save(fig: "plt.Figure", path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
