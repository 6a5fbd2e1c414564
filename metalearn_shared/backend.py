"""The framework contract: what ``metalearn_torch/backend.py`` and ``metalearn_tf/backend.py``
each provide, so that orchestration (CLI, demo, parity, conversion) is written once.

A backend is a module; :class:`Backend` lists its members (``tests/test_architecture.py``
checks both modules against it, names and parameters). The one place that maps a framework
name (or alias, :func:`metalearn_shared.registry.canonical_framework`) to its backend is
:func:`metalearn.backends.get` (Keras 3 selects its backend module by name the same way).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

__all__ = ["Backend", "MEMBERS"]


class Backend(Protocol):
    """One framework's implementation of the library, as orchestration sees it.

    Attributes:
        NAME: the canonical framework name (``"torch"`` or ``"keras"``).
        PACKAGE: the package (``"metalearn_torch"`` / ``"metalearn_tf"``).
        INSTALL_EXTRA: the pip extra that installs the framework (``torch`` / ``tf``).
        NATIVE_SUFFIX: the suffix of the framework's own file format.
    """

    NAME: str
    PACKAGE: str
    INSTALL_EXTRA: str
    NATIVE_SUFFIX: str

    def available_models(self) -> list[str]:
        """Registered model names this framework implements."""

    def build_model(self, config: Any, seed: int | None = None) -> Any:
        """The model ``config`` describes, with its weights created (seeded)."""

    def get_canonical(self, model: Any) -> dict[str, np.ndarray]:
        """The model's weights in canonical names and layouts."""

    def set_canonical(self, model: Any, canonical: dict[str, np.ndarray]) -> None:
        """Load canonical weights into the model."""

    def save_checkpoint(self, model: Any, path: str | Path, **metadata: Any) -> Path:
        """A canonical checkpoint (safetensors + JSON metadata)."""

    def load_checkpoint(self, path: str | Path) -> tuple[Any, dict[str, Any]]:
        """The model a checkpoint describes, with its weights, and the metadata: a canonical
        checkpoint (Keras: also a ``.keras`` file)."""

    def save_native(self, config: Any, canonical: dict[str, np.ndarray],
                    metadata: dict[str, Any], path: str | Path) -> Path:
        """Canonical weights written in the framework's own format (a torch ``state_dict``
        as safetensors, a ``.keras`` file)."""

    def load_native(self, path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Canonical weights and metadata (with ``config``) from the framework's own format."""

    def model_fns(self, model: Any) -> Any:
        """The numpy callables evaluation needs (:class:`metalearn_shared.evaluation.ModelFns`)."""

    def main_train(self, args: Any) -> int:
        """``metalearn train`` (arguments as the CLI parsed them)."""

    def main_eval(self, args: Any) -> int:
        """``metalearn eval``."""

    def main_predict(self, args: Any) -> int:
        """``metalearn predict``."""

    def parity_hooks(self) -> ModuleType:
        """The framework half of parity (``forward``, ``embed``, ``trace``,
        ``loss_and_grads``, ``set_weights``, ``train_steps``, ``forced_steps``,
        ``apply_update``, ``parity_context``, ``threads_in_use``)."""


#: Every member a backend module must have.
MEMBERS = tuple(n for n in Backend.__dict__ if not n.startswith("_")) + tuple(
    Backend.__annotations__)
