"""Prototypical network spec (Snell, Swersky & Zemel 2017): weights, logits, task contract.

The support and query images of an episode go through the backbone in **one** batch
(support first), as in Snell et al.'s code, so BatchNorm sees the statistics of the whole
episode and updates its running statistics once per episode. Class prototypes are the mean
support embedding of each class; the logits are minus the squared Euclidean distance from
each query to each prototype, computed from the differences (not ``|a|^2 - 2ab + |b|^2``),
and the loss is softmax cross-entropy over them.

Task contract (what a generic trainer relies on; both frameworks):
    ``inputs, target = inputs_and_target(episode)`` gives
    ``((support_x, support_y, query_x), query_y)`` numpy arrays for **one** episode; the
    model maps ``inputs`` to logits ``(Q, N)`` and ``model.make_loss()`` maps
    ``(query_y, logits)`` to the mean loss. ``N`` (ways) is ``max(support_y) + 1`` unless
    given; every label ``0 .. N-1`` needs at least one support image.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from metalearn_shared import losses
from metalearn_shared.config import BACKBONES, BackboneConfig, ProtoNetConfig
from metalearn_shared.episodes import FewShotEpisode
from metalearn_shared.models.backbones import backbone_spec
from metalearn_shared.weights import ParamSpec

__all__ = ["variants", "param_spec", "loss_for", "logits", "predict", "inputs_and_target"]


def variants(image_size: int = 28) -> list[tuple[str, ProtoNetConfig]]:
    """Every backbone, as ``("protonet-<backbone>", config)`` (parity, tests)."""
    return [(f"protonet-{b}", ProtoNetConfig(BackboneConfig(b, image_size=image_size)))
            for b in BACKBONES]


def param_spec(config: ProtoNetConfig) -> list[ParamSpec]:
    """``embedding.*``: a ProtoNet has no parameters beyond its backbone."""
    return backbone_spec(config.backbone, "embedding")


def loss_for(config: ProtoNetConfig) -> tuple[str, dict[str, Any]]:
    """The loss class name in both frameworks' ``losses`` modules, and its keyword arguments."""
    return "PrototypicalLoss", {}


def logits(
    support_emb: np.ndarray, support_y: np.ndarray, query_emb: np.ndarray, ways: int | None = None
) -> np.ndarray:
    """Reference logits ``-||q - c_n||^2``, ``(Q, N)`` float64 (ways inferred if None)."""
    n = int(np.max(support_y)) + 1 if ways is None else ways
    return losses.prototypical_logits(support_emb, support_y, query_emb, n)


def predict(logits_: np.ndarray) -> np.ndarray:
    """``(Q,)`` label of the nearest prototype (first one on ties)."""
    return np.argmax(logits_, axis=1)


def inputs_and_target(
    episode: FewShotEpisode,
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """The task contract: one :class:`FewShotEpisode` → ``((support_x, support_y, query_x), query_y)``.

    Images ``float32 (N*K, H, W)`` / ``(N*Q, H, W)``; labels ``int64``.
    """
    if np.ndim(episode.support_x) != 3:
        raise ValueError(
            f"expected one episode with support_x of shape (N*K, H, W); found "
            f"{np.shape(episode.support_x)}. Use FewShotSampler.episode(i), not .batch(start, size)."
        )
    return (episode.support_x, episode.support_y, episode.query_x), episode.query_y
