"""The ``ebm`` command: train a model from a preset, sample from a checkpoint, print a config.

    ebm train --preset demo                       # train on the embedded shapes, write samples/plots/checkpoint
    ebm train --preset demo --set optim.lr=1e-3 --set sampler.steps=20
    ebm train --config my.yaml --resume runs/x/checkpoints/step_0001000.pt
    ebm sample runs/demo/<time>/checkpoints/step_0001000.pt --num 64 --out grid.png
    ebm config --preset cifar10 > cifar10.yaml    # every field, to edit and pass back with --config
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import torch

from .callbacks import Callback, RunDirWriter, image_grid
from .checkpoint import CheckpointError
from .config import ConfigError
from .data import DatasetError, load_dataset
from .pipeline import generate, load_model
from .runs import add_config_args, config_from_args, resume_run_dir, run_dir_for
from .trainer import DivergenceError, Trainer, resolve_device


def _train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.device is not None:
        cfg = cfg.override({"train.device": args.device})
    forked_from = None
    if args.resume:  # continue in the checkpoint's own run, or fork into a new one; never touch another run
        run_dir, forked_from = resume_run_dir(args.resume, args.run_dir)
    else:
        run_dir = run_dir_for(cfg, args.run_dir)
    cfg = cfg.override({"train.run_dir": str(run_dir)})
    writer = RunDirWriter(run_dir)
    stop = StopOnCtrlC()
    trainer = Trainer(cfg, callbacks=[writer, stop])
    if args.resume:
        trainer.resume(args.resume)  # checked (format, model and data configs) before anything is written
    if forked_from is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "forked_from.txt").write_text(f"{forked_from}\n")
    print(f"ebm: training preset={cfg.preset} data={cfg.data.name}@{cfg.data.resolution}px for "
          f"{cfg.train.iterations} iterations on {trainer.device}; run directory {run_dir}", flush=True)
    t0 = time.time()
    try:
        with stop:
            trainer.fit()
    except KeyboardInterrupt:
        last = trainer.last_checkpoint
        again = f"; continue with: ebm train --resume {last}" if last else " (no checkpoint written yet)"
        print(f"\nebm: interrupted at iteration {trainer.step_count}; last checkpoint {last}{again}", file=sys.stderr)
        return 130
    trainer.generate_samples()
    print(f"ebm: done in {time.time() - t0:.0f} s")
    for label, key in (("samples (Algorithm 2, EMA)", "samples_ema"), ("sampling chain", "chain"),
                       ("energy difference (Fig. 8)", "energy_diff"), ("gradient norms (Fig. 9)", "grad_norm")):
        print(f"  {label:28s} {writer.paths[key]}")
    print(f"  {'checkpoint':28s} {trainer.last_checkpoint}")
    print(f"  {'metrics':28s} {run_dir / 'metrics.jsonl'}")
    return 0


class StopOnCtrlC(Callback):
    """Inside ``with``: Ctrl-C stops training at the end of the current step (KeyboardInterrupt from there), a
    second Ctrl-C at once. A KeyboardInterrupt raised wherever the signal lands can be lost: under load, `ebm train`
    was seen to train on for 120 steps after a SIGINT that reached it inside ``torch.autograd.grad``; a flag cannot."""

    def __init__(self) -> None:
        self.pressed = False

    def _handler(self, signum: int, frame: object) -> None:
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True

    def __enter__(self) -> "StopOnCtrlC":
        self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.signal(signal.SIGINT, self._previous)

    def on_step_end(self, trainer: Trainer, step: int, metrics: dict[str, float]) -> None:
        if self.pressed:
            raise KeyboardInterrupt


def _sample(args: argparse.Namespace) -> int:
    device = resolve_device(args.device or "auto")
    model, cfg = load_model(args.checkpoint, ema=not args.no_ema, device=device)
    over = {k: v for k, v in {"generate.rounds": args.rounds, "generate.steps": args.steps,
                              "generate.num_samples": args.num}.items() if v is not None}
    cfg = cfg.override(over)
    data = load_dataset(cfg.data, split="train") if cfg.model.num_classes else None  # a missing dataset fails here
    torch.manual_seed(args.seed)
    if data is not None:
        print(f"ebm: a conditional model; labels {list(data.label_names)} drawn from the {cfg.data.name} training data")
    x = generate(model, cfg, labels_from=data, channels=cfg.data.channels, device=device, progress=True)
    out = image_grid(x, args.out or Path(args.checkpoint).with_suffix(".samples.png"))
    print(f"ebm: {len(x)} samples written to {out}")
    return 0


def _config(args: argparse.Namespace) -> int:
    sys.stdout.write(config_from_args(args).to_yaml())
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ebm", description="Energy-based models with improved contrastive divergence "
                                "(Du et al., ICML 2021).", formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train an EBM (Algorithm 1), then sample it (Algorithm 2)")
    add_config_args(t)
    t.add_argument("--run-dir", help="where to write, a new or empty directory (default: <train.run_dir>/<date-time>)")
    t.add_argument("--resume", help="checkpoint to continue from")
    t.add_argument("--device", help="shortcut for --set train.device=... (auto, cpu, cuda)")
    t.set_defaults(func=_train)

    s = sub.add_parser("sample", help="draw samples from a checkpoint (Algorithm 2, EMA weights) into a PNG grid")
    s.add_argument("checkpoint")
    s.add_argument("--out", help="PNG path (default: next to the checkpoint)")
    s.add_argument("--num", type=int, help="number of samples (default: the config's generate.num_samples)")
    s.add_argument("--rounds", type=int, help="augmentation rounds N")
    s.add_argument("--steps", type=int, help="Langevin steps K per round")
    s.add_argument("--no-ema", action="store_true", help="use the raw weights instead of the EMA")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--device", help="auto, cpu or cuda")
    s.set_defaults(func=_sample)

    c = sub.add_parser("config", help="print a full config as YAML")
    add_config_args(c)
    c.set_defaults(func=_config)

    # Further commands (`ebm sweep`, `ebm eval`) come from the installed packages that provide them,
    # through the "ebm.commands" entry-point group: the core never imports them.
    for ep in entry_points(group="ebm.commands"):
        try:
            ep.load()(sub)
        except Exception as e:  # a broken plugin must not take `ebm train` down with it
            print(f"ebm: warning: command {ep.name!r} from {ep.value} is unavailable ({type(e).__name__}: {e})",
                  file=sys.stderr)
    return p


USER_ERRORS = (ConfigError, DatasetError, CheckpointError, FileNotFoundError)  # what the user can fix


def report_error(prog: str, e: BaseException) -> int:
    """One line on stderr and the exit code for what a user meets (2: bad input or a failed write, 3: divergence,
    130: Ctrl-C); anything else is re-raised, as a bug wants its traceback. Every entry point ends through here."""
    if isinstance(e, USER_ERRORS):
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    if isinstance(e, DivergenceError):
        print(f"{prog}: {e}", file=sys.stderr)
        return 3
    if isinstance(e, OSError):  # a write that failed: read-only filesystem, full disk, a file where a directory goes
        print(f"{prog}: error: cannot write {e.filename or 'a file'}: {e.strerror or e}", file=sys.stderr)
        return 2
    if isinstance(e, KeyboardInterrupt):
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return 130
    raise e


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except BaseException as e:
        return report_error("ebm", e)


if __name__ == "__main__":
    sys.exit(main())
