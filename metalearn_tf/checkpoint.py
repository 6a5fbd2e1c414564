"""Keras side of the canonical weights: read/write a model's variables by canonical name.

A Keras variable's path relative to the model (``"embedding/conv1/kernel"``) is the
``keras_name`` of its :class:`~metalearn_shared.weights.ParamSpec`; the layout conversion
is the one shared converter's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np

from metalearn_shared.models import param_spec
from metalearn_shared.weights import load_canonical, save_canonical, to_canonical, to_framework

__all__ = ["keras_variables", "get_canonical", "set_canonical", "save_checkpoint", "load_checkpoint",
           "save_keras"]


def keras_variables(model: keras.Model) -> dict[str, Any]:
    """``{path relative to the model: variable}`` for every weight of a built model."""
    if not model.built:
        raise ValueError(f"{model.name} is not built; call it on a batch (or build_model) first.")
    out = {}
    for v in model.weights:
        parts = v.path.split("/")
        rel = "/".join(parts[1:]) if parts[0] == model.name else v.path
        out[rel] = v
    return out


def get_canonical(model: keras.Model) -> dict[str, np.ndarray]:
    """The model's weights as canonical (torch-layout) numpy arrays."""
    arrays = {k: keras.ops.convert_to_numpy(v) for k, v in keras_variables(model).items()}
    return to_canonical(arrays, param_spec(model.config), "keras")


def set_canonical(model: keras.Model, canonical: dict[str, np.ndarray]) -> None:
    """Assign canonical arrays to the model (strict: every key, every shape)."""
    variables = keras_variables(model)
    for name, value in to_framework(canonical, param_spec(model.config), "keras").items():
        var = variables[name]
        var.assign(value.astype(var.dtype))


def save_checkpoint(model: keras.Model, path: str | Path, **metadata: Any) -> Path:
    """Canonical checkpoint (safetensors + JSON metadata) from a Keras model."""
    meta = {"model": model.config.model, "config": model.config.to_dict(),
            "source_framework": "keras", **metadata}
    return save_canonical(path, get_canonical(model), _with_version(meta))


def load_checkpoint(path: str | Path) -> tuple[keras.Model, dict[str, Any]]:
    """Build the model a canonical checkpoint describes and load its weights."""
    from metalearn_shared.models import checkpoint_config
    from metalearn_tf.models import build_model

    arrays, meta = load_canonical(path)
    model = build_model(checkpoint_config(meta, path))
    set_canonical(model, arrays)
    return model, meta


def _with_version(meta: dict[str, Any]) -> dict[str, Any]:
    import metalearn_shared

    return {"metalearn_version": metalearn_shared.__version__,
            "keras_version": keras.__version__, **meta}


def save_keras(model: keras.Model, path: str | Path, metadata: dict[str, Any] | None = None) -> Path:
    """``model.save`` to a ``.keras`` file, atomically, with ``metadata`` as an extra
    zip member (``metalearn.json``) that Keras ignores and ``metalearn convert`` reads.

    A compiled model is saved as its uncompiled architecture and weights."""
    import json
    import zipfile

    from metalearn_shared.data.cache import atomic_path
    from metalearn_shared.weights import KERAS_META

    if model.compiled:
        # Saved without its training set-up: the compile config holds trainer-local metric
        # closures that no loader can rebuild, and the optimiser state lives in the run's
        # train_state.safetensors. The file then loads with a plain keras.models.load_model.
        from metalearn_tf.models import build_model

        fresh = build_model(model.config)
        set_canonical(fresh, get_canonical(model))
        model = fresh
    with atomic_path(path) as tmp:
        model.save(tmp)
        if metadata:
            with zipfile.ZipFile(tmp, "a") as z:
                z.writestr(KERAS_META, json.dumps(metadata, sort_keys=True, default=str))
    return Path(path)
