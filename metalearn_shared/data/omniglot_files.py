"""The official Omniglot archives: their table, download, lookup and md5 check.

The four zips of github.com/brendenlake/omniglot (``python/*.zip``) with their md5 sums
(:data:`OFFICIAL`), the named sets that merge them (:data:`NAMED_SETS`), and the functions
that find an archive (``data_dir``, ``$METALEARN_OMNIGLOT_DIR``, ``<cache>/omniglot/``),
download it with an md5 check (:func:`download`) and verify a copy (:func:`verify_file`).
The readers that turn an archive into an :class:`ImageDataset` are in
:mod:`metalearn_shared.data.omniglot`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeAlias

import metalearn_shared.data.cache as _cache
from metalearn_shared.data.cache import ChecksumError

__all__ = [
    "BASE_URL",
    "ENV_DIR",
    "LAYOUT_HELP",
    "NAMED_SETS",
    "OFFICIAL",
    "OfficialFile",
    "download",
    "find_official",
    "mirror_url",
    "resolve_official",
    "verify_file",
]

PathLike: TypeAlias = "str | os.PathLike[str]"

BASE_URL = "https://github.com/brendenlake/omniglot/raw/master/python/"
ENV_DIR = "METALEARN_OMNIGLOT_DIR"  # a folder holding (some of) the official zips


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

LAYOUT_HELP = (
    "Expected an Omniglot zip, or a folder laid out as [top/]Alphabet/characterNN/*.png "
    "(e.g. images_background/Greek/character01/0394_01.png). Get the official files with "
    "`metalearn data download` (they land in $METALEARN_HOME/omniglot), or set "
    f"{ENV_DIR} to a folder that holds them."
)


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
