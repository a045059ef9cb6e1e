"""Integration fixtures: a real local Ray instance per module and real MLflow stores."""

import os

import pytest

os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # checkpointed reports wait 2 s by default
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def ray_local():
    import ray

    from ebm_jobs.cluster import init_ray

    # Always private ("local"): a head left running by the demo, or $RAY_ADDRESS, must change nothing.
    init_ray("local", num_cpus=3, log_to_driver=False)  # a trial plus 2 workers fit on 2 cores
    yield ray
    ray.shutdown()
