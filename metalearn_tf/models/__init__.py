"""Model constructors for every registered model (:mod:`metalearn_shared.models`).

Each model's spec names the module that implements it here (by default
``metalearn_tf.models.<name>``), which exposes ``build(config, seed=None)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Any

from metalearn_shared import models as specs
from metalearn_shared.config import ModelConfig

__all__ = ["build_model", "available_models", "implementation", "objective"]

FRAMEWORK = "keras"


def implementation(name: str) -> ModuleType:
    """The module implementing registered model ``name`` in this framework."""
    module = specs.get(name).implementation(FRAMEWORK)
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name != module:
            raise
        raise ValueError(f"model {name!r} has no keras implementation: its spec names "
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


def objective(model: Any, inputs: Any, target: Any, loss_fn: Callable[[Any, Any], Any]
              ) -> tuple[Any, Any]:
    """A training step's ``(loss, output)``, under the caller's ``tf.GradientTape``:
    ``loss`` is what the tape differentiates (and the log shows), ``output`` what
    ``batch_accuracy`` reads; ``loss_fn(target, output)`` is Keras' argument order.

    The distributed step and the parity driver call this. It is ``loss_fn(target,
    model(inputs, training=True))`` — what Keras' own ``train_step`` (``fit``) computes —
    unless the model has an ``objective(inputs, target, loss_fn)`` method of its own: a
    learner whose update is not the gradient of its output's loss (Reptile), which then
    overrides ``train_step`` with it too.
    """
    own = getattr(model, "objective", None)
    if own is not None:
        return own(inputs, target, loss_fn)
    output = model(inputs, training=True)
    return loss_fn(target, output), output
