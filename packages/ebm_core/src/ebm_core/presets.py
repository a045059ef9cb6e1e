"""Named experiments: functions that return a ``Config`` (torchtitan recipes, nanoGPT config files)."""

from __future__ import annotations

from typing import Callable

from .config import (AugmentConfig, BufferConfig, Config, ConfigError, DataConfig, GenerateConfig, JobsConfig,
                     LossConfig, ModelConfig, OptimConfig, SamplerConfig, TrainConfig)


def cifar10() -> Config:
    """The reference CIFAR-10 run of DESIGN §2 (one V100, about a day) on the paper's network. Needs the CIFAR-10 files."""
    return Config(
        preset="cifar10",
        model=ModelConfig(arch="reference", base_width=64, attention_res=8, multiscale=True),
        data=DataConfig(name="cifar10", root="data/cifar10", resolution=32),
        train=TrainConfig(iterations=20_000, batch_size=128, run_dir="runs/cifar10"),
    )


def shapes() -> Config:
    """A few CPU minutes on the embedded 16x16 shapes, unconditional: the base of ``demo``, of ``digits`` and of the
    reproduction's ``small`` scale (the paper's ablations, OOD and composition need an unconditional model).

    Tuned with ``ebm sweep`` and single runs (docs/demo-tuning.md): EMA decay 0.99 over 0.998 (FID-domain 505
    against 1 700-2 300 at 1 000 iterations), K=20, chains restarted from noise 5 % of the time (always: 1 332),
    Algorithm 2 at half the training step size (258/342 over 505/565), and hue jitter 0.4 in every transition
    (the paper's Sec. 2.3 mixing, Fig. 6): chains cross between colours, so longer training no longer collapses
    generation onto one or two colours; 2 000 iterations then give FID-domain 119/107 against 258/342. The learning
    rate decays linearly over the last 40 % (colour distance 0.09 against 0.10, the rest within seed noise). The
    energy regulariser is 0.1, not the reference code's 1: at 2 000 iterations the two are equal within the spread
    between training seeds (FID-domain 115 against 120, two seeds each), but with 1 chains from noise stick on the
    faces of the [0, 1] box past about 3 000 iterations (the gradient pushes 99.8 % of their clamped pixels
    outwards), while 0.1 trains to 6 000 without breaking, so ``--iterations 4000`` is a better demo where there is
    time for it (recognisability 0.74/0.71, against 0.60/0.66 at 2 000 iterations of the same run). Leaky ReLU
    instead of swish and a learning rate of 2e-3 instead of 1e-3 (the twelfth round, three training seeds against
    four): FID-domain 116 against 136, recognisability 0.68 against 0.59, colour distance 0.069 against 0.098, shape
    agreement 0.85 against 0.75; the rate brings most of the recognisability, the piecewise-linear network the flat
    colours. With both, ``--iterations 4000`` gives FID-domain 95, recognisability 0.76, colour distance 0.056 and
    shape agreement 0.93 (three training seeds). A per-pixel (unary) energy beside the network, trained 1 700 iterations
    instead of 2 000 (the nineteenth round, about the same time: it costs 20 % a step): over training seeds 2 and 3
    against the preset without it, recognisability 0.73 against 0.68, shape agreement 0.88 against 0.84, FID-domain 94
    against 109, colour distance 0.058 against 0.056. Algorithm 2 with 9 rounds and 3 settle rounds instead of 6 and 2
    (1.5x the generation steps; rule 26, four training seeds): recognisability 0.77 against 0.74, shape agreement
    0.92 against 0.89, colour distance 0.059 against 0.061.
    """
    return Config(
        preset="shapes",
        model=ModelConfig(base_width=16, channel_mults=(1, 2, 2), norm="none", activation="leaky_relu",
                          attention_res=None, multiscale=False, unary_width=32),
        sampler=SamplerConfig(steps=20, step_size=10.0, noise=0.005),
        augment=AugmentConfig(crop_scale=(0.6, 1.0), color_jitter=(0.2, 0.2, 0.2, 0.4), jitter_p=1.0, grayscale_p=0.0),
        buffer=BufferConfig(capacity=5_000, reinit_prob=0.05),
        loss=LossConfig(alpha=0.1, ent_min_buffer=500),
        optim=OptimConfig(lr=2e-3, ema_decay=0.99, decay_fraction=0.4),
        data=DataConfig(name="shapes", resolution=16, num_train=5_000),
        generate=GenerateConfig(num_samples=64, rounds=9, steps=30, settle_rounds=3, step_size=5.0),
        train=TrainConfig(iterations=1_700, batch_size=32, log_every=10, grad_norm_every=10, image_every=100,
                          checkpoint_every=200, run_dir="runs/shapes"),
        jobs=JobsConfig(cpus_per_worker=2),  # one Ray worker using both cores of a small machine
    )


def demo() -> Config:
    """What ``scripts/demo.sh`` trains: ``shapes`` conditioned on each image's shape, colour and size, E(x | y).

    Sampled with label rows drawn from the training data (``pipeline.draw_labels``), it is still a model of the
    data, p(x) = sum_y p(y) p(x | y), and the labels carry the data's balance of shapes, colours and sizes, which
    chains from noise under the unconditional energy do not keep (docs/demo-tuning.md, twenty-fourth and
    twenty-fifth rounds). No unary term (cheaper, and a little better here), and Algorithm 2 with crops that zoom
    out as well as in (area 0.5-2; training keeps 0.6-1): zoom-in crops alone drift the free positions off the
    middle. Without Eq. 8's entropy term, which rewards each chain's last step for moving away from its nearest
    neighbour in pixel space: the interiors come out 40 % closer to the data's flat colours, and the iterations are
    cheaper, so 2 900 of them fit the time of 2 200 with it; 6 rounds of Algorithm 2 instead of 9, since without the
    term the chains drift up round by round, and 1 settle round instead of 3, since plain descent sharpens the rims
    past the data's (twenty-sixth round); Algorithm 2's step 3.0 instead of 5, a shorter descent that leaves more
    of the data's blended rims (rules 47 and 48: 3.5 lowers the colour distance by 0.0029 over 32 paired draws of
    training seeds 5 and 6, and 3.0 by 0.0003 more over 64 of seeds 3-6, with FID-domain 102.0, recognisability
    0.923 and shape agreement 0.977). Rule 44 (step 5), training seeds 3 and 4:
    FID-domain 101.9, recognisability 0.950, shape agreement 0.994, colour distance 0.037, against 112.7 / 0.937 /
    0.991 / 0.047 with the term (rule 39, seeds 1-3) and 99 / 0.76 / 0.91 / 0.078 for ``shapes`` (seed 0). Its
    closing figures are the means over 4 draws of 256 samples, since one draw's colour distance has an sd of a
    seventh of its value (twenty-seventh round). Not for OOD, which scores log p(x) with an unconditional energy.
    """
    return shapes().override({
        "preset": "demo",
        "data.labels": ["shape", "colour", "size"], "model.num_classes": [3, 6, 3], "model.unary_width": 0,
        "loss.use_ent": False, "generate.crop_scale": [0.5, 2.0], "generate.rounds": 6, "generate.settle_rounds": 1,
        "generate.step_size": 3.0, "train.iterations": 2_900, "train.run_dir": "runs/demo", "jobs.quality_draws": 4,
    })


def digits() -> Config:
    """Minutes on a CPU: scikit-learn's bundled 8x8 handwritten digits, greyscale, upsampled to 16x16."""
    return shapes().override({
        "preset": "digits",
        "data.name": "digits", "data.resolution": 16, "data.channels": 1,
        "augment.color_jitter": [0.2, 0.2, 0.0, 0.0], "augment.flip": False,  # a mirrored digit is another glyph
        "augment.jitter_p": 0.5, "train.iterations": 1_000,  # as measured (docs/demo-tuning.md): 5 CPU minutes
        "model.unary_width": 0, "generate.rounds": 6, "generate.settle_rounds": 2,  # measured without the shapes
        # preset's unary term and with its earlier generation settings
        "train.run_dir": "runs/digits",
    })


def test() -> Config:
    """Seconds on a CPU: tiny model, few steps; every code path on (multi-scale, attention, KL terms)."""
    return Config(
        preset="test",
        model=ModelConfig(base_width=8, channel_mults=(1, 2), attention_res=8, multiscale=True),
        sampler=SamplerConfig(steps=5, step_size=10.0, noise=0.005),
        buffer=BufferConfig(capacity=256, reinit_prob=0.05),
        loss=LossConfig(ent_set_size=16, ent_min_buffer=16),
        data=DataConfig(name="shapes", resolution=16, num_train=512),
        generate=GenerateConfig(num_samples=8, rounds=1, steps=5, settle_rounds=1),
        train=TrainConfig(iterations=6, batch_size=16, log_every=1, grad_norm_every=2, image_every=3,
                          checkpoint_every=3, run_dir="runs/test", progress=False),
        jobs=JobsConfig(quality_samples=0),  # no end-of-run judging (seconds a run); ask for it: jobs.quality_samples=32
    )


PRESETS: dict[str, Callable[[], Config]] = {"cifar10": cifar10, "demo": demo, "digits": digits, "shapes": shapes,
                                            "test": test}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"preset: expected one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]()
