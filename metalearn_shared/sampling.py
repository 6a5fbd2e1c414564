"""Seeded draws and argument checks shared by the samplers of :mod:`metalearn_shared.episodes`.

The one draw every sampler makes (:func:`_choose`: distinct classes, then distinct instances
of each, from an episode's generator), the argument checks whose messages say what to
change, and the ``uint8`` → ``float32`` conversion. numpy only; private to the samplers.
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import numpy as np

from metalearn_shared.augment import KochAffine, param_count
from metalearn_shared.data.dataset import ImageDataset

__all__: list[str] = []  # private helpers of metalearn_shared.episodes

_255 = np.float32(255)


# -- the one draw shared by every sampler ----------------------------------------------
def _repeats(rows: np.ndarray) -> np.ndarray:
    """Indices of the rows of ``rows (R, m)`` that hold some value twice."""
    if rows.shape[0] <= 8:  # a few rows: Python sets beat four array calls
        m = rows.shape[1]
        return np.array([r for r, row in enumerate(rows.tolist()) if len(set(row)) < m], np.int64)
    s = np.sort(rows, axis=1)
    return np.flatnonzero((s[:, 1:] == s[:, :-1]).any(axis=1))


def _distinct(
    rng: np.random.Generator, limits: np.ndarray, m: int, low: int, high: int
) -> np.ndarray:
    """Per row ``r``, ``m`` distinct integers drawn uniformly from ``[0, limits[r])``.

    Every ordered m-tuple of distinct values is equally likely, so the order is random too.
    Integers come from ``floor(u * n)`` with ``u`` a 53-bit uniform (bias below ``n / 2**53``).

    Args:
        rng: the episode's generator.
        limits: ``int64 (R,)``, each ``>= m``.
        m: values per row.
        low: a lower bound of ``limits`` known to the caller (the dataset's smallest class,
            or the number of classes), so that the method does not depend on the draw.
        high: an upper bound of ``limits`` (the largest class, or the number of classes).

    Returns:
        ``int64 (R, m)``.
    """
    rows = limits.shape[0]
    if m * m <= low:
        # Rejection: m draws from n >= m² values repeat with probability < 1/2, so few rows
        # are redrawn; cost O(m) per row however large n is (1000s of classes).
        out = (rng.random((rows, m)) * limits[:, None]).astype(np.int64)  # (R, m)
        if m > 1:
            bad = _repeats(out)
            while bad.size:
                out[bad] = (rng.random((bad.size, m)) * limits[bad, None]).astype(np.int64)
                bad = bad[_repeats(out[bad])]
        return out
    # Dense case (m close to n): rank random keys, with keys beyond each row's limit pushed
    # past every real key (uniforms are < 1).
    keys = rng.random((rows, high))  # (R, W)
    if low < high:
        keys[np.arange(high) >= limits[:, None]] = 2.0
    if high > 4 * m:
        part = np.argpartition(keys, m - 1, axis=1)[:, :m]  # (R, m) the m smallest, any order
        order = np.argsort(np.take_along_axis(keys, part, axis=1), axis=1)
        return np.take_along_axis(part, order, axis=1)
    return np.argsort(keys, axis=1)[:, :m]


class _Pool(NamedTuple):
    """What :func:`_choose` needs of a dataset, computed once per sampler."""

    num_classes: int
    counts: np.ndarray  # (C,) instances per class
    by_class: np.ndarray  # (C, W) instance indices, padded with -1
    smallest: int  # min(counts)
    largest: int  # W = max(counts)

    @classmethod
    def of(cls, dataset: ImageDataset) -> _Pool:
        counts = dataset.counts
        return cls(
            dataset.num_classes,
            counts,
            dataset.by_class,
            int(counts.min()),
            int(dataset.by_class.shape[1]),
        )


def _choose(
    rng: np.random.Generator, pool: _Pool, rows: int, k: int, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` independent draws of ``k`` distinct classes with ``m`` distinct instances each.

    Classes are in random order within a row, instances in random order within a class.
    Every class must have at least ``m`` instances (the samplers check).

    Returns:
        ``classes int64 (rows, k)`` and dataset indices ``int64 (rows, k, m)``.
    """
    n = pool.num_classes
    classes = _distinct(rng, np.full(rows, n, dtype=np.int64), k, n, n)  # (R, k)
    flat = classes.reshape(-1)  # (R*k,)
    pos = _distinct(rng, pool.counts[flat], m, pool.smallest, pool.largest)  # (R*k, m)
    index = pool.by_class[flat[:, None], pos]  # (R*k, m)
    return classes, index.reshape(rows, k, m)


# -- shared checks and conversions ------------------------------------------------------
def _count(owner: str, name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``, or a ValueError that says so."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{owner}: {name} must be an integer; found {value!r}.") from None
    if number < minimum:
        what = "positive" if minimum == 1 else f">= {minimum}"
        raise ValueError(f"{owner}: {name} must be {what}; found {number}.")
    return int(number)


def _check_classes(
    owner: str,
    dataset: ImageDataset,
    n_ways: int,
    n_per_class: int,
    *,
    ways: str,
    per_class: str,
    detail: str = "",
    adjustable: bool = True,
) -> None:
    """Raise unless ``dataset`` has ``n_ways`` classes with ``n_per_class`` instances each.

    Args:
        owner: the sampler's name, first word of the message.
        dataset: the dataset to check.
        n_ways: distinct classes one episode needs.
        n_per_class: distinct instances of each class one episode needs.
        ways: what asks for ``n_ways`` (an argument name such as ``"ways"``).
        per_class: what asks for ``n_per_class`` (``"shots + queries"``).
        detail: shown after ``per_class``, e.g. ``" = 1 + 15"``.
        adjustable: whether ``ways`` and ``per_class`` are arguments the caller can lower.
    """
    if n_ways > dataset.num_classes:
        fix = f"lower {ways} to at most {dataset.num_classes} or use" if adjustable else "use"
        raise ValueError(
            f"{owner}: {ways} = {n_ways} distinct classes are needed, but dataset "
            f"'{dataset.name}' has only {dataset.num_classes}; {fix} a dataset with more classes."
        )
    smallest = int(dataset.counts.argmin())
    have = int(dataset.counts[smallest])
    if n_per_class > have:
        fix = f"lower {per_class} to at most {have}, or keep" if adjustable else "keep"
        raise ValueError(
            f"{owner}: {per_class}{detail} = {n_per_class} distinct instances are needed per "
            f"class, but the smallest class of '{dataset.name}' ({dataset.classes[smallest].key}) "
            f"has only {have}; {fix} the classes that are large enough with "
            f"dataset.subset(np.flatnonzero(dataset.counts >= {n_per_class}))."
        )


def _to_float(images: np.ndarray) -> np.ndarray:
    """``uint8`` images to ``float32`` in [0, 1], exactly ``x / 255`` (one pass)."""
    return np.divide(images, _255, dtype=np.float32)


def _unbatch(batch: tuple) -> tuple:
    """The first episode of a batch of one (views, no copies)."""
    return type(batch)(*(field[0] for field in batch))


class _Sampler:
    """Argument checks shared by the samplers' ``episode`` and ``batch``, and the buffer of
    their distortions."""

    seed: int
    dataset: ImageDataset
    augment: KochAffine | None

    def _params(self, lead: tuple[int, ...]) -> np.ndarray | None:
        """An empty ``float32 (*lead, P)`` for one distortion per image (``P``:
        :func:`~metalearn_shared.augment.param_count`), or None without augmentation."""
        if self.augment is None:
            return None
        return np.empty((*lead, param_count(self.augment, self.dataset.image_shape)), np.float32)

    def _index(self, i: int) -> int:
        return _count(type(self).__name__, "episode index i", i, minimum=0)

    def _range(self, start: int, size: int) -> tuple[int, int]:
        owner = type(self).__name__
        return _count(owner, "start", start, minimum=0), _count(owner, "size", size)
