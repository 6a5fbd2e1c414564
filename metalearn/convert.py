"""``metalearn convert`` — checkpoints between Keras (``.keras``), PyTorch (safetensors
``state_dict``) and the canonical checkpoint, preserving config and metadata.

Formats (told apart by content, not only by suffix):

* **canonical** — safetensors of canonical arrays, metadata ``format = metalearn-canonical/1``;
* **torch** — safetensors of the full torch ``state_dict`` (``num_batches_tracked``
  included), metadata ``format = metalearn-torch/1``; loadable with
  ``model.load_state_dict(safetensors.torch.load_file(path))``;
* **keras** — a Keras 3 ``.keras`` zip, loaded with ``safe_mode=True``.

The framework formats are read and written by the frameworks' backends
(``load_native``/``save_native``, :mod:`metalearn.backends`).

Pickle-based files (``torch.save`` output, ``.pkl``) and legacy HDF5 (``.h5``) are refused:
loading them can execute code from the file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from metalearn import backends
from metalearn_shared.weights import (
    CHECKPOINT_FORMAT,
    TORCH_FORMAT,
    looks_like_safetensors,
    read_metadata,
)

__all__ = ["detect_format", "read_any", "write_as", "main"]

_UNSAFE_SUFFIXES = {".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin", ".h5", ".hdf5"}


def detect_format(path: str | Path) -> str:
    """``"canonical"``, ``"torch"`` or ``"keras"``; raises a clear error for anything else."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist.")
    with open(path, "rb") as f:
        head = f.read(9)
    if looks_like_safetensors(head, path.stat().st_size):
        head = b""  # a safetensors header length may begin with a pickle's or a zip's bytes
    if head[:4] == b"\x89HDF" or path.suffix.lower() in (".h5", ".hdf5"):
        raise ValueError(f"{path} is a legacy HDF5 (.h5) file. metalearn does not load it: "
                         "re-save the model as .keras (model.save('m.keras')) from a trusted "
                         "environment, then convert that.")
    if head[:1] == b"\x80" or (head[:2] == b"PK" and path.suffix.lower() != ".keras"):
        raise ValueError(f"{path} looks like a pickle (torch.save) file. metalearn never unpickles: "
                         "in a trusted environment load it with torch.load(..., weights_only=True) "
                         "and save the state_dict with safetensors.torch.save_file.")
    if path.suffix.lower() in _UNSAFE_SUFFIXES:
        raise ValueError(f"{path}: {path.suffix} files may be pickles; metalearn reads only "
                         ".safetensors and .keras.")
    if head[:2] == b"PK":
        try:
            with zipfile.ZipFile(path) as z:
                names = set(z.namelist())
        except zipfile.BadZipFile as e:
            raise ValueError(f"{path} is a truncated or corrupt .keras file: {e}") from e
        if "config.json" not in names:
            raise ValueError(f"{path} is a zip but not a Keras 3 .keras file (no config.json).")
        return "keras"
    meta = read_metadata(path)
    fmt = meta.get("format")
    if fmt == CHECKPOINT_FORMAT:
        return "canonical"
    if fmt == TORCH_FORMAT:
        return "torch"
    raise ValueError(f"{path}: unknown checkpoint format {fmt!r}; expected {CHECKPOINT_FORMAT!r} "
                     f"or {TORCH_FORMAT!r}.")


def read_any(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Canonical arrays + metadata (with ``config``) from any supported checkpoint."""
    from metalearn_shared.models import checkpoint_config, param_spec
    from metalearn_shared.weights import check_canonical, load_canonical

    fmt = detect_format(path)
    if fmt != "canonical":
        return backends.get(fmt).load_native(path)
    arrays, meta = load_canonical(path)
    check_canonical(arrays, param_spec(checkpoint_config(meta, path)))
    return arrays, meta


def write_as(arrays: dict[str, np.ndarray], meta: dict[str, Any], to: str, out: Path) -> Path:
    """Write canonical ``arrays`` as ``to`` (``canonical`` or a framework name) at ``out``."""
    from metalearn_shared.models import checkpoint_config
    from metalearn_shared.weights import save_canonical

    meta = {k: v for k, v in meta.items() if k != "format"}
    meta["converted_from"] = meta.get("source_framework")
    if to == "canonical":
        return save_canonical(out, arrays, meta)
    return backends.get(to).save_native(checkpoint_config(meta, out), arrays, meta, out)


def _suffix(to: str) -> str:
    return ".canonical.safetensors" if to == "canonical" else backends.get(to).NATIVE_SUFFIX


def main(args: Any) -> int:
    src = Path(args.checkpoint)
    arrays, meta = read_any(src)
    stem = src.name.split(".")[0]
    to = args.to if args.to == "canonical" else backends.canonical_framework(args.to)
    out = Path(args.out) if args.out else src.with_name(stem + _suffix(to))
    if out.resolve() == src.resolve():
        raise ValueError(f"--out {out} is the input file; choose another path (nothing is overwritten).")
    write_as(arrays, meta, to, out)
    print(json.dumps({"from": str(src), "to": str(out), "format": to,
                      "model": meta.get("model"), "parameters": len(arrays),
                      "values": int(sum(a.size for a in arrays.values()))}))
    return 0
