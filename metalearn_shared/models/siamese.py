"""Siamese network spec: weights, the three heads, few-shot prediction, the task contract.

A Siamese network embeds both images of a pair with one backbone (``embedding``) and
compares the embeddings with a head (:attr:`SiameseConfig.head`). Every head's model output
is one number per pair, paired with one loss; all take the samplers' labels
**1 = same, 0 = different**:

================  ==================================  ==========================  ===========
head              model output ``(B,)``               loss                        similarity
================  ==================================  ==========================  ===========
``contrastive``   Euclidean distance ``d >= 0``       contrastive, margin         ``-d``
``cosine``        cosine similarity in ``[-1, 1]``    cosine embedding, margin    ``cos``
``koch``          logit ``w . |e1 - e2| + b``         Koch BCE from logits        ``logit``
================  ==================================  ==========================  ===========

The cosine-embedding loss depends on the two embeddings only through their cosine, so the
model returns the cosine and the loss takes it (no need to return both embeddings); its
``+1/-1`` labels are made from the samplers' ``1/0`` inside the loss
(:func:`~metalearn_shared.losses.pair_labels_to_sign`). The Koch head returns logits; a
sigmoid is applied only when a probability is asked for.

Few-shot prediction (``predict_episode``) scores every query against every support image
(higher = more similar: minus the distance, the cosine, or the Koch logit) and returns the
label of the best-scoring support image.

Task contract (what a generic trainer relies on; both frameworks):
    ``inputs, target = inputs_and_target(pair_batch)`` gives ``((x1, x2), y)`` numpy arrays;
    the model maps ``inputs`` to the head output and ``model.make_loss()`` maps
    ``(target, output)`` to the mean loss.

All reference functions take embeddings in canonical (torch) element order; see
:func:`metalearn_shared.models.backbones.flat_hwc_to_chw` for Keras ``conv4`` embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from metalearn_shared import losses, registry
from metalearn_shared.config import BackboneConfig, ConfigMixin, check
from metalearn_shared.episodes import PairBatch
from metalearn_shared.models.backbones import (
    BACKBONE_OPTIONS,
    backbone_args,
    backbone_flops,
    backbone_from_args,
    backbone_spec,
    embedding_chw,
    variant_backbones,
)
from metalearn_shared.weights import ParamSpec, dense

__all__ = [
    "SIAMESE_HEADS",
    "SiameseConfig",
    "SPEC",
    "variants",
    "param_spec",
    "loss_for",
    "pair_output",
    "pair_loss",
    "support_scores",
    "predict_from_scores",
    "inputs_and_target",
    "same_threshold",
    "judged_same",
]


SIAMESE_HEADS = ("contrastive", "cosine", "koch")


@dataclass(frozen=True)
class SiameseConfig(ConfigMixin):
    """Siamese network: twin embedding + one of three heads.

    Attributes:
        backbone: the shared embedding network.
        head: ``"contrastive"`` (Euclidean distance + contrastive loss, label 1 = same),
            ``"cosine"`` (cosine embedding loss, label +1 = same, the seed's code) or
            ``"koch"`` (L1 of the twin embeddings → Dense(1) → sigmoid, BCE).
        margin: contrastive / cosine-embedding margin; ``None`` picks the head's default:
            1.0 for contrastive (a distance), 0.0 for cosine (torch's default; a cosine
            margin of 1 would never penalise a different pair). Unused by ``koch``.
    """

    model: ClassVar[str] = "siamese"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: str = "contrastive"
    margin: float | None = None

    def __post_init__(self) -> None:
        check(self.head in SIAMESE_HEADS, f"unknown head {self.head!r}; choose one of {SIAMESE_HEADS}.")
        if self.margin is None:
            object.__setattr__(self, "margin", 1.0 if self.head == "contrastive" else 0.0)
        if self.head == "contrastive":
            check(self.margin > 0, f"the contrastive margin is a distance, above 0; found {self.margin}.")
        elif self.head == "cosine":
            check(-1 <= self.margin < 1, "the cosine-embedding margin is a cosine in [-1, 1) "
                  f"(at 1 no different pair is penalised); found {self.margin}.")


def _config_from_args(args: Any, size: int) -> SiameseConfig:
    margin = getattr(args, "margin", None)
    check(margin is None or args.head != "koch",
          "--margin sets the contrastive or cosine-embedding loss; the koch head has none "
          "(its loss is a logistic on a learned L1 head): leave --margin out.")
    return SiameseConfig(backbone=backbone_from_args(args, size), head=args.head, margin=margin)


def variants(image_size: int = 28) -> list[tuple[str, SiameseConfig]]:
    """Every head × backbone, as ``("siamese-<head>-<backbone>", config)`` (parity, tests)."""
    return [(f"siamese-{h}-{b.name}", SiameseConfig(b, head=h))
            for b in variant_backbones(image_size) for h in SIAMESE_HEADS]


def param_spec(config: SiameseConfig) -> list[ParamSpec]:
    """``embedding.*`` (the backbone) plus, for the Koch head, ``head`` = Dense(D → 1)."""
    spec = backbone_spec(config.backbone, "embedding")
    if config.head == "koch":
        b = config.backbone
        spec += dense("head", b.output_dim, 1, flatten_chw=embedding_chw(b))
    return spec


def loss_for(config: SiameseConfig) -> tuple[str, dict[str, Any]]:
    """The head's loss: its class name in ``metalearn_tf.losses`` and ``metalearn_torch.losses``
    (the same in both) and its keyword arguments, for the samplers' 1 = same / 0 = different."""
    if config.head == "contrastive":
        return "ContrastiveLoss", {"margin": config.margin}
    if config.head == "cosine":
        return "CosineEmbeddingLoss", {"margin": config.margin, "labels": "binary"}
    return "KochVerificationLoss", {}


def _koch(params: Mapping[str, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
    if params is None or "head.weight" not in params:
        raise ValueError("the koch head needs the canonical 'head.weight' and 'head.bias'.")
    return np.asarray(params["head.weight"], np.float64), np.asarray(params["head.bias"], np.float64)


def pair_output(
    config: SiameseConfig,
    e1: np.ndarray,
    e2: np.ndarray,
    params: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """The head's output for embedding pairs (reference, float64).

    Args:
        config: picks the head.
        e1, e2: ``(..., D)`` embeddings, broadcastable (``(B, D)`` pairs, or ``(Q, 1, D)``
            against ``(1, S, D)`` for all query–support pairs).
        params: canonical weights; needed for ``koch`` (``head.weight (1, D)``, ``head.bias``).

    Returns:
        ``(...)``: distance (contrastive), cosine similarity (cosine) or logit (koch).
    """
    if config.head == "contrastive":
        return losses.euclidean_distance(e1, e2)
    if config.head == "cosine":
        return losses.cosine_similarity_torch(e1, e2)
    w, b = _koch(params)
    diff = np.abs(np.asarray(e1, np.float64) - np.asarray(e2, np.float64))  # (..., D)
    return diff @ w[0] + b[0]


def pair_loss(
    config: SiameseConfig,
    y_same: np.ndarray,
    e1: np.ndarray,
    e2: np.ndarray,
    params: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Per-pair reference loss of the head, from the two embeddings.

    Args:
        y_same: ``(B,)`` **1 = same, 0 = different**.
        e1, e2: ``(B, D)``.

    Returns:
        ``(B,)`` float64: contrastive (margin), cosine embedding (margin, labels mapped to
        ``+1/-1``) or Koch BCE.
    """
    if config.head == "contrastive":
        return losses.contrastive(y_same, losses.euclidean_distance(e1, e2), config.margin)
    if config.head == "cosine":
        return losses.cosine_embedding(losses.pair_labels_to_sign(y_same), e1, e2, config.margin)
    return losses.koch_verification(y_same, pair_output(config, e1, e2, params))


def support_scores(
    config: SiameseConfig,
    support_emb: np.ndarray,
    query_emb: np.ndarray,
    params: Mapping[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Similarity of every query to every support image, higher = more alike.

    Args:
        support_emb: ``(S, D)``; query_emb: ``(Q, D)``.

    Returns:
        ``(Q, S)`` float64: ``-distance``, cosine, or Koch logit.
    """
    out = pair_output(config, np.asarray(query_emb)[:, None, :], np.asarray(support_emb)[None], params)
    return -out if config.head == "contrastive" else out


def predict_from_scores(scores: np.ndarray, support_y: np.ndarray) -> np.ndarray:
    """``(Q,)`` label of each query's best-scoring support image (first one on ties)."""
    return np.asarray(support_y)[np.argmax(scores, axis=1)]


def inputs_and_target(batch: PairBatch) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """The task contract: one :class:`PairBatch` → ``((x1, x2), y)``.

    ``x1, x2``: ``float32 (B, H, W)``; ``y``: ``float32 (B,)``, 1 = same. A Keras
    ``PyDataset`` item, or the torch model's ``(inputs, target)`` once made tensors.
    """
    if np.ndim(batch.x1) != 3:
        raise ValueError(
            f"expected one pair batch with x1 of shape (B, H, W); found {np.shape(batch.x1)}. "
            "Use PairSampler.episode(i), not .batch(start, size)."
        )
    return (batch.x1, batch.x2), np.asarray(batch.y, dtype=np.float32)


# -- the model contract (metalearn_shared.registry) -----------------------------------------
#: Pairs per step in the parity cases.
PARITY_PAIRS = 8


def same_threshold(config: SiameseConfig) -> tuple[float, bool]:
    """``(t, below)``: the head's natural threshold for *same*, halfway between what its
    loss asks of same and of different pairs: a distance below ``margin / 2``, a cosine
    above ``(1 + margin) / 2`` (same pairs are pushed to 1, different ones under the
    margin; conv4's embeddings are non-negative, so their cosines are >= 0 and 0 would call
    nearly every pair *same*), a Koch logit above 0."""
    if config.head == "contrastive":
        return config.margin / 2, True
    if config.head == "cosine":
        return (1 + config.margin) / 2, False
    return 0.0, False


def judged_same(config: SiameseConfig, output: Any) -> Any:
    """Which pairs the head's output calls *same* (:func:`same_threshold`): a boolean array
    of numpy's, torch's or Keras' kind, whichever ``output`` is (only ``<`` and ``>`` are
    used), so that both frameworks' training logs read this one rule."""
    t, below = same_threshold(config)
    return output < t if below else output > t


def batch_accuracy(config: SiameseConfig, output: np.ndarray, target: np.ndarray) -> float:
    """Same/different decided by :func:`judged_same`, against the labels 1 = same."""
    same = judged_same(config, np.asarray(output))
    return float(np.mean(same == (np.asarray(target) > 0)))


def _parity_cases(tiny: bool) -> list[registry.ParityCase]:
    if tiny:  # the seed network at 20 px: its first dense layer reads a 2x2 map (flatten permutation)
        config = SiameseConfig(BackboneConfig("seed", image_size=20), head="koch")
        return [registry.ParityCase("siamese-koch-seed-20px", config, batch=PARITY_PAIRS)]
    out = [registry.ParityCase(n, c, batch=PARITY_PAIRS) for n, c in variants()]
    # conv4 ends on a 2x2 map at 32 px: the Koch head's kernel needs the flatten
    # permutation (at 28 px the map is 1x1 and the permutation is the identity).
    return out + [registry.ParityCase(
        "siamese-koch-conv4-32px", SiameseConfig(BackboneConfig("conv4", image_size=32), head="koch"),
        batch=PARITY_PAIRS)]


def _workloads(quick: bool) -> list[registry.Workload]:
    """The seed network with the seed's cosine head, and conv4 with the contrastive head."""
    size, pairs = (16, 4) if quick else (28, 128)
    hidden = {"hidden": 8} if quick else {}
    return [registry.Workload(f"siamese-{b}", SiameseConfig(
                BackboneConfig(name=b, image_size=size, **hidden), head=h),
                registry.Task(batch=pairs), unit="pairs", image_size=size)
            for b, h in (("seed", "cosine"), ("conv4", "contrastive")) if not (quick and b == "conv4")]


def _flops(config: SiameseConfig, task: registry.Task) -> tuple[float, float]:
    return tuple(backbone_flops(config.backbone) * (2 * task.batch))  # both images of every pair


SPEC = registry.register_model(registry.ModelSpec(
    name="siamese",
    summary="Siamese network: twin embedding, contrastive | cosine | koch head",
    config_cls=SiameseConfig,
    family="pairs",
    param_spec=param_spec,
    inputs_and_target=inputs_and_target,
    config_from_args=_config_from_args,
    args_from_config=lambda c: {**backbone_args(c.backbone), "head": c.head},
    defaults=registry.TrainDefaults(batch=32, lr=1e-3, optimizer="adam", image_size=28),
    options=(*BACKBONE_OPTIONS, registry.Option(("--head",), {
        "default": "contrastive", "choices": SIAMESE_HEADS,
        "help": "siamese head: " + " | ".join(SIAMESE_HEADS)}),
             registry.Option(("--margin",), {
        "default": None, "type": float,
        "help": "siamese: the margin of the contrastive loss (a distance; default 1) or of "
                "the cosine-embedding loss (a cosine; default 0, torch's and the seed "
                "document's). conv4's embeddings are non-negative (they end on a ReLU), so "
                "at 0 a different pair is only free of loss when the two share no feature"})),
    parity_cases=_parity_cases,
    workloads=_workloads,
    flops=_flops,
    batch_accuracy=batch_accuracy,
    predicts=True,
    # The seed document's network: seed backbone, cosine embedding loss.
    seed_document=SiameseConfig(backbone=BackboneConfig(name="seed"), head="cosine"),
))
