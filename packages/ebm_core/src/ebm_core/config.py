"""One typed config tree for training, sampling and data; YAML in and out; dotted overrides.

Each section validates itself on construction and raises ``ConfigError`` naming the field, so a
bad value is rejected before any work starts. Presets live in ``presets.py``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

import yaml


class ConfigError(ValueError):
    """An invalid config value; the message names the field and what was expected."""


def _check(ok: bool, name: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"{name}: expected {expected}, got {value!r}")


def _choice(name: str, value: Any, allowed: tuple) -> None:
    _check(value in allowed, name, f"one of {list(allowed)}", value)


def _check_crop_scale(name: str, value: tuple[float, float]) -> None:
    lo, hi = value
    _check(0 < lo <= hi, name, "0 < lo <= hi (area over the image's; above 1: a box larger than the image, a zoom out)",
           value)


@dataclass(kw_only=True)
class ModelConfig:
    """ResNet energy network (DESIGN §2) and its multi-scale / conditional wrappers."""

    # reference: the paper's network (models/reference.py; base_width = filter_dim; the layout is fixed);
    # small: a lighter ResNet for CPU work (models/resnet.py), laid out by channel_mults and blocks_per_stage
    arch: str = "small"
    base_width: int = 64
    channel_mults: tuple[int, ...] = (1, 2, 2, 2)  # small: one stage per entry; stage i halves the resolution
    blocks_per_stage: int = 1  # small only
    norm: str = "instance"  # instance (<=128 channels, group norm above) | group | none
    activation: str = "swish"  # swish | leaky_relu
    attention_res: int | None = 8  # self-attention at this feature resolution; None: off
    spectral_norm: bool = False
    multiscale: bool = True  # full, 1/2 and 1/4 resolution networks, energy = sum (Sec. 2.4)
    num_classes: tuple[int, ...] = ()  # conditional (FiLM) on these attribute cardinalities; () = unconditional
    unary_width: int = 0  # small only: a per-pixel energy MLP of this width beside the network (models/resnet.py); 0 = off

    def __post_init__(self) -> None:
        _choice("model.arch", self.arch, ("reference", "small"))
        _check(isinstance(self.base_width, int) and self.base_width >= 4, "model.base_width", "an int >= 4", self.base_width)
        _check(len(self.channel_mults) >= 1 and all(isinstance(m, int) and m >= 1 for m in self.channel_mults),
               "model.channel_mults", "a non-empty list of ints >= 1", self.channel_mults)
        _check(isinstance(self.blocks_per_stage, int) and self.blocks_per_stage >= 1, "model.blocks_per_stage", "an int >= 1", self.blocks_per_stage)
        _choice("model.norm", self.norm, ("instance", "group", "none"))
        _choice("model.activation", self.activation, ("swish", "leaky_relu"))
        _check(self.attention_res is None or (isinstance(self.attention_res, int) and self.attention_res >= 1),
               "model.attention_res", "null or a positive int", self.attention_res)
        _check(all(isinstance(k, int) and k >= 2 for k in self.num_classes), "model.num_classes", "a list of ints >= 2", self.num_classes)
        _check(isinstance(self.unary_width, int) and self.unary_width >= 0, "model.unary_width", "an int >= 0", self.unary_width)
        _check(self.unary_width == 0 or self.arch == "small", "model.unary_width", "0 with model.arch=reference (the paper's network has no unary term)", self.unary_width)


@dataclass(kw_only=True)
class SamplerConfig:
    """Langevin dynamics (DESIGN §1 step 4). Step size and noise are separate knobs: not T=1 Langevin.

    The last step is made differentiable (x_hat) only when a KL term is on.
    """

    steps: int = 40  # K
    step_size: float = 100.0  # lambda
    noise: float = 0.001  # sigma

    def __post_init__(self) -> None:
        _check(isinstance(self.steps, int) and self.steps >= 1, "sampler.steps", "an int >= 1", self.steps)
        _check(self.step_size > 0, "sampler.step_size", "a positive number", self.step_size)
        _check(self.noise >= 0, "sampler.noise", "a number >= 0", self.noise)


@dataclass(kw_only=True)
class AugmentConfig:
    """Data-augmentation transitions (Sec. 2.3, DESIGN §2 reference set)."""

    enabled: bool = True
    crop_scale: tuple[float, float] = (0.08, 1.0)  # the box's area over the image's; above 1 zooms out (not in torchvision)
    flip: bool = True
    color_jitter: tuple[float, float, float, float] = (0.8, 0.8, 0.8, 0.4)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur: str = "auto"  # auto (on for images >= 64 px) | on (any size; a 3x3 kernel at the least) | off

    def __post_init__(self) -> None:
        _check_crop_scale("augment.crop_scale", self.crop_scale)
        _check(len(self.color_jitter) == 4 and all(v >= 0 for v in self.color_jitter) and self.color_jitter[3] <= 0.5,
               "augment.color_jitter", "four numbers >= 0 (hue <= 0.5)", self.color_jitter)
        _check(0 <= self.jitter_p <= 1, "augment.jitter_p", "a probability", self.jitter_p)
        _check(0 <= self.grayscale_p <= 1, "augment.grayscale_p", "a probability", self.grayscale_p)
        _choice("augment.blur", self.blur, ("auto", "on", "off"))


@dataclass(kw_only=True)
class BufferConfig:
    """Replay buffer (Algorithm 1)."""

    capacity: int = 10_000
    reinit_prob: float = 0.001  # 0.1 % as in the reference code (the paper's Algorithm 1 writes 1 %)
    mode: str = "fifo"  # fifo | reservoir
    storage: str = "half"  # uint8 | half | float32

    def __post_init__(self) -> None:
        _check(isinstance(self.capacity, int) and self.capacity >= 1, "buffer.capacity", "an int >= 1", self.capacity)
        _check(0 <= self.reinit_prob <= 1, "buffer.reinit_prob", "a probability", self.reinit_prob)
        _choice("buffer.mode", self.mode, ("fifo", "reservoir"))
        _choice("buffer.storage", self.storage, ("uint8", "half", "float32"))


@dataclass(kw_only=True)
class LossConfig:
    """L = L_CD + alpha*reg + w_opt*L_opt + w_ent*L_ent (Eqs. 5, 7, 8)."""

    alpha: float = 1.0  # energy regulariser of IGEBM
    use_opt: bool = True
    w_opt: float = 1.0
    use_ent: bool = True
    w_ent: float = 0.3
    ent_set_size: int = 100  # |X| of Eq. 8
    ent_min_buffer: int = 1000  # L_ent waits until the buffer holds this many samples
    ent_eps: float = 1e-8

    def __post_init__(self) -> None:
        for name in ("alpha", "w_opt", "w_ent"):
            _check(getattr(self, name) >= 0, f"loss.{name}", "a number >= 0", getattr(self, name))
        _check(isinstance(self.ent_set_size, int) and self.ent_set_size >= 1, "loss.ent_set_size", "an int >= 1", self.ent_set_size)
        _check(isinstance(self.ent_min_buffer, int) and self.ent_min_buffer >= 1, "loss.ent_min_buffer",
               "an int >= 1 (L_ent draws its neighbours from the buffer)", self.ent_min_buffer)
        _check(self.ent_eps > 0, "loss.ent_eps", "a positive number", self.ent_eps)

    @property
    def opt_on(self) -> bool:
        """Whether L_opt (Eq. 7) is part of the loss."""
        return self.use_opt and self.w_opt > 0

    @property
    def ent_on(self) -> bool:
        """Whether L_ent (Eq. 8) is part of the loss (once the buffer holds ``ent_min_buffer`` samples)."""
        return self.use_ent and self.w_ent > 0


@dataclass(kw_only=True)
class OptimConfig:
    lr: float = 2e-4
    betas: tuple[float, float] = (0.0, 0.9)
    grad_clip: float | None = 0.5  # parameter-gradient norm; None: off
    ema_decay: float = 0.99  # per step, as the reference code (the paper says 0.9999)
    # the learning rate falls linearly towards 0 over this last fraction of train.iterations (warmup-stable-decay
    # without the warm-up); 0: constant, as the paper. The demo preset decays over its last 0.4 (docs/demo-tuning.md)
    decay_fraction: float = 0.0

    def __post_init__(self) -> None:
        _check(self.lr > 0, "optim.lr", "a positive number", self.lr)
        _check(len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas), "optim.betas", "two numbers in [0, 1)", self.betas)
        _check(self.grad_clip is None or self.grad_clip > 0, "optim.grad_clip", "null or a positive number", self.grad_clip)
        _check(0 <= self.ema_decay < 1, "optim.ema_decay", "a number in [0, 1)", self.ema_decay)
        _check(0 <= self.decay_fraction <= 1, "optim.decay_fraction", "a number in [0, 1] (0: constant)",
               self.decay_fraction)


@dataclass(kw_only=True)
class DataConfig:
    name: str = "shapes"  # shapes | digits | cifar10 | cifar100 | svhn | imagefolder | imagenet32
    root: str | None = None  # directory of the files for file-backed sets
    resolution: int = 32
    num_train: int = 20_000  # size of the generated shapes set
    seed: int = 0
    labels: tuple[str, ...] = ()  # keep only these label columns (e.g. ["shape"] for one attribute model); () = all
    channels: int | None = None  # 1 (greyscale) or 3 (RGB); None: the data's own (digits 1, image folders 1 if all grey)

    NAMES = ("shapes", "digits", "cifar10", "cifar100", "svhn", "imagefolder", "imagenet32")

    def __post_init__(self) -> None:
        _choice("data.name", self.name, self.NAMES)
        _check(isinstance(self.resolution, int) and 8 <= self.resolution <= 128, "data.resolution", "an int in [8, 128]", self.resolution)
        _check(isinstance(self.num_train, int) and self.num_train >= 1, "data.num_train", "an int >= 1", self.num_train)
        _check(self.channels in (None, 1, 3), "data.channels", "null (the data's own), 1 or 3", self.channels)
        if self.name not in ("shapes", "digits"):
            _check(bool(self.root), "data.root", f"the directory holding the {self.name} files", self.root)


@dataclass(kw_only=True)
class GenerateConfig:
    """Algorithm 2: N rounds of (augment, K Langevin steps), then rounds without augmentation."""

    num_samples: int = 64
    rounds: int = 10  # N
    steps: int = 40  # K per round
    settle_rounds: int = 2
    step_size: float | None = None  # None: the training sampler's
    noise: float | None = None
    # the transitions' crops (area scale); None: the training transitions' (augment.crop_scale). Crops that zoom out
    # as well as in keep a model conditioned on size from drifting shapes off the middle (docs/demo-tuning.md, rule 39)
    crop_scale: tuple[float, float] | None = None
    use_ema: bool = True

    def __post_init__(self) -> None:
        if self.crop_scale is not None:
            _check_crop_scale("generate.crop_scale", self.crop_scale)
        for name in ("num_samples", "steps"):
            _check(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, f"generate.{name}", "an int >= 1", getattr(self, name))
        for name in ("rounds", "settle_rounds"):
            _check(isinstance(getattr(self, name), int) and getattr(self, name) >= 0, f"generate.{name}", "an int >= 0", getattr(self, name))
        _check(self.rounds + self.settle_rounds >= 1, "generate.rounds", "rounds + settle_rounds >= 1 (else no Langevin "
               "step is taken and the samples are the uniform noise they start from)", self.rounds)
        _check(self.step_size is None or self.step_size > 0, "generate.step_size", "null or a positive number", self.step_size)
        _check(self.noise is None or self.noise >= 0, "generate.noise", "null or a number >= 0", self.noise)


@dataclass(kw_only=True)
class TrainConfig:
    iterations: int = 20_000
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    log_every: int = 10
    grad_norm_every: int = 10  # grad_norm/cd and grad_norm/kl measured separately every N iterations (and at 1); 0: never
    image_every: int = 500
    checkpoint_every: int = 1000
    energy_bound: float = 10.0  # divergence guard on |energy/pos|
    run_dir: str = "runs/default"
    progress: bool = True
    # how the Langevin steps without a graph take grad_x E (fastgrad.py; all give the same numbers):
    # plain = the live model; frozen = detached weights, no weight-grad bookkeeping; compiled = frozen under
    # torch.compile (one-off compile: minutes on CPU, needs a C++ compiler). None is faster on a 2-core CPU
    # (benchmarks/results/core.json), so the default is the simplest.
    sampler_grad: str = "plain"
    channels_last: bool = False  # model and chains in NHWC memory format
    sampler_bf16: bool = False  # those steps under bfloat16 autocast (GPUs; approximate, not equal)

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "log_every", "image_every", "checkpoint_every"):
            _check(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, f"train.{name}", "an int >= 1", getattr(self, name))
        _check(isinstance(self.grad_norm_every, int) and self.grad_norm_every >= 0, "train.grad_norm_every",
               "an int >= 0 (0: never)", self.grad_norm_every)
        _check(self.energy_bound > 0, "train.energy_bound", "a positive number", self.energy_bound)
        _check(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "train.device", "auto, cpu, cuda or cuda:N", self.device)
        _choice("train.sampler_grad", self.sampler_grad, ("plain", "frozen", "compiled"))
        _check(not (self.sampler_bf16 and self.sampler_grad == "plain"), "train.sampler_bf16",
               "false with train.sampler_grad=plain (bf16 applies to the frozen/compiled paths)", self.sampler_bf16)


PLACEMENTS = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")  # Ray's placement group strategies


@dataclass(kw_only=True)
class JobsConfig:
    """How ``ebm_jobs`` runs this config: Ray Train workers, fault tolerance, storage, MLflow tracking.

    Plain values only: ``ebm_core`` reads none of them and imports neither Ray nor MLflow.
    """

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: int = 1
    max_failures: int = 0  # worker failures to recover from (restart from the latest checkpoint)
    placement: str = "PACK"  # how workers spread over nodes: PACK, SPREAD, STRICT_PACK or STRICT_SPREAD (Ray's)
    storage_path: str | None = None  # runs live in <storage_path>/<run name>: shared path or URI (s3://...); None: train.run_dir
    tracking_uri: str | None = None  # None: $MLFLOW_TRACKING_URI, else sqlite:///<run_dir>/mlflow.db
    experiment: str = "ebm"
    system_metrics: bool = True  # MLflow's CPU, memory, disk, network and GPU metrics of the logging worker
    model_name: str | None = None  # the registered MLflow model; None: ebm-<preset>-<dataset>
    quality_samples: int = 256  # EMA samples judged at the end of a run and at sweep reports (ebm_eval.quality); 0: none
    quality_draws: int = 1  # draws of quality_samples whose figures are averaged (one draw is noisy: docs/demo-tuning.md)

    def __post_init__(self) -> None:
        _check(isinstance(self.quality_samples, int) and (self.quality_samples == 0 or self.quality_samples >= 16),
               "jobs.quality_samples", "0 (none) or an int >= 16", self.quality_samples)
        _check(isinstance(self.quality_draws, int) and self.quality_draws >= 1, "jobs.quality_draws", "an int >= 1",
               self.quality_draws)
        for name in ("num_workers", "cpus_per_worker"):
            _check(isinstance(getattr(self, name), int) and getattr(self, name) >= 1, f"jobs.{name}", "an int >= 1", getattr(self, name))
        _check(isinstance(self.max_failures, int) and self.max_failures >= -1, "jobs.max_failures", "an int >= -1 (-1: unlimited)", self.max_failures)
        _check(bool(self.experiment), "jobs.experiment", "a non-empty name", self.experiment)
        _check(self.placement in PLACEMENTS, "jobs.placement", f"one of {', '.join(PLACEMENTS)}", self.placement)


@dataclass(kw_only=True)
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    buffer: BufferConfig = field(default_factory=BufferConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    jobs: JobsConfig = field(default_factory=JobsConfig)
    preset: str = "custom"

    def __post_init__(self) -> None:
        _check(self.loss.ent_set_size <= self.buffer.capacity, "loss.ent_set_size", f"<= buffer.capacity ({self.buffer.capacity})", self.loss.ent_set_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of primitives (tuples as lists): what YAML, checkpoints and trackers store."""
        return _plain(dataclasses.asdict(self))

    def to_yaml(self, path: str | Path | None = None) -> str:
        text = yaml.safe_dump(self.to_dict(), sort_keys=False)
        if path is not None:
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        return _build(cls, d, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Config":
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            d = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from e
        if not isinstance(d, dict):
            raise ConfigError(f"config file {p}: expected a mapping of sections, got {type(d).__name__}")
        return cls.from_dict(d)

    def override(self, assignments: list[str] | dict[str, Any]) -> "Config":
        """A new config with dotted-path overrides applied: ``["loss.w_ent=0.3", "sampler.steps=20"]``."""
        d = self.to_dict()
        items = assignments.items() if isinstance(assignments, dict) else (_split(a) for a in assignments)
        for path, value in items:
            node, keys = d, path.split(".")
            for k in keys[:-1]:
                if not isinstance(node.get(k), dict):
                    raise ConfigError(f"{path}: unknown config section {k!r}")
                node = node[k]
            if keys[-1] not in node:
                raise ConfigError(f"{path}: unknown config field (known: {sorted(node)})")
            node[keys[-1]] = value
        return Config.from_dict(d)

    def flat(self) -> dict[str, Any]:
        """Flattened ``section.field -> value`` view, for trackers' parameter tables."""
        out: dict[str, Any] = {}

        def walk(prefix: str, node: dict) -> None:
            for k, v in node.items():
                if isinstance(v, dict):
                    walk(f"{prefix}{k}.", v)
                else:
                    out[f"{prefix}{k}"] = v

        walk("", self.to_dict())
        return out


def _split(assignment: str) -> tuple[str, Any]:
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r}: expected section.field=value")
    key, raw = assignment.split("=", 1)
    try:
        return key.strip(), yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"override {assignment!r}: value is not valid YAML ({e})") from e


def _plain(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    return v


def _coerce(name: str, tp: Any, v: Any) -> Any:
    """Check ``v`` against the annotation ``tp`` (ints accepted for floats; lists for tuples)."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is not None and type(None) in args:  # Optional[X]
        if v is None:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, inner[0], v)
    if origin is tuple:
        _check(isinstance(v, (list, tuple)), name, "a list", v)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(name, args[0], x) for x in v)
        _check(len(v) == len(args), name, f"a list of {len(args)} values", v)
        return tuple(_coerce(name, a, x) for a, x in zip(args, v))
    if tp is float:
        if isinstance(v, str):  # YAML 1.1 reads "1e-9" (no dot) as a string
            try:
                v = float(v)
            except ValueError:
                pass
        _check(isinstance(v, (int, float)) and not isinstance(v, bool), name, "a number", v)
        _check(math.isfinite(v), name, "a finite number", v)
        return float(v)
    if tp is int:
        _check(isinstance(v, int) and not isinstance(v, bool), name, "an int", v)
        return v
    if tp is bool:
        _check(isinstance(v, bool), name, "true or false", v)
        return v
    if tp is str:
        if isinstance(v, bool):  # YAML 1.1 reads on/off (yes/no) as booleans; a text field means the word
            v = "on" if v else "off"
        _check(isinstance(v, str), name, "a string", v)
        return v
    return v


def _build(cls: type, d: Any, prefix: str) -> Any:
    if not isinstance(d, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {d!r}")
    hints = get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - fields
    if unknown:
        raise ConfigError(f"{prefix or 'config'}: unknown field(s) {sorted(unknown)} (known: {sorted(fields)})")
    kwargs = {}
    for k, v in d.items():
        tp = hints[k]
        if dataclasses.is_dataclass(tp):
            kwargs[k] = _build(tp, v, f"{prefix}{k}.")
        else:
            kwargs[k] = _coerce(f"{prefix}{k}", tp, v)
    return cls(**kwargs)
