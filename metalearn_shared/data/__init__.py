"""Datasets as in-memory arrays: readers, the glyphs generator, splits and one-shot runs.

Every reader returns an :class:`ImageDataset` (``uint8 (n, H, W)`` stroke-high images, int64
labels, one :class:`ClassInfo` per class); samplers only index into it. numpy + Pillow only:
TensorFlow Datasets is imported lazily, and only for ``load_omniglot("tfds")``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from metalearn_shared.data.cache import (
    ChecksumError,
    atomic_path,
    atomic_write,
    cache_dir,
    md5_file,
    verify_md5,
)
from metalearn_shared.data.dataset import ClassInfo, ImageDataset
from metalearn_shared.data.glyphs import make_glyphs
from metalearn_shared.data.lake_runs import (
    OneShotRun,
    RunsResult,
    evaluate_runs,
    pixel_cost,
    read_runs,
    write_runs,
)
from metalearn_shared.data.omniglot import load_omniglot, merge_datasets
from metalearn_shared.data.omniglot_files import (
    ENV_DIR,
    NAMED_SETS,
    OFFICIAL,
    download,
    find_official,
    verify_file,
)
from metalearn_shared.data.preprocess import (
    DataError,
    add_reflections,
    add_rotations,
    invert_bool,
    invert_uint8,
)
from metalearn_shared.data.resize import resize_batch
from metalearn_shared.data.splits import (
    HOLDOUT_HELP,
    alphabet_folds,
    holdout_split,
    official_split,
    parse_holdout,
    split_by_alphabet,
)

__all__ = [
    "DATASETS",
    "HOLDOUT_HELP",
    "ENV_DIR",
    "NAMED_SETS",
    "OFFICIAL",
    "ChecksumError",
    "ClassInfo",
    "DataError",
    "ImageDataset",
    "OneShotRun",
    "RunsResult",
    "add_reflections",
    "add_rotations",
    "alphabet_folds",
    "atomic_path",
    "atomic_write",
    "cache_dir",
    "download",
    "evaluate_runs",
    "find_official",
    "holdout_split",
    "info",
    "invert_bool",
    "invert_uint8",
    "load_dataset",
    "load_omniglot",
    "make_glyphs",
    "md5_file",
    "merge_datasets",
    "official_split",
    "parse_holdout",
    "pixel_cost",
    "preview_png",
    "read_runs",
    "resize_batch",
    "split_by_alphabet",
    "verify_file",
    "verify_md5",
    "write_runs",
]

DATASETS: tuple[str, ...] = ("glyphs", "omniglot")


def _omniglot_source(data_dir: str | os.PathLike[str] | None) -> str | Path:
    """What ``load_dataset("omniglot", data_dir)`` loads: a path, or a named set."""
    if data_dir is not None:
        path = Path(data_dir)
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: no such file or folder. Give an Omniglot zip, an unzipped folder "
                "(Alphabet/characterNN/*.png) or a folder holding the official zips; get them "
                "with `metalearn data download`."
            )
        if path.is_file() or any(path.glob("*/*/*.png")) or any(path.glob("*/*/*/*.png")):
            return path
    present = {k for k in OFFICIAL if find_official(k, data_dir) is not None}
    for named in ("all", "small", "background", "small1", "small2"):
        if set(NAMED_SETS[named]) <= present:
            return named
    where = [str(data_dir)] if data_dir is not None else []
    where += [f"${ENV_DIR}={os.environ.get(ENV_DIR)}", str(cache_dir(create=False) / "omniglot")]
    raise FileNotFoundError(
        f"no Omniglot data found in {', '.join(where)}. Run `metalearn data download` "
        f"(all four official zips) or set {ENV_DIR} to a folder holding them, e.g. "
        "images_background_small1.zip and images_background_small2.zip."
    )


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    size: int | None = 28,
    *,
    rotations: bool = False,
    which: str | None = None,
    num_classes: int = 1000,
    instances: int = 20,
    seed: int = 0,
    cache: bool = True,
) -> ImageDataset:
    """Load a dataset by name.

    Args:
        name: ``"glyphs"`` or ``"omniglot"``.
        data_dir: for Omniglot, a zip, an unzipped folder, or a folder holding the official
            zips (default: ``$METALEARN_OMNIGLOT_DIR``, then the cache). Without ``which``, the
            largest available set is used: background + evaluation, else small1 + small2.
        size: image side in pixels (``None``: 105 for Omniglot, 28 for glyphs).
        rotations: add 90/180/270° rotations as new classes.
        which: Omniglot named set (``"background"``, ``"small"``, …) or ``"tfds"``; a named
            set that is not found locally is downloaded.
        num_classes, instances, seed: glyphs only.
        cache: Omniglot only; use the preprocessed ``.npz`` cache.

    Raises:
        ValueError: unknown ``name`` (the message lists the known ones).
    """
    if name == "glyphs":
        ds = make_glyphs(num_classes, instances, 28 if size is None else size, seed)
        return add_rotations(ds) if rotations else ds
    if name == "omniglot":
        source = which if which is not None else _omniglot_source(data_dir)
        return load_omniglot(source, size, rotations, data_dir=data_dir, cache=cache)
    raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}.")


def info(dataset: ImageDataset) -> str:
    """A few lines describing ``dataset``: images, classes, alphabets, instances, ink."""
    counts = dataset.counts
    rotations = sorted({c.rotation for c in dataset.classes})
    per_alphabet: dict[str, int] = {}
    for c in dataset.classes:
        if c.rotation == 0 and not c.mirrored:
            per_alphabet[c.alphabet] = per_alphabet.get(c.alphabet, 0) + 1
    height, width = dataset.image_shape
    lines = [
        f"{dataset.name}: {len(dataset)} images of {height}×{width} px, "
        f"{dataset.num_classes} classes, {len(per_alphabet)} alphabets",
        f"instances per class: min {counts.min() if counts.size else 0}, "
        f"max {counts.max() if counts.size else 0}, mean {counts.mean() if counts.size else 0:.1f}",
        f"rotations: {', '.join(f'{r}°' for r in rotations)}",
        f"mirrored classes: {sum(c.mirrored for c in dataset.classes)}",
        f"ink: mean pixel {dataset.images.mean():.1f} / 255",
        "characters per alphabet: "
        + ", ".join(f"{a} ({n})" for a, n in per_alphabet.items()),
    ]
    return "\n".join(lines)


def preview_png(
    dataset: ImageDataset,
    path: str | os.PathLike[str],
    ways: int = 5,
    shots: int = 1,
    queries: int = 5,
    seed: int = 0,
) -> Path:
    """Write a PNG of one N-way K-shot episode: support rows on top, query rows below.

    Column ``j`` holds one class; the first ``shots`` rows are its support images, then a blue
    rule, then ``queries`` rows of query images. Ink is drawn black on white.

    Args:
        dataset: where to draw the episode from.
        path: output PNG (written atomically).
        ways, shots, queries: episode shape.
        seed: classes and instances come from ``np.random.default_rng(seed)``.

    Returns:
        ``path`` as a :class:`Path`.
    """
    per_class = shots + queries
    if ways < 1 or shots < 1 or queries < 0:
        raise ValueError(f"preview_png: need ways ≥ 1, shots ≥ 1, queries ≥ 0; found "
                         f"{ways}, {shots}, {queries}.")
    eligible = np.flatnonzero(dataset.counts >= per_class)
    if eligible.size < ways:
        raise ValueError(
            f"{dataset.name}: a {ways}-way episode with {shots} shots + {queries} queries needs "
            f"{ways} classes with ≥ {per_class} instances; found {eligible.size}."
        )
    rng = np.random.default_rng(seed)
    classes = rng.choice(eligible, ways, replace=False)  # (N,)
    # Random instance positions without replacement, all classes at once: sort random keys,
    # padding slots (position ≥ count) pushed to the end.
    table = dataset.by_class[classes]  # (N, max_count), -1 padded
    keys = np.where(table >= 0, rng.random(table.shape), np.inf)
    picks = np.take_along_axis(table, np.argsort(keys, axis=1)[:, :per_class], axis=1)
    tiles = 255 - dataset.images[picks.T]  # (K+Q, N, H, W), black ink on white

    height, width = dataset.image_shape
    zoom = max(1, 64 // max(height, width))
    gap, rule = 2, 6  # pixels between tiles, and of the support/query separator
    cell_h, cell_w = height * zoom + gap, width * zoom + gap
    canvas = np.full((per_class * cell_h + gap + (rule if queries else 0), ways * cell_w + gap, 3),
                     190, dtype=np.uint8)
    for r in range(per_class):  # (K+Q) × N tiles; Pillow-free placement by slicing
        top = gap + r * cell_h + (rule if r >= shots else 0)
        block = np.repeat(np.repeat(tiles[r], zoom, axis=1), zoom, axis=2)  # (N, h, w)
        for j in range(ways):
            left = gap + j * cell_w
            canvas[top:top + height * zoom, left:left + width * zoom] = block[j][..., None]
    if queries:
        sep = gap + shots * cell_h
        canvas[sep:sep + rule - gap] = (40, 90, 200)
    path = Path(path)
    with atomic_write(path) as f:
        Image.fromarray(canvas, mode="RGB").save(f, format="PNG")
    return path
