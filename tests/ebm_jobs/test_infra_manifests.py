"""The cluster launcher YAML passes Ray's autoscaler schema; the KubeRay RayJob has the fields KubeRay needs."""

import json
from pathlib import Path

import jsonschema
import ray.autoscaler
import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"


def test_cluster_launcher_yaml_matches_rays_schema():
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((INFRA / "cluster" / "ray-cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]
    assert any("GPU" in t["resources"] for t in config["available_node_types"].values())


def test_rayjob_manifest_has_the_required_fields():
    job = yaml.safe_load((INFRA / "k8s" / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    spec = job["spec"]
    assert spec["entrypoint"].startswith("python -m ebm_jobs.train")
    cluster = spec["rayClusterSpec"]
    assert cluster["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    for group in cluster["workerGroupSpecs"]:
        assert group["groupName"] and group["replicas"] <= group["maxReplicas"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert "nvidia.com/gpu" in limits
