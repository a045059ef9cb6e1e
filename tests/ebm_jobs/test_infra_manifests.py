"""The cluster manifests, checked as far as this machine can: Ray's autoscaler schema for the cluster launcher,
Kubernetes' own schemas (kubernetes-validate, offline) for every pod template, Deployment, Service and claim, and
field tests for what KubeRay's RayJob reads (its CRD is not on the package registry). The image definition is
checked against scripts/install.sh: the same pins, the packages installed from the checkout, not editable."""

import json
import re
import shlex
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import ray.autoscaler
import yaml

from ebm_core.runs import config_from_args
from ebm_jobs.train import parser

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
K8S_VERSION = "1.32"
IMAGE = "YOUR-REGISTRY/ebm-platform:0.1.0"  # infra/docker/Dockerfile, as every manifest names it


def docs(name: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((INFRA / "k8s" / name).read_text()) if d]


def k8s_valid(resource: dict) -> None:
    kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


@pytest.fixture(scope="module")
def rayjob() -> dict:
    (job,) = docs("rayjob.yaml")
    return job


def pod_templates(job: dict) -> dict[str, dict]:
    spec = job["spec"]["rayClusterSpec"]
    return {"head": spec["headGroupSpec"]["template"], "submitter": job["spec"]["submitterPodTemplate"],
            **{g["groupName"]: g["template"] for g in spec["workerGroupSpecs"]}}


def test_cluster_launcher_yaml_matches_rays_schema_and_runs_the_projects_image():
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    config = yaml.safe_load((INFRA / "cluster" / "ray-cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]
    assert any("GPU" in t["resources"] for t in config["available_node_types"].values())
    assert config["docker"]["image"] == IMAGE  # Ray and the packages come from the image...
    assert not config.get("setup_commands")  # ...not from an install on the machine's system Python
    assert list(config["file_mounts"].values()) == ["~/.ray/auth_token"]  # no local checkout, .venv or runs/
    assert any("--shm-size" in o for o in config["docker"]["run_options"])
    for cmd in config["head_start_ray_commands"][1:] + config["worker_start_ray_commands"][1:]:
        assert cmd.startswith("RAY_AUTH_MODE=token ray start")
    assert "--dashboard-host=127.0.0.1" in config["head_start_ray_commands"][1]  # reached through `ray dashboard`


def test_every_pod_template_is_valid_kubernetes(rayjob):
    for name, template in pod_templates(rayjob).items():
        k8s_valid({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": name}, "template": template})
    with pytest.raises(kubernetes_validate.ValidationError):  # the check is real: a typo is caught
        bad = pod_templates(rayjob)["head"]["spec"]["containers"][0] | {"volumeMount": []}
        k8s_valid({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "x"},
                   "template": {"spec": {"containers": [bad]}}})


def test_rayjob_has_what_kuberay_and_the_job_need(rayjob):
    assert (rayjob["apiVersion"], rayjob["kind"]) == ("ray.io/v1", "RayJob")
    spec = rayjob["spec"]
    known = {"entrypoint", "backoffLimit", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished",
             "submitterPodTemplate", "rayClusterSpec", "runtimeEnvYAML", "activeDeadlineSeconds", "submissionMode"}
    assert set(spec) <= known  # KubeRay ignores unknown fields silently; a misspelt one would do nothing
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == ray.__version__
    head = cluster["headGroupSpec"]
    assert head["rayStartParams"]["dashboard-host"] == "0.0.0.0"  # KubeRay's submitter must reach the dashboard
    assert all(isinstance(v, str) for v in head["rayStartParams"].values())  # KubeRay wants strings
    for name, template in pod_templates(rayjob).items():
        pod = template["spec"]
        for c in pod["containers"]:
            assert c["image"] == IMAGE, name
            env = {e["name"]: e for e in c["env"]}
            assert env["RAY_AUTH_MODE"]["value"] == "token", name
            assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "ebm-ray-token", "key": "token"}
        if name == "submitter":
            continue
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert volumes[mounts["/dev/shm"]]["emptyDir"]["medium"] == "Memory", name
        assert volumes[mounts["/shared"]]["persistentVolumeClaim"]["claimName"] == "ebm-shared", name
    for group in cluster["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits["nvidia.com/gpu"] == "1"


def test_rayjob_entrypoint_is_a_valid_resumable_run_on_shared_storage(rayjob):
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:3] == ["python", "-m", "ebm_jobs.train"]
    args = parser().parse_args(argv[3:])
    cfg = config_from_args(args)  # every --set names a real field with a valid value
    assert args.resume and args.run_name  # a KubeRay retry continues the same run
    assert cfg.jobs.storage_path.startswith("/shared/")  # on the ReadWriteMany claim every pod mounts
    assert cfg.data.root.startswith("/shared/")
    workers = sum(g["replicas"] for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"])
    assert cfg.jobs.use_gpu and cfg.jobs.num_workers == workers
    service = next(d for d in docs("mlflow.yaml") if d["kind"] == "Service")
    assert cfg.jobs.tracking_uri == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"


def test_storage_and_mlflow_manifests_are_valid_kubernetes():
    claims = {d["metadata"]["name"]: d for d in docs("storage.yaml")}
    assert claims["ebm-shared"]["spec"]["accessModes"] == ["ReadWriteMany"]  # every node mounts the runs
    for d in docs("storage.yaml") + docs("mlflow.yaml"):
        k8s_valid(d)
    deploy = next(d for d in docs("mlflow.yaml") if d["kind"] == "Deployment")
    container = deploy["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == IMAGE and container["command"][:2] == ["mlflow", "server"]
    assert deploy["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] in claims


def test_dockerfile_installs_the_packages_with_install_shs_pins():
    docker = (INFRA / "docker" / "Dockerfile").read_text()
    install = (ROOT / "scripts" / "install.sh").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+-runtime-ubuntu", docker, re.M)
    pins = set(re.findall(r'"(torch(?:vision)?==[\d.]+)"', install))
    assert pins and pins == set(re.findall(r'"(torch(?:vision)?==[\d.]+)"', docker))
    line = next(line for line in docker.splitlines() if "pip install" in line)
    assert all(f"./packages/{p}" in line for p in ("ebm_core", "ebm_eval", "ebm_jobs")) and " -e " not in line
    assert "python3.11" in docker and "ebm-platform" in docker
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ignore[ignore.index("*") + 1] == "!packages/"  # the build context is the packages, never .venv or runs
