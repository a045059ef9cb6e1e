"""Ray Train / Tune jobs and MLflow tracking around ebm_core. Skeleton: issue 3."""
