"""Keras losses and pair distances: the formulas of :mod:`metalearn_shared.losses`.

Each loss is a pure per-example function ``fn(y_true, y_pred, **params)`` written with
``keras.ops`` (Rule 1) and a registered ``keras.losses.Loss`` subclass that adds Keras'
reduction (default ``"sum_over_batch_size"``, i.e. the mean), usable as
``model.compile(loss=...)`` and serialisable in ``.keras`` files.

Label conventions (stated again on each loss): the pair losses take the samplers' labels
**1 = same, 0 = different**; :class:`CosineEmbeddingLoss` also accepts torch's ``+1/-1``
(``labels="sign"``). ``y_pred`` is the model's output: a distance, a cosine similarity, a
logit, or the ProtoNet's ``(Q, N)`` logits — never a probability.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from metalearn_shared.losses import COSINE_EPS, DISTANCE_EPS

__all__ = [
    "squared_euclidean",
    "euclidean_distance",
    "cosine_similarity",
    "contrastive_loss",
    "cosine_embedding_loss",
    "koch_verification_loss",
    "prototypical_loss",
    "ContrastiveLoss",
    "CosineEmbeddingLoss",
    "KochVerificationLoss",
    "PrototypicalLoss",
]

_PACKAGE = "metalearn_tf"


# -- distances (the heads' outputs) --------------------------------------------------------
def squared_euclidean(a: Any, b: Any) -> Any:
    """``sum((a - b)^2, -1)`` from the difference; ``(..., D)`` broadcast → ``(...)``."""
    d = a - b
    return ops.sum(d * d, axis=-1)


def euclidean_distance(a: Any, b: Any, eps: float = DISTANCE_EPS) -> Any:
    """``sqrt(max(||a - b||^2, eps))``: finite gradient at zero distance; ``(...)``."""
    return ops.sqrt(ops.maximum(squared_euclidean(a, b), eps))


def cosine_similarity(x1: Any, x2: Any, eps: float = COSINE_EPS) -> Any:
    """``<x1, x2> / sqrt((|x1|^2 + eps)(|x2|^2 + eps))``, as torch's ``CosineEmbeddingLoss``."""
    num = ops.sum(x1 * x2, axis=-1)
    return num / ops.sqrt((ops.sum(x1 * x1, axis=-1) + eps) * (ops.sum(x2 * x2, axis=-1) + eps))


# -- pure per-example losses ----------------------------------------------------------------
def contrastive_loss(y_true: Any, y_pred: Any, margin: float = 1.0) -> Any:
    """Contrastive loss (Hadsell et al. 2006), the seed's formula.

    Formula:
        ``l = 1/2 [ y d^2 + (1 - y) max(0, m - d)^2 ]``.

    Args:
        y_true: ``(B,)`` **1 = same, 0 = different**.
        y_pred: ``(B,)`` Euclidean distance ``d`` (not a similarity).
        margin: ``m``.

    Returns:
        ``(B,)`` per-pair loss.

    Reference:
        Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an Invariant
        Mapping", CVPR 2006.
    """
    y = ops.cast(y_true, y_pred.dtype)
    d = y_pred
    return 0.5 * (y * ops.square(d) + (1 - y) * ops.square(ops.maximum(margin - d, 0.0)))


def cosine_embedding_loss(y_true: Any, y_pred: Any, margin: float = 0.0) -> Any:
    """Cosine-embedding loss, ``torch.nn.CosineEmbeddingLoss`` semantics, from the cosine.

    Formula:
        ``l = 1 - cos`` if ``y = 1``; ``max(0, cos - margin)`` if ``y = -1``; 0 otherwise.

    Args:
        y_true: ``(B,)`` **+1 = same, -1 = different** (torch's convention).
        y_pred: ``(B,)`` cosine similarity of the two embeddings (:func:`cosine_similarity`).
        margin: in ``[-1, 1]``.

    Returns:
        ``(B,)`` per-pair loss.
    """
    y = ops.cast(y_true, y_pred.dtype)
    zero = ops.zeros_like(y_pred)
    pos = ops.where(ops.equal(y, 1), 1 - y_pred, zero)
    neg = ops.where(ops.equal(y, -1), ops.maximum(y_pred - margin, 0.0), zero)
    return pos + neg


def _softplus(z: Any) -> Any:
    # max(z, 0) + log1p(exp(-|z|)): exact for all z, +-inf included.
    return ops.maximum(z, 0.0) + ops.log1p(ops.exp(-ops.abs(z)))


def koch_verification_loss(y_true: Any, y_pred: Any) -> Any:
    """Koch et al. (2015) verification loss: binary cross-entropy from logits, stable.

    Formula:
        ``l = y softplus(-z) + (1 - y) softplus(z)``; a term whose weight is 0 is dropped,
        so ``z = +-inf`` gives 0 or inf, never nan.

    Args:
        y_true: ``(B,)`` **1 = same, 0 = different** (soft labels in [0, 1] allowed).
        y_pred: ``(B,)`` logits ``w . |e1 - e2| + b`` (pre-sigmoid).

    Returns:
        ``(B,)`` per-pair loss.

    Reference:
        Koch, Zemel & Salakhutdinov, "Siamese Neural Networks for One-shot Image
        Recognition", ICML Deep Learning Workshop 2015.
    """
    y = ops.cast(y_true, y_pred.dtype)
    zero = ops.zeros_like(y_pred)
    pos = ops.where(ops.equal(y, 0), zero, y * _softplus(-y_pred))
    neg = ops.where(ops.equal(y, 1), zero, (1 - y) * _softplus(y_pred))
    return pos + neg


def prototypical_loss(y_true: Any, y_pred: Any) -> Any:
    """Prototypical-network loss (Snell et al. 2017): softmax cross-entropy over ``-d^2``.

    Args:
        y_true: ``(Q,)`` integer query labels ``0 .. N-1`` (Keras passes them as floats).
        y_pred: ``(Q, N)`` minus squared distances to the prototypes.

    Returns:
        ``(Q,)`` per-query loss.
    """
    y = ops.reshape(ops.cast(y_true, "int32"), ops.shape(y_pred)[:-1])
    return ops.sparse_categorical_crossentropy(y, y_pred, from_logits=True)


# -- Loss classes: the pure functions plus Keras' reduction -----------------------------------
class _Wrapper(keras.losses.Loss):
    """``keras.losses.Loss`` calling a pure per-example function with fixed keyword params."""

    fn: Any = None

    def __init__(self, name: str, reduction: str | None, dtype: Any, **fn_kwargs: Any) -> None:
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self._fn_kwargs = fn_kwargs

    def call(self, y_true: Any, y_pred: Any) -> Any:
        return type(self).fn(y_true, y_pred, **self._fn_kwargs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self._fn_kwargs}


@keras.saving.register_keras_serializable(_PACKAGE)
class ContrastiveLoss(_Wrapper):
    """:func:`contrastive_loss` with a reduction; ``loss(y, distance)``, y 1 = same."""

    fn = staticmethod(contrastive_loss)

    def __init__(self, margin: float = 1.0, reduction: str | None = "sum_over_batch_size",
                 name: str = "contrastive_loss", dtype: Any = None) -> None:
        super().__init__(name, reduction, dtype, margin=margin)


@keras.saving.register_keras_serializable(_PACKAGE)
class CosineEmbeddingLoss(_Wrapper):
    """:func:`cosine_embedding_loss` with a reduction; ``loss(y, cosine)``.

    ``labels="binary"`` (default) reads the samplers' **1 = same, 0 = different** and maps
    them to ``+1/-1``; ``labels="sign"`` takes torch's ``+1/-1`` as they are.
    """

    fn = staticmethod(cosine_embedding_loss)

    def __init__(self, margin: float = 0.0, labels: str = "binary",
                 reduction: str | None = "sum_over_batch_size",
                 name: str = "cosine_embedding_loss", dtype: Any = None) -> None:
        if labels not in ("binary", "sign"):
            raise ValueError(f"labels must be 'binary' (1/0) or 'sign' (+1/-1); got {labels!r}.")
        super().__init__(name, reduction, dtype, margin=margin)
        self.labels = labels

    def call(self, y_true: Any, y_pred: Any) -> Any:
        y = 2 * y_true - 1 if self.labels == "binary" else y_true
        return super().call(y, y_pred)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "labels": self.labels}


@keras.saving.register_keras_serializable(_PACKAGE)
class KochVerificationLoss(_Wrapper):
    """:func:`koch_verification_loss` with a reduction; ``loss(y, logits)``, y 1 = same."""

    fn = staticmethod(koch_verification_loss)

    def __init__(self, reduction: str | None = "sum_over_batch_size",
                 name: str = "koch_verification_loss", dtype: Any = None) -> None:
        super().__init__(name, reduction, dtype)


@keras.saving.register_keras_serializable(_PACKAGE)
class PrototypicalLoss(_Wrapper):
    """:func:`prototypical_loss` with a reduction; ``loss(query_y, logits (Q, N))``."""

    fn = staticmethod(prototypical_loss)

    def __init__(self, reduction: str | None = "sum_over_batch_size",
                 name: str = "prototypical_loss", dtype: Any = None) -> None:
        super().__init__(name, reduction, dtype)


# -- sequence models (MANN, LSTM baseline) ----------------------------------------------------
def sequence_cross_entropy(y_true: Any, y_pred: Any) -> Any:
    """MANN sequence loss: softmax cross-entropy at every step, mean over steps.

    Formula:
        ``l_b = 1/T sum_t sum_g -log softmax(z_{b,t,g})[y_{b,t,g}]`` (``G = 1``: no sum).

    Args:
        y_true: ``(B, T)`` integer labels ``0 .. C-1`` (Keras may pass them as floats), or
            ``(B, T, G)`` for ``G`` grouped outputs (Santoro's 5-character string labels).
        y_pred: logits ``(B, T, C)`` or ``(B, T, G, C)`` — never probabilities.

    Returns:
        ``(B,)`` per-episode loss; :class:`SequenceCrossEntropy` averages it over episodes.
    """
    want, found = tuple(y_pred.shape)[:-1], tuple(y_true.shape)
    if len(found) != len(want) or any(a is not None and b is not None and a != b
                                      for a, b in zip(found, want, strict=True)):
        raise ValueError(
            f"sequence_cross_entropy: labels {tuple(y_true.shape)} must have the logits' shape "
            f"{tuple(y_pred.shape)} without its last (class) axis: (B, T) with (B, T, C), or "
            "(B, T, G) with (B, T, G, C).")
    y = ops.cast(y_true, "int32")
    ce = ops.sparse_categorical_crossentropy(y, y_pred, from_logits=True)  # (B, T[, G])
    if len(ce.shape) == 3:
        ce = ops.sum(ce, axis=-1)
    return ops.mean(ce, axis=1)


@keras.saving.register_keras_serializable(_PACKAGE)
class SequenceCrossEntropy(_Wrapper):
    """:func:`sequence_cross_entropy` with a reduction; ``loss(labels (B, T[, G]), logits)``."""

    fn = staticmethod(sequence_cross_entropy)

    def __init__(self, reduction: str | None = "sum_over_batch_size",
                 name: str = "sequence_cross_entropy", dtype: Any = None) -> None:
        super().__init__(name, reduction, dtype)


__all__ += ["sequence_cross_entropy", "SequenceCrossEntropy"]
