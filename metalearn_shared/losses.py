"""Reference losses: the numpy spec that both frameworks implement.

Every loss is a pure function ``fn(y_true, y_pred, **params)`` returning **per-example**
values (no reduction); framework classes wrap these and add the reduction (mean by
default). All computations run in float64 internally and return float64, so the spec is
a stricter witness than either float32 implementation.

Label conventions differ between losses on purpose, because they follow their sources;
each docstring states its convention. :func:`pair_labels_to_sign` converts the samplers'
``1 = same / 0 = different`` labels to the ``+1 / -1`` of the cosine-embedding loss.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DISTANCE_EPS",
    "COSINE_EPS",
    "euclidean_distance",
    "squared_euclidean",
    "contrastive",
    "cosine_similarity_torch",
    "cosine_embedding",
    "pair_labels_to_sign",
    "koch_verification",
    "softmax_cross_entropy",
    "prototypes",
    "prototypical_logits",
    "prototypical",
    "sequence_cross_entropy",
    "log_softmax",
]

#: Floor on the squared distance before the square root, so that the gradient of
#: ``d = sqrt(||a - b||^2)`` stays finite when two embeddings coincide.
DISTANCE_EPS = 1e-12
#: ``torch.nn.functional.cosine_embedding_loss`` adds this to each squared norm.
COSINE_EPS = 1e-12


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def squared_euclidean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance over the last axis.

    Args:
        a: ``(..., D)``.
        b: ``(..., D)``, broadcastable against ``a``.

    Returns:
        ``(...)`` float64, ``sum((a - b) ** 2, -1)``. Computed from the difference, not
        from ``|a|^2 - 2ab + |b|^2``, which cancels catastrophically for near points.
    """
    d = _f64(a) - _f64(b)
    return np.sum(d * d, axis=-1)


def euclidean_distance(a: np.ndarray, b: np.ndarray, eps: float = DISTANCE_EPS) -> np.ndarray:
    """``sqrt(max(||a - b||^2, eps))`` over the last axis; ``(...)`` float64."""
    return np.sqrt(np.maximum(squared_euclidean(a, b), eps))


def contrastive(y_true: np.ndarray, distance: np.ndarray, margin: float = 1.0) -> np.ndarray:
    """Contrastive loss (Hadsell, Chopra & LeCun 2006), the seed document's formula.

    Formula:
        ``l_i = 1/2 [ y_i d_i^2 + (1 - y_i) max(0, m - d_i)^2 ]``; the mean over a batch
        is the seed's ``L = 1/(2N) sum_i [...]``.

    Args:
        y_true: ``(B,)`` **1 = same class, 0 = different** (the samplers' convention).
        distance: ``(B,)`` Euclidean distance ``d_i >= 0`` between the two embeddings
            (a distance, not a similarity), e.g. from :func:`euclidean_distance`.
        margin: ``m > 0``; different pairs further apart than ``m`` cost nothing.

    Returns:
        ``(B,)`` float64 per-pair loss; reduce with ``mean``.

    Reference:
        Hadsell et al., "Dimensionality Reduction by Learning an Invariant Mapping", CVPR 2006.
    """
    y = _f64(y_true)
    d = _f64(distance)
    return 0.5 * (y * d**2 + (1.0 - y) * np.maximum(0.0, margin - d) ** 2)


def cosine_similarity_torch(x1: np.ndarray, x2: np.ndarray, eps: float = COSINE_EPS) -> np.ndarray:
    """Cosine similarity exactly as ``torch.nn.CosineEmbeddingLoss`` computes it.

    Formula:
        ``cos = <x1, x2> / sqrt((|x1|^2 + eps) (|x2|^2 + eps))``.

    Args:
        x1, x2: ``(B, D)``.

    Returns:
        ``(B,)`` float64.
    """
    a, b = _f64(x1), _f64(x2)
    num = np.sum(a * b, axis=-1)
    den = np.sqrt((np.sum(a * a, axis=-1) + eps) * (np.sum(b * b, axis=-1) + eps))
    return num / den


def cosine_embedding(
    y_true: np.ndarray, x1: np.ndarray, x2: np.ndarray, margin: float = 0.0
) -> np.ndarray:
    """Cosine-embedding loss with ``torch.nn.CosineEmbeddingLoss`` semantics (the seed's code).

    Formula:
        ``l_i = 1 - cos(x1_i, x2_i)`` if ``y_i = 1``;
        ``l_i = max(0, cos(x1_i, x2_i) - margin)`` if ``y_i = -1``.

    Args:
        y_true: ``(B,)`` **+1 = same, -1 = different** (torch's convention; convert the
            samplers' 1/0 labels with :func:`pair_labels_to_sign`). Other values give 0,
            as in torch.
        x1, x2: ``(B, D)`` the two embeddings (not a distance).
        margin: in ``[-1, 1]``; torch's default is 0.

    Returns:
        ``(B,)`` float64 per-pair loss; torch's default reduction is the mean.
    """
    y = np.asarray(y_true)
    cos = cosine_similarity_torch(x1, x2)
    pos = np.where(y == 1, 1.0 - cos, 0.0)
    neg = np.where(y == -1, np.maximum(0.0, cos - margin), 0.0)
    return pos + neg


def pair_labels_to_sign(y_same: np.ndarray) -> np.ndarray:
    """Map ``1 = same / 0 = different`` to ``+1 / -1`` (float64)."""
    return 2.0 * _f64(y_same) - 1.0


def koch_verification(y_true: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Koch et al. (2015) verification loss: binary cross-entropy from logits, stable.

    The Koch head computes ``logit = w . |f(x1) - f(x2)| + b`` and ``p = sigmoid(logit)``;
    the loss is evaluated from the logit, never from ``p``, so it stays finite for
    ``logit = +-inf``.

    Formula:
        ``l_i = y softplus(-z) + (1 - y) softplus(z)``, ``softplus(z) = max(z, 0) +
        log(1 + exp(-|z|))`` with ``z = logit_i``; a term whose weight is 0 is dropped
        (not multiplied by 0), so ``z = +-inf`` gives 0 or inf, never nan.

    Args:
        y_true: ``(B,)`` **1 = same, 0 = different** (soft labels in [0, 1] allowed).
        logits: ``(B,)`` pre-sigmoid scores.

    Returns:
        ``(B,)`` float64 per-pair loss.

    Reference:
        Koch, Zemel & Salakhutdinov, "Siamese Neural Networks for One-shot Image
        Recognition", ICML Deep Learning Workshop 2015.
    """
    y = _f64(y_true)
    z = _f64(logits)

    def softplus(v: np.ndarray) -> np.ndarray:
        return np.maximum(v, 0.0) + np.log1p(np.exp(-np.abs(v)))

    with np.errstate(invalid="ignore"):
        pos = np.where(y == 0, 0.0, y * softplus(-z))
        neg = np.where(y == 1, 0.0, (1.0 - y) * softplus(z))
    return pos + neg


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Stable log-softmax over the last axis (float64)."""
    z = _f64(logits)
    z = z - np.max(z, axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def softmax_cross_entropy(y_true: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Cross-entropy of integer labels against logits over the last axis.

    Args:
        y_true: ``(...)`` integer class ids in ``0 .. C-1``.
        logits: ``(..., C)``.

    Returns:
        ``(...)`` float64, ``-log softmax(logits)[y]``.
    """
    lp = log_softmax(logits)
    y = np.asarray(y_true, dtype=np.int64)
    return -np.take_along_axis(lp, y[..., None], axis=-1)[..., 0]


def prototypes(support_emb: np.ndarray, support_y: np.ndarray, ways: int) -> np.ndarray:
    """Class prototypes: the mean support embedding of each class.

    Args:
        support_emb: ``(N*K, D)``.
        support_y: ``(N*K,)`` labels ``0 .. ways-1``.
        ways: ``N``.

    Returns:
        ``(N, D)`` float64.
    """
    emb = _f64(support_emb)
    onehot = np.eye(ways)[np.asarray(support_y)]  # (N*K, N)
    return (onehot.T @ emb) / onehot.sum(axis=0)[:, None]


def prototypical_logits(
    support_emb: np.ndarray, support_y: np.ndarray, query_emb: np.ndarray, ways: int
) -> np.ndarray:
    """Logits of a Prototypical Network: minus squared distance to each prototype.

    Args:
        support_emb: ``(N*K, D)``; support_y: ``(N*K,)``; query_emb: ``(M, D)``.

    Returns:
        ``(M, N)`` float64 ``-||q - c_n||^2``.
    """
    protos = prototypes(support_emb, support_y, ways)  # (N, D)
    return -squared_euclidean(_f64(query_emb)[:, None, :], protos[None, :, :])


def prototypical(y_true: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """Prototypical-network loss (Snell et al. 2017): softmax cross-entropy over the
    logits ``-||q - c_n||^2`` of :func:`prototypical_logits`.

    Args:
        y_true: ``(M,)`` query labels ``0 .. N-1``.
        logits: ``(M, N)``.

    Returns:
        ``(M,)`` float64 per-query loss.
    """
    return softmax_cross_entropy(y_true, logits)


def sequence_cross_entropy(y_true: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """MANN sequence loss: softmax cross-entropy at every step, mean over steps.

    Args:
        y_true: ``(B, T)`` integer labels, or ``(B, T, G)`` for ``G`` grouped outputs
            (Santoro's 5-character "string" labels: G = 5 softmaxes).
        logits: ``(B, T, C)`` or ``(B, T, G, C)``.

    Returns:
        ``(B,)`` float64: per-episode mean over steps (and summed over groups).
    """
    ce = softmax_cross_entropy(y_true, logits)  # (B, T) or (B, T, G)
    if ce.ndim == 3:
        ce = ce.sum(axis=-1)
    return ce.mean(axis=1)
