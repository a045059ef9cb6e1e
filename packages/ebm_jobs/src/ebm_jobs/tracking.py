"""MLflow tracking of EBM training runs (DESIGN §4 names), as an ``ebm_core`` trainer callback.

Everything a run writes lands in its local run directory first (``RunDirWriter``); this callback
mirrors it to MLflow: the flattened config as parameters, the metrics per iteration, sample
grids, the Fig. 8 / Fig. 9 plots, EMA model exports at every checkpoint and, at the end, a logged
model that evaluation jobs load by URI. If the tracking server cannot be reached, the run says so
once and goes on: its files are all in the run directory.
"""

from __future__ import annotations

import getpass
import json
import os
import shlex
import sys
import time
import urllib.request
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ebm_core.callbacks import Callback, RunDirWriter
from ebm_core.config import Config
from ebm_core.pipeline import export_model

from .source import git_commit
from .storage import TRACKING_FILE

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow.entities import Metric, Param, RunStatus, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from .pyfunc import MODEL_ARTIFACT  # noqa: E402


def resolve_tracking_uri(cfg: Config) -> str:
    """Config, then $MLFLOW_TRACKING_URI, then an embedded SQLite store in the run directory."""
    uri = cfg.jobs.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    return uri or local_store_uri(cfg.train.run_dir)


def local_store_uri(run_dir: str | Path) -> str:
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def server_reachable(uri: str, *, timeout: float = 3.0) -> bool:
    """True for local stores; for http(s) servers, whether ``/health`` answers."""
    if not uri.startswith(("http://", "https://")):
        return True
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout) as r:
            return r.status == 200
    except OSError:
        return False


def describe_commit() -> str:
    """The commit for a report: its sha, and whether the tree had uncommitted changes."""
    sha, dirty = git_commit()
    return sha + (" (with uncommitted changes)" if dirty else "")


def command_line(argv: list[str] | None = None) -> str:
    """How this process was started, as a user would type it (``ebm sweep ...``, ``python -m ebm_jobs.train ...``)."""
    argv = list(sys.argv if argv is None else argv)
    prog = Path(argv[0]) if argv else Path("python")
    if prog.name == "ebm":
        head = ["ebm"]
    elif prog.parent.name in ("ebm_jobs", "ebm_core", "ebm_eval"):
        head = ["python", "-m", f"{prog.parent.name}.{prog.stem}"]
    else:
        head = [prog.name]
    return shlex.join(head + argv[1:])


def source_tags(command: str | None = None) -> dict[str, str]:
    """MLflow's standard source tags, computed where the job starts (its workers run Ray's own script, from a copy
    that is no git checkout): program, commit, user, a dirty-tree flag, and the command line as the description."""
    command = command or command_line()
    sha, dirty = git_commit()
    program = " ".join(shlex.split(command)[:3]) if command.startswith("python -m ") else shlex.split(command)[0]
    return {"mlflow.source.name": program, "mlflow.source.type": "JOB", "mlflow.source.git.commit": sha,
            "mlflow.user": getpass.getuser(), "git_dirty": str(dirty).lower(),
            "mlflow.note.content": f"Started with\n\n```\n{command}\n```\n\nat commit `{sha}`"
                                   + (" with uncommitted changes." if dirty else ".")}


def run_tags(cfg: Config) -> dict[str, str]:
    """Tags that make runs easy to compare in the UI."""
    kl = [n for n, on in (("opt", cfg.loss.opt_on), ("ent", cfg.loss.ent_on)) if on]
    return {"preset": cfg.preset, "dataset": cfg.data.name, "kl_terms": "+".join(kl) or "none",
            "augment": str(cfg.augment.enabled).lower(), "multiscale": str(cfg.model.multiscale).lower()}


HIDDEN_PARAMS = ("train.run_dir", "train.progress", "jobs.tracking_uri", "jobs.storage_path", "data.root")
"""Machine-specific paths and UI switches: not hyperparameters (the dataset's source is the run's input)."""


def param_value(value: Any) -> str:
    """A parameter as the UI shows it: ``none``, ``true``/``false``, lists as ``1, 2``."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return ", ".join(param_value(v) for v in value) if value else "none"
    return str(value)


def config_params(cfg: Config) -> dict[str, str]:
    """The flattened config as MLflow parameters, without ``HIDDEN_PARAMS``."""
    return {k: param_value(v)[:6000] for k, v in cfg.flat().items() if k not in HIDDEN_PARAMS}


EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}  # a model-training experiment, not GenAI


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id, creating it; SQLite/file stores keep artifacts next to the database."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        for k, v in EXPERIMENT_TAGS.items():
            if exp.tags.get(k) != v:
                client.set_experiment_tag(exp.experiment_id, k, v)
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_TAGS)


def model_name(cfg: Config) -> str:
    """The registered model's name: ``jobs.model_name``, else ``ebm-<preset>-<dataset>``."""
    return cfg.jobs.model_name or f"ebm-{cfg.preset}-{cfg.data.name}"


def ui_address(uri: str, run_id: str) -> str:
    """Where to look at a run: its page on a tracking server, opened on the model-training view (MLflow 3.17's UI
    opens experiments on its GenAI overview otherwise), or how to open a local store."""
    if not uri.startswith("http"):
        return f"run `mlflow ui --backend-store-uri {uri}`, then open http://127.0.0.1:5000"
    exp = MlflowClient(uri).get_run(run_id).info.experiment_id
    return f"{uri.rstrip('/')}/#/experiments/{exp}/runs/{run_id}?workflowType=machine_learning"


def start_run(cfg: Config, *, run_name: str | None = None, parent_run_id: str | None = None,
              extra_tags: dict[str, str] | None = None) -> tuple[str, str]:
    """Create or reopen the MLflow run of the run directory ``cfg.train.run_dir``; returns (tracking URI, run id).

    Called by the process that logs (rank 0 of a Ray Train job, a Tune trial, a sweep's driver), on
    whichever node it runs: it checks the tracking server itself. An unreachable server gives one warning
    and the run is recorded in the store inside its own directory (``<run_dir>/mlflow.db``), which is on
    the run's shared storage. A run directory that already names a run in the same store (its
    ``tracking.json``: a resumed or retried run) reopens that run instead of creating another.
    """
    run_dir = Path(cfg.train.run_dir)
    uri = resolve_tracking_uri(cfg)
    if not server_reachable(uri):
        fallback = local_store_uri(run_dir)
        warnings.warn(f"MLflow tracking server {uri} is unreachable from this node; recording this run in {fallback} "
                      f"instead (everything is also in {run_dir})", stacklevel=2)
        uri, parent_run_id = fallback, None  # the parent run lives in the other store
    run_dir.mkdir(parents=True, exist_ok=True)
    client = MlflowClient(uri)
    known = read_tracking(run_dir)
    if known and known["tracking_uri"] == uri:
        client.update_run(known["run_id"], status=RunStatus.to_string(RunStatus.RUNNING))
        record_tracking(run_dir, uri, known["run_id"], status="RUNNING", step=known.get("step", 0))
        return uri, known["run_id"]
    exp_id = ensure_experiment(client, cfg.jobs.experiment, uri)
    tags = {**run_tags(cfg), **(extra_tags or {})}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    run = client.create_run(exp_id, run_name=run_name or run_dir.name, tags=tags)
    params = [Param(k, v) for k, v in config_params(cfg).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run.info.run_id, params=params[i:i + 100])
    record_tracking(run_dir, uri, run.info.run_id, status="RUNNING", step=0)
    return uri, run.info.run_id


def read_tracking(run_dir: str | Path) -> dict[str, Any] | None:
    """``<run_dir>/tracking.json``: where the run is tracked, its status and last step (None if absent)."""
    path = Path(run_dir) / TRACKING_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def record_tracking(run_dir: str | Path, uri: str, run_id: str, *, status: str, step: int) -> None:
    """Write ``tracking.json`` atomically: a resumed job reopens this run, and a finished one is not run again."""
    path = Path(run_dir) / TRACKING_FILE
    tmp = path.with_name(f".{TRACKING_FILE}.tmp")
    tmp.write_text(json.dumps({"tracking_uri": uri, "run_id": run_id, "status": status, "step": step}, indent=2))
    os.replace(tmp, path)


def system_metrics_interval() -> float:
    """Seconds between system-metric samples: MLflow's own ``$MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL``, else 10."""
    return float(os.environ.get("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL") or 10)


class MLflowCallback(Callback):
    """Mirror a rank-0 trainer into an existing MLflow run: metrics every ``train.log_every`` steps (and the Fig. 9
    gradient norms where computed) in asynchronous batches, sample grids as step-indexed images, the dataset as
    the run's input, system metrics, plots and checkpoints."""

    def __init__(self, *, tracking_uri: str, run_id: str, writer: RunDirWriter, flush_every: int = 100) -> None:
        self.uri, self.run_id, self.writer, self.flush_every = tracking_uri, run_id, writer, flush_every
        self.client = MlflowClient(tracking_uri)
        self.pending: list[Metric] = []
        self.in_flight: list[Any] = []  # asynchronous batches (RunOperations) not yet known to have landed
        self.failed = False
        self.logged_through = 0  # steps up to this one are in MLflow already (a restarted worker group re-runs them)
        self.monitor = None

    def on_fit_start(self, trainer) -> None:
        """A reopened run (restored, retried, resubmitted) may hold steps from the lost attempt past its checkpoint:
        those are not logged again."""
        try:
            history = self.client.get_metric_history(self.run_id, "energy/diff")
        except Exception:  # the failure shows, and is handled, at the first write
            history = []
        self.logged_through = max((m.step for m in history), default=0)
        try:
            self.log_dataset(trainer)
        except Exception:  # two trials of a sweep creating the same dataset at once break MLflow's UNIQUE constraint
            time.sleep(1.0)  # on its SQL store: the second try links the dataset the other one created
            try:
                self.log_dataset(trainer)
            except Exception as e:  # the input is a nicety: metrics, images and the model still go to MLflow
                warnings.warn(f"MLflow: the training set was not logged as the run's input ({type(e).__name__}: "
                              f"{str(e)[:300]}); tracking goes on", stacklevel=2)
        if trainer.cfg.jobs.system_metrics:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            self.monitor = SystemMetricsMonitor(self.run_id, sampling_interval=system_metrics_interval(),
                                                tracking_uri=self.uri, resume_logging=True)
            self.monitor.start()  # CPU, memory, disk, network; GPUs when NVML finds any

    def log_dataset(self, trainer) -> None:
        """The training set as the run's input: name, source (path or embedded module), digest, size."""
        import mlflow.data
        from mlflow.data.code_dataset_source import CodeDatasetSource
        from mlflow.entities import DatasetInput, InputTag

        if self.client.get_run(self.run_id).inputs.dataset_inputs:  # a reopened run has it already
            return
        cfg = trainer.cfg.data
        source = cfg.root or CodeDatasetSource({"embedded": f"ebm_core.data ({cfg.name}, generated, no download)"})
        ds = mlflow.data.from_numpy(trainer.data.images.numpy(), source=source,
                                    name=f"{cfg.name}-{trainer.data.images.shape[-1]}px")
        tags = [InputTag("mlflow.data.context", "training"), InputTag("train_size", str(len(trainer.data))),
                InputTag("channels", str(trainer.data.images.shape[1]))]
        # Dataset._to_mlflow_entity: the client API has no public dataset-to-entity call (mlflow pinned to 3.17.2);
        # mlflow.log_input would need a fluent run, whose context would end the run as FINISHED mid-training.
        self.client.log_inputs(self.run_id, datasets=[DatasetInput(ds._to_mlflow_entity(), tags)])

    def _safe(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Call the tracker; on the first failure say so once and stop tracking (files stay in the run dir)."""
        if self.failed:
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as e:  # the server went away, a network error, a full disk on its side...
            self.failed = True
            warnings.warn(f"MLflow tracking at {self.uri} failed while logging {what} ({type(e).__name__}: {e}); "
                          f"tracking stops here, the run goes on and keeps everything in {self.writer.run_dir}",
                          stacklevel=2)
            return None

    def flush(self, *, wait: bool = False) -> None:
        """Send the pending metrics in asynchronous batches; ``wait`` until every batch sent so far has landed."""
        batch, self.pending = self.pending, []
        for i in range(0, len(batch), 1000):
            op = self._safe("metrics", self.client.log_batch, self.run_id, metrics=batch[i:i + 1000], synchronous=False)
            if op is not None:
                self.in_flight.append(op)
        if wait:
            ops, self.in_flight = self.in_flight, []
            for op in ops:
                self._safe("metrics", op.wait)

    def on_step_end(self, trainer, step: int, metrics: dict[str, float]) -> None:
        if step <= self.logged_through:  # each step once in MLflow's history
            return
        if step % trainer.cfg.train.log_every and "grad_norm/cd" not in metrics:  # the steps metrics.jsonl keeps
            return
        ts = int(time.time() * 1000)
        self.pending.extend(Metric(k, float(v), ts, step) for k, v in metrics.items())
        if step % self.flush_every == 0:
            self.flush()

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Metrics computed outside the training loop (e.g. evaluation), logged at once."""
        ts = int(time.time() * 1000)
        self.pending.extend(Metric(k, float(v), ts, step) for k, v in metrics.items())
        self.flush(wait=True)

    def on_images(self, trainer, step: int, tag: str, images) -> None:
        """A step-indexed image (the UI's slider over steps), upscaled to be seen: 16-32 px samples stay crisp."""
        path = self.writer.paths.get(tag)
        if path is not None:
            self._safe(f"image {tag}", self.client.log_image, self.run_id, visible(path), key=tag, step=step,
                       synchronous=False)

    def on_checkpoint(self, trainer, step: int, path: Path) -> None:
        self.flush(wait=True)
        export = export_model(trainer.model_state(), Path(trainer.run_dir) / "exports" / f"ema_step_{step:07d}.pt")
        self._safe("EMA checkpoint", self.client.log_artifact, self.run_id, str(export), "checkpoints")

    def on_fit_end(self, trainer) -> None:
        self.flush()
        for key in ("energy_diff", "grad_norm"):
            if key in self.writer.paths:
                self._safe(f"plot {key}", self.client.log_artifact, self.run_id, str(self.writer.paths[key]), "plots")

    def log_model(self, trainer) -> None:
        """The logged model for evaluation jobs: ``runs:/<id>/model`` (pyfunc returning energies), registered as
        ``models:/<jobs.model_name>@latest``."""
        export = export_model(trainer.model_state(), Path(trainer.run_dir) / "exports" / "model.pt")
        self._safe("model", _log_pyfunc, self.uri, self.run_id, export, shape=tuple(trainer.shape),
                   registered_name=model_name(trainer.cfg), num_classes=tuple(trainer.cfg.model.num_classes))

    def log_final_images(self) -> None:
        for tag in ("samples_ema", "chain"):
            if tag in self.writer.paths:
                self._safe(f"image {tag}", self.client.log_artifact, self.run_id, str(self.writer.paths[tag]), "samples")

    def finish(self, trainer, metrics: dict[str, float] | None = None) -> None:
        """After a successful fit: Algorithm 2 samples and chain, extra metrics, the logged model, FINISHED."""
        trainer.generate_samples()
        self.log_final_images()
        if metrics:
            self.log_metrics(trainer.step_count, metrics)
        self.log_model(trainer)
        self.end(terminal_status(True))

    def end(self, status: str = "FINISHED", *, error: str | None = None) -> None:
        if self.monitor is not None:
            self.monitor.finish()
        self.flush(wait=True)
        if error:
            self._safe("error tag", self.client.log_batch, self.run_id, tags=[RunTag("error", error[:5000])])
        self._safe("status", self.client.set_terminated, self.run_id, status=status)


@contextmanager
def fluent_tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API at ``uri`` for a block, then restore the process-wide URI and $MLFLOW_TRACKING_URI
    (``mlflow.set_tracking_uri`` writes the variable, which would leak into later runs of this process)."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri  # private; mlflow is pinned to 3.17.2

    saved = os.environ.get("MLFLOW_TRACKING_URI")
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        if saved is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved


def _log_pyfunc(uri: str, run_id: str, export: Path, *, shape: tuple[int, int, int], registered_name: str,
                num_classes: tuple[int, ...] = ()) -> None:
    import mlflow

    from .pyfunc import log_energy_model

    with fluent_tracking_uri(uri), mlflow.start_run(run_id=run_id):
        info = log_energy_model(export, shape=shape, registered_name=registered_name, num_classes=num_classes)
        mlflow.set_tags({"logged_model_uri": f"runs:/{run_id}/{MODEL_ARTIFACT}",
                         "registered_model": f"models:/{registered_name}/{info.registered_model_version}"})


def visible(path: Path, *, width: int = 768):
    """A saved grid as a PIL image at least ``width`` pixels wide, enlarged by an integer nearest-neighbour factor
    (pixels stay square and sharp; a 16 px sample grid of 8 columns is 137 px wide)."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    k = max(1, -(-width // img.width))
    return img.resize((img.width * k, img.height * k), Image.NEAREST) if k > 1 else img


def terminal_status(ok: bool) -> str:
    return RunStatus.to_string(RunStatus.FINISHED if ok else RunStatus.FAILED)


def log_reproduction(uri: str, run_id: str, results_json: str, report: Path, verdicts: dict[str, int],
                     kl_cost: dict[str, float]) -> None:
    """The report, its figures, ``results.json``, verdict counts and KL-cost ratios on the reproduce run, which ends."""
    client = MlflowClient(uri)
    client.log_artifact(run_id, str(report))
    client.log_artifacts(run_id, str(report.parent / "results"), artifact_path="results")
    client.log_text(run_id, results_json, "results.json")
    for verdict, n in verdicts.items():
        client.log_metric(run_id, f"claims/{verdict.replace(' ', '_')}", n)
    for k, r in kl_cost.items():
        client.log_metric(run_id, f"kl_cost/{k}", r)
    client.set_terminated(run_id, terminal_status(True))
