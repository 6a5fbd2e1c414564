"""Resizing stacks of grey images: the one function the dataset container needs from Pillow.

Resampling choice: :func:`resize_batch` uses Pillow's ``LANCZOS`` filter by default. It
antialiases when downsampling (105 → 28 averages over the whole footprint of each output
pixel, so thin strokes fade instead of vanishing) and is the filter the widely reproduced
Omniglot pipelines use (e.g. MAML's ``resize_images.py``), so accuracies stay comparable.
``BOX`` (plain area averaging, no ringing) is available as ``resample="box"``.

It sits below both :mod:`~metalearn_shared.data.dataset` (``ImageDataset.resized``) and
:mod:`~metalearn_shared.data.preprocess` (which re-exports it), so neither imports the other
to resize.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from PIL import Image

__all__ = ["RESAMPLE_FILTERS", "Resample", "resize_batch"]

Resample = Literal["lanczos", "box", "bilinear", "bicubic", "nearest"]

RESAMPLE_FILTERS: dict[str, Image.Resampling] = {
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "nearest": Image.Resampling.NEAREST,
}


def resize_batch(images: np.ndarray, size: int, resample: Resample = "lanczos") -> np.ndarray:
    """Resize a stack of grey images to ``size × size`` with Pillow's antialiasing filters.

    Args:
        images: ``uint8 (n, H, W)``.
        size: output side in pixels (28 for the metric models, 20 for MANN, 105 = Omniglot's
            native size).
        resample: Pillow filter name; ``"lanczos"`` (default) or ``"box"`` are the
            antialiasing choices, see the module docstring.

    Returns:
        ``uint8 (n, size, size)``; the input itself when it already has that size.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(
            f"resize_batch expects uint8 images of shape (n, H, W); found {images.dtype} "
            f"{images.shape}."
        )
    if size < 1:
        raise ValueError(f"resize_batch: size must be a positive number of pixels; found {size}.")
    if resample not in RESAMPLE_FILTERS:
        raise ValueError(
            f"resize_batch: unknown resample filter {resample!r}; choose one of "
            f"{sorted(RESAMPLE_FILTERS)}."
        )
    if images.shape[1:] == (size, size):
        return images
    method = RESAMPLE_FILTERS[resample]
    out = np.empty((images.shape[0], size, size), dtype=np.uint8)
    # Pillow resizes one image per call; there is no batched antialiasing resize in numpy.
    for i, image in enumerate(images):
        out[i] = np.asarray(Image.fromarray(image, mode="L").resize((size, size), method))
    return out
