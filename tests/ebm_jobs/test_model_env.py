"""The logged model outside the environment that trained it: a new virtual environment made from nothing but the
model's own requirements.txt loads it with mlflow.pyfunc and gives the same energies as in-process."""

import json
import shutil
import subprocess
import venv

import mlflow
import numpy as np
from mlflow.tracking import MlflowClient

from ebm_core.presets import get_preset
from ebm_jobs.run import train_run
from ebm_jobs.tracking import fluent_tracking_uri

LOAD = """
import json, sys
import numpy as np, mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
x = np.load(sys.argv[2])
print(json.dumps({"energy": model.predict(x).tolist(), "sys_path": [p for p in sys.path if "site-packages" in p]}))
"""


def test_the_registered_model_loads_in_a_fresh_environment_from_its_own_requirements(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = get_preset("test").override({"train.run_dir": str(tmp_path / "run"), "train.iterations": 2,
                                       "jobs.tracking_uri": uri, "jobs.system_metrics": False})
    out = train_run(cfg)
    with fluent_tracking_uri(uri):
        local = mlflow.artifacts.download_artifacts("models:/ebm-test-shapes@latest", dst_path=str(tmp_path / "m"))
        x = np.random.default_rng(1).random((4, 3, 16, 16), dtype=np.float32)
        expected = mlflow.pyfunc.load_model("models:/ebm-test-shapes@latest").predict(x)
    assert MlflowClient(uri).get_run(out.run_id).data.tags["registered_model"] == "models:/ebm-test-shapes/1"
    requirements = (tmp_path / "m" / "requirements.txt").read_text().split()
    assert "torch==2.14.1" in requirements and any(r.startswith("mlflow==") for r in requirements)
    assert not any(r.startswith(("ebm-", "ebm_")) for r in requirements)  # the project's packages ride as code paths
    np.save(tmp_path / "x.npy", x)

    env = tmp_path / "fresh"
    venv.create(env, with_pip=True)  # no system site-packages: only what the model asks for
    try:  # the environment holds a full torch (about 6 GB): removed at once, not left for pytest's last-3 rotation
        pip = subprocess.run([env / "bin" / "pip", "install", "-q", "--no-compile", "--no-cache-dir",
                              "--disable-pip-version-check", "-r", tmp_path / "m" / "requirements.txt"],
                             capture_output=True, text=True, timeout=900)
        assert pip.returncode == 0, pip.stderr[-3000:]
        loaded = subprocess.run([env / "bin" / "python", "-c", LOAD, local, tmp_path / "x.npy"], capture_output=True,
                                text=True, timeout=300, cwd=tmp_path)
    finally:
        shutil.rmtree(env, ignore_errors=True)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    result = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert all(str(env) in p for p in result["sys_path"])  # nothing from the training environment
    np.testing.assert_allclose(result["energy"], expected, rtol=1e-5, atol=1e-6)
