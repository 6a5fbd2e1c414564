"""glibc malloc settings for a torch training process, applied at start as TensorFlow does.

Why: torch on CPU takes every tensor from ``malloc``. glibc serves a block above its mmap
threshold (at most 32 MiB) with a fresh ``mmap`` and unmaps it on ``free``, and trims the
top of the heap once 128 KiB+ of it is free, so an eager training step that allocates and
frees the same activations every step page-faults them in again every step (~40,000 minor
faults per step on the seed network; ``docs/benchmarks.md``, gap 1). TensorFlow sets a
malloc option of its own at start; torch sets none.

:func:`tune_malloc` calls ``mallopt`` through :mod:`ctypes` (glibc only) so that freed blocks
stay in the heap and are reused:

* ``"heap"`` (the default): no ``mmap`` for large blocks (``M_MMAP_MAX = 0``) and no heap
  trimming (``M_TRIM_THRESHOLD = -1``) — every block, the 37.7 MB activation of a 256-image
  convolution included, comes from the heap and is reused: 0 faults per step.
* ``"threshold"``: ``M_MMAP_THRESHOLD`` at glibc's 32 MiB maximum and no trimming — the
  ``mallopt`` counterpart of :data:`benchmarks.seed_loop.MALLOC_TUNABLES` without its
  ``hugetlb`` (a start-up tunable only): blocks above 32 MiB still fault.
* ``"default"``: glibc's defaults; nothing is called.

The cost: the process keeps the memory it has freed (its peak resident size) until it ends,
as TensorFlow's and torch's own GPU caching allocators do. Choose with the environment
variable ``METALEARN_MALLOC=heap|threshold|default`` (unset: ``heap``), or pass ``mode``.

The setting is process-wide, so importing this package changes nothing: the command-line
entry points (``metalearn train|eval|predict --framework torch``, distributed runs included,
through :mod:`metalearn_torch.backend`) call :func:`tune_malloc` at start, and a program
using the library calls it itself (``metalearn_torch.tune_malloc()``) if it wants it. A
process that set ``GLIBC_TUNABLES`` with ``glibc.malloc.*`` keeps those.

Framework-free (``ctypes`` only), so it lives here and both framework packages stay mirror
images; only the torch backend applies it: TensorFlow configures its allocator itself.
"""

from __future__ import annotations

import ctypes
import os
from typing import Any

__all__ = ["ENV_VAR", "MODES", "DEFAULT_MODE", "tune_malloc", "malloc_setting"]

#: The environment variable that chooses the mode (unset: :data:`DEFAULT_MODE`).
ENV_VAR = "METALEARN_MALLOC"

# mallopt parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_MMAP_MAX = -4
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling on 64-bit (HEAP_MAX_SIZE / 2)

#: What each mode sets, as ``{mallopt parameter name: value}``; -1 for the trim threshold
#: turns trimming off (``man 3 mallopt``).
MODES: dict[str, dict[str, int]] = {
    "heap": {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": -1},
    "threshold": {"M_MMAP_THRESHOLD": _MMAP_THRESHOLD_MAX, "M_TRIM_THRESHOLD": -1},
    "default": {},
}
DEFAULT_MODE = "heap"
_PARAMS = {"M_TRIM_THRESHOLD": _M_TRIM_THRESHOLD, "M_MMAP_THRESHOLD": _M_MMAP_THRESHOLD,
           "M_MMAP_MAX": _M_MMAP_MAX}

_applied: dict[str, Any] | None = None  # this process's record, once tune_malloc has run


def _glibc_version() -> str | None:
    """``"2.36"`` under glibc, None elsewhere (musl, macOS, Windows)."""
    try:
        found = os.confstr("CS_GNU_LIBC_VERSION")  # "glibc 2.36"
    except (AttributeError, ValueError, OSError):
        return None
    return found.split()[-1] if found and found.startswith("glibc") else None


def _mallopt(param: int, value: int) -> int:
    """glibc's ``mallopt``: 1 on success, 0 on failure."""
    libc = ctypes.CDLL(None)
    libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    libc.mallopt.restype = ctypes.c_int
    return int(libc.mallopt(param, value))


def _requested(mode: str | None) -> str:
    chosen = mode if mode is not None else (os.environ.get(ENV_VAR) or DEFAULT_MODE)
    if chosen not in MODES:
        raise ValueError(f"malloc mode must be one of {', '.join(MODES)}; found {chosen!r} "
                         f"({'the mode argument' if mode is not None else ENV_VAR}). "
                         f"Unset {ENV_VAR} for the default ({DEFAULT_MODE!r}).")
    return chosen


def _record(mode: str, applied: dict[str, int], reason: str) -> dict[str, Any]:
    return {"mode": mode, "applied": applied, "reason": reason, "glibc": _glibc_version()}


def tune_malloc(mode: str | None = None) -> dict[str, Any]:
    """Apply the malloc setting ``mode`` to this process (see the module docstring).

    Idempotent: the first call decides the process's mode, and every later call returns the
    same record (re-asserting the same ``mallopt`` values, which undoes a library that
    changed them in between). It is a no-op, saying why, on a platform without glibc, when
    ``mode`` (or ``METALEARN_MALLOC``) is ``"default"``, and when ``GLIBC_TUNABLES`` already
    sets ``glibc.malloc.*``.

    Args:
        mode: ``"heap"``, ``"threshold"`` or ``"default"``; None: ``$METALEARN_MALLOC``,
            else ``"heap"``.

    Returns:
        ``{"mode", "applied": {mallopt parameter: value}, "reason", "glibc": version or None}``;
        ``applied`` is empty when nothing was changed; ``mode`` is what the process runs
        with (``"GLIBC_TUNABLES"`` when those were kept).

    Raises:
        ValueError: an unknown mode, or a mode other than the one this process already has
            (malloc settings last as long as the process: start a new one).
    """
    global _applied
    wanted = _requested(mode)
    if _applied is not None:
        if mode is not None and wanted != _applied["mode"]:
            raise ValueError(f"this process already runs with malloc mode "
                             f"{_applied['mode']!r}; {wanted!r} needs a new process "
                             f"(set {ENV_VAR}={wanted} before it starts).")
        for name, value in _applied["applied"].items():
            _mallopt(_PARAMS[name], value)
        return dict(_applied)
    if wanted == "default":
        why = "mode argument" if mode is not None else f"{ENV_VAR}=default"
        _applied = _record("default", {}, f"{why}: glibc's defaults kept")
    elif _glibc_version() is None:
        _applied = _record("default", {}, "not glibc: mallopt settings are glibc's; "
                                          "the platform's allocator is left alone")
    elif "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", ""):
        _applied = _record("GLIBC_TUNABLES", {}, "GLIBC_TUNABLES="
                           f"{os.environ['GLIBC_TUNABLES']} set at start: kept")
    else:
        failed = [name for name, value in MODES[wanted].items()
                  if _mallopt(_PARAMS[name], value) != 1]
        if failed:
            raise OSError(f"mallopt refused {failed} for malloc mode {wanted!r}; set "
                          f"{ENV_VAR}=default to keep glibc's defaults.")
        _applied = _record(wanted, dict(MODES[wanted]),
                           "freed blocks stay in the heap for reuse: no page faults per step")
    return dict(_applied)


def malloc_setting() -> dict[str, Any]:
    """What this process runs with: :func:`tune_malloc`'s record, or glibc's defaults when
    it has not been called (for ``run.json`` and benchmark records)."""
    if _applied is not None:
        return dict(_applied)
    return _record("default", {}, "tune_malloc() not called in this process")
