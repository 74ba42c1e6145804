"""The model zoo: ST-RAN, its ablations and the state-of-the-art comparison networks (see docs/models.md).

Every network takes (B, 1, S, T, H, W) and returns ``{"study_logit": (B,), "slice_logits": (B, S),
"attention": (B, S, T, H, W) in [0, 1]}``.
"""

from .checkpoint import (
    CheckpointCompatibilityError,
    CheckpointError,
    CheckpointIntegrityError,
    NotAStranCheckpointError,
    load_checkpoint,
    model_sha256,
    save_checkpoint,
)
from .common import enable_mc_dropout, mc_dropout_layers, run_model, set_attention_enabled
from .registry import available_models, build_model, default_config, model_options, resolve_config

__all__ = [
    "CheckpointCompatibilityError",
    "CheckpointError",
    "CheckpointIntegrityError",
    "NotAStranCheckpointError",
    "available_models",
    "build_model",
    "default_config",
    "enable_mc_dropout",
    "load_checkpoint",
    "mc_dropout_layers",
    "model_options",
    "model_sha256",
    "resolve_config",
    "run_model",
    "save_checkpoint",
    "set_attention_enabled",
]
