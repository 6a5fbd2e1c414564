"""Omniglot (Lake et al. 2015) from any of its three sources, as one :class:`ImageDataset`.

Sources, all producing the same arrays:

* the official zips of github.com/brendenlake/omniglot (``python/*.zip``), downloaded to
  ``<cache>/omniglot/`` with an md5 check (:func:`download`), or found in
  ``$METALEARN_OMNIGLOT_DIR``;
* a local zip or unzipped folder in the official layout ``[top/]Alphabet/characterNN/*.png``;
* tfds ``omniglot`` (``source="tfds"``; TensorFlow Datasets is imported only then).

Preprocessing: invert to stroke-high, resize with Pillow's LANCZOS filter
(:func:`~metalearn_shared.data.preprocess.resize_batch`), cache the result as ``.npz`` keyed
by the source's md5 and the options. Classes are ordered by ``(alphabet, character)`` and
instances by file name, so a zip and its unzipped folder give identical arrays; several
sources merge with duplicates ``(alphabet, character)`` dropped (small1 and small2 share
Greek and Latin: merged they hold 242 characters of 8 alphabets).

Splits are by alphabet: :func:`official_split` (background/evaluation) and the seeded
:func:`split_by_alphabet` for when only the small sets are at hand.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeAlias

import numpy as np

from metalearn_shared.data import cache as _cache
from metalearn_shared.data.cache import ChecksumError
from metalearn_shared.data.dataset import ClassInfo, ImageDataset
from metalearn_shared.data.preprocess import (
    DataError,
    Resample,
    add_rotations,
    decode_png,
    invert_uint8,
    resize_batch,
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

PathLike: TypeAlias = "str | os.PathLike[str]"

BASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
ENV_DIR = "METALEARN_OMNIGLOT_DIR"  # a folder holding (some of) the official zips
NATIVE_SIZE = 105  # pixels; every official Omniglot PNG is 105 × 105


@dataclass(frozen=True)
class OfficialFile:
    """One archive of the official release.

    Attributes:
        filename: name under ``BASE_URL``.
        md5: hex md5 of the archive.
        alphabets: alphabets it holds.
        characters: characters (classes) it holds; each has 20 drawings.
    """

    filename: str
    md5: str
    alphabets: int
    characters: int

    @property
    def url(self) -> str:
        return BASE_URL + self.filename


OFFICIAL: dict[str, OfficialFile] = {
    "background": OfficialFile("images_background.zip", "68d2efa1b9178cc56df9314c21c6e718", 30, 964),
    "evaluation": OfficialFile("images_evaluation.zip", "6b91aef0f799c5bb55b94e3f2daec811", 20, 659),
    "small1": OfficialFile("images_background_small1.zip", "e704a628b5459e08445c13499850abc4", 5, 136),
    "small2": OfficialFile("images_background_small2.zip", "b75a71a51d3b13f821f212756fe481fd", 5, 156),
}

# Named sets → the official files they merge.
NAMED_SETS: dict[str, tuple[str, ...]] = {
    "background": ("background",),
    "evaluation": ("evaluation",),
    "small1": ("small1",),
    "small2": ("small2",),
    "small": ("small1", "small2"),
    "all": ("background", "evaluation"),
}

BACKGROUND_ALPHABETS: tuple[str, ...] = (
    "Alphabet_of_the_Magi", "Anglo-Saxon_Futhorc", "Arcadian", "Armenian",
    "Asomtavruli_(Georgian)", "Balinese", "Bengali", "Blackfoot_(Canadian_Aboriginal_Syllabics)",
    "Braille", "Burmese_(Myanmar)", "Cyrillic", "Early_Aramaic", "Futurama", "Grantha", "Greek",
    "Gujarati", "Hebrew", "Inuktitut_(Canadian_Aboriginal_Syllabics)", "Japanese_(hiragana)",
    "Japanese_(katakana)", "Korean", "Latin", "Malay_(Jawi_-_Arabic)", "Mkhedruli_(Georgian)",
    "N_Ko", "Ojibwe_(Canadian_Aboriginal_Syllabics)", "Sanskrit", "Syriac_(Estrangelo)",
    "Tagalog", "Tifinagh",
)
EVALUATION_ALPHABETS: tuple[str, ...] = (
    "Angelic", "Atemayar_Qelisayer", "Atlantean", "Aurek-Besh", "Avesta", "Ge_ez", "Glagolitic",
    "Gurmukhi", "Kannada", "Keble", "Malayalam", "Manipuri", "Mongolian",
    "Old_Church_Slavonic_(Cyrillic)", "Oriya", "Sylheti", "Syriac_(Serto)", "Tengwar", "Tibetan",
    "ULOG",
)

LAYOUT_HELP = (
    "Expected an Omniglot zip, or a folder laid out as [top/]Alphabet/characterNN/*.png "
    "(e.g. images_background/Greek/character01/0394_01.png). Get the official files with "
    "`metalearn data download` (they land in $METALEARN_HOME/omniglot), or set "
    f"{ENV_DIR} to a folder that holds them."
)
_CHARACTER_DIR = re.compile(r"character\d+")


# -- official files ------------------------------------------------------------------------
def _official(name: str) -> tuple[str, OfficialFile]:
    """Accept ``"small1"`` or ``"images_background_small1.zip"``."""
    for key, entry in OFFICIAL.items():
        if name in (key, entry.filename, entry.filename.removesuffix(".zip")):
            return key, entry
    raise ValueError(
        f"unknown Omniglot file {name!r}; known: {sorted(OFFICIAL)} "
        f"(or their file names {[e.filename for e in OFFICIAL.values()]})."
    )


def _download_dir(cache_dir: PathLike | None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else _cache.cache_dir()
    return root / "omniglot"


def download(
    name: str,
    cache_dir: PathLike | None = None,
    url: str | None = None,
    *,
    force: bool = False,
    timeout_s: float = 60.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download one official archive into ``<cache_dir>/omniglot/`` and check its md5.

    The bytes stream into a temporary file in the destination folder while their md5 is
    computed; the file is renamed to its final name only when the md5 matches. On a
    mismatch (or any error) the partial file is deleted and nothing else changes.

    Args:
        name: ``"background"``, ``"evaluation"``, ``"small1"``, ``"small2"`` or a file name
            such as ``"images_background.zip"``.
        cache_dir: metalearn cache root (default ``$METALEARN_HOME`` or ``~/.cache/metalearn``).
        url: where to fetch from. A URL ending in ``.zip`` is the file itself; any other
            is a base the official file name is appended to (a mirror folder:
            ``"file:///mnt/mirror/"``, ``"https://host/omniglot"``). Default ``BASE_URL``.
        force: download even when a verified copy exists.
        timeout_s: socket timeout in seconds.
        progress: called as ``progress(bytes_so_far, total_bytes_or_None)``.

    Returns:
        Path of the verified archive.

    Raises:
        ChecksumError: the downloaded bytes have the wrong md5 (message gives both sums).
        ConnectionError: the URL could not be read.
    """
    _, entry = _official(name)
    dest = _download_dir(cache_dir) / entry.filename
    if dest.is_file() and not force:
        if _cache.md5_file(dest) == entry.md5:
            return dest
        warnings.warn(f"{dest}: md5 mismatch; downloading it again.", stacklevel=2)
    source = mirror_url(url, entry.filename) if url else entry.url
    try:
        response = urllib.request.urlopen(source, timeout=timeout_s)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as err:
        raise ConnectionError(
            f"cannot download {entry.filename} from {source}: {err}. Without network access, "
            f"copy the file to {dest} or into a folder named by ${ENV_DIR}."
        ) from err
    with response, _cache.atomic_write(dest) as f:
        total = response.headers.get("Content-Length")
        total_bytes = int(total) if total and total.isdigit() else None
        digest, done = hashlib.md5(usedforsecurity=False), 0
        for block in _read_blocks(response, source):
            f.write(block)
            digest.update(block)
            done += len(block)
            if progress is not None:
                progress(done, total_bytes)
        found = digest.hexdigest()
        if found != entry.md5:
            # Raising inside atomic_write deletes the partial file; dest stays as it was.
            raise ChecksumError(
                f"{entry.filename} from {source}: md5 {found} does not match the expected "
                f"{entry.md5} ({done} bytes received). The partial file was deleted and {dest} "
                "was not written. Retry the download; if it keeps failing, download the file "
                "by hand and check it with `metalearn data verify`."
            )
    return dest


def mirror_url(url: str, filename: str) -> str:
    """``url`` itself when it names a ``.zip``, else ``url`` as a folder + ``filename``."""
    if url.lower().endswith(".zip"):
        return url
    return url.rstrip("/") + "/" + filename


def _read_blocks(response: IO[bytes], source: str, block_bytes: int = 1 << 16) -> Iterator[bytes]:
    """The body of a URL response in blocks; a broken connection becomes ConnectionError."""
    while True:
        try:
            block = response.read(block_bytes)
        except (http.client.HTTPException, OSError) as err:
            raise ConnectionError(f"download from {source} broke off: {err}. Retry.") from err
        if not block:
            return
        yield block


def find_official(
    name: str, data_dir: PathLike | None = None, cache_dir: PathLike | None = None
) -> Path | None:
    """Where an official archive already is: ``data_dir``, ``$METALEARN_OMNIGLOT_DIR``, cache."""
    _, entry = _official(name)
    folders = [data_dir, os.environ.get(ENV_DIR) or None, _download_dir(cache_dir)]
    for folder in folders:
        if folder is not None and (Path(folder) / entry.filename).is_file():
            return Path(folder) / entry.filename
    return None


def resolve_official(
    name: str,
    data_dir: PathLike | None = None,
    cache_dir: PathLike | None = None,
    download_missing: bool = True,
) -> Path:
    """The path of an official archive, downloading it when it is nowhere to be found."""
    found = find_official(name, data_dir, cache_dir)
    if found is not None:
        return found
    _, entry = _official(name)
    if not download_missing:
        raise FileNotFoundError(
            f"{entry.filename} not found in data_dir={data_dir}, ${ENV_DIR}="
            f"{os.environ.get(ENV_DIR)} or {_download_dir(cache_dir)}. Run "
            f"`metalearn data download {name}` or point {ENV_DIR} at a folder holding it."
        )
    return download(name, cache_dir)


def verify_file(path: PathLike) -> str:
    """Check an official archive's md5 (chosen by its file name); return the md5."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file. {LAYOUT_HELP}")
    _, entry = _official(path.name)
    return _cache.verify_md5(path, entry.md5)


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
    by ``(alphabet, character, rotation)``, instances grouped by class in input order.
    """
    if not datasets:
        raise ValueError("merge_datasets needs at least one dataset; found none.")
    shapes = {d.image_shape for d in datasets}
    if len(shapes) > 1:
        raise ValueError(f"{name}: cannot merge images of different sizes {sorted(shapes)}; "
                         "load them with the same size=.")
    owner: dict[tuple[str, str, int], int] = {}
    for p, d in enumerate(datasets):
        for c in d.classes:
            owner.setdefault((c.alphabet, c.character, c.rotation), p)
    keys = sorted(owner)
    final = {k: i for i, k in enumerate(keys)}
    images, labels = [], []
    for p, d in enumerate(datasets):
        remap = np.array(
            [final[k] if owner[k] == p else -1
             for k in ((c.alphabet, c.character, c.rotation) for c in d.classes)],
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
        tuple(ClassInfo(a, c, r) for a, c, r in keys),
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
        resample: Pillow filter for the resize (see :mod:`~metalearn_shared.data.preprocess`).
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


# -- splits --------------------------------------------------------------------------------
def official_split(dataset: ImageDataset) -> tuple[ImageDataset, ImageDataset]:
    """The official split: (background alphabets, evaluation alphabets).

    Raises:
        ValueError: the dataset lacks one side (e.g. only the small sets, which are both
            drawn from the background alphabets) or holds alphabets of neither list.
    """
    present = dataset.alphabets
    background = [a for a in present if a in BACKGROUND_ALPHABETS]
    evaluation = [a for a in present if a in EVALUATION_ALPHABETS]
    other = [a for a in present if a not in BACKGROUND_ALPHABETS + EVALUATION_ALPHABETS]
    if other:
        raise ValueError(f"{dataset.name}: alphabets {other} are in neither official list; "
                         "use split_by_alphabet instead.")
    if not background or not evaluation:
        raise ValueError(
            f"{dataset.name}: the official split needs background and evaluation alphabets; "
            f"found {len(background)} background and {len(evaluation)} evaluation. Load "
            "'all' (images_background.zip + images_evaluation.zip), or use split_by_alphabet "
            "for the small sets."
        )
    return (dataset.subset_alphabets(background, name=f"{dataset.name}-background"),
            dataset.subset_alphabets(evaluation, name=f"{dataset.name}-evaluation"))


def _split_counts(parts: Sequence[float], n: int) -> list[int]:
    if not parts:
        raise ValueError("split_by_alphabet: give at least one fraction or count.")
    if all(isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in parts):
        counts = [int(p) for p in parts]
        if min(counts) < 1 or sum(counts) > n:
            raise ValueError(f"split_by_alphabet: counts {counts} must each be ≥ 1 and sum to at "
                             f"most the {n} alphabets available.")
        return counts
    fractions = np.asarray(parts, dtype=np.float64)
    if fractions.min() <= 0 or fractions.sum() > 1 + 1e-9:
        raise ValueError(f"split_by_alphabet: fractions {list(parts)} must be > 0 and sum to at "
                         "most 1.")
    # Largest-remainder rounding of the fractions to whole alphabets.
    exact = fractions * n
    counts = np.floor(exact).astype(int)
    spare = int(round(min(fractions.sum(), 1.0) * n)) - counts.sum()
    counts[np.argsort(counts - exact, kind="stable")[:spare]] += 1
    if counts.min() < 1:
        raise ValueError(f"split_by_alphabet: fractions {list(parts)} of {n} alphabets leave a "
                         f"part empty ({counts.tolist()} alphabets); use larger fractions or counts.")
    return counts.tolist()


def split_by_alphabet(
    dataset: ImageDataset,
    parts: Sequence[float] = (0.75, 0.25),
    seed: int = 0,
    names: Sequence[str] | None = None,
) -> tuple[ImageDataset, ...]:
    """Split into alphabet-disjoint datasets, seeded.

    Args:
        dataset: any dataset with alphabets (Omniglot, glyphs).
        parts: fractions of the alphabets (floats, summing to at most 1) or numbers of
            alphabets (ints) per part, e.g. ``(0.75, 0.25)`` or ``(6, 2)``.
        seed: the alphabets (sorted by name) are shuffled with ``default_rng(seed)``.
        names: dataset names of the parts (default ``"<name>-split<i>"``).

    Returns:
        One dataset per part; no alphabet appears in two parts.
    """
    alphabets = sorted(dataset.alphabets)
    counts = _split_counts(parts, len(alphabets))
    order = np.random.default_rng(seed).permutation(len(alphabets))
    names = list(names) if names is not None else [f"{dataset.name}-split{i}"
                                                   for i in range(len(counts))]
    if len(names) != len(counts):
        raise ValueError(f"split_by_alphabet: {len(counts)} parts but {len(names)} names.")
    bounds = np.cumsum([0, *counts])
    return tuple(
        dataset.subset_alphabets([alphabets[i] for i in order[lo:hi]], name=n)
        for lo, hi, n in zip(bounds[:-1], bounds[1:], names, strict=True)
    )
