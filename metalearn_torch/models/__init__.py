"""Model constructors for every registered model (:mod:`metalearn_shared.models`).

Each model's spec names the module that implements it here (by default
``metalearn_torch.models.<name>``), which exposes ``build(config, seed=None)``.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from metalearn_shared import models as specs
from metalearn_shared.config import ModelConfig

__all__ = ["build_model", "available_models", "implementation"]

FRAMEWORK = "torch"


def implementation(name: str) -> ModuleType:
    """The module implementing registered model ``name`` in this framework."""
    module = specs.get(name).implementation(FRAMEWORK)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise ValueError(f"model {name!r} has no torch implementation: its spec names "
                         f"{module!r}, which does not exist.") from e


def available_models() -> list[str]:
    """Registered names this framework implements (a module with ``build``)."""
    out = []
    for name in specs.names():
        try:
            if hasattr(implementation(name), "build"):
                out.append(name)
        except ValueError:
            continue
    return out


def build_model(config: ModelConfig, seed: int | None = None) -> Any:
    """Build (in Keras: with its variables created) the model ``config`` describes."""
    return implementation(config.model).build(config, seed=seed)
