"""Array-level preprocessing shared by every reader: decode, invert, resize, rotate, mirror.

All images in :mod:`metalearn_shared.data` are ``uint8 (n, H, W)`` with the stroke high
(255 = ink, 0 = paper). The official Omniglot PNGs are the other way round: 1-bit images
whose background is white (``True``) and whose strokes are black (``False``); the helpers
here turn them around once, at load time.

Resizing (:func:`resize_batch`, its filters and the resampling choice) lives in
:mod:`metalearn_shared.data.resize`, below the dataset container; it is re-exported here.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from PIL import Image, UnidentifiedImageError

from metalearn_shared.data.dataset import ClassInfo, ImageDataset
from metalearn_shared.data.resize import RESAMPLE_FILTERS, Resample, resize_batch

__all__ = [
    "DataError",
    "RESAMPLE_FILTERS",
    "Resample",
    "add_reflections",
    "add_rotations",
    "decode_png",
    "invert_bool",
    "invert_uint8",
    "pil_to_stroke_high",
    "resize_batch",
    "stroke_high_to_pil",
]

class DataError(ValueError):
    """A data file or folder exists but cannot be used (corrupt, truncated, wrong layout)."""


# -- polarity ------------------------------------------------------------------------------
def invert_bool(images: np.ndarray) -> np.ndarray:
    """Official-Omniglot booleans (``True`` = white paper) → stroke-high ``uint8``.

    Args:
        images: ``bool`` array of any shape, ``True`` where the paper is blank.

    Returns:
        ``uint8`` array of the same shape: 255 where there is ink, 0 elsewhere.
    """
    images = np.asarray(images)
    if images.dtype != np.bool_:
        raise TypeError(
            f"invert_bool expects a bool array (1-bit PNG pixels); found {images.dtype}. "
            "Use invert_uint8 for 8-bit grey images."
        )
    return np.where(images, np.uint8(0), np.uint8(255))


def invert_uint8(images: np.ndarray) -> np.ndarray:
    """Swap paper and ink of ``uint8`` grey images: ``255 - x``."""
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"invert_uint8 expects uint8 images; found {images.dtype}.")
    return np.subtract(np.uint8(255), images, dtype=np.uint8)


def pil_to_stroke_high(image: Image.Image) -> np.ndarray:
    """A Pillow image in the paper-white convention → stroke-high ``uint8 (H, W)``.

    1-bit images (mode ``"1"``, the official Omniglot PNGs) go through :func:`invert_bool`;
    anything else is converted to 8-bit grey and inverted with :func:`invert_uint8`.
    """
    if image.mode == "1":
        return invert_bool(np.asarray(image, dtype=np.bool_))
    return invert_uint8(np.asarray(image.convert("L"), dtype=np.uint8))


def stroke_high_to_pil(image: np.ndarray) -> Image.Image:
    """Stroke-high ``uint8 (H, W)`` → an 8-bit grey Pillow image with black ink on white."""
    return Image.fromarray(invert_uint8(image), mode="L")


def decode_png(data: bytes, name: str) -> np.ndarray:
    """Decode one PNG (paper-white) to stroke-high ``uint8 (H, W)``.

    Args:
        data: the file's bytes.
        name: where the bytes came from (path, or ``archive.zip:member``); used in errors.

    Raises:
        DataError: the bytes are not a complete, readable image; the message names ``name``.
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.load()  # decode now, so truncation is reported here and not later
            return pil_to_stroke_high(image)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(
            f"{name}: cannot decode this PNG ({len(data)} bytes): {err}. The file is corrupt "
            "or truncated; delete it (or its archive) and get a fresh copy, e.g. with "
            "`metalearn data download`."
        ) from err


# -- geometry ------------------------------------------------------------------------------
def add_rotations(
    dataset: ImageDataset, angles: Sequence[int] = (90, 180, 270)
) -> ImageDataset:
    """Add rotated copies of every class as new classes (Santoro et al. 2016; Vinyals 2016).

    Rotation is counter-clockwise (``np.rot90``, the same sense as ``PIL.Image.rotate``).
    Class ``c`` rotated by the ``k``-th angle becomes class ``c + k * C``; its
    :class:`ClassInfo` keeps alphabet and character and records the angle, so alphabet
    splits keep all rotations of a character on the same side.

    Args:
        dataset: a dataset whose classes all have rotation 0.
        angles: extra angles in degrees, multiples of 90.

    Returns:
        A dataset with ``(1 + len(angles)) * C`` classes.
    """
    angles = tuple(int(a) for a in angles)
    bad = [a for a in angles if a % 90 or not 0 < a < 360]
    if bad:
        raise ValueError(f"add_rotations: angles must be 90, 180 or 270 degrees; found {bad}.")
    if any(c.rotation for c in dataset.classes):
        raise ValueError(
            f"{dataset.name}: already has rotated classes; add rotations once, to the "
            "unrotated dataset."
        )
    if any(c.mirrored for c in dataset.classes):
        raise ValueError(
            f"{dataset.name}: already has mirrored classes; add rotations first, then "
            "reflections (add_reflections mirrors every rotated class too)."
        )
    if dataset.image_shape[0] != dataset.image_shape[1] and any(a in (90, 270) for a in angles):
        raise ValueError(
            f"{dataset.name}: 90/270° rotations need square images; found {dataset.image_shape}."
        )
    n_classes = dataset.num_classes
    images = [dataset.images] + [np.rot90(dataset.images, a // 90, axes=(1, 2)) for a in angles]
    labels = [dataset.labels + k * n_classes for k in range(len(angles) + 1)]
    classes = list(dataset.classes) + [
        ClassInfo(c.alphabet, c.character, a) for a in angles for c in dataset.classes
    ]
    return ImageDataset(
        images=np.ascontiguousarray(np.concatenate(images)),
        labels=np.concatenate(labels),
        classes=tuple(classes),
        name=dataset.name,
    )


def add_reflections(dataset: ImageDataset) -> ImageDataset:
    """Add the left-right mirror image of every class as a new class.

    Like rotations as classes (:func:`add_rotations`), a mirrored character is a character
    no alphabet drew, which gives a metric learner more classes to tell apart. Class ``c``
    mirrored becomes class ``c + C``; its :class:`ClassInfo` keeps alphabet, character and
    rotation and sets ``mirrored``. On a rotated dataset every rotated class is mirrored
    too, so rotations and reflections together give all 8 symmetries of the square. A
    character that is its own mirror image (Latin ``A``) gives a class that duplicates it,
    as a 180°-symmetric one does under rotation.

    Args:
        dataset: a dataset none of whose classes is mirrored.

    Returns:
        A dataset with ``2 * C`` classes.
    """
    if any(c.mirrored for c in dataset.classes):
        raise ValueError(f"{dataset.name}: already has mirrored classes; add reflections once.")
    n_classes = dataset.num_classes
    classes = list(dataset.classes) + [
        ClassInfo(c.alphabet, c.character, c.rotation, mirrored=True) for c in dataset.classes
    ]
    return ImageDataset(
        images=np.ascontiguousarray(np.concatenate([dataset.images, dataset.images[:, :, ::-1]])),
        labels=np.concatenate([dataset.labels, dataset.labels + n_classes]),
        classes=tuple(classes),
        name=dataset.name,
    )
