"""Model constructors for every registered model (:mod:`metalearn_shared.models`).

Each model's spec names the module that implements it here (by default
``metalearn_torch.models.<name>``), which exposes ``build(config, seed=None)``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from metalearn_shared import models as specs
from metalearn_shared.config import MEMORY_FORMATS, ModelConfig

__all__ = ["build_model", "available_models", "implementation", "objective", "memory_format",
           "use_memory_format"]

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


def memory_format(model: Any, compiled: bool = False, choice: str = "auto") -> str:
    """The memory format ``model`` trains and evaluates in: ``"channels-last"`` or
    ``"contiguous"`` (NCHW).

    ``choice`` ``"auto"`` (the trainer's and evaluator's default) is channels-last where the
    model says its eager step is faster so (its ``prefers_channels_last``, set from
    ``python -m benchmarks``: the conv models whose backbone runs as modules) and the
    step is not compiled (``compile-cl`` did not beat ``compile``); any other choice is
    taken as given. ``compiled``: ``--compile`` was asked for; a model that cannot be
    compiled (``compilable`` false) trains eager under it, and counts as eager here.
    """
    if choice not in MEMORY_FORMATS:
        raise ValueError(f"memory format {choice!r}: choose one of {', '.join(MEMORY_FORMATS)}.")
    if choice != "auto":
        return choice
    eager = not (compiled and getattr(model, "compilable", True))
    return "channels-last" if getattr(model, "prefers_channels_last", False) and eager \
        else "contiguous"


def use_memory_format(model: Any, fmt: str) -> Any:
    """Lay ``model``'s 4-D parameters and buffers out in ``fmt`` (in place; returned).

    The same ``Parameter`` objects keep their values (an optimiser built before still
    holds them); a channels-last backbone converts its input to channels-last as well.
    """
    import torch

    layout = {"channels-last": torch.channels_last, "contiguous": torch.contiguous_format}
    if fmt not in layout:
        raise ValueError(f"memory format {fmt!r}: choose one of {', '.join(layout)}.")
    return model.to(memory_format=layout[fmt])


def objective(model: Any, inputs: Sequence[Any], target: Any, loss_fn: Callable[..., Any],
              forward: Callable[..., Any] | None = None) -> tuple[Any, Any]:
    """A training step's ``(loss, output)``: ``loss`` is what ``backward()`` differentiates
    (and the log shows), ``output`` what ``batch_accuracy`` reads.

    Every trainer, the distributed step, the parity driver and the benchmarks call this.
    It is ``loss_fn(forward(*inputs), target)`` (``forward``: a compiled or DDP-wrapped
    model; default the model), unless the model has an ``objective(inputs, target, loss_fn,
    forward)`` method of its own: a learner whose update is not the gradient of its output's
    loss (Reptile).
    """
    own = getattr(model, "objective", None)
    if own is not None:
        return own(inputs, target, loss_fn, forward)
    output = (model if forward is None else forward)(*inputs)
    return loss_fn(output, target), output
