"""Trainer callbacks: small overridable hooks for metrics, images and checkpoints.

``RunDirWriter`` keeps everything a run produces in its local run directory (DESIGN §4):
``metrics.jsonl``, ``samples/step_<n>.png``, ``plots/*.png``. Trackers (MLflow in ``ebm_jobs``)
are further callbacks; the core never imports them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from torch import Tensor
from torchvision.utils import make_grid, save_image

from .plots import plot_energy_diff, plot_grad_norms

if TYPE_CHECKING:
    from .trainer import Trainer


def bar_interval() -> float:
    """Seconds between progress-bar redraws: 0.5 on a terminal; 10 in a log (a file, ``ray job submit``),
    where every redraw is a line of its own."""
    return 0.5 if sys.stderr.isatty() else 10.0


def bar_options() -> dict[str, float]:
    """tqdm arguments for a bar that may end up in a log: a redraw every ``bar_interval()`` seconds, the clock checked
    at every iteration (``miniters=1``). tqdm's default (dynamic miniters) lets its monitor thread redraw without
    restarting the interval, which put two lines a second apart into logs after a slow step."""
    return {"mininterval": bar_interval(), "miniters": 1}


class Callback:
    """Override what you need; every hook is a no-op by default."""

    def on_fit_start(self, trainer: "Trainer") -> None: ...

    def on_step_end(self, trainer: "Trainer", step: int, metrics: dict[str, float]) -> None: ...

    def on_images(self, trainer: "Trainer", step: int, tag: str, images: Tensor) -> None: ...

    def on_checkpoint(self, trainer: "Trainer", step: int, path: Path) -> None: ...

    def on_fit_end(self, trainer: "Trainer") -> None: ...


GRID_WIDTH = 512  # grids are enlarged to at least this many pixels: a grid of 8 16-px samples is 137 px wide


def image_grid(images: Tensor, path: str | Path, *, nrow: int = 8, min_width: int = GRID_WIDTH) -> Path:
    """Save (B, C, H, W) images in [0, 1] as one PNG grid, enlarged by an integer nearest-neighbour factor to at
    least ``min_width`` pixels (pixels stay square and sharp)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid = make_grid(images.detach().float().clamp(0, 1).cpu(), nrow=nrow, padding=1)
    k = max(1, -(-min_width // grid.shape[-1]))
    save_image(grid.repeat_interleave(k, dim=1).repeat_interleave(k, dim=2), path)
    return path


def chain_image(chain: list[Tensor], *, columns: int = 8) -> Tensor:
    """A sampling chain as one picture (1, C, H, W): a row per round, a column per chain."""
    rows = [make_grid(x[:columns].float().clamp(0, 1), nrow=columns, padding=1) for x in chain]
    return make_grid(rows, nrow=1, padding=2)[None]


class RunDirWriter(Callback):
    """Metrics as JSON lines, image grids and the Fig. 8 / Fig. 9 plots under the run directory."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)
        self.paths: dict[str, Path] = {}

    def on_fit_start(self, trainer: "Trainer") -> None:
        """A resumed (or retried) run drops the lines its last attempt wrote after the checkpoint it resumes
        from (all of them when it starts again from step 0): the steps about to run again are written once."""
        path = self.run_dir / "metrics.jsonl"
        if path.is_file():
            lines = path.read_text().splitlines()
            kept = [line for line in lines if json.loads(line)["step"] <= trainer.step_count]
            if len(kept) < len(lines):
                path.write_text("".join(line + "\n" for line in kept))

    def on_step_end(self, trainer: "Trainer", step: int, metrics: dict[str, float]) -> None:
        if step % trainer.cfg.train.log_every == 0 or "grad_norm/cd" in metrics:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps({"step": step, **metrics}) + "\n")

    def on_images(self, trainer: "Trainer", step: int, tag: str, images: Tensor) -> None:
        name = f"step_{step}.png" if tag == "negatives" else f"{tag}.png"
        self.paths[tag] = image_grid(images, self.run_dir / "samples" / name)

    def on_fit_end(self, trainer: "Trainer") -> None:
        if trainer.history and trainer.history[-1].get("diverged"):  # the guard's step never reached on_step_end
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(trainer.history[-1]) + "\n")
        self.paths["energy_diff"] = plot_energy_diff(trainer.history, self.run_dir / "plots" / "energy_diff.png")
        self.paths["grad_norm"] = plot_grad_norms(trainer.history, self.run_dir / "plots" / "grad_norm.png")
