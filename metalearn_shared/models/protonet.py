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

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from metalearn_shared import losses, registry
from metalearn_shared.config import BackboneConfig, ConfigMixin
from metalearn_shared.episodes import FewShotEpisode
from metalearn_shared.flops import Flops
from metalearn_shared.models.backbones import (
    BACKBONE_OPTIONS,
    backbone_args,
    backbone_flops,
    backbone_from_args,
    backbone_spec,
    variant_backbones,
)
from metalearn_shared.weights import ParamSpec

__all__ = ["ProtoNetConfig", "SPEC", "variants", "param_spec", "loss_for", "logits", "predict", "inputs_and_target"]


@dataclass(frozen=True)
class ProtoNetConfig(ConfigMixin):
    """Prototypical network (Snell et al. 2017) on a backbone."""

    model: ClassVar[str] = "protonet"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)


def variants(image_size: int = 28) -> list[tuple[str, ProtoNetConfig]]:
    """Every backbone, as ``("protonet-<backbone>", config)`` (parity, tests)."""
    return [(f"protonet-{b.name}", ProtoNetConfig(b)) for b in variant_backbones(image_size)]


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


# -- the model contract (metalearn_shared.registry) -----------------------------------------
def _parity_cases(tiny: bool) -> list[registry.ParityCase]:
    if tiny:  # conv4 with 8 channels at 16 px: BatchNorm in both modes
        return [registry.ParityCase("protonet-conv4-16px-8ch",
                                    ProtoNetConfig(BackboneConfig("conv4", image_size=16, hidden=8)))]
    return [registry.ParityCase(n, c) for n, c in variants()]


def _workloads(quick: bool) -> list[registry.Workload]:
    size, queries = (16, 1) if quick else (28, 15)
    hidden = {"hidden": 8} if quick else {}
    config = ProtoNetConfig(backbone=BackboneConfig(name="conv4", image_size=size, **hidden))
    return [registry.Workload(f"protonet-{ways}w1s{queries}q", config,
                              registry.Task(ways=ways, shots=1, queries=queries), image_size=size)
            for ways in ((3,) if quick else (5, 20))]


def _flops(config: ProtoNetConfig, task: registry.Task) -> tuple[float, float]:
    images = task.ways * (task.shots + task.queries)
    dist = 3.0 * task.ways * task.queries * task.ways * config.backbone.output_dim  # 3·Q·N·D
    return tuple(backbone_flops(config.backbone) * images + Flops(dist, 3 * dist))


SPEC = registry.register_model(registry.ModelSpec(
    name="protonet",
    summary="Prototypical network (Snell et al. 2017)",
    config_cls=ProtoNetConfig,
    family="fewshot",
    param_spec=param_spec,
    inputs_and_target=inputs_and_target,
    config_from_args=lambda args, size: ProtoNetConfig(backbone=backbone_from_args(args, size)),
    args_from_config=lambda c: backbone_args(c.backbone),
    defaults=registry.TrainDefaults(batch=1, lr=1e-3, optimizer="adam", image_size=28),
    options=BACKBONE_OPTIONS,
    parity_cases=_parity_cases,
    workloads=_workloads,
    flops=_flops,
    predicts=True,
))
