"""Model constructors for every name in :data:`metalearn_shared.config.MODEL_REGISTRY`.

``metalearn_tf.models.<name>`` implements model ``<name>`` and exposes
``build(config, seed=None)``; the dispatch itself is shared
(:func:`metalearn_shared.models.framework_build`).
"""

from __future__ import annotations

from typing import Any

from metalearn_shared.config import ModelConfig
from metalearn_shared.models import framework_build, framework_models

__all__ = ["build_model", "available_models"]


def available_models() -> list[str]:
    """Registered names this framework implements."""
    return framework_models("metalearn_tf")


def build_model(config: ModelConfig, seed: int | None = None) -> Any:
    """Build (in Keras: with its variables created) the model ``config`` describes."""
    return framework_build("metalearn_tf", config, seed)
