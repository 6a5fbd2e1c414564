"""The numpy spec of every model, and the registry they fill (the model contract).

``metalearn_shared.models.<name>`` holds model ``<name>``'s config, its parameter specs and
reference forward pass (which both frameworks are tested against) and its
:class:`~metalearn_shared.registry.ModelSpec`, registered when the module is imported.
Importing this package imports every module in it (the built-in models), then the modules named in
``$METALEARN_PLUGINS`` (comma-separated) and the ``metalearn.models`` entry points: a model
defined outside the library registers the same way (``docs/architecture.md``).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Mapping
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from metalearn_shared import registry
from metalearn_shared.registry import ModelSpec, config_from_dict, default_config, get, names, specs
from metalearn_shared.weights import ParamSpec

__all__ = ["ModelSpec", "get", "names", "specs", "param_spec", "config_from_dict",
           "default_config", "checkpoint_config", "load_builtin", "load_plugins", "PLUGINS_ENV",
           "representatives"]

#: Environment variable: comma-separated modules that register models when imported.
PLUGINS_ENV = "METALEARN_PLUGINS"


def load_builtin() -> list[str]:
    """Import every module of this package (each spec module registers its models), in name
    order: a new model is its file here, nothing else to edit."""
    names = sorted(m.name for m in pkgutil.iter_modules(__path__))
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return names


def load_plugins() -> list[str]:
    """Import the modules in ``$METALEARN_PLUGINS`` and the ``metalearn.models`` entry
    points (each registers its models); returns the module names imported."""
    loaded = []
    for name in filter(None, (n.strip() for n in os.environ.get(PLUGINS_ENV, "").split(","))):
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ImportError(f"${PLUGINS_ENV} names {name!r}, which cannot be imported ({e}); "
                              "fix the module name or unset the variable.") from e
        loaded.append(name)
    for ep in entry_points(group="metalearn.models"):
        ep.load()
        loaded.append(ep.value)
    return loaded


def representatives() -> list[str]:
    """The first registered model of each implementation (its torch and Keras modules), in
    registration order. Models that share their modules (the MAML family: one class, a flag
    per learner) share every code path a framework runs; CI's slowest sweeps — the
    benchmarks' quick run and the parity CPU matrix — run these, the test suite every model.
    """
    seen: dict[tuple[str, ...], str] = {}
    for spec in specs():
        seen.setdefault(tuple(sorted(spec.implementations.items())), spec.name)
    return list(seen.values())


def param_spec(config: object) -> list[ParamSpec]:
    """The canonical parameter list of the model ``config`` describes."""
    return registry.get(config.model).param_spec(config)  # type: ignore[attr-defined]


def checkpoint_config(meta: Mapping[str, Any], path: str | Path) -> Any:
    """The model config a checkpoint's metadata records; ValueError when it is missing or
    malformed (a file written by something else, or edited)."""
    config = meta.get("config") if isinstance(meta, Mapping) else None
    if not isinstance(config, Mapping):
        raise ValueError(f"{path}: the checkpoint's metadata holds no model config; it was not "
                         "written by metalearn, or was edited.")
    try:
        return config_from_dict(dict(config))
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: the checkpoint's model config is malformed ({e}).") from e


load_builtin()
load_plugins()
