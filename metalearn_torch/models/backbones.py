"""PyTorch embedding networks: :class:`SeedConvNet`, :class:`Conv4` and :class:`ResNet12`.

Mirror of ``metalearn_tf/models/backbones.py``: same constructor argument (a
:class:`~metalearn_shared.config.BackboneConfig`), same parameter names (the spec in
:mod:`metalearn_shared.models.backbones`). Inputs are ``(B, H, W)`` float32 images (the
samplers' format) or ``(B, 1, H, W)``; the output is ``(B, config.output_dim)``, conv maps
flattened in torch's ``(C, H, W)`` order.

Channels-last: ``model.to(memory_format=torch.channels_last)`` is honoured — inputs are
converted to the weights' memory format, and results are the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn_shared.config import BackboneConfig
from metalearn_shared.models.backbones import (
    CONV4_BLOCKS,
    RESNET12_CONVS,
    RESNET12_SLOPE,
    check_images,
    shortcut_norm,
)
from metalearn_torch import losses

__all__ = ["SeedConvNet", "Conv4", "ResNet12", "make_backbone", "TaskMixin", "inference", "seeded", "to_tensors"]


class _Backbone(nn.Module):
    """Input checking and layout shared by the backbones."""

    config: BackboneConfig

    @property
    def first_conv(self) -> nn.Conv2d:
        """The conv that reads the images: its dtype and memory format are the input's."""
        return self.conv1

    def prepare(self, x: Tensor, what: str = "images") -> Tensor:
        """Check ``x`` and return it as ``(B, 1, H, W)`` in the weights' memory format.

        Raises:
            ValueError: wrong shape, channel count or dtype (naming expected and found).
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"{what}: expected a torch.Tensor; found {type(x).__name__}. "
                            "Convert with torch.as_tensor(x).")
        dtype = str(x.dtype).removeprefix("torch.")
        expected = str(self.first_conv.weight.dtype).removeprefix("torch.")
        if check_images(tuple(x.shape), dtype, self.config.image_size, channels_last=False,
                        expected_dtype=expected, what=what):
            x = x.unsqueeze(1)  # (B, 1, H, W)
        if self.first_conv.weight.is_contiguous(memory_format=torch.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        return x


class SeedConvNet(_Backbone):
    """The seed document's embedding network.

    Conv 64@5×5, ReLU, MaxPool 2; Conv 128@5×5, ReLU, MaxPool 2; flatten (C, H, W);
    Linear 1024, ReLU; Linear ``embedding_dim``.

    Args:
        config: a ``BackboneConfig`` with ``name="seed"``.
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        c, h, w = config.seed_flat_chw
        self.conv1 = nn.Conv2d(1, 64, kernel_size=5)
        self.conv2 = nn.Conv2d(64, 128, kernel_size=5)
        self.fc1 = nn.Linear(c * h * w, 1024)
        self.fc2 = nn.Linear(1024, config.embedding_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = self.prepare(x)  # (B, 1, S, S)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)  # (B, 64, (S-4)/2, ...)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)  # (B, 128, h, w)
        x = x.flatten(1)  # (B, 128*h*w), (C, H, W) order whatever the memory format
        return self.fc2(F.relu(self.fc1(x)))  # (B, D)


class Conv4(_Backbone):
    """The standard few-shot backbone: 4 × [Conv ``hidden``@3×3 same, BatchNorm, ReLU, MaxPool 2].

    The convs have no bias (BatchNorm cancels it; see the spec). BatchNorm momentum and
    epsilon come from the config (torch convention).

    Args:
        config: a ``BackboneConfig`` with ``name="conv4"``.
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        for i, (in_ch, out_ch) in enumerate(config.block_io, start=1):
            setattr(self, f"conv{i}", _conv3x3(in_ch, out_ch))
            setattr(self, f"bn{i}", _batchnorm(out_ch, config))

    def forward(self, x: Tensor) -> Tensor:
        x = self.prepare(x)  # (B, 1, S, S)
        for i in range(1, CONV4_BLOCKS + 1):
            conv, bn = getattr(self, f"conv{i}"), getattr(self, f"bn{i}")
            x = F.max_pool2d(F.relu(bn(conv(x))), 2)  # (B, hidden, S/2^i, S/2^i)
        return x.flatten(1)  # (B, hidden*s*s), (C, H, W) order


def _conv3x3(in_ch: int, out_ch: int) -> nn.Conv2d:
    """A 3×3 "same" conv without bias (a BatchNorm follows: see the spec)."""
    return nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False)


def _batchnorm(channels: int, config: BackboneConfig) -> nn.BatchNorm2d:
    """A BatchNorm with the shared config's momentum and epsilon (torch's convention)."""
    return nn.BatchNorm2d(channels, eps=config.bn_eps, momentum=config.bn_momentum)


class _ResidualBlock(nn.Module):
    """One ResNet-12 block before its pooling (spec: ``_residual_block``)."""

    def __init__(self, in_ch: int, out_ch: int, config: BackboneConfig) -> None:
        super().__init__()
        for j in range(1, RESNET12_CONVS + 1):
            setattr(self, f"conv{j}", _conv3x3(in_ch if j == 1 else out_ch, out_ch))
            setattr(self, f"bn{j}", _batchnorm(out_ch, config))
        self.shortcut = nn.Conv2d(in_ch, out_ch, kernel_size=1, bias=False)
        self.shortcut_bn = _batchnorm(out_ch, config) if shortcut_norm(in_ch) else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for j in range(1, RESNET12_CONVS + 1):
            h = getattr(self, f"bn{j}")(getattr(self, f"conv{j}")(h))
            if j < RESNET12_CONVS:
                h = F.leaky_relu(h, RESNET12_SLOPE)
        return F.leaky_relu(h + self.shortcut_bn(self.shortcut(x)), RESNET12_SLOPE)


class ResNet12(_Backbone):
    """ResNet-12: 4 × [residual block of three 3×3 conv-BN and a 1×1 conv-BN shortcut (no
    BatchNorm in block 1's: see the spec), LeakyReLU 0.1, MaxPool 2], channels
    ``config.block_channels``; flatten (C, H, W).

    Args:
        config: a ``BackboneConfig`` with ``name="resnet12"``.
    """

    def __init__(self, config: BackboneConfig) -> None:
        super().__init__()
        self.config = config
        for i, (in_ch, out_ch) in enumerate(config.block_io, start=1):
            setattr(self, f"block{i}", _ResidualBlock(in_ch, out_ch, config))

    @property
    def first_conv(self) -> nn.Conv2d:
        return self.block1.conv1

    def forward(self, x: Tensor) -> Tensor:
        x = self.prepare(x)  # (B, 1, S, S)
        for i in range(1, CONV4_BLOCKS + 1):
            x = F.max_pool2d(getattr(self, f"block{i}")(x), 2)  # (B, C_i, S/2^i, S/2^i)
        return x.flatten(1)  # (B, C_4*s*s), (C, H, W) order


def make_backbone(config: BackboneConfig) -> _Backbone:
    """The backbone ``config.name`` names."""
    return {"seed": SeedConvNet, "conv4": Conv4, "resnet12": ResNet12}[config.name](config)


@contextmanager
def inference(module: nn.Module) -> Iterator[None]:
    """Eval mode (BatchNorm running statistics) and no autograd; restores the mode after."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        module.train(was_training)


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Draw the initial weights from ``torch.manual_seed(seed)`` without touching the global RNG."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def to_tensors(arrays: Iterable[np.ndarray], module: nn.Module) -> tuple[Tensor, ...]:
    """numpy arrays (a sampler's output) → tensors on ``module``'s device, dtypes kept."""
    device = next(module.parameters()).device
    return tuple(torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in arrays)


class TaskMixin:
    """The task contract's generic half, for a model whose spec module (``spec``) has
    ``inputs_and_target(batch)`` and ``loss_for(config)``; the model supplies ``forward``.
    """

    spec: ClassVar[ModuleType]

    def make_loss(self) -> nn.Module:
        """The model's loss (``metalearn_torch.losses``), configured from its config;
        called as ``loss(output, target)``, mean over the batch."""
        name, kwargs = self.spec.loss_for(self.config)  # type: ignore[attr-defined]
        return getattr(losses, name)(**kwargs)

    def inputs_and_target(self, batch: Any) -> tuple[tuple[Tensor, ...], Tensor]:
        """A sampler's batch → ``(inputs, target)`` tensors on the model's device."""
        inputs, target = self.spec.inputs_and_target(batch)
        *inputs, target = to_tensors((*inputs, target), self)  # type: ignore[arg-type]
        return tuple(inputs), target

    def batch_accuracy(self, output: Tensor, target: Tensor) -> Tensor:
        """On-device mirror of the spec's ``batch_accuracy`` (argmax of the logits; no host sync)."""
        return (output.argmax(-1) == target).float().mean()

    def compute_loss_on(self, batch: Any) -> Tensor:
        """Mean loss on one sampler batch (train or eval mode as set): ``make_loss()(model(*inputs), target)``."""
        inputs, target = self.inputs_and_target(batch)
        return self.make_loss()(self(*inputs), target)  # type: ignore[attr-defined,operator]
