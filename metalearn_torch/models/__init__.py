"""Model constructors for every name in :data:`metalearn_shared.config.MODEL_REGISTRY`.

``metalearn_torch.models.<name>`` implements model ``<name>`` and exposes
``build(config)``; :func:`build_model` dispatches through the registry.
"""

from __future__ import annotations

import importlib

from metalearn_shared.config import MODEL_REGISTRY, ModelConfig

__all__ = ["build_model", "available_models"]


def available_models() -> list[str]:
    """Registered names this framework implements (a module with ``build``)."""
    names = []
    for name in MODEL_REGISTRY:
        try:
            module = importlib.import_module(f"metalearn_torch.models.{name}")
        except ModuleNotFoundError:
            continue
        if hasattr(module, "build"):
            names.append(name)
    return names


def build_model(config: ModelConfig, seed: int | None = None):
    """Build (and, in Keras, build the variables of) the model ``config`` describes."""
    if config.model not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {config.model!r}; known: {sorted(MODEL_REGISTRY)}.")
    module = importlib.import_module(f"metalearn_torch.models.{config.model}")
    return module.build(config, seed=seed)
