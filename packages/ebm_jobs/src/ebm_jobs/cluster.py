"""Which Ray a job runs on: the cluster the user means, or a private local instance, never one by accident.

``ray.init()`` with no address attaches to any head running on the machine (it reads Ray's
current-cluster file), e.g. the one ``infra/local/start.sh`` left running, and then refuses
``num_cpus``. So the address is always explicit here: ``$RAY_ADDRESS`` when set (``ray job submit``
sets it for its entrypoint; set it yourself to drive a cluster from a shell), otherwise
``"local"``, which always starts a private instance that ends with the process.
"""

from __future__ import annotations

import os
from typing import Any


def ray_address() -> str:
    """``$RAY_ADDRESS`` if set and non-empty, else ``"local"`` (a new private instance)."""
    return os.environ.get("RAY_ADDRESS") or "local"


def init_ray(address: str | None = None, *, num_cpus: int | None = None, **kwargs: Any) -> None:
    """Start or attach Ray once per process; ``num_cpus`` sizes a private instance only (a cluster has its own)."""
    import ray

    if ray.is_initialized():
        return
    address = address or ray_address()
    if address == "local":
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, **kwargs)
    else:
        ray.init(address=address, **kwargs)
