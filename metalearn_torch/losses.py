"""PyTorch losses and pair distances: the formulas of :mod:`metalearn_shared.losses`.

Each loss is a pure per-example function ``fn(y_true, y_pred, **params)`` (Rule 1, same
argument order as the numpy spec) and an ``nn.Module`` that adds the reduction. The modules
follow torch's own convention, ``criterion(input, target)`` with ``reduction="mean"``
(also ``"sum"``, ``"none"``), like ``nn.BCEWithLogitsLoss``.

Label conventions (stated again on each loss): the pair losses take the samplers' labels
**1 = same, 0 = different**; :class:`CosineEmbeddingLoss` also accepts torch's ``+1/-1``
(``labels="sign"``). Inputs are the model's outputs: a distance, a cosine similarity, a
logit, or the ProtoNet's ``(Q, N)`` logits — never a probability.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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

Reduction = Literal["mean", "sum", "none"]


# -- distances (the heads' outputs) --------------------------------------------------------
def squared_euclidean(a: Tensor, b: Tensor) -> Tensor:
    """``sum((a - b)^2, -1)`` from the difference; ``(..., D)`` broadcast → ``(...)``."""
    d = a - b
    return (d * d).sum(-1)


def euclidean_distance(a: Tensor, b: Tensor, eps: float = DISTANCE_EPS) -> Tensor:
    """``sqrt(max(||a - b||^2, eps))``: finite gradient at zero distance; ``(...)``."""
    return squared_euclidean(a, b).clamp_min(eps).sqrt()


def cosine_similarity(x1: Tensor, x2: Tensor, eps: float = COSINE_EPS) -> Tensor:
    """``<x1, x2> / sqrt((|x1|^2 + eps)(|x2|^2 + eps))``, as ``nn.CosineEmbeddingLoss``; ``(...)``."""
    num = (x1 * x2).sum(-1)
    return num / (((x1 * x1).sum(-1) + eps) * ((x2 * x2).sum(-1) + eps)).sqrt()


# -- pure per-example losses ----------------------------------------------------------------
def contrastive_loss(y_true: Tensor, distance: Tensor, margin: float = 1.0) -> Tensor:
    """Contrastive loss (Hadsell et al. 2006), the seed's formula.

    Formula:
        ``l = 1/2 [ y d^2 + (1 - y) max(0, m - d)^2 ]``.

    Args:
        y_true: ``(B,)`` **1 = same, 0 = different**.
        distance: ``(B,)`` Euclidean distance (not a similarity).
        margin: ``m``.

    Returns:
        ``(B,)`` per-pair loss.

    Reference:
        Hadsell, Chopra & LeCun, "Dimensionality Reduction by Learning an Invariant
        Mapping", CVPR 2006.
    """
    y = y_true.to(distance.dtype)
    return 0.5 * (y * distance.square() + (1 - y) * (margin - distance).clamp_min(0).square())


def cosine_embedding_loss(y_true: Tensor, cosine: Tensor, margin: float = 0.0) -> Tensor:
    """Cosine-embedding loss, ``nn.CosineEmbeddingLoss`` semantics, from the cosine.

    Formula:
        ``l = 1 - cos`` if ``y = 1``; ``max(0, cos - margin)`` if ``y = -1``; 0 otherwise.

    Args:
        y_true: ``(B,)`` **+1 = same, -1 = different** (torch's convention).
        cosine: ``(B,)`` cosine similarity of the two embeddings (:func:`cosine_similarity`).
        margin: in ``[-1, 1]``.

    Returns:
        ``(B,)`` per-pair loss.
    """
    zero = torch.zeros_like(cosine)
    pos = torch.where(y_true == 1, 1 - cosine, zero)
    neg = torch.where(y_true == -1, (cosine - margin).clamp_min(0), zero)
    return pos + neg


def _softplus(z: Tensor) -> Tensor:
    # max(z, 0) + log1p(exp(-|z|)): exact for all z, +-inf included (F.softplus thresholds).
    return z.clamp_min(0) + torch.log1p(torch.exp(-z.abs()))


def koch_verification_loss(y_true: Tensor, logits: Tensor) -> Tensor:
    """Koch et al. (2015) verification loss: binary cross-entropy from logits, stable.

    Formula:
        ``l = y softplus(-z) + (1 - y) softplus(z)``; a term whose weight is 0 is dropped,
        so ``z = +-inf`` gives 0 or inf, never nan.

    Args:
        y_true: ``(B,)`` **1 = same, 0 = different** (soft labels in [0, 1] allowed).
        logits: ``(B,)`` pre-sigmoid scores ``w . |e1 - e2| + b``.

    Returns:
        ``(B,)`` per-pair loss.

    Reference:
        Koch, Zemel & Salakhutdinov, "Siamese Neural Networks for One-shot Image
        Recognition", ICML Deep Learning Workshop 2015.
    """
    y = y_true.to(logits.dtype)
    zero = torch.zeros_like(logits)
    pos = torch.where(y == 0, zero, y * _softplus(-logits))
    neg = torch.where(y == 1, zero, (1 - y) * _softplus(logits))
    return pos + neg


def prototypical_loss(y_true: Tensor, logits: Tensor) -> Tensor:
    """Prototypical-network loss (Snell et al. 2017): softmax cross-entropy over ``-d^2``.

    Args:
        y_true: ``(Q,)`` integer query labels ``0 .. N-1``.
        logits: ``(Q, N)`` minus squared distances to the prototypes.

    Returns:
        ``(Q,)`` per-query loss.
    """
    return F.cross_entropy(logits, y_true.long(), reduction="none")


# -- modules: the pure functions plus a reduction -------------------------------------------
class _Loss(nn.Module):
    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}.")
        self.reduction = reduction

    def _reduce(self, per_example: Tensor) -> Tensor:
        if self.reduction == "mean":
            return per_example.mean()
        return per_example.sum() if self.reduction == "sum" else per_example


class ContrastiveLoss(_Loss):
    """:func:`contrastive_loss` with a reduction; ``loss(distance, y)``, y 1 = same."""

    def __init__(self, margin: float = 1.0, reduction: Reduction = "mean") -> None:
        super().__init__(reduction)
        self.margin = margin

    def forward(self, distance: Tensor, target: Tensor) -> Tensor:
        return self._reduce(contrastive_loss(target, distance, self.margin))

    def extra_repr(self) -> str:
        return f"margin={self.margin}, reduction={self.reduction!r}"


class CosineEmbeddingLoss(_Loss):
    """:func:`cosine_embedding_loss` with a reduction; ``loss(cosine, y)``.

    Unlike ``nn.CosineEmbeddingLoss(x1, x2, y)`` it takes the cosine the Siamese model
    returns. ``labels="binary"`` (default) reads the samplers' **1 = same, 0 = different**
    and maps them to ``+1/-1``; ``labels="sign"`` takes torch's ``+1/-1`` as they are.
    """

    def __init__(
        self,
        margin: float = 0.0,
        labels: Literal["binary", "sign"] = "binary",
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__(reduction)
        if labels not in ("binary", "sign"):
            raise ValueError(f"labels must be 'binary' (1/0) or 'sign' (+1/-1); got {labels!r}.")
        self.margin = margin
        self.labels = labels

    def forward(self, cosine: Tensor, target: Tensor) -> Tensor:
        y = 2 * target - 1 if self.labels == "binary" else target
        return self._reduce(cosine_embedding_loss(y, cosine, self.margin))

    def extra_repr(self) -> str:
        return f"margin={self.margin}, labels={self.labels!r}, reduction={self.reduction!r}"


class KochVerificationLoss(_Loss):
    """:func:`koch_verification_loss` with a reduction; ``loss(logits, y)``, y 1 = same."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self._reduce(koch_verification_loss(target, logits))


class PrototypicalLoss(_Loss):
    """:func:`prototypical_loss` with a reduction; ``loss(logits (Q, N), query_y (Q,))``."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self._reduce(prototypical_loss(target, logits))


# -- sequence models (MANN, LSTM baseline) ----------------------------------------------------
def sequence_cross_entropy(y_true: Tensor, logits: Tensor) -> Tensor:
    """MANN sequence loss: softmax cross-entropy at every step, mean over steps.

    Formula:
        ``l_b = 1/T sum_t sum_g -log softmax(z_{b,t,g})[y_{b,t,g}]`` (``G = 1``: no sum).

    Args:
        y_true: ``(B, T)`` integer labels ``0 .. C-1``, or ``(B, T, G)`` for ``G`` grouped
            outputs (Santoro's 5-character string labels).
        logits: ``(B, T, C)`` or ``(B, T, G, C)`` — never probabilities.

    Returns:
        ``(B,)`` per-episode loss.
    """
    if tuple(y_true.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"sequence_cross_entropy: labels {tuple(y_true.shape)} must have the logits' shape "
            f"{tuple(logits.shape)} without its last (class) axis: (B, T) with (B, T, C), or "
            "(B, T, G) with (B, T, G, C).")
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y_true.reshape(-1).long(),
                         reduction="none").view(y_true.shape)  # (B, T[, G])
    if ce.dim() == 3:
        ce = ce.sum(-1)
    return ce.mean(1)


class SequenceCrossEntropy(_Loss):
    """:func:`sequence_cross_entropy` with a reduction; ``loss(logits, labels (B, T[, G]))``."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self._reduce(sequence_cross_entropy(target, logits))


__all__ += ["sequence_cross_entropy", "SequenceCrossEntropy"]
