"""Keras embedding networks: :class:`SeedConvNet`, :class:`Conv4` and :class:`ResNet12`.

Mirror of ``metalearn_torch/models/backbones.py``: same constructor argument (a
:class:`~metalearn_shared.config.BackboneConfig`), same weight names (sublayers are named
after the torch attributes, so variable paths are ``conv1/kernel``, ``bn1/moving_mean``, ...).
Inputs are ``(B, H, W)`` float32 images (the samplers' format) or ``(B, H, W, 1)``; the
output is ``(B, config.output_dim)``, conv maps flattened in Keras' ``(H, W, C)`` order —
never transposed here; the converter's ``FLATTEN_DENSE`` layout handles the dense layer
that follows a flatten.

BatchNorm is :class:`UnbiasedBatchNormalization`: ``keras.layers.BatchNormalization`` with
torch's running-variance update (unbiased batch variance), momentum and epsilon from the
shared config (Keras momentum = 1 - torch momentum). It accumulates the training batch's
statistics in float64 by default, as torch's CPU kernel does, which parity relies on;
:func:`set_batchnorm_statistics` (or ``METALEARN_BN_STATISTICS=float32``) selects float32
statistics for the layers built afterwards — faster, see ``docs/benchmarks.md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any, ClassVar

import keras
from keras import ops

from metalearn_shared.config import BackboneConfig
from metalearn_shared.models.backbones import (
    CONV4_BLOCKS,
    RESNET12_CONVS,
    RESNET12_SLOPE,
    check_images,
    shortcut_norm,
)
from metalearn_tf import losses

__all__ = ["BN_STATISTICS", "BN_STATISTICS_ENV", "set_batchnorm_statistics",
           "batchnorm_statistics", "UnbiasedBatchNormalization", "SeedConvNet", "Conv4",
           "ResNet12", "make_backbone", "TaskMixin", "seeded"]

_PACKAGE = "metalearn_tf"

#: The dtypes :class:`UnbiasedBatchNormalization` can accumulate batch statistics in; the
#: first is the default (parity with torch's CPU kernel).
BN_STATISTICS = ("float64", "float32")
#: Environment variable read when no :func:`set_batchnorm_statistics` call chose a dtype.
BN_STATISTICS_ENV = "METALEARN_BN_STATISTICS"
_bn_statistics: str | None = None


def _check_statistics(dtype: str, where: str) -> str:
    if dtype not in BN_STATISTICS:
        raise ValueError(f"BatchNorm statistics dtype must be one of {', '.join(BN_STATISTICS)}; "
                         f"found {dtype!r} ({where}).")
    return dtype


def set_batchnorm_statistics(dtype: str | None) -> None:
    """Choose the dtype the Keras BatchNorm layers built from now on accumulate batch
    statistics in: ``"float64"`` (the default; what parity with torch needs) or
    ``"float32"`` (faster: about a quarter of a conv4 training step, ``docs/benchmarks.md``).
    ``None`` returns to ``$METALEARN_BN_STATISTICS``, then ``"float64"``. Layers already
    built keep theirs (their ``statistics_dtype``).
    """
    global _bn_statistics
    _bn_statistics = None if dtype is None else _check_statistics(dtype, "set_batchnorm_statistics")


def batchnorm_statistics() -> str:
    """The dtype new BatchNorm layers take: :func:`set_batchnorm_statistics`'s, else
    ``$METALEARN_BN_STATISTICS``, else ``"float64"``."""
    if _bn_statistics is not None:
        return _bn_statistics
    env = os.environ.get(BN_STATISTICS_ENV)
    return _check_statistics(env, f"${BN_STATISTICS_ENV}") if env else BN_STATISTICS[0]


@keras.saving.register_keras_serializable(_PACKAGE)
class UnbiasedBatchNormalization(keras.layers.BatchNormalization):
    """``BatchNormalization`` whose moving variance tracks the *unbiased* batch variance.

    Both frameworks normalise a training batch with its biased variance, but
    ``torch.nn.BatchNorm2d`` updates ``running_var`` with the unbiased one (× n/(n-1), n =
    values per channel) while Keras uses the biased one. On a 1×1 final map with 8 images
    that is a factor 8/7; this layer makes Keras update as torch does. Batch statistics are
    accumulated in ``statistics_dtype``: float64 (as torch does on CPU) unless
    :func:`set_batchnorm_statistics` chose float32 before the layer was built. Inference and
    the normalisation formula are Keras' own. Masks and renorm are not supported.

    Args:
        statistics_dtype: ``"float64"`` or ``"float32"``; ``None``: :func:`batchnorm_statistics`.
        **kwargs: ``keras.layers.BatchNormalization``'s.
    """

    def __init__(self, statistics_dtype: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.statistics_dtype = (batchnorm_statistics() if statistics_dtype is None else
                                 _check_statistics(statistics_dtype, f"{self.name}"))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "statistics_dtype": self.statistics_dtype}

    def _batch_moments(self, x: Any) -> tuple[Any, Any]:
        """The batch mean and biased variance of float32 ``x`` over the reduction axes,
        ``(C,)`` float32 each, accumulated in ``statistics_dtype``; two passes either way."""
        axes = self._reduction_axes
        if self.statistics_dtype == "float64":
            # As torch's CPU kernel does: TF's float32 reductions over B*H*W values, in one
            # go, cost ~1e-4 of embedding accuracy after four blocks.
            x64 = ops.cast(x, "float64")
            mean64 = ops.mean(x64, axis=axes)  # (C,)
            var64 = ops.mean(ops.square(x64 - mean64), axis=axes)  # (C,)
            return ops.cast(mean64, "float32"), ops.cast(var64, "float32")
        # float32: shifted by the first image's mean (the deviations are then small numbers,
        # so a large mean costs no digits) and reduced one axis at a time, innermost first
        # (short sums: the error stays near float32 rounding).
        shift = ops.stop_gradient(ops.mean(x[:1], axis=axes))  # (C,)
        y = x - shift

        def mean(t: Any) -> Any:
            for a in sorted(axes, reverse=True):
                t = ops.mean(t, axis=a)
            return t  # (C,)

        my = mean(y)
        return shift + my, mean(ops.square(y - my))

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        if not (training and self.trainable):
            return super().call(inputs, training=False, mask=mask)
        if mask is not None or self.renorm:
            raise ValueError(f"{self.name}: masks and renorm are not supported.")
        x = ops.cast(inputs, "float32")
        mean, variance = self._batch_moments(x)  # (C,) each; variance biased
        n = ops.cast(ops.size(x), "float32") / ops.cast(ops.shape(x)[self.axis], "float32")
        unbiased = variance * n / (n - 1.0)
        k = self.momentum
        self.moving_mean.assign(self.moving_mean * k + mean * (1.0 - k))
        self.moving_variance.assign(self.moving_variance * k + unbiased * (1.0 - k))
        out = ops.batch_normalization(x, mean, variance, axis=self.axis, offset=self.beta,
                                      scale=self.gamma, epsilon=self.epsilon)
        return ops.cast(out, self.compute_dtype)


class _Backbone(keras.layers.Layer):
    """Config round trip, input checking and layout shared by the backbones."""

    def __init__(self, config: BackboneConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config

    def prepare(self, x: Any, what: str = "images") -> Any:
        """Check ``x`` and return it as ``(B, H, W, 1)``.

        Raises:
            ValueError: wrong shape, channel count or dtype (naming expected and found).
        """
        x = ops.convert_to_tensor(x)
        dtype = keras.backend.standardize_dtype(x.dtype)
        if check_images(tuple(x.shape), dtype, self.config.image_size, channels_last=True,
                        expected_dtype=self.compute_dtype, what=what):
            x = ops.expand_dims(x, -1)  # (B, H, W, 1)
        return x

    def _input_shape(self) -> tuple[int | None, ...]:
        s = self.config.image_size
        return (None, s, s, 1)

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        return (input_shape[0], self.config.output_dim)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "config": self.config.to_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> _Backbone:
        return cls(BackboneConfig.from_dict(config["config"]), name=config.get("name"))


@keras.saving.register_keras_serializable(_PACKAGE)
class SeedConvNet(_Backbone):
    """The seed document's embedding network.

    Conv 64@5×5, ReLU, MaxPool 2; Conv 128@5×5, ReLU, MaxPool 2; flatten (H, W, C);
    Dense 1024, ReLU; Dense ``embedding_dim``.

    Args:
        config: a ``BackboneConfig`` with ``name="seed"``.
    """

    def __init__(self, config: BackboneConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.conv1 = keras.layers.Conv2D(64, 5, name="conv1")
        self.conv2 = keras.layers.Conv2D(128, 5, name="conv2")
        self.fc1 = keras.layers.Dense(1024, name="fc1")
        self.fc2 = keras.layers.Dense(config.embedding_dim, name="fc2")

    def build(self, input_shape: Any = None) -> None:
        # Shapes follow from the config alone; input_shape may be (B, H, W) or (B, H, W, 1).
        c, h, w = self.config.seed_flat_chw
        s1 = (self.config.image_size - 4) // 2  # after conv1 + pool
        self.conv1.build(self._input_shape())
        self.conv2.build((None, s1, s1, 64))
        self.fc1.build((None, h * w * c))
        self.fc2.build((None, 1024))

    def call(self, x: Any, training: bool | None = None) -> Any:
        x = self.prepare(x)  # (B, S, S, 1)
        x = ops.max_pool(ops.relu(self.conv1(x)), 2)  # (B, (S-4)/2, ..., 64)
        x = ops.max_pool(ops.relu(self.conv2(x)), 2)  # (B, h, w, 128)
        c, h, w = self.config.seed_flat_chw
        x = ops.reshape(x, (-1, h * w * c))  # (B, h*w*128), (H, W, C) order
        return self.fc2(ops.relu(self.fc1(x)))  # (B, D)


def _batchnorm(config: BackboneConfig, name: str) -> UnbiasedBatchNormalization:
    """A BatchNorm with the shared config's momentum (Keras' convention) and epsilon."""
    return UnbiasedBatchNormalization(momentum=config.keras_bn_momentum, epsilon=config.bn_eps,
                                      name=name)


@keras.saving.register_keras_serializable(_PACKAGE)
class Conv4(_Backbone):
    """The standard few-shot backbone: 4 × [Conv ``hidden``@3×3 same, BatchNorm, ReLU, MaxPool 2].

    The convs have no bias (BatchNorm cancels it; see the spec).

    Args:
        config: a ``BackboneConfig`` with ``name="conv4"``.
    """

    def __init__(self, config: BackboneConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        for i in range(1, CONV4_BLOCKS + 1):
            # attribute names = layer names = torch's attribute names
            setattr(self, f"conv{i}",
                    keras.layers.Conv2D(config.hidden, 3, padding="same", use_bias=False,
                                        name=f"conv{i}"))
            setattr(self, f"bn{i}", _batchnorm(config, f"bn{i}"))

    def _blocks(self) -> list[tuple[keras.layers.Conv2D, UnbiasedBatchNormalization]]:
        return [(getattr(self, f"conv{i}"), getattr(self, f"bn{i}"))
                for i in range(1, CONV4_BLOCKS + 1)]

    def build(self, input_shape: Any = None) -> None:
        s, c = self.config.image_size, 1
        for conv, bn in self._blocks():
            conv.build((None, s, s, c))
            c = self.config.hidden
            bn.build((None, s, s, c))
            s //= 2

    def call(self, x: Any, training: bool | None = None) -> Any:
        x = self.prepare(x)  # (B, S, S, 1)
        for conv, bn in self._blocks():
            x = ops.max_pool(ops.relu(bn(conv(x), training=training)), 2)  # (B, S/2^i, ., hidden)
        return ops.reshape(x, (-1, self.config.output_dim))  # (B, s*s*hidden), (H, W, C) order


class _ResidualBlock(keras.layers.Layer):
    """One ResNet-12 block before its pooling (spec: ``_residual_block``); sublayers named
    as torch's attributes."""

    def __init__(self, in_ch: int, out_ch: int, config: BackboneConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_ch = out_ch
        self.convs = [keras.layers.Conv2D(out_ch, 3, padding="same", use_bias=False,
                                          name=f"conv{j}") for j in range(1, RESNET12_CONVS + 1)]
        self.bns = [_batchnorm(config, f"bn{j}") for j in range(1, RESNET12_CONVS + 1)]
        self.shortcut = keras.layers.Conv2D(out_ch, 1, use_bias=False, name="shortcut")
        self.shortcut_bn = _batchnorm(config, "shortcut_bn") if shortcut_norm(in_ch) else None

    def build(self, input_shape: Any) -> None:
        out_shape = (*input_shape[:-1], self.out_ch)
        for j, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True)):
            conv.build(input_shape if j == 0 else out_shape)
            bn.build(out_shape)
        self.shortcut.build(input_shape)
        if self.shortcut_bn is not None:
            self.shortcut_bn.build(out_shape)

    def call(self, x: Any, training: bool | None = None) -> Any:
        h = x
        for j, (conv, bn) in enumerate(zip(self.convs, self.bns, strict=True), start=1):
            h = bn(conv(h), training=training)
            if j < RESNET12_CONVS:
                h = ops.leaky_relu(h, negative_slope=RESNET12_SLOPE)
        short = self.shortcut(x)
        if self.shortcut_bn is not None:
            short = self.shortcut_bn(short, training=training)
        return ops.leaky_relu(h + short, negative_slope=RESNET12_SLOPE)


@keras.saving.register_keras_serializable(_PACKAGE)
class ResNet12(_Backbone):
    """ResNet-12: 4 × [residual block of three 3×3 conv-BN and a 1×1 conv-BN shortcut (no
    BatchNorm in block 1's: see the spec), LeakyReLU 0.1, MaxPool 2], channels
    ``config.block_channels``; flatten (H, W, C).

    Args:
        config: a ``BackboneConfig`` with ``name="resnet12"``.
    """

    def __init__(self, config: BackboneConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.blocks = [_ResidualBlock(i, o, config, name=f"block{b}")
                       for b, (i, o) in enumerate(config.block_io, start=1)]

    def build(self, input_shape: Any = None) -> None:
        s, c = self.config.image_size, 1
        for block in self.blocks:
            block.build((None, s, s, c))
            c = block.out_ch
            s //= 2

    def call(self, x: Any, training: bool | None = None) -> Any:
        x = self.prepare(x)  # (B, S, S, 1)
        for block in self.blocks:
            x = ops.max_pool(block(x, training=training), 2)  # (B, S/2^i, ., C_i)
        return ops.reshape(x, (-1, self.config.output_dim))  # (B, s*s*C_4), (H, W, C) order


def make_backbone(config: BackboneConfig, name: str = "embedding") -> _Backbone:
    """The backbone ``config.name`` names, as a layer called ``name``."""
    return {"seed": SeedConvNet, "conv4": Conv4,
            "resnet12": ResNet12}[config.name](config, name=name)


class TaskMixin:
    """The task contract's generic half and the config round trip, for a ``keras.Model``
    whose spec module (``spec``) has ``inputs_and_target(batch)`` and ``loss_for(config)``
    and whose constructor takes one config of class ``config_cls``; the model supplies ``call``.
    """

    spec: ClassVar[ModuleType]
    config_cls: ClassVar[type]

    def make_loss(self) -> keras.losses.Loss:
        """The model's loss (``metalearn_tf.losses``), configured from its config, for
        ``model.compile(loss=...)``; called as ``loss(y_true, y_pred)``, mean over the batch."""
        name, kwargs = self.spec.loss_for(self.config)  # type: ignore[attr-defined]
        return getattr(losses, name)(**kwargs)

    @classmethod
    def inputs_and_target(cls, batch: Any) -> tuple[tuple[Any, ...], Any]:
        """A sampler's batch → ``(inputs, target)`` numpy arrays: a ``PyDataset`` item."""
        return cls.spec.inputs_and_target(batch)

    def batch_accuracy(self, output: Any, target: Any) -> Any:
        """Keras mirror of the spec's ``batch_accuracy`` (argmax of the logits)."""
        pred = ops.argmax(output, axis=-1)
        return ops.mean(ops.cast(ops.equal(pred, ops.cast(target, pred.dtype)), "float32"))

    def get_config(self) -> dict[str, Any]:
        """The config dataclass as a dict (``to_dict``)."""
        return self.config.to_dict()  # type: ignore[attr-defined]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Any:
        return cls(cls.config_cls.from_dict(config))  # type: ignore[call-arg]


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Seed Keras' global RNG (``keras.utils.set_random_seed``) so initial weights repeat.

    Keras has no scoped RNG fork like torch's ``fork_rng``: this sets Python's, numpy's and
    the backend's global seeds, and leaves them set.
    """
    if seed is not None:
        keras.utils.set_random_seed(seed)
    yield
