"""MLflow tracking of EBM training runs (DESIGN §4 names), as an ``ebm_core`` trainer callback.

Everything a run writes lands in its local run directory first (``RunDirWriter``); this callback
mirrors it to MLflow: the flattened config as parameters, the metrics per iteration, sample
grids, the Fig. 8 / Fig. 9 plots, EMA model exports at every checkpoint and, at the end, a logged
model that evaluation jobs load by URI. If the tracking server cannot be reached, the run says so
once and goes on: its files are all in the run directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.request
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ebm_core.callbacks import Callback, RunDirWriter
from ebm_core.config import Config
from ebm_core.pipeline import export_model

from .storage import TRACKING_FILE

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from mlflow.entities import Metric, Param, RunStatus, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

MODEL_ARTIFACT = "model"  # runs:/<id>/model holds the logged model; its artifacts hold model.pt


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


def git_commit() -> tuple[str, bool]:
    """(HEAD's sha, whether tracked files differ from it) of the checkout these packages run from;
    ("unknown", False) outside a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=here)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True,
                               timeout=5, cwd=here)
    except (OSError, subprocess.SubprocessError):
        return "unknown", False
    if sha.returncode != 0 or not sha.stdout.strip():
        return "unknown", False
    return sha.stdout.strip(), bool(dirty.stdout.strip())


def describe_commit() -> str:
    """The commit for a report: its sha, and whether the tree had uncommitted changes."""
    sha, dirty = git_commit()
    return sha + (" (with uncommitted changes)" if dirty else "")


def run_tags(cfg: Config) -> dict[str, str]:
    """Tags that make runs easy to compare in the UI."""
    kl = [n for n, on in (("opt", cfg.loss.opt_on), ("ent", cfg.loss.ent_on)) if on]
    sha, dirty = git_commit()
    return {"preset": cfg.preset, "dataset": cfg.data.name, "kl_terms": "+".join(kl) or "none",
            "augment": str(cfg.augment.enabled).lower(), "multiscale": str(cfg.model.multiscale).lower(),
            "git_commit": sha, "git_dirty": str(dirty).lower()}


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id, creating it; SQLite/file stores keep artifacts next to the database."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


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
    params = [Param(k, str(v)[:6000]) for k, v in cfg.flat().items()]
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


class MLflowCallback(Callback):
    """Mirror a rank-0 trainer's metrics, images, plots and checkpoints into an existing MLflow run."""

    def __init__(self, *, tracking_uri: str, run_id: str, writer: RunDirWriter, flush_every: int = 50) -> None:
        self.uri, self.run_id, self.writer, self.flush_every = tracking_uri, run_id, writer, flush_every
        self.client = MlflowClient(tracking_uri)
        self.pending: list[Metric] = []
        self.failed = False
        self.logged_through = 0  # steps up to this one are in MLflow already (a restarted worker group re-runs them)

    def on_fit_start(self, trainer) -> None:
        """A reopened run (restored, retried, resubmitted) may hold steps from the lost attempt past its checkpoint:
        those are not logged again."""
        try:
            history = self.client.get_metric_history(self.run_id, "energy/diff")
        except Exception:  # the failure shows, and is handled, at the first write
            history = []
        self.logged_through = max((m.step for m in history), default=0)

    def _safe(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        """Call the tracker; on the first failure say so once and stop tracking (files stay in the run dir)."""
        if self.failed:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:  # the server went away, a network error, a full disk on its side...
            self.failed = True
            warnings.warn(f"MLflow tracking at {self.uri} failed while logging {what} ({type(e).__name__}: {e}); "
                          f"tracking stops here, the run goes on and keeps everything in {self.writer.run_dir}",
                          stacklevel=2)

    def flush(self) -> None:
        batch, self.pending = self.pending, []
        for i in range(0, len(batch), 1000):
            self._safe("metrics", self.client.log_batch, self.run_id, metrics=batch[i:i + 1000])

    def on_step_end(self, trainer, step: int, metrics: dict[str, float]) -> None:
        if step <= self.logged_through:  # each step once in MLflow's history
            return
        ts = int(time.time() * 1000)
        self.pending.extend(Metric(k, float(v), ts, step) for k, v in metrics.items())
        if step % self.flush_every == 0:
            self.flush()

    def log_metrics(self, step: int, metrics: dict[str, float]) -> None:
        """Metrics computed outside the training loop (e.g. evaluation), logged at once."""
        ts = int(time.time() * 1000)
        self.pending.extend(Metric(k, float(v), ts, step) for k, v in metrics.items())
        self.flush()

    def on_images(self, trainer, step: int, tag: str, images) -> None:
        path = self.writer.paths.get(tag)
        if path is not None:
            self._safe(f"image {path.name}", self.client.log_artifact, self.run_id, str(path), "samples")

    def on_checkpoint(self, trainer, step: int, path: Path) -> None:
        self.flush()
        export = export_model(trainer.model_state(), Path(trainer.run_dir) / "exports" / f"ema_step_{step:07d}.pt")
        self._safe("EMA checkpoint", self.client.log_artifact, self.run_id, str(export), "checkpoints")

    def on_fit_end(self, trainer) -> None:
        self.flush()
        for key in ("energy_diff", "grad_norm"):
            if key in self.writer.paths:
                self._safe(f"plot {key}", self.client.log_artifact, self.run_id, str(self.writer.paths[key]), "plots")

    def log_model(self, trainer) -> None:
        """The logged model for evaluation jobs: ``runs:/<id>/model`` (pyfunc returning energies)."""
        export = export_model(trainer.model_state(), Path(trainer.run_dir) / "exports" / "model.pt")
        self._safe("model", _log_pyfunc, self.uri, self.run_id, export)

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
        self.flush()
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


def _log_pyfunc(uri: str, run_id: str, export: Path) -> None:
    import mlflow
    import mlflow.pyfunc

    from .pyfunc import EnergyModel

    with fluent_tracking_uri(uri), mlflow.start_run(run_id=run_id):
        mlflow.pyfunc.log_model(name=MODEL_ARTIFACT, python_model=EnergyModel(), artifacts={"model": str(export)},
                                pip_requirements=["ebm-core", "torch==2.14.1"])
        mlflow.set_tag("logged_model_uri", f"runs:/{run_id}/{MODEL_ARTIFACT}")


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
