"""Measurements of energy-based models: FID/IS feature statistics, OOD AUROC, compositional accuracy and
the analyses behind the paper's figures and claims. Plain inputs (modules, tensors, paths) and typed
results; it imports neither Ray nor MLflow (the jobs layer, ebm_jobs, runs and records it)."""
