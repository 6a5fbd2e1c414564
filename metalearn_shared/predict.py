"""Few-shot prediction on one's own images: a support folder of classes, query files.

Framework-agnostic (numpy + Pillow): reading and converting the images, the protocol, the
CSV and the contact sheet. Each framework's ``predict.py`` hands :func:`predict_images` one
function of its model, ``class_scores(support_x, support_y, query_x, ways) -> (Q, N)``.

Conversion, the same as the training data's: alpha composited onto white paper, grayscale,
ink made high (an image whose border is mostly light is taken as dark ink on light paper
and inverted), padded to a square with paper, resized to the model's side with Pillow's
LANCZOS filter (as :func:`~metalearn_shared.data.preprocess.resize_batch`), scaled to
float32 ``[0, 1]``.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from metalearn_shared.config import ModelConfig
from metalearn_shared.data.preprocess import DataError

__all__ = [
    "IMAGE_SUFFIXES",
    "Predictions",
    "ClassScores",
    "check_predictable",
    "load_image",
    "read_support",
    "read_queries",
    "predict_images",
    "write_csv",
    "write_contact_sheet",
    "main_predict",
]

#: File suffixes read as images (any other file in a class folder is an error).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")

#: ``(support_x (S,H,W) float32, support_y (S,) int64, query_x (Q,H,W) float32, ways)
#: -> (Q, ways)`` scores, higher = more likely that class.
ClassScores = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]

_QUERY_CHUNK = 256  # queries per forward pass


@dataclass(frozen=True)
class Predictions:
    """The result of :func:`predict_images`.

    Attributes:
        files: query files, in input order.
        classes: class names (support sub-folder names), sorted.
        probabilities: ``(Q, N)`` softmax of the class scores.
        support_files: the support images of each class.
    """

    files: tuple[Path, ...]
    classes: tuple[str, ...]
    probabilities: np.ndarray
    support_files: dict[str, tuple[Path, ...]]

    @property
    def predicted(self) -> list[str]:
        return [self.classes[i] for i in np.argmax(self.probabilities, axis=1)]

    def top_k(self, k: int) -> list[list[tuple[str, float]]]:
        """For each query, its ``k`` most likely classes with their probabilities."""
        order = np.argsort(-self.probabilities, axis=1, kind="stable")[:, :k]
        return [[(self.classes[j], float(p[j])) for j in row]
                for row, p in zip(order, self.probabilities, strict=True)]


def check_predictable(config: ModelConfig) -> None:
    """Raise ValueError unless the model compares images (few-shot or pair models)."""
    from metalearn_shared import models

    if not models.get(config.model).predicts:
        metric = sorted(s.name for s in models.specs() if s.predicts)
        raise ValueError(
            f"predict needs a model that compares images ({', '.join(metric)}); this checkpoint "
            f"holds {config.model!r}, which does not classify queries against a support set "
            "(a sequence model classifies within one episode's presentation sequence).")


def load_image(path: str | os.PathLike[str], size: int) -> np.ndarray:
    """One image file → stroke-high ``uint8 (size, size)`` (see the module docstring).

    Raises:
        DataError: the file is not a readable image (the message names it).
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
                image = image.convert("RGBA")
                paper = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(paper, image)
            grey = np.asarray(image.convert("L"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise DataError(f"{path}: not a readable image ({err}). Give PNG or JPEG files "
                        f"({', '.join(IMAGE_SUFFIXES)}), or remove this file.") from err
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    if np.median(border) > 127:  # light paper, dark ink: make the ink high
        grey = 255 - grey
    h, w = grey.shape
    side = max(h, w)
    square = np.zeros((side, side), np.uint8)  # paper is 0 once ink is high
    square[(side - h) // 2:(side - h) // 2 + h, (side - w) // 2:(side - w) // 2 + w] = grey
    return np.asarray(Image.fromarray(square, mode="L").resize((size, size),
                                                               Image.Resampling.LANCZOS))


def _images_in(folder: Path) -> list[Path]:
    """Every non-hidden file under ``folder``, sorted; a non-image one is an error."""
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(folder).parts))
    bad = [p for p in files if p.suffix.lower() not in IMAGE_SUFFIXES]
    if bad:
        raise DataError(f"{bad[0]}: not an image file (suffix {bad[0].suffix or 'none'!r}); "
                        f"expected only {', '.join(IMAGE_SUFFIXES)} files. Remove it.")
    return files


def read_support(folder: str | os.PathLike[str], size: int
                 ) -> tuple[np.ndarray, np.ndarray, tuple[str, ...], dict[str, tuple[Path, ...]]]:
    """A folder with one sub-folder per class → ``(images uint8 (S,H,W), labels (S,),
    class names, {class: files})``; classes sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--support {folder}: no such folder. Give a folder with one "
                                "sub-folder per class, each holding 1 or more example images.")
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(class_dirs) < 2:
        raise DataError(f"--support {folder}: found {len(class_dirs)} class folder(s); "
                        "few-shot prediction needs at least 2 classes, one sub-folder each.")
    stray = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    if stray:
        raise DataError(f"--support {folder}: {stray[0].name} is a file beside the class "
                        "folders; put every image inside its class's sub-folder.")
    images, labels, files = [], [], {}
    for label, class_dir in enumerate(class_dirs):
        found = _images_in(class_dir)
        if not found:
            raise DataError(f"--support class folder {class_dir} holds no images; give it "
                            "at least one example, or remove it.")
        files[class_dir.name] = tuple(found)
        images += [load_image(p, size) for p in found]
        labels += [label] * len(found)
    return (np.stack(images), np.asarray(labels, np.int64), tuple(p.name for p in class_dirs),
            files)


def read_queries(paths: Sequence[str | os.PathLike[str]], size: int
                 ) -> tuple[np.ndarray, tuple[Path, ...]]:
    """Query files and folders (every image under them) → ``(images (Q,H,W), files)``."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += _images_in(p)
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"--query {p}: no such file or folder.")
    if not files:
        raise DataError(f"--query {', '.join(map(str, paths))}: no images found.")
    return np.stack([load_image(p, size) for p in files]), tuple(files)


def _softmax(x: np.ndarray) -> np.ndarray:
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def predict_images(class_scores: ClassScores, config: ModelConfig,
                   support: str | os.PathLike[str],
                   queries: Sequence[str | os.PathLike[str]]) -> Predictions:
    """Classify every query among the support folder's classes.

    Args:
        class_scores: the framework's scores of a model (see :data:`ClassScores`).
        config: the model's config (its image side; sequence models are refused).
        support: folder with one sub-folder of 1…K images per class.
        queries: image files and/or folders of images.

    Returns:
        :class:`Predictions`; the confidence is the softmax of the class scores (for a
        Prototypical Network, the model's own class probability).
    """
    check_predictable(config)
    size = config.backbone.image_size
    sx, sy, classes, support_files = read_support(support, size)
    qx, files = read_queries(queries, size)
    sx_f = sx.astype(np.float32) / 255.0
    scores = [np.asarray(class_scores(sx_f, sy, qx[i:i + _QUERY_CHUNK].astype(np.float32) / 255.0,
                                      len(classes)), dtype=np.float64)
              for i in range(0, len(qx), _QUERY_CHUNK)]
    return Predictions(files, classes, _softmax(np.concatenate(scores)), support_files)


def write_csv(pred: Predictions, path: str | os.PathLike[str], top_k: int = 3) -> Path:
    """``file,predicted,confidence,top_k`` (``top_k`` as ``class:prob;class:prob…``)."""
    from metalearn_shared.data.cache import atomic_write

    with atomic_write(path, "w") as f:
        w = csv.writer(f)
        w.writerow(["file", "predicted", "confidence", "top_k"])
        for file, top in zip(pred.files, pred.top_k(top_k), strict=True):
            w.writerow([str(file), top[0][0], f"{top[0][1]:.4f}",
                        ";".join(f"{c}:{p:.4f}" for c, p in top)])
    return Path(path)


def write_contact_sheet(pred: Predictions, path: str | os.PathLike[str], top_k: int = 3,
                        cell: int = 72) -> Path:
    """PNG, one row per query: the query image, then the first support image of each of its
    ``top_k`` classes, captioned with the class name and probability."""
    from PIL import ImageDraw

    from metalearn_shared.data.cache import atomic_write

    top = pred.top_k(top_k)
    cols = 1 + min(top_k, len(pred.classes))
    caption = 14
    sheet = Image.new("RGB", (cols * (cell + 4) + 4, len(pred.files) * (cell + caption + 4) + 4),
                      (200, 200, 200))
    draw = ImageDraw.Draw(sheet)

    def thumb(file: Path) -> Image.Image:
        tile = 255 - load_image(file, cell)  # dark ink on white, whatever the input was
        return Image.fromarray(tile, mode="L").convert("RGB")

    for r, (file, row) in enumerate(zip(pred.files, top, strict=True)):
        y = 4 + r * (cell + caption + 4)
        sheet.paste(thumb(file), (4, y))
        draw.text((4, y + cell), file.name[:12], fill=(0, 0, 0))
        for c, (name, p) in enumerate(row, start=1):
            x = 4 + c * (cell + 4)
            sheet.paste(thumb(pred.support_files[name][0]), (x, y))
            draw.text((x, y + cell), f"{name[:7]} {p:.2f}",
                      fill=(0, 110, 0) if c == 1 else (60, 60, 60))
    with atomic_write(path) as f:
        sheet.save(f, format="PNG")
    return Path(path)


def main_predict(args: Any, framework: str, load: Callable[[str], tuple[Any, dict]],
                 scores_of: Callable[[Any], ClassScores]) -> int:
    """``metalearn predict CHECKPOINT --support DIR --query PATH…``: CSV + contact sheet."""
    model, _ = load(args.checkpoint)
    pred = predict_images(scores_of(model), model.config, args.support, args.query)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = write_csv(pred, out / "predictions.csv", args.top_k)
    sheet = write_contact_sheet(pred, out / "predictions.png", args.top_k)
    for file, name, top in zip(pred.files, pred.predicted, pred.top_k(1), strict=True):
        print(f"{file}\t{name}\t{top[0][1]:.3f}")
    print(f"{framework}: {len(pred.files)} queries, {len(pred.classes)} classes; wrote {table} "
          f"and {sheet}")
    return 0
