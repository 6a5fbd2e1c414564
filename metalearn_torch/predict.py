"""PyTorch few-shot prediction on one's own images (mirror of ``metalearn_tf/predict.py``).

The reading, conversion and reporting are :mod:`metalearn_shared.predict`'s; this module
gives it the model's class scores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metalearn_shared import predict as P
from metalearn_torch.checkpoint import load_checkpoint
from metalearn_torch.models.backbones import inference

__all__ = ["class_scores", "predict", "main_predict"]


def class_scores(model: nn.Module) -> P.ClassScores:
    """``(support_x, support_y, query_x, ways) -> (Q, ways)`` scores of ``model``, eval mode.

    Prototype models score each class by their logits; pair models (with
    ``support_scores``) by the query's best match among the class's support images.
    """
    device = next(model.parameters()).device

    def scores(sx: np.ndarray, sy: np.ndarray, qx: np.ndarray, ways: int) -> np.ndarray:
        s, y, q = (torch.as_tensor(a, device=device) for a in (sx, sy, qx))
        with inference(model):
            if not hasattr(model, "support_scores"):
                return model(s, y, q, ways).cpu().numpy()  # (Q, N) logits
            per_image = model.support_scores(model.embed(s), model.embed(q))  # (Q, S)
            out = torch.full((q.shape[0], ways), -torch.inf, device=device)
            return out.scatter_reduce(1, y.expand_as(per_image), per_image, "amax").cpu().numpy()

    return scores


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
