"""Keras few-shot prediction on one's own images (mirror of ``metalearn_torch/predict.py``).

The reading, conversion and reporting are :mod:`metalearn_shared.predict`'s; this module
gives it the model's class scores.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops

from metalearn_shared import predict as P
from metalearn_tf.evaluate import load_any

__all__ = ["class_scores", "predict", "main_predict"]


def class_scores(model: keras.Model) -> P.ClassScores:
    """``(support_x, support_y, query_x, ways) -> (Q, ways)`` scores of ``model``, inference mode.

    Prototype models score each class by their logits; pair models (with
    ``support_scores``) by the query's best match among the class's support images.
    """

    def scores(sx: np.ndarray, sy: np.ndarray, qx: np.ndarray, ways: int) -> np.ndarray:
        if not hasattr(model, "support_scores"):
            return ops.convert_to_numpy(model((sx, sy, qx), training=False, ways=ways))
        per_image = model.support_scores(model.embed(sx, training=False),
                                         model.embed(qx, training=False))  # (Q, S)
        onehot = ops.one_hot(sy, ways) > 0  # (S, N)
        masked = ops.where(onehot[None, :, :], per_image[:, :, None], -np.inf)  # (Q, S, N)
        return ops.convert_to_numpy(ops.max(masked, axis=1))  # (Q, N)

    return scores


def predict(model: keras.Model | str | os.PathLike[str], support: str | os.PathLike[str],
            queries: Sequence[str | os.PathLike[str]]) -> P.Predictions:
    """Classify query images among a support folder's classes.

    Args:
        model: a metric model (Prototypical or Siamese network), a canonical checkpoint or
            a ``.keras`` file.
        support: folder with one sub-folder per class, each with 1…K images (PNG, JPEG, …;
            any size, colour or polarity: converted as the training data was).
        queries: image files and/or folders.

    Returns:
        :class:`metalearn_shared.predict.Predictions` (``.predicted``, ``.top_k(k)``,
        ``.probabilities``); write them with ``metalearn_shared.predict.write_csv`` /
        ``write_contact_sheet``.
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_any(str(model))[0]
    return P.predict_images(class_scores(model), model.config, support, queries)


def main_predict(args: Any) -> int:
    """``metalearn predict --framework tf CHECKPOINT --support DIR --query PATH…``."""
    return P.main_predict(args, "keras", load_any, class_scores)
