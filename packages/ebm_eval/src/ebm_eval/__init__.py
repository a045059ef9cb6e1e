"""Evaluation of trained EBMs (FID/IS, OOD AUROC, compositional generation). Skeleton: issue 4."""
