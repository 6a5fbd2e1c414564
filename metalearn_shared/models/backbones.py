"""The embedding networks (backbones) both frameworks implement: weight spec, input contract
and a numpy reference forward pass.

Three backbones, chosen by :attr:`BackboneConfig.name`:

``seed``
    The seed document's network: Conv 64@5×5 (valid), ReLU, MaxPool 2; Conv 128@5×5 (valid),
    ReLU, MaxPool 2; flatten; Dense 1024, ReLU; Dense ``embedding_dim``. Parameters
    ``conv1, conv2, fc1, fc2``.
``conv4``
    The standard few-shot backbone (Vinyals et al. 2016; Snell et al. 2017): 4 × [Conv
    ``hidden``@3×3 same, BatchNorm, ReLU, MaxPool 2]; flatten. Parameters ``conv1..conv4``
    (weights only) and ``bn1..bn4``. The convs have no bias, unlike Snell's code: the
    BatchNorm that follows subtracts the mean, so a bias would be cancelled — its true
    gradient is 0 and the computed one is float32 rounding noise, different in each
    framework, that an SGD step would then write into the weights.
``resnet12``
    The ResNet-12 of few-shot learning (Oreshkin et al. 2018, TADAM; Lee et al. 2019,
    MetaOptNet): 4 residual blocks with ``block_channels`` ``hidden`` × (1, 2.5, 5, 10)
    (64-160-320-640 at the default ``hidden``). Block ``i``: Conv 3×3 same, BatchNorm,
    LeakyReLU 0.1; Conv 3×3, BatchNorm, LeakyReLU 0.1; Conv 3×3, BatchNorm; plus the
    shortcut Conv 1×1, BatchNorm; the sum through LeakyReLU 0.1; MaxPool 2; flatten (as
    ``conv4``: at 28 px the last map is 1×1, so this equals the usual global average pool).
    No DropBlock (both frameworks would draw different masks). Parameters
    ``block{i}.conv{1,2,3}``, ``block{i}.bn{1,2,3}``, ``block{i}.shortcut``,
    ``block{i}.shortcut_bn``; no conv has a bias. One departure, for grayscale input:
    block 1's shortcut reads one channel, and a 1×1 conv of one channel followed by
    BatchNorm is scale-invariant — ``BN(w x) = sign(w) BN(x)`` up to epsilon — so its
    weight's true gradient is about 0, and what each framework computes is float32
    cancellation noise (it alone exceeded the parity bound for gradients, 1.07 of it at
    28 px) that SGD would write into the weight, as with a bias before BatchNorm. That
    shortcut is the 1×1 conv alone (a learned scale per channel): no ``block1.shortcut_bn``.

Flatten order is each framework's own: torch flattens ``(C, H, W)``, Keras ``(H, W, C)``.
Nothing is transposed inside a model; a dense layer that reads a flattened conv output has
the ``FLATTEN_DENSE`` layout, and :func:`embedding_chw` tells whether a backbone's *output*
is such a flattened map (``conv4``, whose embedding element order therefore differs between
the frameworks when the final map is larger than 1×1 — distances do not care, a dense head
does). The reference forward pass here works in the canonical (torch) order.

BatchNorm follows torch: normalise with the biased batch variance, update the running
variance with the unbiased one, ``running = (1 - m) running + m batch``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from metalearn_shared.config import BACKBONES, BackboneConfig, check
from metalearn_shared.flops import Flops
from metalearn_shared.registry import Option
from metalearn_shared.weights import Layout, ParamSpec, batchnorm, conv2d, dense

__all__ = [
    "BACKBONE_OPTION",
    "BACKBONE_OPTIONS",
    "backbone_args",
    "backbone_from_args",
    "backbone_flops",
    "CONV4_BLOCKS",
    "RESNET12_SLOPE",
    "RESNET12_CONVS",
    "shortcut_norm",
    "backbone_spec",
    "variant_backbones",
    "RESNET12_VARIANT",
    "embedding_chw",
    "flat_hwc_to_chw",
    "check_images",
    "backbone_forward",
]

#: Conv blocks of ``conv4`` (and residual blocks of ``resnet12``).
CONV4_BLOCKS = 4
#: ResNet-12's LeakyReLU slope, and its 3×3 convs per block.
RESNET12_SLOPE = 0.1
RESNET12_CONVS = 3
_SEED_CONV = ((64, 5), (128, 5))  # (channels, kernel) of the seed network's convs
_SEED_HIDDEN = 1024


def backbone_spec(config: BackboneConfig, prefix: str = "embedding") -> list[ParamSpec]:
    """Canonical parameters of the backbone ``config`` describes, under ``prefix``.

    Args:
        config: the backbone.
        prefix: torch attribute path of the backbone inside its model (``"embedding"``).

    Returns:
        The :class:`ParamSpec` list, in module order.
    """
    if config.name == "seed":
        (c1, k1), (c2, k2) = _SEED_CONV
        chw = config.seed_flat_chw
        return [
            *conv2d(f"{prefix}.conv1", 1, c1, k1),
            *conv2d(f"{prefix}.conv2", c1, c2, k2),
            *dense(f"{prefix}.fc1", int(np.prod(chw)), _SEED_HIDDEN, flatten_chw=chw),
            *dense(f"{prefix}.fc2", _SEED_HIDDEN, config.embedding_dim),
        ]
    spec: list[ParamSpec] = []
    for i, (in_ch, out_ch) in enumerate(config.block_io, start=1):
        if config.name == "conv4":
            spec += conv2d(f"{prefix}.conv{i}", in_ch, out_ch, 3, bias=False)
            spec += batchnorm(f"{prefix}.bn{i}", out_ch)
        else:
            block = f"{prefix}.block{i}"
            for j in range(1, RESNET12_CONVS + 1):
                spec += conv2d(f"{block}.conv{j}", in_ch if j == 1 else out_ch, out_ch, 3,
                               bias=False)
                spec += batchnorm(f"{block}.bn{j}", out_ch)
            spec += conv2d(f"{block}.shortcut", in_ch, out_ch, 1, bias=False)
            if shortcut_norm(in_ch):
                spec += batchnorm(f"{block}.shortcut_bn", out_ch)
    return spec


#: The size ResNet-12's test and parity variants take (:func:`variant_backbones`).
RESNET12_VARIANT = {"image_size": 16, "hidden": 8}


def variant_backbones(image_size: int = 28) -> list[BackboneConfig]:
    """Every backbone as the models' test and parity variants build them: ``conv4`` and
    ``seed`` at ``image_size`` and their default sizes; ResNet-12 at
    :data:`RESNET12_VARIANT`, 16 px with 8-20-40-80 channels. Its default 64-160-320-640
    makes the float64 reference minutes per case, and its gradients pass back through 12
    conv-BatchNorm layers: at 28 px the float32 summation noise of block 1's conv gradients
    reached 1.16 of the parity bound when TensorFlow ran its default two-thread pools (0.47
    at 16 px; 0.48 at 28 px on one thread)."""
    return [BackboneConfig(b, **(RESNET12_VARIANT if b == "resnet12" else
                                 {"image_size": image_size})) for b in BACKBONES]


def embedding_chw(config: BackboneConfig) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of the conv map a backbone's output is a flattening of, else ``None``.

    ``conv4`` and ``resnet12`` return their last feature map flattened (framework order);
    ``seed`` ends with a dense layer, whose output order is the same in both frameworks.
    """
    if config.name == "seed":
        return None
    s = config.image_size
    for _ in range(CONV4_BLOCKS):
        s //= 2
    return (config.block_channels[-1], s, s)


def flat_hwc_to_chw(x: np.ndarray, chw: tuple[int, int, int] | None) -> np.ndarray:
    """Reorder Keras-flattened ``(..., H*W*C)`` features to torch's ``(..., C*H*W)``.

    ``chw=None`` (a dense output) returns ``x`` unchanged.
    """
    x = np.asarray(x)
    if chw is None:
        return x
    c, h, w = chw
    lead = x.shape[:-1]
    return np.moveaxis(x.reshape(*lead, h, w, c), -1, -3).reshape(*lead, c * h * w)


def check_images(
    shape: tuple[int | None, ...],
    dtype: str,
    image_size: int,
    channels_last: bool,
    expected_dtype: str = "float32",
    what: str = "images",
) -> bool:
    """Validate a batch of single-channel images; say whether a channel axis must be added.

    Accepted: ``(B, H, W)`` (the samplers' format) or the framework's native layout,
    ``(B, 1, H, W)`` (torch) / ``(B, H, W, 1)`` (Keras), with ``H = W = image_size`` and
    dtype ``expected_dtype``. ``None`` dimensions (symbolic shapes) are not checked.

    Args:
        shape: the tensor's shape.
        dtype: its dtype name (``"float32"``).
        image_size: the backbone's ``H = W``.
        channels_last: True for Keras' ``(B, H, W, 1)``, False for torch's ``(B, 1, H, W)``.
        expected_dtype: the model's compute dtype.
        what: the argument's name, for the error message.

    Returns:
        True when ``shape`` is ``(B, H, W)`` and the caller must add the channel axis.

    Raises:
        ValueError: naming the expected and the found shape and dtype.
    """
    s = image_size
    native = (None, s, s, 1) if channels_last else (None, 1, s, s)

    def fits(expected: tuple[int | None, ...]) -> bool:
        return len(shape) == len(expected) and all(
            e is None or d is None or d == e for d, e in zip(shape, expected, strict=True)
        )

    bare = fits((None, s, s))
    if not (bare or fits(native)) or dtype != expected_dtype:
        layout = f"(B, {s}, {s}, 1)" if channels_last else f"(B, 1, {s}, {s})"
        raise ValueError(
            f"{what}: expected {expected_dtype} images of shape (B, {s}, {s}) or {layout} "
            f"(single channel, values in [0, 1]); found shape {tuple(shape)}, dtype {dtype}. "
            "Resize the dataset to the backbone's image_size, drop extra channels, and "
            "convert uint8 images with x.astype('float32') / 255."
        )
    return bare


# -- numpy reference forward pass (float64, canonical NCHW) ----------------------------
def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, pad: int) -> np.ndarray:
    """Conv2d, stride 1, via a sliding-window view: ``(B, C, H, W) -> (B, O, H', W')``."""
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    k = w.shape[-1]
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))  # (B, C, H', W', k, k)
    out = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))  # (B, H', W', O)
    out = out.transpose(0, 3, 1, 2)
    return out if b is None else out + b[None, :, None, None]


def _maxpool2(x: np.ndarray) -> np.ndarray:
    b, c, h, w = x.shape
    h2, w2 = h // 2, w // 2  # floor, as both frameworks' "valid" pooling
    return x[:, :, : 2 * h2, : 2 * w2].reshape(b, c, h2, 2, w2, 2).max(axis=(3, 5))


def _batchnorm(
    x: np.ndarray, p: Mapping[str, np.ndarray], prefix: str, config: BackboneConfig,
    training: bool, new_stats: dict[str, np.ndarray],
) -> np.ndarray:
    gamma, beta = p[f"{prefix}.weight"], p[f"{prefix}.bias"]
    if training:
        mean = x.mean(axis=(0, 2, 3))
        var = x.var(axis=(0, 2, 3))  # biased: used to normalise
        n = x.size // x.shape[1]
        m = config.bn_momentum
        new_stats[f"{prefix}.running_mean"] = (1 - m) * p[f"{prefix}.running_mean"] + m * mean
        new_stats[f"{prefix}.running_var"] = (
            (1 - m) * p[f"{prefix}.running_var"] + m * var * n / (n - 1)  # unbiased, as torch
        )
    else:
        mean, var = p[f"{prefix}.running_mean"], p[f"{prefix}.running_var"]
    inv = gamma / np.sqrt(var + config.bn_eps)
    return (x - mean[None, :, None, None]) * inv[None, :, None, None] + beta[None, :, None, None]


def backbone_forward(
    params: Mapping[str, np.ndarray],
    x: np.ndarray,
    config: BackboneConfig,
    training: bool = False,
    prefix: str = "embedding",
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Reference forward pass of a backbone, in float64 and canonical layouts.

    Args:
        params: canonical arrays (names under ``prefix``), e.g. a model's ``get_canonical``.
        x: ``(B, H, W)`` or ``(B, 1, H, W)`` images.
        config: the backbone.
        training: BatchNorm uses batch statistics (and updates running ones) when True.
        prefix: the backbone's name prefix in ``params``.

    Returns:
        ``(embedding (B, output_dim) in torch's flatten order, updated running statistics)``;
        the dict is empty unless ``training`` and the backbone has BatchNorm.
    """
    p = {k: np.asarray(v, dtype=np.float64) for k, v in params.items() if k.startswith(prefix)}
    h = np.asarray(x, dtype=np.float64)
    if h.ndim == 3:
        h = h[:, None]  # (B, 1, H, W)
    stats: dict[str, np.ndarray] = {}
    if config.name == "seed":
        for i in (1, 2):
            h = _conv(h, p[f"{prefix}.conv{i}.weight"], p[f"{prefix}.conv{i}.bias"], pad=0)
            h = _maxpool2(np.maximum(h, 0.0))
        h = h.reshape(h.shape[0], -1)  # (B, C*H*W)
        h = np.maximum(h @ p[f"{prefix}.fc1.weight"].T + p[f"{prefix}.fc1.bias"], 0.0)
        return h @ p[f"{prefix}.fc2.weight"].T + p[f"{prefix}.fc2.bias"], stats
    if config.name == "resnet12":
        for i in range(1, CONV4_BLOCKS + 1):
            h = _maxpool2(_residual_block(h, p, f"{prefix}.block{i}", config, training, stats))
        return h.reshape(h.shape[0], -1), stats
    for i in range(1, CONV4_BLOCKS + 1):
        h = _conv(h, p[f"{prefix}.conv{i}.weight"], None, pad=1)
        h = _batchnorm(h, p, f"{prefix}.bn{i}", config, training, stats)
        h = _maxpool2(np.maximum(h, 0.0))
    return h.reshape(h.shape[0], -1), stats


def shortcut_norm(in_ch: int) -> bool:
    """Whether a ResNet-12 shortcut from ``in_ch`` channels has a BatchNorm: not from one
    channel, where the 1×1 conv would be scale-invariant (see the module docstring)."""
    return in_ch > 1


def _leaky(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, x, RESNET12_SLOPE * x)


def _residual_block(
    x: np.ndarray, p: Mapping[str, np.ndarray], block: str, config: BackboneConfig,
    training: bool, stats: dict[str, np.ndarray],
) -> np.ndarray:
    """One ResNet-12 block before its pooling: three 3×3 conv-BN (LeakyReLU after the first
    two) plus the 1×1 conv(-BN) shortcut, summed, through LeakyReLU."""
    h = x
    for j in range(1, RESNET12_CONVS + 1):
        h = _conv(h, p[f"{block}.conv{j}.weight"], None, pad=1)
        h = _batchnorm(h, p, f"{block}.bn{j}", config, training, stats)
        if j < RESNET12_CONVS:
            h = _leaky(h)
    short = _conv(x, p[f"{block}.shortcut.weight"], None, pad=0)
    if shortcut_norm(x.shape[1]):
        short = _batchnorm(short, p, f"{block}.shortcut_bn", config, training, stats)
    return _leaky(h + short)


def _conv_positions(config: BackboneConfig, kernels: list[int]) -> list[int]:
    """``Hout · Wout`` of each convolution of the backbone, in spec order."""
    s = config.image_size
    out = []
    if config.name == "seed":
        for k in kernels:  # valid conv, then pool 2
            s = s - k + 1
            out.append(s * s)
            s //= 2
        return out
    per_block = len(kernels) // CONV4_BLOCKS  # conv4: 1; resnet12: 3 + the shortcut
    for _ in range(CONV4_BLOCKS):  # same convs at the block's resolution, then pool 2
        out += [s * s] * per_block
        s //= 2
    return out


def backbone_flops(config: BackboneConfig) -> Flops:
    """FLOPs of the backbone on **one image**."""
    weights = [p for p in backbone_spec(config) if p.name.endswith(".weight")
               and p.layout in (Layout.CONV2D, Layout.DENSE, Layout.FLATTEN_DENSE)]
    convs = [p for p in weights if p.layout is Layout.CONV2D]
    positions = _conv_positions(config, [p.shape[-1] for p in convs])
    forward = train = 0.0
    for p in weights:
        per_position = 2.0 * float(np.prod(p.shape))  # 2 · Cout · Cin · k² or 2 · out · in
        flops = per_position * (positions[convs.index(p)] if p in convs else 1)
        # A conv that reads the (single-channel) images needs no input gradient.
        reads_images = p.layout is Layout.CONV2D and p.shape[1] == 1
        forward += flops
        train += (2 if reads_images else 3) * flops
    return Flops(forward=forward, train=train)


#: ``--backbone``, the option of every model built on a backbone.
BACKBONE_OPTION = Option(("--backbone",), {"default": "conv4", "choices": BACKBONES,
                                            "help": "embedding network: " + " | ".join(BACKBONES)})

#: ``--backbone`` and ``--width`` (conv4's channels): the options of every model built on a
#: backbone, read by :func:`backbone_from_args`.
BACKBONE_OPTIONS = (BACKBONE_OPTION, Option(("--width",), {
    "default": None, "type": int, "metavar": "C",
    "help": "conv4: the channels of each of its four conv layers (default 64; 128 or more is "
            "a wider Conv4, about (C/64)² the compute); resnet12: its first block's channels "
            "(default 64: 64-160-320-640)"}))


def backbone_from_args(args: Any, size: int) -> BackboneConfig:
    """The backbone ``metalearn train`` builds from ``--backbone``, ``--width`` and the size."""
    width = getattr(args, "width", None)
    if width is None:
        return BackboneConfig(name=args.backbone, image_size=size)
    check(args.backbone != "seed", "--width sets conv4's or resnet12's channels; the seed "
          "backbone's layers have fixed sizes: leave --width out.")
    return BackboneConfig(name=args.backbone, image_size=size, hidden=width)


def backbone_args(config: BackboneConfig) -> dict[str, Any]:
    """What a checkpoint's backbone fixes on ``metalearn eval``'s command line."""
    fixed = {"backbone": config.name, "size": config.image_size}
    return fixed if config.name == "seed" else {**fixed, "width": config.hidden}
