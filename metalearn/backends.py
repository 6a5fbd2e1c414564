"""The one place that maps a framework name to its backend module
(:class:`metalearn_shared.backend.Backend`): ``get("torch")`` is ``metalearn_torch.backend``,
``get("keras")`` (alias ``tf``) is ``metalearn_tf.backend``."""

from __future__ import annotations

import importlib
from types import ModuleType

from metalearn_shared.registry import FRAMEWORKS, canonical_framework

__all__ = ["FRAMEWORKS", "MODULES", "FrameworkMissing", "get", "canonical_framework"]

#: Canonical framework name → its backend module.
MODULES = {"torch": "metalearn_torch.backend", "keras": "metalearn_tf.backend"}
_EXTRAS = {"torch": "torch", "keras": "tf"}


class FrameworkMissing(ImportError):
    """The framework a command needs is not installed; the message says how to install it."""


def get(framework: str) -> ModuleType:
    """The backend of ``framework`` (a canonical name or alias).

    Raises:
        ValueError: an unknown name.
        FrameworkMissing: the framework (tensorflow/keras, torch) is not installed.
    """
    name = canonical_framework(framework)
    try:
        return importlib.import_module(MODULES[name])
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing.split(".")[0] in ("tensorflow", "keras", "torch"):
            raise FrameworkMissing(
                f"--framework {framework} needs {missing}, which is not installed. Install it "
                f'with: pip install -c constraints.txt -e ".[{_EXTRAS[name]}]"') from e
        raise
