"""Canonical weight names and layouts, the one converter, and the canonical checkpoint file.

Canonical = PyTorch's names and layouts: a parameter is named by its torch ``state_dict``
key (``"embedding.conv1.weight"``) and stored as torch stores it (conv ``OIHW``, dense
``(out, in)``, a dense layer after a flatten of conv features in ``C, H, W`` order).
Keras names the same parameter by its variable path relative to the model
(``"embedding/conv1/kernel"``): Keras layers are given ``name=`` equal to the torch
attribute names, so the two names follow from each other by construction.

Each model describes its parameters once, in ``metalearn_shared`` (``param_spec(config)``,
built from the helpers :func:`dense`, :func:`conv2d`, :func:`batchnorm`, :func:`lstm`).
The converter below knows only the small :class:`Layout` enum — no per-model branch — and
refuses any missing, unexpected or mis-shaped key, listing all of them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "TORCH_FORMAT",
    "KERAS_META",
    "Layout",
    "ParamSpec",
    "WeightMismatchError",
    "dense",
    "conv2d",
    "batchnorm",
    "lstm_cell",
    "framework_shape",
    "to_framework",
    "to_canonical",
    "check_canonical",
    "CHECKPOINT_FORMAT",
    "save_canonical",
    "load_canonical",
    "read_metadata",
    "looks_like_safetensors",
]

FRAMEWORKS = ("torch", "keras")


class Layout(StrEnum):
    """How a canonical (torch-layout) array maps to its Keras layout."""

    #: Same array in both (biases, BatchNorm vectors, scalars).
    IDENTITY = "identity"
    #: torch ``Linear.weight (out, in)`` ↔ Keras ``Dense.kernel (in, out)``.
    DENSE = "dense"
    #: torch ``Conv2d.weight (O, I, kh, kw)`` ↔ Keras ``Conv2D.kernel (kh, kw, I, O)``.
    CONV2D = "conv2d"
    #: A dense layer right after flattening conv features: torch flattens ``(C, H, W)``,
    #: Keras ``(H, W, C)``, so the input rows are permuted as well as transposed.
    FLATTEN_DENSE = "flatten_dense"
    #: LSTM ``weight_ih (4H, in)`` / ``weight_hh (4H, H)`` ↔ Keras ``kernel (in, 4H)`` /
    #: ``recurrent_kernel (H, 4H)``. Both frameworks order the gate blocks i, f, g(c), o,
    #: so this is a transpose per block; the enum keeps LSTM separate so that a future
    #: gate order (e.g. cuDNN's) has one place to live.
    LSTM = "lstm_gates"


@dataclass(frozen=True)
class ParamSpec:
    """One parameter (or buffer) of a model.

    Attributes:
        name: canonical name = torch ``state_dict`` key.
        shape: canonical (torch) shape.
        layout: how to convert it to Keras.
        keras_name: Keras variable path relative to the model (``"a/b/kernel"``).
        chw: ``(C, H, W)`` of the flattened conv output, for ``FLATTEN_DENSE`` only.
        trainable: False for BatchNorm running statistics.
    """

    name: str
    shape: tuple[int, ...]
    layout: Layout
    keras_name: str
    chw: tuple[int, int, int] | None = None
    trainable: bool = True


class WeightMismatchError(ValueError):
    """Weights do not match a model's spec; the message lists every offending key."""


# -- spec builders -------------------------------------------------------------------------
def _keras(prefix: str, var: str) -> str:
    return f"{prefix.replace('.', '/')}/{var}"


def dense(
    prefix: str,
    in_features: int,
    out_features: int,
    bias: bool = True,
    flatten_chw: tuple[int, int, int] | None = None,
) -> list[ParamSpec]:
    """torch ``nn.Linear`` ↔ Keras ``Dense``; ``flatten_chw`` when it follows a flatten."""
    if flatten_chw is not None and int(np.prod(flatten_chw)) != in_features:
        raise ValueError(f"{prefix}: flatten_chw {flatten_chw} does not multiply to {in_features}.")
    layout = Layout.FLATTEN_DENSE if flatten_chw is not None else Layout.DENSE
    out = [
        ParamSpec(f"{prefix}.weight", (out_features, in_features), layout,
                  _keras(prefix, "kernel"), chw=flatten_chw)
    ]
    if bias:
        out.append(ParamSpec(f"{prefix}.bias", (out_features,), Layout.IDENTITY,
                             _keras(prefix, "bias")))
    return out


def conv2d(
    prefix: str, in_ch: int, out_ch: int, kernel: int, bias: bool = True,
) -> list[ParamSpec]:
    """torch ``nn.Conv2d`` ↔ Keras ``Conv2D`` (square kernel)."""
    out = [ParamSpec(f"{prefix}.weight", (out_ch, in_ch, kernel, kernel), Layout.CONV2D,
                     _keras(prefix, "kernel"))]
    if bias:
        out.append(ParamSpec(f"{prefix}.bias", (out_ch,), Layout.IDENTITY,
                             _keras(prefix, "bias")))
    return out


def batchnorm(prefix: str, channels: int) -> list[ParamSpec]:
    """torch ``nn.BatchNorm2d`` ↔ Keras ``BatchNormalization``.

    torch's ``num_batches_tracked`` buffer is not a weight (it only matters when torch's
    ``momentum=None``, which we never use) and is not part of the canonical spec.
    """
    pairs = [("weight", "gamma", True), ("bias", "beta", True),
             ("running_mean", "moving_mean", False), ("running_var", "moving_variance", False)]
    return [ParamSpec(f"{prefix}.{t}", (channels,), Layout.IDENTITY,
                      _keras(prefix, k), trainable=tr) for t, k, tr in pairs]


def lstm_cell(prefix: str, input_size: int, hidden: int) -> list[ParamSpec]:
    """An LSTM cell with **one** bias vector (Keras' convention).

    torch's ``nn.LSTMCell`` has two (``bias_ih`` + ``bias_hh``) whose sum is all that
    matters; our torch cell keeps one so that torch → Keras → torch is bit-identical.
    """
    return [
        ParamSpec(f"{prefix}.weight_ih", (4 * hidden, input_size), Layout.LSTM,
                  _keras(prefix, "kernel")),
        ParamSpec(f"{prefix}.weight_hh", (4 * hidden, hidden), Layout.LSTM,
                  _keras(prefix, "recurrent_kernel")),
        ParamSpec(f"{prefix}.bias", (4 * hidden,), Layout.IDENTITY,
                  _keras(prefix, "bias")),
    ]


# -- the converter -------------------------------------------------------------------------
def framework_shape(p: ParamSpec, framework: str) -> tuple[int, ...]:
    """Shape of ``p`` in ``framework`` (``"torch"`` = canonical, or ``"keras"``)."""
    if framework == "torch" or p.layout is Layout.IDENTITY:
        return p.shape
    if p.layout in (Layout.DENSE, Layout.FLATTEN_DENSE, Layout.LSTM):
        return (p.shape[1], p.shape[0])
    if p.layout is Layout.CONV2D:
        o, i, kh, kw = p.shape
        return (kh, kw, i, o)
    raise AssertionError(p.layout)


def _to_keras(p: ParamSpec, a: np.ndarray) -> np.ndarray:
    if p.layout is Layout.IDENTITY:
        return a
    if p.layout in (Layout.DENSE, Layout.LSTM):
        return a.T
    if p.layout is Layout.CONV2D:
        return a.transpose(2, 3, 1, 0)  # (O, I, kh, kw) -> (kh, kw, I, O)
    if p.layout is Layout.FLATTEN_DENSE:
        c, h, w = p.chw  # type: ignore[misc]
        out = a.shape[0]
        # (out, C*H*W) -> (out, C, H, W) -> (out, H, W, C) -> (H*W*C, out)
        return a.reshape(out, c, h, w).transpose(0, 2, 3, 1).reshape(out, h * w * c).T
    raise AssertionError(p.layout)


def _from_keras(p: ParamSpec, a: np.ndarray) -> np.ndarray:
    if p.layout is Layout.IDENTITY:
        return a
    if p.layout in (Layout.DENSE, Layout.LSTM):
        return a.T
    if p.layout is Layout.CONV2D:
        return a.transpose(3, 2, 0, 1)  # (kh, kw, I, O) -> (O, I, kh, kw)
    if p.layout is Layout.FLATTEN_DENSE:
        c, h, w = p.chw  # type: ignore[misc]
        out = a.shape[1]
        # (H*W*C, out) -> (out, H, W, C) -> (out, C, H, W) -> (out, C*H*W)
        return a.T.reshape(out, h, w, c).transpose(0, 3, 1, 2).reshape(out, c * h * w)
    raise AssertionError(p.layout)


def _key(p: ParamSpec, framework: str) -> str:
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {FRAMEWORKS}; got {framework!r}.")
    return p.name if framework == "torch" else p.keras_name


def _validate(arrays: Mapping[str, Any], spec: Sequence[ParamSpec], framework: str,
              what: str) -> None:
    expected = {_key(p, framework): framework_shape(p, framework) for p in spec}
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    misshaped = sorted(
        f"{k}: expected {expected[k]}, found {tuple(np.shape(arrays[k]))}"
        for k in set(expected) & set(arrays)
        if tuple(np.shape(arrays[k])) != expected[k]
    )
    if missing or unexpected or misshaped:
        lines = [f"{what} do not match the model's {framework} weight spec "
                 f"({len(spec)} parameters):"]
        if missing:
            lines.append(f"  missing ({len(missing)}): {', '.join(missing)}")
        if unexpected:
            lines.append(f"  unexpected ({len(unexpected)}): {', '.join(unexpected)}")
        if misshaped:
            lines.append(f"  mis-shaped ({len(misshaped)}): " + "; ".join(misshaped))
        lines.append("Check that the checkpoint was made for this model and config "
                     "(model name, backbone, head, sizes).")
        raise WeightMismatchError("\n".join(lines))


def check_canonical(arrays: Mapping[str, Any], spec: Sequence[ParamSpec]) -> None:
    """Raise :class:`WeightMismatchError` unless ``arrays`` match ``spec`` exactly."""
    _validate(arrays, spec, "torch", "canonical weights")


def to_framework(canonical: Mapping[str, np.ndarray], spec: Sequence[ParamSpec],
                 framework: str) -> dict[str, np.ndarray]:
    """Canonical arrays → ``{framework name: framework-layout array}``."""
    check_canonical(canonical, spec)
    if framework not in FRAMEWORKS:
        raise ValueError(f"framework must be one of {FRAMEWORKS}; got {framework!r}.")
    if framework == "torch":
        return {p.name: np.asarray(canonical[p.name]) for p in spec}
    return {p.keras_name: np.ascontiguousarray(_to_keras(p, np.asarray(canonical[p.name])))
            for p in spec}


def to_canonical(arrays: Mapping[str, np.ndarray], spec: Sequence[ParamSpec],
                 framework: str) -> dict[str, np.ndarray]:
    """``{framework name: array}`` → canonical arrays (torch names and layouts)."""
    _validate(arrays, spec, framework, f"{framework} weights")
    if framework == "torch":
        return {p.name: np.asarray(arrays[p.name]) for p in spec}
    return {p.name: np.ascontiguousarray(_from_keras(p, np.asarray(arrays[p.keras_name])))
            for p in spec}


# -- the canonical checkpoint file -----------------------------------------------------------
CHECKPOINT_FORMAT = "metalearn-canonical/1"
#: A torch ``state_dict`` as safetensors (``metalearn convert --to torch``).
TORCH_FORMAT = "metalearn-torch/1"
#: Extra member of a ``.keras`` zip holding metalearn metadata (Keras ignores it).
KERAS_META = "metalearn.json"
_META_KEY = "metalearn"


def save_canonical(path: str | Path, arrays: Mapping[str, np.ndarray],
                   metadata: Mapping[str, Any]) -> Path:
    """Write a canonical checkpoint: one safetensors file, JSON metadata in its header.

    The file is written to a temporary name beside ``path`` and renamed only when
    complete, so an interrupted save never leaves a half-written checkpoint and never
    destroys the previous one.

    Args:
        path: destination, conventionally ``*.safetensors``.
        arrays: canonical name → array (any numeric dtype; stored as given).
        metadata: JSON-serialisable dict (model, config, framework, step, ...).

    Returns:
        The path written.
    """
    from safetensors.numpy import save

    from metalearn_shared.data.cache import atomic_write

    meta = {"format": CHECKPOINT_FORMAT, **dict(metadata)}
    blob = save({k: np.asarray(v, order="C") for k, v in arrays.items()},  # keeps 0-d
                metadata={_META_KEY: json.dumps(meta, sort_keys=True)})
    path = Path(path)
    with atomic_write(path) as f:
        f.write(blob)
    return path


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """Whether a file's first 9 bytes (and its size) fit the safetensors layout.

    A safetensors file starts with its JSON header's length (8 bytes, little-endian) and
    then the header's ``{``. Only that is conclusive: the length's first byte alone can be
    ``0x80`` (a pickle's first byte: any header of 128 + 256k bytes, and headers are padded
    to multiples of 8, so one file in 32) or ``PK`` (a zip's).
    """
    return len(head) >= 9 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size


def _open_checked(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist.")
    if path.stat().st_size < 8:
        raise ValueError(f"checkpoint {path} is truncated ({path.stat().st_size} bytes).")
    with open(path, "rb") as f:
        head = f.read(9)
    if looks_like_safetensors(head, path.stat().st_size):
        return
    if head[:1] == b"\x80" or head[:2] == b"PK":
        raise ValueError(
            f"{path} looks like a pickle or zip (torch.save / .keras) file, not a canonical "
            "safetensors checkpoint. metalearn never unpickles; convert it with "
            "`metalearn convert` from a trusted source."
        )


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a canonical checkpoint, without loading the arrays."""
    from safetensors import safe_open

    path = Path(path)
    _open_checked(path)
    try:
        with safe_open(str(path), framework="numpy") as f:
            raw = (f.metadata() or {}).get(_META_KEY)
    except Exception as e:  # safetensors raises its own error types
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt): {e}") from e
    if raw is None:
        raise ValueError(f"{path} is a safetensors file without metalearn metadata; "
                         "it was not written by metalearn.")
    return json.loads(raw)


def load_canonical(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a canonical checkpoint → ``(arrays, metadata)``. Never unpickles."""
    from safetensors.numpy import load

    path = Path(path)
    meta = read_metadata(path)
    try:
        arrays = load(path.read_bytes())
    except Exception as e:
        raise ValueError(f"{path} is truncated or corrupt: {e}") from e
    return arrays, meta
