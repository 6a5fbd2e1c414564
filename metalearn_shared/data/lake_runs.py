"""Lake et al.'s 20-way within-alphabet one-shot classification runs: read, score, write.

The official format (``python/one-shot-classification/all_runs.zip`` of
github.com/brendenlake/omniglot)::

    all_runs/
      run01/
        class_labels.txt        # "run01/test/item01.png run01/training/class12.png", one per item
        training/class01.png … class20.png   # one drawing of each of 20 characters
        test/item01.png … item20.png         # another drawer's drawing of each

Protocol (the official ``demo_classification.py``): for each test item, compare it with the
20 training images; the prediction is the argmax of a score (or argmin of a cost), ties going
to the first training file in sorted order (``np.argmax``/``np.argmin``); a run's error rate is
the fraction of wrong predictions, and the reported number is the mean over the runs.

:func:`write_runs` builds a folder in exactly this format from any :class:`ImageDataset`, so
the protocol can be run where only the small Omniglot sets (or glyphs) are available.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from metalearn_shared.data.dataset import ImageDataset
from metalearn_shared.data.preprocess import (
    DataError,
    Resample,
    decode_png,
    resize_batch,
    stroke_high_to_pil,
)

__all__ = [
    "OneShotRun",
    "RunsResult",
    "ScoreFn",
    "evaluate_runs",
    "pixel_cost",
    "read_runs",
    "write_runs",
]

# score_fn(test_images (Q, H, W) uint8, train_images (K, H, W) uint8) -> (Q, K) scores or costs
ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

LABELS_FILE = "class_labels.txt"
_RUN_DIR = re.compile(r"run\d+")
RUNS_HELP = (
    "Expected folders runNN/ each holding class_labels.txt, training/classNN.png and "
    "test/itemNN.png (the official all_runs.zip from github.com/brendenlake/omniglot, "
    "python/one-shot-classification/), or build such a folder from a dataset with "
    "metalearn_shared.data.write_runs."
)


@dataclass(frozen=True, eq=False)
class OneShotRun:
    """One N-way one-shot run.

    Attributes:
        name: run folder name, e.g. ``"run01"``.
        train_images: ``uint8 (K, H, W)`` stroke-high, one per class, in sorted file order.
        test_images: ``uint8 (Q, H, W)`` stroke-high, in sorted file order.
        answers: ``int64 (Q,)``, index into ``train_images`` of each test item's class.
        train_files: the training file names as written in ``class_labels.txt``, sorted.
        test_files: the test file names, sorted.
    """

    name: str
    train_images: np.ndarray
    test_images: np.ndarray
    answers: np.ndarray
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class RunsResult:
    """Result of :func:`evaluate_runs`.

    Attributes:
        runs: run names.
        errors: ``float64 (R,)`` error rate of each run, a fraction in [0, 1].
        predictions: one ``int64 (Q,)`` array per run, the predicted training index per item.
    """

    runs: tuple[str, ...]
    errors: np.ndarray
    predictions: tuple[np.ndarray, ...]

    @property
    def mean_error(self) -> float:
        """Mean error rate over the runs, a fraction (the official figure is × 100)."""
        return float(self.errors.mean())

    def __str__(self) -> str:
        rows = [f"{r}: {100 * e:5.1f}% error" for r, e in zip(self.runs, self.errors, strict=True)]
        return "\n".join(rows + [f"mean: {100 * self.mean_error:.2f}% error over {len(self.runs)} runs"])


def _run_dirs(root: Path) -> list[Path]:
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder. {RUNS_HELP}")
    runs = sorted(d for d in root.iterdir() if d.is_dir() and _RUN_DIR.fullmatch(d.name))
    if not runs and (root / "all_runs").is_dir():
        return _run_dirs(root / "all_runs")
    if not runs:
        raise DataError(f"{root}: found no runNN folders. {RUNS_HELP}")
    return runs


def _read_run(root: Path, run: Path, size: int | None, resample: Resample) -> OneShotRun:
    label_path = run / LABELS_FILE
    if not label_path.is_file():
        raise DataError(f"{run}: missing {LABELS_FILE}. {RUNS_HELP}")
    answer_of: dict[str, str] = {}
    for number, line in enumerate(label_path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        tokens = line.split()
        if len(tokens) != 2:
            raise DataError(
                f"{label_path}:{number}: expected 'runNN/test/itemNN.png "
                f"runNN/training/classNN.png'; found {line.strip()!r}."
            )
        if tokens[0] in answer_of:
            raise DataError(f"{label_path}:{number}: test item {tokens[0]} is listed twice.")
        answer_of[tokens[0]] = tokens[1]
    if not answer_of:
        raise DataError(f"{label_path}: empty; expected one line per test item.")
    test_files = sorted(answer_of)
    train_files = sorted(set(answer_of.values()))
    train_index = {f: i for i, f in enumerate(train_files)}
    # The candidates are the training files class_labels.txt names (as the official code
    # does); a training image that no line names would silently drop out, so refuse it.
    on_disk = {f"{run.name}/training/{p.name}" for p in (run / "training").glob("*.png")}
    unnamed = sorted(on_disk - set(train_files))
    if unnamed:
        raise DataError(
            f"{label_path}: names no test item for {unnamed}; in the official format every "
            "training image is the answer of exactly one test item. Fix the file or remove "
            "the extra images."
        )

    def load(files: list[str]) -> np.ndarray:
        images = []
        for f in files:  # one Pillow decode per file
            path = root / f
            if not path.is_file():
                raise DataError(f"{label_path} names {f}, but {path} does not exist. {RUNS_HELP}")
            images.append(decode_png(path.read_bytes(), str(path)))
        if len({im.shape for im in images}) > 1:
            raise DataError(f"{run}: images of different sizes {sorted({im.shape for im in images})}.")
        stack = np.stack(images)
        return stack if size is None else resize_batch(stack, size, resample)

    return OneShotRun(
        name=run.name,
        train_images=load(train_files),
        test_images=load(test_files),
        answers=np.array([train_index[answer_of[f]] for f in test_files], dtype=np.int64),
        train_files=tuple(train_files),
        test_files=tuple(test_files),
    )


def read_runs(
    root: str | os.PathLike[str], size: int | None = 28, resample: Resample = "lanczos"
) -> tuple[OneShotRun, ...]:
    """Read every ``runNN`` folder under ``root`` (or ``root/all_runs``).

    Args:
        root: the folder holding ``run01/``, ``run02/``, …; the paths in
            ``class_labels.txt`` are relative to it.
        size: resize images to ``size × size`` (``None`` keeps the files' size, 105 for the
            official runs).
        resample: Pillow filter for the resize.

    Returns:
        The runs in folder-name order.
    """
    root = Path(root)
    runs = _run_dirs(root)
    return tuple(_read_run(r.parent, r, size, resample) for r in runs)


def evaluate_runs(
    root: str | os.PathLike[str] | Sequence[OneShotRun],
    score_fn: ScoreFn,
    kind: Literal["score", "cost"] = "score",
    size: int | None = 28,
) -> RunsResult:
    """Run the official one-shot protocol.

    Args:
        root: a runs folder (see :func:`read_runs`) or runs already read.
        score_fn: ``score_fn(test_images, train_images) -> (Q, K)`` where ``test_images`` is
            ``uint8 (Q, H, W)`` and ``train_images`` ``uint8 (K, H, W)``, stroke-high; entry
            ``[i, j]`` compares test item ``i`` with training image ``j``.
        kind: ``"score"`` (higher = more similar, prediction = argmax) or ``"cost"`` (lower =
            more similar, prediction = argmin). Ties go to the first training file.
        size: image size handed to ``score_fn`` when reading a folder.

    Returns:
        Per-run error rates and their mean (:class:`RunsResult`).
    """
    if kind not in ("score", "cost"):
        raise ValueError(f"evaluate_runs: kind must be 'score' or 'cost'; found {kind!r}.")
    runs = read_runs(root, size) if isinstance(root, (str, os.PathLike)) else tuple(root)
    pick = np.argmax if kind == "score" else np.argmin
    errors, predictions = [], []
    for run in runs:
        matrix = np.asarray(score_fn(run.test_images, run.train_images), dtype=np.float64)
        expected = (len(run.test_images), len(run.train_images))
        if matrix.shape != expected:
            raise ValueError(
                f"{run.name}: score_fn must return a (test items, training images) = "
                f"{expected} matrix; found shape {matrix.shape}."
            )
        if np.isnan(matrix).any():
            raise ValueError(f"{run.name}: score_fn returned NaN; a {kind} must be a number.")
        predicted = pick(matrix, axis=1)  # (Q,)
        predictions.append(predicted)
        errors.append(np.mean(predicted != run.answers))
    return RunsResult(tuple(r.name for r in runs), np.array(errors, dtype=np.float64),
                      tuple(predictions))


def pixel_cost(test_images: np.ndarray, train_images: np.ndarray) -> np.ndarray:
    """Baseline cost: Euclidean distance between raw pixels scaled to [0, 1], ``(Q, K)``."""
    q = test_images.reshape(len(test_images), -1).astype(np.float64) / 255
    k = train_images.reshape(len(train_images), -1).astype(np.float64) / 255
    sq = (q * q).sum(1)[:, None] + (k * k).sum(1)[None, :] - 2 * q @ k.T  # (Q, K)
    return np.sqrt(np.maximum(sq, 0.0))


def write_runs(
    dataset: ImageDataset,
    out_dir: str | os.PathLike[str],
    n_runs: int = 20,
    seed: int = 0,
    ways: int = 20,
) -> Path:
    """Write one-shot runs in the official format, drawn from ``dataset``.

    Each run picks an alphabet with at least ``ways`` characters, ``ways`` of its characters,
    and two instance positions (≈ two drawers, as instances are ordered by file name): the
    first gives the training image, the second the test image of every character. Training
    and test files are numbered in independent random orders. When no alphabet has ``ways``
    characters, runs draw characters from the whole dataset instead (with a warning).

    Args:
        dataset: source of the images (written at their current size, paper white).
        out_dir: folder to create ``run01/ …`` in.
        n_runs: number of runs (the official set has 20).
        seed: all choices come from ``np.random.default_rng(seed)``.
        ways: characters per run.

    Returns:
        ``out_dir`` as a :class:`Path`.
    """
    if ways < 2 or n_runs < 1:
        raise ValueError(f"write_runs: need ways ≥ 2 and n_runs ≥ 1; found {ways}, {n_runs}.")
    usable = np.flatnonzero(dataset.counts >= 2)  # classes with a training and a test drawing
    if usable.size < ways:
        raise ValueError(
            f"{dataset.name}: {ways}-way runs need {ways} classes with ≥ 2 instances; found "
            f"{usable.size}."
        )
    alphabet_of = np.array([c.alphabet for c in dataset.classes])
    groups = [usable[alphabet_of[usable] == a] for a in dataset.alphabets]
    groups = [g for g in groups if g.size >= ways]
    if not groups:
        warnings.warn(
            f"{dataset.name}: no alphabet has {ways} characters; the runs mix alphabets, "
            "which makes them easier than the official within-alphabet runs.", stacklevel=2
        )
        groups = [usable]
    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    for r in range(n_runs):
        run = f"run{r + 1:02d}"
        group = groups[rng.integers(len(groups))]
        chars = rng.choice(group, ways, replace=False)  # (ways,) class ids
        train_pos, test_pos = rng.choice(int(dataset.counts[chars].min()), 2, replace=False)
        train_img = dataset.images[dataset.by_class[chars, train_pos]]  # (ways, H, W)
        test_img = dataset.images[dataset.by_class[chars, test_pos]]
        train_slot = rng.permutation(ways)  # character k is written as class{train_slot[k]+1}
        test_slot = rng.permutation(ways)
        for sub in ("training", "test"):
            (out / run / sub).mkdir(parents=True, exist_ok=True)
        lines = [""] * ways
        for k in range(ways):  # one PNG encode per file
            stroke_high_to_pil(train_img[k]).save(out / run / "training" / f"class{train_slot[k] + 1:02d}.png")
            stroke_high_to_pil(test_img[k]).save(out / run / "test" / f"item{test_slot[k] + 1:02d}.png")
            lines[test_slot[k]] = (f"{run}/test/item{test_slot[k] + 1:02d}.png "
                                   f"{run}/training/class{train_slot[k] + 1:02d}.png")
        (out / run / LABELS_FILE).write_text("\n".join(lines) + "\n")
    return out
