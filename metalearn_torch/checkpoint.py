"""PyTorch side of the canonical weights: canonical names are ``state_dict`` keys.

Loading never unpickles: canonical checkpoints are safetensors files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metalearn_shared.models import param_spec
from metalearn_shared.weights import load_canonical, save_canonical, to_canonical, to_framework

__all__ = ["get_canonical", "set_canonical", "save_checkpoint", "load_checkpoint", "save_state_dict"]


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    # num_batches_tracked only matters for momentum=None, which metalearn never uses.
    return {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def get_canonical(model: nn.Module) -> dict[str, np.ndarray]:
    """The model's parameters and buffers as canonical numpy arrays (copies)."""
    arrays = {k: v.detach().cpu().numpy().copy() for k, v in _state(model).items()}
    return to_canonical(arrays, param_spec(model.config), "torch")


def set_canonical(model: nn.Module, canonical: dict[str, np.ndarray]) -> None:
    """Copy canonical arrays into the model in place (strict: every key, every shape)."""
    state = _state(model)
    with torch.no_grad():
        for name, value in to_framework(canonical, param_spec(model.config), "torch").items():
            state[name].copy_(torch.from_numpy(np.ascontiguousarray(value)))


def save_checkpoint(model: nn.Module, path: str | Path, **metadata: Any) -> Path:
    """Canonical checkpoint (safetensors + JSON metadata) from a torch model."""
    import metalearn_shared

    meta = {"metalearn_version": metalearn_shared.__version__, "torch_version": torch.__version__,
            "model": model.config.model, "config": model.config.to_dict(),
            "source_framework": "torch", **metadata}
    return save_canonical(path, get_canonical(model), meta)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a canonical checkpoint describes and load its weights."""
    from metalearn_shared.models import checkpoint_config
    from metalearn_torch.models import build_model

    arrays, meta = load_canonical(path)
    model = build_model(checkpoint_config(meta, path))
    set_canonical(model, arrays)
    return model, meta


def save_state_dict(model: nn.Module, path: str | Path, metadata: dict[str, Any]) -> Path:
    """The full torch ``state_dict`` (``num_batches_tracked`` included) as safetensors, so
    ``model.load_state_dict(safetensors.torch.load_file(path))`` works; atomic write."""
    state = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    return save_canonical(path, state, {**metadata, "torch_version": torch.__version__})
