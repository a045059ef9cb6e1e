"""The embedded procedural shapes set: one coloured shape per image on a dark background.

Attributes (all categorical, for conditioning, OOD splits and composition): shape, colour, size,
x position, y position. Images are rendered analytically with 4x supersampling at any
resolution, deterministically from a seed; no file or network is involved.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (0.9, 0.15, 0.15), "green": (0.15, 0.8, 0.2), "blue": (0.2, 0.35, 0.95),
           "yellow": (0.95, 0.85, 0.15), "magenta": (0.85, 0.2, 0.85), "cyan": (0.15, 0.85, 0.9)}
SIZES = (0.22, 0.30, 0.38)  # half-extent as a fraction of the side
POSITIONS = (0.32, 0.5, 0.68)  # centre coordinate as a fraction of the side
ATTRIBUTES = {"shape": len(SHAPES), "colour": len(COLOURS), "size": len(SIZES), "x": len(POSITIONS), "y": len(POSITIONS)}
BACKGROUND = 0.08
SUPERSAMPLE = 4
RENDER_CHUNK = 256  # images rendered at a time


def _mask(shape: int, cx: np.ndarray, cy: np.ndarray, r: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Coverage of the shape at grid points (u, v) for a batch of centres/sizes: (N, G, G) booleans."""
    dx, dy = u[None] - cx[:, None, None], v[None] - cy[:, None, None]
    r = r[:, None, None]
    if SHAPES[shape] == "circle":
        return dx**2 + dy**2 <= r**2
    if SHAPES[shape] == "square":
        return (np.abs(dx) <= 0.85 * r) & (np.abs(dy) <= 0.85 * r)
    # upward triangle with apex at (0, -r) and base at y = +0.8 r
    inside_y = (dy <= 0.8 * r) & (dy >= -r)
    half_width = (dy + r) / 1.8
    return inside_y & (np.abs(dx) <= half_width)


def render(attrs: np.ndarray, resolution: int, *, jitter: np.ndarray | None = None) -> Tensor:
    """Images (N, 3, R, R) in [0, 1] for attribute rows (N, 5) = (shape, colour, size, x, y)."""
    n, G = len(attrs), resolution * SUPERSAMPLE
    grid = (np.arange(G) + 0.5) / G
    v, u = np.meshgrid(grid, grid, indexing="ij")  # (G, G): row = y, column = x
    jitter = np.zeros((n, 2)) if jitter is None else jitter
    cx = np.array(POSITIONS)[attrs[:, 3]] + jitter[:, 0]
    cy = np.array(POSITIONS)[attrs[:, 4]] + jitter[:, 1]
    r = np.array(SIZES)[attrs[:, 2]]
    cover = np.zeros((n, G, G), dtype=np.float32)
    for s in range(len(SHAPES)):
        sel = attrs[:, 0] == s
        if sel.any():
            cover[sel] = _mask(s, cx[sel], cy[sel], r[sel], u, v)
    rgb = np.array(list(COLOURS.values()), dtype=np.float32)[attrs[:, 1]]  # (N, 3)
    img = BACKGROUND + cover[:, None] * (rgb[:, :, None, None] - BACKGROUND)  # (N, 3, G, G)
    img = torch.from_numpy(img)
    return torch.nn.functional.avg_pool2d(img, SUPERSAMPLE).clamp(0, 1)  # (N, 3, R, R)


def make_shapes(n: int, *, resolution: int = 32, seed: int = 0, position_jitter: float = 0.03) -> tuple[Tensor, Tensor]:
    """n images (N, 3, R, R) as uint8 and their attributes (N, 5) as int64, from ``seed``."""
    rng = np.random.default_rng(seed)
    attrs = np.stack([rng.integers(k, size=n) for k in ATTRIBUTES.values()], axis=1)
    jitter = rng.uniform(-position_jitter, position_jitter, size=(n, 2))
    # in chunks: the supersampled float arrays of a whole draw do not fit the CPU caches (20 000 images at 16 px:
    # 2.3 s at once, 0.66 s in chunks of 256, the same bytes)
    chunks = [(render(attrs[i:i + RENDER_CHUNK], resolution, jitter=jitter[i:i + RENDER_CHUNK]) * 255).round().to(torch.uint8)
              for i in range(0, n, RENDER_CHUNK)]
    images = torch.cat(chunks) if chunks else torch.zeros((0, 3, resolution, resolution), dtype=torch.uint8)
    return images, torch.from_numpy(attrs).long()
