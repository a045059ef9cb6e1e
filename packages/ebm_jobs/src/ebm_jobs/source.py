"""Which code a run ran: the commit of the checkout, or what the submitter of a job recorded for it."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

COMMIT_ENV, DIRTY_ENV = "EBM_GIT_COMMIT", "EBM_GIT_DIRTY"  # set for a submitted job (``runtime_env.py``)


def git_commit() -> tuple[str, bool]:
    """(HEAD's sha, whether tracked files differ from it) of the checkout these packages run from, else what the
    submitter recorded in ``$EBM_GIT_COMMIT``/``$EBM_GIT_DIRTY`` (a job's copy of the tree has no ``.git``);
    ("unknown", False) when neither says."""
    if os.environ.get(COMMIT_ENV):
        return os.environ[COMMIT_ENV], os.environ.get(DIRTY_ENV) == "true"
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
