"""Where a run lives: one root, ``<jobs.storage_path>/<run name>``, that every node of the cluster reaches.

The root is a directory on a filesystem mounted at the same path on every node (a laptop's disk,
NFS, a Kubernetes ReadWriteMany volume) or a URI that ``pyarrow.fs`` opens (``s3://``, ``gs://``,
``hdfs://``, ``file://``), as Ray's own storage is. It holds everything the run writes:

    <root>/job.json                       the job's config and name (written by the driver)
    <root>/tracking.json                  MLflow URI, run id, status, step (written by the logging worker)
    <root>/metrics.jsonl, samples/, plots/, checkpoints/, exports/, config.yaml   (rank 0; ``RunDirWriter``)
    <root>/checkpoint_<time>/             Ray's checkpoints: every worker's buffer and RNG states (``worker.py``)
    <root>/trial_result.json              a sweep trial's final report to Tune, once it has finished (``sweep.py``)

On a filesystem path rank 0 writes into the root directly. On a URI it writes a scratch copy on its
own node (``tempfile.gettempdir()``) and ``Mirror`` uploads what changed at every checkpoint and at
the end; a run restored on another node first downloads the root into its scratch copy.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from ebm_core.callbacks import Callback
from ebm_core.config import ConfigError

JOB_FILE = "job.json"
TRACKING_FILE = "tracking.json"
QUALITY_FILE = "quality.json"  # the quality figures of the final EMA model (ebm_eval.quality)
TRIAL_RESULT_FILE = "trial_result.json"  # a finished sweep trial's final report (a restored sweep reports it again)
RAY_CHECKPOINT_PREFIX = "checkpoint_"  # Ray Train's own checkpoint directories; never mirrored into a scratch copy


@dataclass
class RunStorage:
    """A run's root: ``root/name`` on a shared filesystem path or a ``pyarrow.fs`` URI."""

    root: str  # absolute path or URI: Ray's RunConfig(storage_path)
    name: str  # the run's name: Ray's RunConfig(name), the MLflow run name, the directory name
    _uploaded: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)  # rel path -> (mtime_ns, size)

    @classmethod
    def at(cls, root: str) -> "RunStorage":
        """The storage of a run root written out in full (``s3://bucket/runs/x``, ``/mnt/runs/x``)."""
        parent, name = root.rstrip("/").rsplit("/", 1)
        return cls(parent or "/", name)

    @property
    def is_uri(self) -> bool:
        return "://" in self.root

    @property
    def uri(self) -> str:
        """The run root as the user writes it."""
        return f"{self.root.rstrip('/')}/{self.name}"

    def filesystem(self) -> tuple[pafs.FileSystem, str]:
        """(filesystem, path of the run root on it)."""
        if self.is_uri:
            fs, path = pafs.FileSystem.from_uri(self.root)
            return fs, f"{path.rstrip('/')}/{self.name}"
        return pafs.LocalFileSystem(), str(Path(self.root) / self.name)

    def local_dir(self) -> Path:
        """Where rank 0 writes on this node: the root itself on a filesystem path, else a scratch copy."""
        if not self.is_uri:
            return Path(self.root) / self.name
        return Path(tempfile.gettempdir()) / "ebm-runs" / self.name

    # small files ------------------------------------------------------------------------------------------
    def read_json(self, rel: str) -> dict[str, Any] | None:
        fs, base = self.filesystem()
        try:
            with fs.open_input_stream(f"{base}/{rel}") as f:
                return json.loads(f.read().decode())
        except FileNotFoundError:
            return None

    def write_json(self, rel: str, obj: dict[str, Any]) -> None:
        """Write ``rel`` under the root (through a temporary name on a filesystem path: readers never see half)."""
        fs, base = self.filesystem()
        fs.create_dir(base, recursive=True)
        data = json.dumps(obj, indent=2).encode()
        if self.is_uri:  # object stores write whole objects
            with fs.open_output_stream(f"{base}/{rel}") as f:
                f.write(data)
            return
        tmp = Path(base) / f".{rel}.{uuid.uuid4().hex}"
        tmp.write_bytes(data)
        os.replace(tmp, Path(base) / rel)

    def entries(self) -> list[str]:
        """Names directly under the root ([] when it does not exist)."""
        fs, base = self.filesystem()
        info = fs.get_file_info(base)
        if info.type == pafs.FileType.NotFound:
            return []
        if info.type != pafs.FileType.Directory:
            raise ConfigError(f"run root {self.uri} is a file, not a directory (nothing was written)")
        return sorted(Path(i.path).name for i in fs.get_file_info(pafs.FileSelector(base)))

    # mirroring --------------------------------------------------------------------------------------------
    def upload(self, local: Path) -> int:
        """Copy the files under ``local`` that changed since the last upload to the root; delete there those
        removed here (pruned checkpoints). Returns the number of files copied. No-op on a filesystem path."""
        if not self.is_uri or not local.is_dir():
            return 0
        fs, base = self.filesystem()
        seen: dict[str, tuple[int, int]] = {}
        copied = 0
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            rel = path.relative_to(local).as_posix()
            st = path.stat()
            seen[rel] = (st.st_mtime_ns, st.st_size)
            if self._uploaded.get(rel) == seen[rel]:
                continue
            parent = Path(rel).parent
            fs.create_dir(base if parent == Path(".") else f"{base}/{parent.as_posix()}", recursive=True)
            pafs.copy_files(str(path), f"{base}/{rel}", source_filesystem=pafs.LocalFileSystem(),
                            destination_filesystem=fs)
            copied += 1
        for rel in set(self._uploaded) - set(seen):
            fs.delete_file(f"{base}/{rel}")
        self._uploaded = seen
        return copied

    def download(self, local: Path) -> None:
        """Fill an empty scratch copy from the root (all but Ray's own checkpoints), e.g. on a node new to the run."""
        if not self.is_uri:
            return
        fs, base = self.filesystem()
        local.mkdir(parents=True, exist_ok=True)
        if fs.get_file_info(base).type != pafs.FileType.Directory:
            return
        for info in fs.get_file_info(pafs.FileSelector(base, recursive=True)):
            rel = Path(info.path).relative_to(base)
            if info.type != pafs.FileType.File or rel.parts[0].startswith(RAY_CHECKPOINT_PREFIX):
                continue
            (local / rel).parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(info.path, str(local / rel), source_filesystem=fs,
                            destination_filesystem=pafs.LocalFileSystem())
            st = (local / rel).stat()
            self._uploaded[rel.as_posix()] = (st.st_mtime_ns, st.st_size)


def storage_for(storage_path: str | None, run_dir: str | Path) -> RunStorage:
    """The run's storage: ``run_dir`` itself when ``jobs.storage_path`` is unset (one machine), else
    ``<storage_path>/<run name>``; the run's name is always ``run_dir``'s last part."""
    name = Path(run_dir).name
    if storage_path is None:
        return RunStorage(str(Path(run_dir).expanduser().resolve().parent), name)
    if "://" in storage_path:
        return RunStorage(storage_path.rstrip("/"), name)
    path = Path(storage_path).expanduser()
    if not path.is_absolute():
        raise ConfigError(f"jobs.storage_path: {storage_path!r} is relative; give an absolute path that every node "
                          f"mounts at the same place, or a URI such as s3://bucket/prefix")
    return RunStorage(str(path), name)


def check_writable(storage: RunStorage) -> None:
    """Create the root (or its parent directory) and prove it takes a file, before any work."""
    fs, base = storage.filesystem()
    probe = f"{base}/.ebm-write-check-{uuid.uuid4().hex}"
    try:
        fs.create_dir(base, recursive=True)
        with fs.open_output_stream(probe) as f:
            f.write(b"ok")
        fs.delete_file(probe)
    except (OSError, ValueError) as e:
        raise ConfigError(f"jobs.storage_path: cannot write under {storage.uri} ({type(e).__name__}: {e}); "
                          f"nothing was written") from None


def check_shared(storage: RunStorage) -> None:
    """On a multi-node Ray cluster, refuse a filesystem path that some node cannot see (before any work).

    A marker file is written under the root here, then a zero-CPU task pinned to each alive node looks
    for it. Ray itself only finds out at the first checkpoint upload, after training has started.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    if storage.is_uri or len(nodes) < 2:
        return
    marker = Path(storage.root) / storage.name / f".ebm-shared-check-{uuid.uuid4().hex}"
    marker.write_text("written by the driver")

    @ray.remote(num_cpus=0)
    def sees(path: str) -> bool:
        return os.path.exists(path)

    try:
        found = ray.get([sees.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                         .remote(str(marker)) for n in nodes], timeout=120)
    finally:
        marker.unlink(missing_ok=True)
    blind = [n.get("NodeManagerAddress", n["NodeID"]) for n, ok in zip(nodes, found) if not ok]
    if blind:
        raise ConfigError(
            f"jobs.storage_path: {storage.root} is a local path that {len(blind)} of the cluster's {len(nodes)} nodes "
            f"cannot see ({', '.join(blind)}). The workers that write checkpoints, samples and metrics may run on any "
            f"node, so the run's root must be shared: a filesystem mounted at the same path on every node (NFS, a "
            f"ReadWriteMany volume) or a URI such as s3://bucket/prefix. Nothing was written.")


class Mirror(Callback):
    """Rank 0 on URI storage: upload the scratch run directory at every checkpoint and at the end of the fit."""

    def __init__(self, storage: RunStorage, local: Path) -> None:
        self.storage, self.local = storage, local

    def on_checkpoint(self, trainer, step: int, path: Path) -> None:
        self.storage.upload(self.local)

    def on_fit_end(self, trainer) -> None:
        self.storage.upload(self.local)
