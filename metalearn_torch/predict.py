"""PyTorch few-shot prediction on one's own images (mirror of ``metalearn_tf/predict.py``).

The reading, conversion and reporting are :mod:`metalearn_shared.predict`'s; this module
gives it the model's class scores (``class_scores``, defined in ``evaluate.py`` beside this
module, where evaluation and ``metalearn eval --ensemble`` use them too).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from metalearn_shared import predict as P
from metalearn_torch.checkpoint import load_checkpoint
from metalearn_torch.evaluate import class_scores

__all__ = ["class_scores", "predict", "main_predict"]


def predict(model: nn.Module | str | os.PathLike[str], support: str | os.PathLike[str],
            queries: Sequence[str | os.PathLike[str]]) -> P.Predictions:
    """Classify query images among a support folder's classes.

    Args:
        model: a metric model (Prototypical or Siamese network), or a canonical checkpoint.
        support: folder with one sub-folder per class, each with 1…K images (PNG, JPEG, …;
            any size, colour or polarity: converted as the training data was).
        queries: image files and/or folders.

    Returns:
        :class:`metalearn_shared.predict.Predictions` (``.predicted``, ``.top_k(k)``,
        ``.probabilities``); write them with ``metalearn_shared.predict.write_csv`` /
        ``write_contact_sheet``.
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_checkpoint(Path(model))[0]
    return P.predict_images(class_scores(model), model.config, support, queries)


def main_predict(args: Any) -> int:
    """``metalearn predict --framework torch CHECKPOINT --support DIR --query PATH…``."""
    return P.main_predict(args, "torch", load_checkpoint, class_scores)
