"""The logged MLflow model: a pyfunc whose ``predict`` returns energies E(x) of images (N, C, H, W) in [0, 1], or,
for a conditional model, E(x | y) of ``{"x": images, "labels": label rows (N, k) of class indices}``.

Evaluation jobs read the model export inside it (``artifacts/model.pt``) with ``ebm_core.pipeline.load_model``.
It carries a tensor signature and an input example, and loads in a fresh environment: the project's
packages travel inside it as code paths, and its requirements pin what ``ebm_core`` needs to the
versions it was trained with. Each logged model is registered (name from ``jobs.model_name``, else
``ebm-<preset>-<dataset>``): ``models:/<name>@latest`` is its newest version (MLflow reserves that alias
and resolves it itself), ``models:/<name>@best`` the version a sweep chose.
"""

from __future__ import annotations

import re
from importlib.metadata import requires, version
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import torch

MODEL_ARTIFACT = "model"  # runs:/<id>/model holds the logged model; its artifacts hold model.pt


class EnergyModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from ebm_core.pipeline import load_model

        self.model, self.cfg = load_model(context.artifacts["model"])

    def predict(self, context, model_input, params=None) -> np.ndarray:
        labels = None
        if isinstance(model_input, dict):  # a conditional model's named inputs
            labels = torch.as_tensor(np.asarray(model_input["labels"], dtype=np.int64))
            model_input = model_input["x"]
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.model(x, labels).numpy()


def requirements() -> list[str]:
    """``ebm_core``'s own requirements, pinned to the versions installed here."""
    names = {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0] for r in requires("ebm-core") or [] if "extra ==" not in r}
    return sorted(f"{n}=={version(n)}" for n in names)


def code_paths() -> list[str]:
    """The packages the model imports (``ebm_core`` to build the network, ``ebm_jobs`` for this class)."""
    import ebm_core
    import ebm_jobs

    return [str(Path(ebm_core.__file__).parent), str(Path(ebm_jobs.__file__).parent)]


def log_energy_model(export: Path, *, shape: tuple[int, int, int], registered_name: str,
                     num_classes: tuple[int, ...] = ()):
    """Log ``export`` as the active run's model and register it (a new version of ``registered_name``); returns
    MLflow's ``ModelInfo``. A conditional model (``num_classes``, the cardinality of each label column) takes named
    inputs ``x`` and ``labels``, and its signature and input example say so."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    rng = np.random.default_rng(0)
    images = TensorSpec(np.dtype(np.float32), (-1, *shape), name="x" if num_classes else None)
    example = rng.random((2, *shape), dtype=np.float32)
    inputs = [images]
    if num_classes:
        inputs.append(TensorSpec(np.dtype(np.int64), (-1, len(num_classes)), name="labels"))
        example = {"x": example, "labels": np.stack([rng.integers(0, k, 2) for k in num_classes], 1)}
    signature = ModelSignature(inputs=Schema(inputs), outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,))]))
    info = mlflow.pyfunc.log_model(name=MODEL_ARTIFACT, python_model=EnergyModel(), artifacts={"model": str(export)},
                                   code_paths=code_paths(), pip_requirements=requirements(), signature=signature,
                                   input_example=example, registered_model_name=registered_name)
    return info
