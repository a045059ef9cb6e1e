"""The runtime environment of a ``ray job submit`` from this checkout: ``infra/runtime_env.yaml`` plus the
checkout's commit, which the job cannot read itself (Ray uploads the tree without ``.git``):

    ray job submit --address http://127.0.0.1:8265 --runtime-env-json "$(.venv/bin/python -m ebm_jobs.runtime_env)" \
        -- python -m ebm_jobs.train --preset demo

Run from the repository root; the job's MLflow run then carries the commit (``mlflow.source.git.commit``) and
whether the tree had uncommitted changes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from .source import COMMIT_ENV, DIRTY_ENV, git_commit


def runtime_env(path: str | Path = "infra/runtime_env.yaml") -> dict:
    env = yaml.safe_load(Path(path).read_text())
    sha, dirty = git_commit()
    env.setdefault("env_vars", {}).update({COMMIT_ENV: sha, DIRTY_ENV: str(dirty).lower()})
    return env


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ebm_jobs.runtime_env", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="infra/runtime_env.yaml", help="the runtime environment to extend")
    print(json.dumps(runtime_env(p.parse_args(argv).base)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
