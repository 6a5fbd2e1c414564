"""The Keras 3 (TensorFlow) backend: this package behind the framework contract
(:class:`metalearn_shared.backend.Backend`). Mirror of ``metalearn_torch/backend.py``."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from metalearn_tf.checkpoint import get_canonical, save_checkpoint, set_canonical
from metalearn_tf.models import available_models, build_model

__all__ = ["NAME", "PACKAGE", "INSTALL_EXTRA", "NATIVE_SUFFIX", "available_models", "build_model",
           "get_canonical", "set_canonical", "save_checkpoint", "load_checkpoint", "save_native",
           "load_native", "model_fns", "main_train", "main_eval", "main_predict", "parity_hooks"]

NAME = "keras"
PACKAGE = "metalearn_tf"
INSTALL_EXTRA = "tf"
NATIVE_SUFFIX = ".keras"


def load_checkpoint(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """A canonical checkpoint, or a ``.keras`` file (safe mode, no lambdas)."""
    from metalearn_tf.evaluate import load_any

    return load_any(str(path))


def save_native(config: Any, canonical: dict[str, np.ndarray], metadata: dict[str, Any],
                path: str | Path) -> Path:
    """A ``.keras`` file with ``metadata`` as its ``metalearn.json`` member."""
    from metalearn_tf.checkpoint import save_keras

    model = build_model(config)
    set_canonical(model, canonical)
    return save_keras(model, path, metadata)


def load_native(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Canonical arrays and metadata (with ``config``) from a ``.keras`` file."""
    model, meta = load_checkpoint(path)
    return get_canonical(model), {**meta, "config": model.config.to_dict(),
                                  "model": model.config.model}


def model_fns(model: Any) -> Any:
    from metalearn_tf.evaluate import model_fns as fns

    return fns(model)


def main_train(args: Any) -> int:
    """One process (:mod:`metalearn_tf.train`), or distributed (:mod:`metalearn_tf.distributed`)
    when the arguments or the environment ask for it."""
    from metalearn_tf import distributed, train

    if getattr(args, "memory_format", "auto") != "auto":
        raise ValueError(f"--memory-format {args.memory_format} is a PyTorch setting: Keras' "
                         "tensors are NHWC (channels-last) always. Drop the option, or train "
                         "with --framework torch.")
    if distributed.requested(args):
        return distributed.main_train(args)
    return train.main_train(args)


def main_eval(args: Any) -> int:
    from metalearn_tf.evaluate import main_eval as run

    return run(args)


def main_predict(args: Any) -> int:
    from metalearn_tf.predict import main_predict as run

    return run(args)


def parity_hooks() -> ModuleType:
    from metalearn_tf import parity

    return parity
