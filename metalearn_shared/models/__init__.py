"""The numpy spec of every registered model: parameter specs and reference forward passes.

``metalearn_shared.models.<name>`` holds, for model ``<name>`` of the registry,
``param_spec(config) -> list[ParamSpec]`` (canonical names, shapes, layouts) and a numpy
reference forward pass that both frameworks are tested against.
"""

from __future__ import annotations

import importlib

from metalearn_shared.config import MODEL_REGISTRY, ModelConfig
from metalearn_shared.weights import ParamSpec

__all__ = ["param_spec", "framework_models", "framework_build"]


def param_spec(config: ModelConfig) -> list[ParamSpec]:
    """The canonical parameter list of the model ``config`` describes."""
    if config.model not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {config.model!r}; known: {sorted(MODEL_REGISTRY)}.")
    module = importlib.import_module(f"metalearn_shared.models.{config.model}")
    return module.param_spec(config)


def framework_models(package: str) -> list[str]:
    """Registered names that framework ``package`` implements (a module with ``build``)."""
    names = []
    for name in MODEL_REGISTRY:
        try:
            module = importlib.import_module(f"{package}.models.{name}")
        except ModuleNotFoundError:
            continue
        if hasattr(module, "build"):
            names.append(name)
    return names


def framework_build(package: str, config: ModelConfig, seed: int | None = None):
    """``{package}.models.<config.model>.build(config, seed)`` — the registry dispatch."""
    if config.model not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {config.model!r}; known: {sorted(MODEL_REGISTRY)}.")
    module = importlib.import_module(f"{package}.models.{config.model}")
    return module.build(config, seed=seed)
