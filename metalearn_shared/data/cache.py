"""Where downloaded and preprocessed data lives, and how it is written safely.

* Cache folder: ``$METALEARN_HOME`` if set, else ``~/.cache/metalearn``.
* Every write goes through :func:`atomic_write` / :func:`atomic_path`: the bytes go to a
  temporary file in the destination folder and are renamed over the destination only when
  the writer finishes without an exception, so an interrupted run never leaves a
  half-written archive or cache file behind.
* Preprocessed datasets are cached as ``.npz`` files under ``<cache>/datasets/``, keyed by
  the checksum of their source plus every option that changes the arrays (size, filter).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np

from metalearn_shared.data.dataset import ClassInfo, ImageDataset
from metalearn_shared.data.preprocess import DataError

__all__ = [
    "CACHE_FORMAT",
    "ChecksumError",
    "atomic_path",
    "atomic_write",
    "cache_dir",
    "cache_key",
    "cached_dataset_path",
    "load_cached_dataset",
    "md5_bytes",
    "md5_file",
    "save_cached_dataset",
    "verify_md5",
]

# Bump when the arrays a reader produces change meaning, so stale caches are not reused.
CACHE_FORMAT = 1


class ChecksumError(DataError):
    """A file's md5 differs from the one it must have."""


def cache_dir(create: bool = True) -> Path:
    """The metalearn cache folder: ``$METALEARN_HOME`` or ``~/.cache/metalearn``."""
    root = os.environ.get("METALEARN_HOME")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "metalearn"
    if create:
        path.mkdir(parents=True, exist_ok=True)
    return path


# -- atomic writes -------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    For writers that want a file name (``np.savez``, safetensors). The temporary name keeps
    ``path``'s suffix, so libraries that append a suffix (``np.savez`` adds ``.npz``) do
    not. On an exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}",
                                    dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; give the file the mode a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~umask)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        if err.errno in (errno.ENOSPC, errno.EDQUOT):
            kept = "keeps its previous content" if path.exists() else "was not written"
            raise OSError(err.errno, f"{os.strerror(err.errno)} while writing {path}; "
                          f"{path.name} {kept} (the previous checkpoint stays loadable). Free "
                          "some space and run again (training: add --resume)") from err
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "wb",
                 encoding: str | None = None) -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path`` for writing; rename it onto ``path`` on success.

    Args:
        path: the destination.
        mode: ``"wb"`` (default) or ``"w"``.
        encoding: text encoding for ``mode="w"`` (default UTF-8).

    Yields:
        The open temporary file. If the ``with`` body raises, the temporary file is deleted,
        the exception propagates and ``path`` keeps its previous content (or stays absent).
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write: mode must be 'wb' or 'w'; found {mode!r}.")
    with atomic_path(path) as tmp:
        kwargs = {} if "b" in mode else {"encoding": encoding or "utf-8"}
        with open(tmp, mode, **kwargs) as f:
            yield f


# -- checksums -----------------------------------------------------------------------------
def md5_bytes(data: bytes) -> str:
    """Hex md5 of a bytes object (integrity check, not security)."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: str | os.PathLike[str], chunk_bytes: int = 1 << 20) -> str:
    """Hex md5 of a file, read in ``chunk_bytes`` pieces."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk_bytes), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_md5(path: str | os.PathLike[str], expected: str) -> str:
    """Check ``path``'s md5; return it, or raise :class:`ChecksumError` naming both sums."""
    found = md5_file(path)
    if found != expected.lower():
        raise ChecksumError(
            f"{path}: md5 {found} does not match the expected {expected}. The file is "
            "corrupt, truncated or a different file; delete it and download it again "
            "(`metalearn data download`)."
        )
    return found


# -- dataset cache -------------------------------------------------------------------------
def cache_key(source_md5: str, size: int | None, **options: Any) -> str:
    """A short, stable key for one preprocessed dataset.

    Args:
        source_md5: checksum of the source (archive md5, or a folder's content hash).
        size: output image side, or ``None`` for native size.
        **options: anything else that changes the arrays (resampling filter, ...); values
            must be JSON-serialisable.
    """
    blob = json.dumps(
        {"format": CACHE_FORMAT, "source": source_md5, "size": size, **options},
        sort_keys=True,
    )
    return md5_bytes(blob.encode())[:16]


def cached_dataset_path(name: str, key: str, root: str | os.PathLike[str] | None = None) -> Path:
    """``<root or cache_dir()>/datasets/<name>-<key>.npz``."""
    base = Path(root) if root is not None else cache_dir()
    return base / "datasets" / f"{name}-{key}.npz"


def save_cached_dataset(dataset: ImageDataset, path: str | os.PathLike[str]) -> Path:
    """Write ``dataset`` to ``path`` as an uncompressed ``.npz``, atomically."""
    path = Path(path)
    arrays = {
        "images": dataset.images,
        "labels": dataset.labels,
        "alphabets": np.array([c.alphabet for c in dataset.classes], dtype=np.str_),
        "characters": np.array([c.character for c in dataset.classes], dtype=np.str_),
        "rotations": np.array([c.rotation for c in dataset.classes], dtype=np.int64),
        "mirrored": np.array([c.mirrored for c in dataset.classes], dtype=np.bool_),
        "name": np.array(dataset.name),
        "format": np.array(CACHE_FORMAT),
    }
    with atomic_write(path) as f:
        np.savez(f, **arrays)
    return path


def load_cached_dataset(path: str | os.PathLike[str]) -> ImageDataset | None:
    """Read a dataset written by :func:`save_cached_dataset`.

    Returns ``None`` (and warns) when the file is missing, unreadable or from another cache
    format, so the caller rebuilds it; a broken cache never stops a run.
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if int(z["format"]) != CACHE_FORMAT:
                return None
            mirrored = (z["mirrored"] if "mirrored" in z.files  # absent before reflections
                        else np.zeros(len(z["alphabets"]), np.bool_))
            classes = tuple(
                ClassInfo(str(a), str(c), int(r), bool(m))
                for a, c, r, m in zip(z["alphabets"], z["characters"], z["rotations"], mirrored,
                                      strict=True)
            )
            return ImageDataset(z["images"], z["labels"], classes, str(z["name"]))
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        warnings.warn(f"{path}: ignoring unreadable dataset cache ({err}); rebuilding it.",
                      stacklevel=2)
        return None
