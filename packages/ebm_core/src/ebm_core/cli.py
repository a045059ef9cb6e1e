"""The ``ebm`` command: train a model from a preset, sample from a checkpoint, print a config.

    ebm train --preset demo                       # train on the embedded shapes, write samples/plots/checkpoint
    ebm train --preset demo --set loss.w_ent=0.3 --set sampler.steps=20
    ebm train --config my.yaml --resume runs/x/checkpoints/step_0000450.pt
    ebm sample runs/demo/<time>/checkpoints/step_0000450.pt --num 64 --out grid.png
    ebm config --preset cifar10 > cifar10.yaml    # every field, to edit and pass back with --config
"""

from __future__ import annotations

import argparse
import sys
import time
from importlib.metadata import entry_points
from pathlib import Path

import torch

from .callbacks import RunDirWriter, image_grid
from .checkpoint import CheckpointError
from .config import ConfigError
from .data import DatasetError
from .pipeline import generate, load_model
from .runs import add_config_args, config_from_args, run_dir_for
from .trainer import DivergenceError, Trainer, resolve_device


def _train(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    if args.device is not None:
        cfg = cfg.override({"train.device": args.device})
    resume = Path(args.resume) if args.resume else None
    run_dir = run_dir_for(cfg, args.run_dir, resume=resume is not None)  # a run is never written over another
    cfg = cfg.override({"train.run_dir": str(run_dir)})
    writer = RunDirWriter(run_dir)
    trainer = Trainer(cfg, callbacks=[writer])
    if resume is not None:
        trainer.resume(resume)
    print(f"ebm: training preset={cfg.preset} data={cfg.data.name}@{cfg.data.resolution}px for "
          f"{cfg.train.iterations} iterations on {trainer.device}; run directory {run_dir}", flush=True)
    t0 = time.time()
    trainer.fit()
    trainer.generate_samples()
    print(f"ebm: done in {time.time() - t0:.0f} s")
    for label, key in (("samples (Algorithm 2, EMA)", "samples_ema"), ("sampling chain", "chain"),
                       ("energy difference (Fig. 8)", "energy_diff"), ("gradient norms (Fig. 9)", "grad_norm")):
        print(f"  {label:28s} {writer.paths[key]}")
    print(f"  {'checkpoint':28s} {trainer.last_checkpoint}")
    print(f"  {'metrics':28s} {run_dir / 'metrics.jsonl'}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    device = resolve_device(args.device or "auto")
    model, cfg = load_model(args.checkpoint, ema=not args.no_ema, device=device)
    over = {k: v for k, v in {"generate.rounds": args.rounds, "generate.steps": args.steps,
                              "generate.num_samples": args.num}.items() if v is not None}
    cfg = cfg.override(over)
    if cfg.model.num_classes:
        raise ConfigError("ebm sample: this checkpoint is a conditional model; sample it with ebm_eval's "
                          "compositional tools, which take the labels to condition on")
    torch.manual_seed(args.seed)
    x = generate(model, cfg, device=device, progress=True)
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


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DatasetError, CheckpointError, FileNotFoundError) as e:
        print(f"ebm: error: {e}", file=sys.stderr)
        return 2
    except DivergenceError as e:
        print(f"ebm: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
