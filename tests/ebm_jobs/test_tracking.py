"""Tracking helpers without Ray: URI resolution, tags, the scoped fluent URI, reachability."""

import os

import mlflow

from ebm_core.presets import get_preset
from ebm_jobs.tracking import fluent_tracking_uri, resolve_tracking_uri, run_tags, server_reachable


def test_tracking_uri_resolution(tmp_path, monkeypatch):
    cfg = get_preset("test").override({"train.run_dir": str(tmp_path / "run")})
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(cfg) == f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri(cfg) == "http://127.0.0.1:5999"
    assert resolve_tracking_uri(cfg.override({"jobs.tracking_uri": "sqlite:///x.db"})) == "sqlite:///x.db"


def test_fluent_uri_is_restored(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///outer.db")
    with fluent_tracking_uri(f"sqlite:///{tmp_path}/inner.db"):
        assert mlflow.get_tracking_uri().endswith("inner.db")
    assert os.environ["MLFLOW_TRACKING_URI"] == "sqlite:///outer.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with fluent_tracking_uri(f"sqlite:///{tmp_path}/inner.db"):
        pass
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_tags_and_reachability():
    tags = run_tags(get_preset("test").override({"loss.use_ent": False}))
    assert tags["kl_terms"] == "opt" and tags["preset"] == "test" and tags["dataset"] == "shapes"
    assert len(tags["git_commit"]) in (40, 7) or tags["git_commit"] == "unknown"
    assert server_reachable("sqlite:///anything.db")
    assert not server_reachable("http://127.0.0.1:9", timeout=1)
