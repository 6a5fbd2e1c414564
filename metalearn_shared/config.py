"""Frozen configuration dataclasses shared by both frameworks: the mixin every model config
uses, the backbone and the training run. Each model's own config lives in its spec module
(``metalearn_shared/models/<name>.py``) and is found through :mod:`metalearn_shared.registry`.

A config fully determines a model's architecture; both ``metalearn_tf`` and
``metalearn_torch`` build the same network (same weight names, same shapes) from the same
config object. Configs round-trip through plain dicts (``to_dict`` / ``config_from_dict``)
so that they can live in checkpoint metadata and Keras ``get_config()``
(:func:`metalearn_shared.registry.config_from_dict`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

from metalearn_shared.augment import augment_spec
from metalearn_shared.optimizers import optimizer_entry

#: How few-shot training episodes and different pairs draw their classes
#: (``TrainConfig.episode_classes``).
EPISODE_CLASSES = ("random", "within-alphabet")

__all__ = [
    "ConfigMixin",
    "BackboneConfig",
    "TrainConfig",
    "EPISODE_CLASSES",
    "ModelConfig",
    "BACKBONES",
    "RESNET12_GROWTH",
    "MEMORY_FORMATS",
    "check",
]

BACKBONES = ("conv4", "seed", "resnet12")
#: ResNet-12's channels per block, in multiples of ``hidden`` (64 gives 64-160-320-640,
#: the ResNet-12 of Oreshkin et al. 2018 and Lee et al. 2019).
RESNET12_GROWTH = (1.0, 2.5, 5.0, 10.0)


class ConfigMixin:
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


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


@dataclass(frozen=True)
class BackboneConfig(ConfigMixin):
    """Embedding network.

    Attributes:
        name: ``"conv4"`` (4 × [Conv 64@3×3 same, BatchNorm, ReLU, MaxPool 2], the standard
            few-shot backbone) or ``"seed"`` (the seed document's network: Conv 64@5×5, ReLU,
            MaxPool 2; Conv 128@5×5, ReLU, MaxPool 2; Dense 1024, ReLU; Dense 128) or
            ``"resnet12"`` (4 residual blocks of three 3×3 convs, MaxPool 2 after each;
            :mod:`metalearn_shared.models.backbones`).
        image_size: input height = width in pixels (single channel).
        hidden: conv channels of ``conv4``; ``resnet12``'s first block's channels (the
            others: :data:`RESNET12_GROWTH` times it).
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
        check(self.name in BACKBONES, f"unknown backbone {self.name!r}; choose one of {BACKBONES}.")
        check(self.hidden >= 1, f"conv4 needs at least 1 channel per layer; got {self.hidden}.")
        check(
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
        return self.block_channels[-1] * s * s

    @property
    def block_channels(self) -> tuple[int, ...]:
        """Output channels of each of the four blocks of ``conv4`` or ``resnet12``."""
        if self.name == "resnet12":
            return tuple(round(g * self.hidden) for g in RESNET12_GROWTH)
        return (self.hidden,) * 4

    @property
    def block_io(self) -> tuple[tuple[int, int], ...]:
        """``(input, output)`` channels of each block of ``conv4`` or ``resnet12`` (the
        first reads the one-channel image)."""
        out = self.block_channels
        return tuple(zip((1, *out[:-1]), out, strict=True))

    @property
    def seed_flat_chw(self) -> tuple[int, int, int]:
        """(C, H, W) of the seed network's last conv block output (before flatten)."""
        s = ((self.image_size - 4) // 2 - 4) // 2
        return (128, s, s)


#: A registered model's config (each model's spec module defines its class).
ModelConfig = Any


#: ``metalearn train --memory-format``: how a PyTorch model lays out its 4-D tensors.
#: ``auto`` is each model's measured preference (``metalearn_torch.models.memory_format``);
#: Keras' tensors are NHWC (channels-last) always.
MEMORY_FORMATS = ("auto", "contiguous", "channels-last")


@dataclass(frozen=True)
class TrainConfig(ConfigMixin):
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
        augment: a name of :data:`metalearn_shared.augment.AUGMENTS`: per-image affine
            distortion of the training episodes (``"none"``, ``"koch"``, ``"santoro"``).
        episode_classes: how few-shot training episodes (and the different pairs of a pair
            model) draw their classes, one of :data:`EPISODE_CLASSES`: ``"random"`` (any
            classes of the training set) or ``"within-alphabet"`` (all classes of an episode,
            or both of a different pair, from one alphabet, as in Lake's trials:
            :class:`~metalearn_shared.episodes.WithinAlphabetSampler`,
            :class:`~metalearn_shared.episodes.PairSampler`).
    """

    steps: int = 1000
    batch: int = 1
    lr: float = 1e-3
    optimizer: str = "adam"
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 0
    augment: str = "none"
    episode_classes: str = "random"

    def __post_init__(self) -> None:
        optimizer_entry(self.optimizer)  # ValueError listing the valid names
        augment_spec(self.augment)  # ValueError listing the valid names
        if self.episode_classes not in EPISODE_CLASSES:
            raise ValueError(f"unknown --episode-classes {self.episode_classes!r}; choose one of "
                             f"{', '.join(EPISODE_CLASSES)}.")
