"""The one in-memory dataset type that every reader produces and every sampler indexes.

Readers (Omniglot zip/folder/tfds, procedural glyphs) turn their source into an
:class:`ImageDataset`; samplers in :mod:`metalearn_shared.episodes` only index into it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from metalearn_shared.data.resize import resize_batch

__all__ = ["ClassInfo", "ImageDataset"]


@dataclass(frozen=True)
class ClassInfo:
    """Metadata of one class.

    Attributes:
        alphabet: Omniglot alphabet (or a synthetic group name for glyphs).
        character: Character folder name, e.g. ``"character01"``.
        rotation: Rotation in degrees (0, 90, 180, 270) when rotations are extra classes.
        mirrored: True for a class made of the left-right mirror images of a character,
            when reflections are extra classes (the mirror is taken after the rotation).
    """

    alphabet: str
    character: str
    rotation: int = 0
    mirrored: bool = False

    @property
    def key(self) -> str:
        """A unique, human-readable id: ``"Greek/character03@90"``, and
        ``"Greek/character03@90+mirror"`` for that class's mirror image."""
        suffix = f"@{self.rotation}" if self.rotation else ""
        if self.mirrored:
            suffix = (suffix or "@") + ("+mirror" if self.rotation else "mirror")
        return f"{self.alphabet}/{self.character}{suffix}"


@dataclass(frozen=True, eq=False)
class ImageDataset:
    """Images grouped into classes, held in memory.

    Attributes:
        images: ``uint8`` array ``(n, H, W)``, stroke = high values (255 = ink).
        labels: ``int64`` array ``(n,)`` with class ids ``0 .. num_classes - 1``.
        classes: one :class:`ClassInfo` per class id.
        name: a short name used in logs and errors (``"glyphs"``, ``"omniglot-small"``).
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[ClassInfo, ...]
    name: str = "dataset"
    _by_class: np.ndarray = field(init=False, repr=False)
    _counts: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        images = np.asarray(self.images)
        labels = np.asarray(self.labels, dtype=np.int64)
        if images.ndim != 3 or images.dtype != np.uint8:
            raise ValueError(
                f"{self.name}: images must be uint8 (n, H, W); found {images.dtype} "
                f"{images.shape}. Convert with np.asarray(x, np.uint8) and drop channel axes."
            )
        if labels.shape != (images.shape[0],):
            raise ValueError(
                f"{self.name}: labels must have shape ({images.shape[0]},) to match the "
                f"images; found {labels.shape}."
            )
        n_classes = len(self.classes)
        if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
            raise ValueError(
                f"{self.name}: labels must lie in 0..{n_classes - 1} (one ClassInfo per "
                f"class); found {labels.min()}..{labels.max()}."
            )
        counts = np.bincount(labels, minlength=n_classes).astype(np.int64)
        # (C, max_count) table of instance indices, padded with -1; lets samplers draw
        # instances for many classes at once without a Python loop.
        order = np.argsort(labels, kind="stable")
        width = int(counts.max()) if n_classes else 0
        by_class = np.full((n_classes, width), -1, dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if n_classes else counts
        pos = np.arange(labels.size) - np.repeat(starts, counts)
        by_class[labels[order], pos] = order
        object.__setattr__(self, "images", images)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "_by_class", by_class)
        object.__setattr__(self, "_counts", counts)

    # -- shape -------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int]:
        return (int(self.images.shape[1]), int(self.images.shape[2]))

    @property
    def counts(self) -> np.ndarray:
        """Instances per class, ``int64 (C,)``."""
        return self._counts

    @property
    def by_class(self) -> np.ndarray:
        """Instance indices per class, ``int64 (C, max_count)``, padded with ``-1``."""
        return self._by_class

    @property
    def alphabets(self) -> tuple[str, ...]:
        """Distinct alphabets in first-seen order."""
        return tuple(dict.fromkeys(c.alphabet for c in self.classes))

    def __len__(self) -> int:
        return int(self.images.shape[0])

    # -- subsets ---------------------------------------------------------------------
    def subset(self, class_ids: Sequence[int] | np.ndarray, name: str | None = None) -> ImageDataset:
        """The dataset restricted to ``class_ids``, relabelled ``0 .. len(class_ids) - 1``."""
        class_ids = np.asarray(class_ids, dtype=np.int64)
        remap = np.full(self.num_classes, -1, dtype=np.int64)
        remap[class_ids] = np.arange(class_ids.size)
        keep = remap[self.labels] >= 0
        return ImageDataset(
            images=self.images[keep],
            labels=remap[self.labels[keep]],
            classes=tuple(self.classes[i] for i in class_ids),
            name=name or self.name,
        )

    def subset_alphabets(self, alphabets: Sequence[str], name: str | None = None) -> ImageDataset:
        """The classes whose alphabet is in ``alphabets``."""
        wanted = set(alphabets)
        unknown = wanted - set(self.alphabets)
        if unknown:
            raise ValueError(
                f"{self.name}: unknown alphabets {sorted(unknown)}; this dataset has "
                f"{list(self.alphabets)}."
            )
        ids = [i for i, c in enumerate(self.classes) if c.alphabet in wanted]
        return self.subset(ids, name=name)

    def resized(self, size: int) -> ImageDataset:
        """The same dataset at ``size × size`` (Pillow antialiasing); no-op when equal."""
        if self.image_shape == (size, size):
            return self
        return ImageDataset(resize_batch(self.images, size), self.labels, self.classes, self.name)
