"""Frozen configuration dataclasses shared by both frameworks, and the model registry.

A config fully determines a model's architecture; both ``metalearn_tf`` and
``metalearn_torch`` build the same network (same weight names, same shapes) from the same
config object. Configs round-trip through plain dicts (``to_dict`` / ``config_from_dict``)
so that they can live in checkpoint metadata and Keras ``get_config()``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

from metalearn_shared.optimizers import optimizer_entry

__all__ = [
    "BackboneConfig",
    "SiameseConfig",
    "ProtoNetConfig",
    "MANNConfig",
    "LSTMConfig",
    "TrainConfig",
    "ModelConfig",
    "MODEL_REGISTRY",
    "ModelEntry",
    "BACKBONES",
    "SIAMESE_HEADS",
    "config_from_dict",
    "default_config",
]

BACKBONES = ("conv4", "seed")
SIAMESE_HEADS = ("contrastive", "cosine", "koch")


class _Config:
    """Mixin: dict round trip with validation of unknown keys."""

    model: ClassVar[str] = ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)  # type: ignore[call-overload]
        if self.model:
            d["model"] = self.model
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        d = {k: v for k, v in d.items() if k != "model"}
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(d) - names
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown keys {sorted(unknown)}; expected some of {sorted(names)}."
            )
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in d:
                v = d[f.name]
                if f.name == "backbone" and isinstance(v, dict):
                    v = BackboneConfig.from_dict(v)
                kwargs[f.name] = v
        return cls(**kwargs)

    def replace(self, **changes: Any) -> Any:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class BackboneConfig(_Config):
    """Embedding network.

    Attributes:
        name: ``"conv4"`` (4 × [Conv 64@3×3 same, BatchNorm, ReLU, MaxPool 2], the standard
            few-shot backbone) or ``"seed"`` (the seed document's network: Conv 64@5×5, ReLU,
            MaxPool 2; Conv 128@5×5, ReLU, MaxPool 2; Dense 1024, ReLU; Dense 128).
        image_size: input height = width in pixels (single channel).
        hidden: conv channels of ``conv4``.
        embedding_dim: output size of ``seed``'s last dense layer.
        bn_momentum: **torch convention**: ``running = (1 - m) running + m batch``. Keras'
            momentum is ``1 - m`` (see :attr:`keras_bn_momentum`).
        bn_eps: added to the variance (torch default 1e-5; Keras default 1e-3 — we pin one).
    """

    name: str = "conv4"
    image_size: int = 28
    hidden: int = 64
    embedding_dim: int = 128
    bn_momentum: float = 0.1
    bn_eps: float = 1e-5

    def __post_init__(self) -> None:
        _check(self.name in BACKBONES, f"unknown backbone {self.name!r}; choose one of {BACKBONES}.")
        _check(
            self.image_size >= 16,
            f"backbone {self.name!r} needs images of at least 16×16 (four 2× poolings); "
            f"got {self.image_size}.",
        )

    @property
    def keras_bn_momentum(self) -> float:
        """Keras ``BatchNormalization(momentum=...)``: ``running = k running + (1 - k) batch``."""
        return 1.0 - self.bn_momentum

    @property
    def output_dim(self) -> int:
        """Size of the flat embedding the backbone returns."""
        if self.name == "seed":
            return self.embedding_dim
        s = self.image_size
        for _ in range(4):
            s //= 2
        return self.hidden * s * s

    @property
    def seed_flat_chw(self) -> tuple[int, int, int]:
        """(C, H, W) of the seed network's last conv block output (before flatten)."""
        s = ((self.image_size - 4) // 2 - 4) // 2
        return (128, s, s)


@dataclass(frozen=True)
class SiameseConfig(_Config):
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
        _check(self.head in SIAMESE_HEADS, f"unknown head {self.head!r}; choose one of {SIAMESE_HEADS}.")
        if self.margin is None:
            object.__setattr__(self, "margin", 1.0 if self.head == "contrastive" else 0.0)


@dataclass(frozen=True)
class ProtoNetConfig(_Config):
    """Prototypical network (Snell et al. 2017) on a backbone."""

    model: ClassVar[str] = "protonet"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)


@dataclass(frozen=True)
class MANNConfig(_Config):
    """Memory-augmented neural network with LRUA memory (Santoro et al. 2016).

    Attributes:
        image_size: images are flattened to ``image_size**2`` inputs (20 default).
        num_classes: output classes per step (ways); ``label_groups`` softmaxes of this size.
        label_groups: 1 for one-hot labels; 5 for Santoro's 5-character string labels.
        controller_units: LSTM controller size.
        memory_slots, memory_width: memory ``M`` is ``(slots, width)``.
        read_heads: number of read (and write) heads.
        gamma: usage decay.
        memory_init: constant the memory starts at, so cosine similarity is defined.
        cosine_eps: epsilon in the cosine similarity's denominator.
    """

    model: ClassVar[str] = "mann"
    image_size: int = 20
    num_classes: int = 5
    label_groups: int = 1
    controller_units: int = 200
    memory_slots: int = 128
    memory_width: int = 40
    read_heads: int = 4
    gamma: float = 0.95
    memory_init: float = 1e-6
    cosine_eps: float = 1e-8

    def __post_init__(self) -> None:
        _check(self.read_heads <= self.memory_slots, "read_heads must not exceed memory_slots.")

    @property
    def input_size(self) -> int:
        return self.image_size * self.image_size

    @property
    def label_size(self) -> int:
        return self.num_classes * self.label_groups


@dataclass(frozen=True)
class LSTMConfig(_Config):
    """LSTM-only baseline on MANN episodes (the paper's comparison row)."""

    model: ClassVar[str] = "lstm"
    image_size: int = 20
    num_classes: int = 5
    label_groups: int = 1
    controller_units: int = 200

    @property
    def input_size(self) -> int:
        return self.image_size * self.image_size

    @property
    def label_size(self) -> int:
        return self.num_classes * self.label_groups


ModelConfig = SiameseConfig | ProtoNetConfig | MANNConfig | LSTMConfig


@dataclass(frozen=True)
class TrainConfig(_Config):
    """Training run settings shared by both trainers.

    Attributes:
        steps: optimiser steps.
        batch: pairs per step (siamese), episodes per step (protonet: 1 typical; mann: 16).
        lr: learning rate.
        optimizer: a name of :data:`metalearn_shared.optimizers.OPTIMIZERS`: ``"adam"``,
            ``"rmsprop"`` (Santoro et al. use RMSprop 1e-4), ``"sgd"`` (each framework's own
            class), or ``"adam-torch"``, ``"rmsprop-torch"``, ``"adam-keras"``,
            ``"rmsprop-keras"`` (one library's update rule in both frameworks).
        seed: seeds weights and episodes.
        log_every: CSV/progress interval in steps.
        checkpoint_every: checkpoint interval in steps (0 = only at the end).
    """

    steps: int = 1000
    batch: int = 1
    lr: float = 1e-3
    optimizer: str = "adam"
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        optimizer_entry(self.optimizer)  # ValueError listing the valid names


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its name, config class and episode family."""

    name: str
    config_cls: type
    family: str  # "pairs" | "fewshot" | "sequence"
    summary: str


#: The one registry of model names; both frameworks must implement every entry
#: (``tests/test_registry.py`` fails otherwise).
MODEL_REGISTRY: dict[str, ModelEntry] = {
    "siamese": ModelEntry("siamese", SiameseConfig, "pairs", "Siamese network, 3 heads"),
    "protonet": ModelEntry("protonet", ProtoNetConfig, "fewshot", "Prototypical network"),
    "mann": ModelEntry("mann", MANNConfig, "sequence", "MANN with LRUA memory"),
    "lstm": ModelEntry("lstm", LSTMConfig, "sequence", "LSTM baseline for MANN episodes"),
}


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """Rebuild a model config from ``to_dict()`` output (its ``"model"`` key picks the class)."""
    name = d.get("model")
    if name not in MODEL_REGISTRY:
        raise ValueError(
            f"config dict names model {name!r}; known models: {sorted(MODEL_REGISTRY)}."
        )
    return MODEL_REGISTRY[name].config_cls.from_dict(d)


def default_config(name: str, **overrides: Any) -> ModelConfig:
    """The default config of a registered model, with overrides."""
    if name not in MODEL_REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODEL_REGISTRY)}.")
    return MODEL_REGISTRY[name].config_cls(**overrides)
