"""ebm_core: energy-based models trained with improved contrastive divergence.

Du, Li, Tenenbaum, Mordatch. "Improved Contrastive Divergence Training of Energy-Based Models",
ICML 2021. One module per idea: ``langevin`` (sampler), ``augment`` (transitions), ``buffer``,
``losses`` (Eqs. 5, 7, 8), ``models``, ``trainer`` (Algorithm 1), ``pipeline`` (Algorithm 2).
"""

from .buffer import ReplayBuffer
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import Config, ConfigError
from .data import DatasetError, ImageSet, load_dataset
from .presets import get_preset
from .trainer import DivergenceError, Trainer

__all__ = ["CheckpointError", "Config", "ConfigError", "DatasetError", "DivergenceError", "ImageSet", "ReplayBuffer",
           "Trainer", "get_preset", "load_checkpoint", "load_dataset", "save_checkpoint"]
