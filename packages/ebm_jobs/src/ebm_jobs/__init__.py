"""Orchestration around ebm_core and ebm_eval: Ray Train jobs, Ray Tune sweeps, MLflow tracking,
evaluation jobs on stored models and the paper's reproduction (``ebm sweep``, ``ebm eval``,
``ebm reproduce``)."""
