"""Omniglot (Lake et al. 2015) from any of its three sources, as one :class:`ImageDataset`.

Sources, all producing the same arrays:

* the official zips of github.com/brendenlake/omniglot (``python/*.zip``), downloaded to
  ``<cache>/omniglot/`` with an md5 check, or found in ``$METALEARN_OMNIGLOT_DIR``
  (:mod:`metalearn_shared.data.omniglot_files`);
* a local zip or unzipped folder in the official layout ``[top/]Alphabet/characterNN/*.png``;
* tfds ``omniglot`` (``source="tfds"``; TensorFlow Datasets is imported only then).

Preprocessing: invert to stroke-high, resize with Pillow's LANCZOS filter
(:func:`~metalearn_shared.data.resize.resize_batch`), cache the result as ``.npz`` keyed
by the source's md5 and the options. Classes are ordered by ``(alphabet, character)`` and
instances by file name, so a zip and its unzipped folder give identical arrays; several
sources merge with duplicates ``(alphabet, character)`` dropped (small1 and small2 share
Greek and Latin: merged they hold 242 characters of 8 alphabets).

This module holds the readers (:func:`load_omniglot`, :func:`merge_datasets`). It
re-exports the official files (:mod:`~metalearn_shared.data.omniglot_files`) and the
alphabet splits (:mod:`~metalearn_shared.data.splits`: :func:`official_split` and the
seeded :func:`split_by_alphabet`) for existing callers.
"""

from __future__ import annotations

import hashlib
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

import metalearn_shared.data.cache as _cache
from metalearn_shared.data.cache import ChecksumError
from metalearn_shared.data.dataset import ClassInfo, ImageDataset
from metalearn_shared.data.omniglot_files import (
    BASE_URL,
    ENV_DIR,
    LAYOUT_HELP,
    NAMED_SETS,
    OFFICIAL,
    OfficialFile,
    PathLike,
    download,
    find_official,
    resolve_official,
    verify_file,
)
from metalearn_shared.data.preprocess import DataError, add_rotations, decode_png, invert_uint8
from metalearn_shared.data.resize import Resample, resize_batch
from metalearn_shared.data.splits import (
    BACKGROUND_ALPHABETS,
    EVALUATION_ALPHABETS,
    official_split,
    split_by_alphabet,
)

__all__ = [
    "BACKGROUND_ALPHABETS",
    "BASE_URL",
    "ENV_DIR",
    "EVALUATION_ALPHABETS",
    "NAMED_SETS",
    "OFFICIAL",
    "OfficialFile",
    "download",
    "find_official",
    "load_omniglot",
    "merge_datasets",
    "official_split",
    "resolve_official",
    "split_by_alphabet",
    "verify_file",
]

NATIVE_SIZE = 105  # pixels; every official Omniglot PNG is 105 × 105
_CHARACTER_DIR = re.compile(r"character\d+")


# -- reading one zip or folder -------------------------------------------------------------
def _layout(rel_paths: Iterable[str], where: str) -> list[tuple[str, str, str]]:
    """``(alphabet, character, rel_path)`` for every PNG, checked against the layout.

    The first of several top folders wins a duplicate ``(alphabet, character)``.
    """
    pngs = sorted(
        p for p in rel_paths
        if p.lower().endswith(".png") and "__MACOSX" not in p and not p.rsplit("/", 1)[-1].startswith("._")
    )
    if not pngs:
        raise DataError(f"{where}: found no PNG files. {LAYOUT_HELP}")
    depths = {p.count("/") for p in pngs}
    if depths not in ({2}, {3}):
        example = next(p for p in pngs if p.count("/") not in (2, 3)) if depths - {2, 3} else pngs[0]
        raise DataError(
            f"{where}: PNGs at mixed or unexpected depths {sorted(depths)} (e.g. {example!r}). "
            + LAYOUT_HELP
        )
    owner: dict[tuple[str, str], str] = {}
    entries = []
    for p in pngs:
        parts = p.split("/")
        top, alphabet, character = ("", *parts[:2]) if len(parts) == 3 else tuple(parts[:3])
        if not _CHARACTER_DIR.fullmatch(character):
            raise DataError(
                f"{where}: {p!r} is not inside a characterNN folder (found {character!r}). "
                + LAYOUT_HELP
            )
        if owner.setdefault((alphabet, character), top) == top:
            entries.append((alphabet, character, p))
    return entries


def _assemble(
    entries: list[tuple[str, str, str]], read: Callable[[str], bytes], where: str, name: str
) -> ImageDataset:
    """Decode the PNGs of ``entries`` into a native-size dataset, classes sorted."""
    keys = sorted({(a, c) for a, c, _ in entries})
    class_id = {k: i for i, k in enumerate(keys)}
    entries = sorted(entries, key=lambda e: (class_id[e[:2]], e[2].rsplit("/", 1)[-1]))
    images = []
    for _, _, p in entries:  # one Pillow decode per file
        image = decode_png(read(p), f"{where}:{p}")
        if images and image.shape != images[0].shape:
            raise DataError(
                f"{where}:{p}: image is {image.shape[0]}×{image.shape[1]} pixels but the "
                f"others are {images[0].shape[0]}×{images[0].shape[1]}; Omniglot PNGs are all "
                f"{NATIVE_SIZE}×{NATIVE_SIZE}. Replace the file with an official copy."
            )
        images.append(image)
    labels = np.array([class_id[e[:2]] for e in entries], dtype=np.int64)
    classes = tuple(ClassInfo(a, c) for a, c in keys)
    return ImageDataset(np.stack(images), labels, classes, name)


def _zip_members(path: Path) -> tuple[zipfile.ZipFile, list[str]]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as err:
        raise DataError(
            f"{path}: not a readable zip archive ({err}); it is probably truncated or "
            "corrupt. Delete it and download it again (`metalearn data download`)."
        ) from err
    return archive, [i.filename for i in archive.infolist() if not i.is_dir()]


def _read_zip(path: Path, name: str) -> ImageDataset:
    archive, members = _zip_members(path)
    with archive:
        entries = _layout(members, str(path))

        def read(member: str) -> bytes:
            try:
                return archive.read(member)
            # NotImplementedError: a damaged header asks for an unknown method or version;
            # RuntimeError: its encryption flag is set.
            except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError,
                    RuntimeError) as err:
                raise DataError(
                    f"{path}:{member}: cannot extract this member ({err}); the archive is "
                    "corrupt. Delete it and download it again (`metalearn data download`)."
                ) from err

        return _assemble(entries, read, str(path), name)


def _folder_files(root: Path) -> list[str]:
    found = []
    for folder, _, files in os.walk(root):
        rel = Path(folder).relative_to(root).as_posix()
        found += [f if rel == "." else f"{rel}/{f}" for f in files if f.lower().endswith(".png")]
    return found


def _folder_md5(root: Path, rel_paths: Sequence[str]) -> tuple[str, dict[str, bytes]]:
    """Content hash of a folder's PNGs (names and bytes), and the bytes themselves."""
    digest = hashlib.md5(usedforsecurity=False)
    blobs = {}
    for p in sorted(rel_paths):
        data = (root / p).read_bytes()
        blobs[p] = data
        digest.update(p.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    return digest.hexdigest(), blobs


def _load_path(
    path: Path,
    size: int | None,
    resample: Resample,
    use_cache: bool,
    cache_dir: PathLike | None,
    expected_md5: str | None = None,
) -> ImageDataset:
    """One zip or folder → resized dataset, through the ``.npz`` cache."""
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or folder. {LAYOUT_HELP}")
    name = f"omniglot-{path.name.removesuffix('.zip')}"
    blobs: dict[str, bytes] | None = None
    if path.is_dir():
        rel_paths = _folder_files(path)
        if not rel_paths:
            zips = sorted(p.name for p in path.glob("*.zip"))
            hint = (f" It holds {zips}: pass one of those, or a named set with "
                    f"data_dir={str(path)!r}." if zips else "")
            raise DataError(f"{path}: found no PNG files.{hint} {LAYOUT_HELP}")
        _layout(rel_paths, str(path))  # fail on a wrong layout before hashing every file
        source_md5, blobs = _folder_md5(path, rel_paths)
    else:
        source_md5 = _cache.md5_file(path)
        if expected_md5 is not None and source_md5 != expected_md5:
            raise ChecksumError(
                f"{path}: md5 {source_md5} does not match the official {expected_md5}. The "
                "file is corrupt or truncated; delete it and run `metalearn data download`."
            )
    key = _cache.cache_key(source_md5, size, resample=resample, reader="omniglot")
    npz = _cache.cached_dataset_path(name, key, cache_dir)
    if use_cache:
        cached = _cache.load_cached_dataset(npz)
        if cached is not None:
            return cached
    if blobs is not None:
        ds = _assemble(_layout(blobs, str(path)), blobs.__getitem__, str(path), name)
    else:
        ds = _read_zip(path, name)
    if size is not None:
        ds = ImageDataset(resize_batch(ds.images, size, resample), ds.labels, ds.classes, name)
    if use_cache:
        _cache.save_cached_dataset(ds, npz)
    return ds


# -- tfds ----------------------------------------------------------------------------------
def _load_tfds(splits: Sequence[str], data_dir: PathLike | None) -> ImageDataset:
    """tfds ``omniglot`` → native-size dataset (tensorflow-datasets imported here only)."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            "source='tfds' needs tensorflow-datasets, which is not installed; "
            "`pip install tensorflow-datasets tensorflow`, or load the official zips instead "
            "(`metalearn data download`)."
        ) from err
    split = "+".join(splits)
    tf_ds, info = tfds.load(
        "omniglot", split=split, data_dir=None if data_dir is None else str(data_dir),
        with_info=True, shuffle_files=False,
    )
    images, alphabet_ids, char_ids = [], [], []
    for batch in tfds.as_numpy(tf_ds.batch(2048)):
        images.append(batch["image"][..., 0])  # (B, 105, 105); the three channels are equal
        alphabet_ids.append(batch["alphabet"])
        char_ids.append(batch["alphabet_char_id"])
    if not images:
        raise DataError(f"tfds omniglot split {split!r} is empty.")
    names = info.features["alphabet"].names
    alphabet = np.concatenate(alphabet_ids).astype(np.int64)
    char = np.concatenate(char_ids).astype(np.int64)
    pairs, inverse = np.unique(np.stack([alphabet, char], 1), axis=0, return_inverse=True)
    classes = [ClassInfo(names[a], f"character{c + 1:02d}") for a, c in pairs]
    # Same class order as the zip reader: by (alphabet name, character).
    order = sorted(range(len(classes)), key=lambda i: (classes[i].alphabet, classes[i].character))
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    labels = rank[inverse.reshape(-1)]
    by_label = np.argsort(labels, kind="stable")
    return ImageDataset(
        invert_uint8(np.concatenate(images)[by_label]),
        labels[by_label],
        tuple(classes[i] for i in order),
        "omniglot-tfds",
    )


# -- public loaders ------------------------------------------------------------------------
def merge_datasets(datasets: Sequence[ImageDataset], name: str) -> ImageDataset:
    """Merge datasets, dropping repeated classes (same alphabet, character and rotation).

    The first dataset holding a class supplies its images. Classes of the result are sorted
    by ``(alphabet, character, rotation, mirrored)``, instances grouped by class in input order.
    """
    if not datasets:
        raise ValueError("merge_datasets needs at least one dataset; found none.")
    shapes = {d.image_shape for d in datasets}
    if len(shapes) > 1:
        raise ValueError(f"{name}: cannot merge images of different sizes {sorted(shapes)}; "
                         "load them with the same size=.")
    owner: dict[tuple[str, str, int, bool], int] = {}
    for p, d in enumerate(datasets):
        for c in d.classes:
            owner.setdefault((c.alphabet, c.character, c.rotation, c.mirrored), p)
    keys = sorted(owner)
    final = {k: i for i, k in enumerate(keys)}
    images, labels = [], []
    for p, d in enumerate(datasets):
        remap = np.array(
            [final[k] if owner[k] == p else -1
             for k in ((c.alphabet, c.character, c.rotation, c.mirrored) for c in d.classes)],
            dtype=np.int64,
        )
        keep = remap[d.labels] >= 0
        images.append(d.images[keep])
        labels.append(remap[d.labels[keep]])
    all_labels = np.concatenate(labels)
    order = np.argsort(all_labels, kind="stable")
    return ImageDataset(
        np.concatenate(images)[order],
        all_labels[order],
        tuple(ClassInfo(*k) for k in keys),
        name,
    )


def load_omniglot(
    source: PathLike | Sequence[PathLike],
    size: int | None = 28,
    rotations: bool = False,
    *,
    resample: Resample = "lanczos",
    data_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    cache: bool = True,
    download_missing: bool = True,
    tfds_splits: Sequence[str] = ("train", "test"),
) -> ImageDataset:
    """Load Omniglot as stroke-high ``uint8 (n, size, size)`` images.

    Args:
        source: one of
            * a named set: ``"background"``, ``"evaluation"``, ``"small1"``, ``"small2"``,
              ``"small"`` (small1 + small2), ``"all"`` (background + evaluation), looked up
              in ``data_dir``, ``$METALEARN_OMNIGLOT_DIR`` and the cache, and downloaded
              when missing (unless ``download_missing=False``);
            * a path to an official-layout zip or folder (``[top/]Alphabet/characterNN/*.png``);
            * a list of the above, merged without duplicate characters;
            * ``"tfds"``: TensorFlow Datasets' ``omniglot`` (splits ``tfds_splits``).
        size: output side in pixels (28 default, 20 for MANN); ``None`` keeps 105.
        rotations: add 90/180/270° rotations of every character as new classes.
        resample: Pillow filter for the resize (see :mod:`~metalearn_shared.data.resize`).
        data_dir: folder holding the official zips (searched before the env var).
        cache_dir: metalearn cache root (default ``$METALEARN_HOME`` or ``~/.cache/metalearn``).
        cache: read and write the preprocessed ``.npz`` cache. It is keyed by the source's
            md5 + size + filter; rotations are applied after it (``np.rot90`` costs
            milliseconds, a rotated cache would be four times larger).
        download_missing: allow downloading named sets that are not found locally.
        tfds_splits: tfds splits merged for ``source="tfds"`` (``train`` = background,
            ``test`` = evaluation, ``small1``, ``small2``). Not cached here: tfds caches.

    Returns:
        The dataset, classes sorted by ``(alphabet, character)`` (rotated copies after all
        unrotated classes), 20 instances per character for the official data.

    Raises:
        FileNotFoundError: a path does not exist / a named set is absent and downloads are off.
        DataError: wrong layout, corrupt zip or PNG (the message names the file).
        ChecksumError: an official archive has the wrong md5.
        ValueError: an unknown named set.
    """
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not sources:
        raise ValueError("load_omniglot: source is an empty list; give a path or a named set.")
    if any(isinstance(s, str) and s == "tfds" for s in sources):
        if len(sources) != 1:
            raise ValueError("load_omniglot: 'tfds' cannot be merged with other sources; "
                             "load it alone and use merge_datasets.")
        ds = _load_tfds(tfds_splits, data_dir)
        if size is not None:
            ds = ImageDataset(resize_batch(ds.images, size, resample), ds.labels, ds.classes,
                              ds.name)
    else:
        parts = []
        for s in sources:
            if isinstance(s, str) and s in NAMED_SETS:
                for file_key in NAMED_SETS[s]:
                    path = resolve_official(file_key, data_dir, cache_dir, download_missing)
                    parts.append(_load_path(path, size, resample, cache, cache_dir,
                                            OFFICIAL[file_key].md5))
            elif isinstance(s, str) and not Path(s).exists() and "/" not in s and "." not in s:
                raise ValueError(
                    f"unknown Omniglot set {s!r} (and no such path); known sets: "
                    f"{sorted(NAMED_SETS)} or 'tfds', or give a path to a zip or folder."
                )
            else:
                parts.append(_load_path(Path(s), size, resample, cache, cache_dir))
        if len(sources) == 1 and isinstance(sources[0], str) and sources[0] in NAMED_SETS:
            name = f"omniglot-{sources[0]}"
        else:
            name = parts[0].name if len(parts) == 1 else "omniglot"
        ds = merge_datasets(parts, name)
    return add_rotations(ds) if rotations else ds
