"""The logged MLflow model: a pyfunc whose ``predict`` returns energies E(x) of images (N, C, H, W) in [0, 1].

Evaluation jobs read the model export inside it (``artifacts/model.pt``) with ``ebm_core.pipeline.load_model``.
"""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import torch


class EnergyModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from ebm_core.pipeline import load_model

        self.model, self.cfg = load_model(context.artifacts["model"])

    def predict(self, context, model_input, params=None) -> np.ndarray:
        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.model(x).numpy()
