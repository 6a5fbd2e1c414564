"""The PyTorch backend: this package behind the framework contract
(:class:`metalearn_shared.backend.Backend`). Mirror of ``metalearn_tf/backend.py``."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from metalearn_torch.checkpoint import (
    get_canonical,
    load_checkpoint,
    save_checkpoint,
    set_canonical,
)
from metalearn_torch.models import available_models, build_model

__all__ = ["NAME", "PACKAGE", "INSTALL_EXTRA", "NATIVE_SUFFIX", "available_models", "build_model",
           "get_canonical", "set_canonical", "save_checkpoint", "load_checkpoint", "save_native",
           "load_native", "model_fns", "main_train", "main_eval", "main_predict", "parity_hooks"]

NAME = "torch"
PACKAGE = "metalearn_torch"
INSTALL_EXTRA = "torch"
NATIVE_SUFFIX = ".torch.safetensors"


def save_native(config: Any, canonical: dict[str, np.ndarray], metadata: dict[str, Any],
                path: str | Path) -> Path:
    """The full ``state_dict`` as safetensors (``format = metalearn-torch/1``)."""
    from metalearn_shared.weights import TORCH_FORMAT
    from metalearn_torch.checkpoint import save_state_dict

    model = build_model(config)
    set_canonical(model, canonical)
    return save_state_dict(model, path, {**metadata, "format": TORCH_FORMAT})


def load_native(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Canonical arrays from a ``state_dict`` safetensors file (``num_batches_tracked`` dropped)."""
    from metalearn_shared.models import checkpoint_config, param_spec
    from metalearn_shared.weights import check_canonical, load_canonical, to_canonical

    arrays, meta = load_canonical(path)
    spec = param_spec(checkpoint_config(meta, path))
    arrays = {k: v for k, v in arrays.items() if not k.endswith("num_batches_tracked")}
    arrays = to_canonical(arrays, spec, NAME)
    check_canonical(arrays, spec)
    return arrays, meta


def model_fns(model: Any) -> Any:
    from metalearn_torch.evaluate import model_fns as fns

    return fns(model)


def _start() -> None:
    """What every torch command does first: the glibc malloc setting
    (:func:`metalearn_shared.allocator.tune_malloc`; ``METALEARN_MALLOC=default`` opts out)."""
    from metalearn_shared.allocator import tune_malloc

    tune_malloc()


def main_train(args: Any) -> int:
    """One process (:mod:`metalearn_torch.train`), or distributed (:mod:`metalearn_torch.distributed`)
    when the arguments or the environment ask for it."""
    from metalearn_torch import distributed, train

    _start()
    if distributed.requested(args):
        return distributed.main_train(args)
    return train.main_train(args)


def main_eval(args: Any) -> int:
    from metalearn_torch.evaluate import main_eval as run

    _start()
    return run(args)


def main_predict(args: Any) -> int:
    from metalearn_torch.predict import main_predict as run

    _start()
    return run(args)


def parity_hooks() -> ModuleType:
    from metalearn_torch import parity

    return parity
