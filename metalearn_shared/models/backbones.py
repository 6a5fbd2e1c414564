"""The embedding networks (backbones) both frameworks implement: weight spec, input contract
and a numpy reference forward pass.

Two backbones, chosen by :attr:`BackboneConfig.name`:

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
    "backbone_spec",
    "embedding_chw",
    "flat_hwc_to_chw",
    "check_images",
    "backbone_forward",
]

#: Conv blocks of ``conv4``.
CONV4_BLOCKS = 4
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
    in_ch = 1
    for i in range(1, CONV4_BLOCKS + 1):
        spec += conv2d(f"{prefix}.conv{i}", in_ch, config.hidden, 3, bias=False)
        spec += batchnorm(f"{prefix}.bn{i}", config.hidden)
        in_ch = config.hidden
    return spec


def embedding_chw(config: BackboneConfig) -> tuple[int, int, int] | None:
    """``(C, H, W)`` of the conv map a backbone's output is a flattening of, else ``None``.

    ``conv4`` returns its last feature map flattened (framework order); ``seed`` ends with a
    dense layer, whose output order is the same in both frameworks.
    """
    if config.name == "seed":
        return None
    s = config.image_size
    for _ in range(CONV4_BLOCKS):
        s //= 2
    return (config.hidden, s, s)


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
    for i in range(1, CONV4_BLOCKS + 1):
        h = _conv(h, p[f"{prefix}.conv{i}.weight"], None, pad=1)
        h = _batchnorm(h, p, f"{prefix}.bn{i}", config, training, stats)
        h = _maxpool2(np.maximum(h, 0.0))
    return h.reshape(h.shape[0], -1), stats


def _conv_positions(config: BackboneConfig, kernels: list[int]) -> list[int]:
    """``Hout · Wout`` of each convolution of the backbone, in order."""
    s = config.image_size
    out = []
    for k in kernels:
        if config.name == "seed":  # valid conv, then pool 2
            s = s - k + 1
            out.append(s * s)
        else:  # conv4: same conv, then pool 2
            out.append(s * s)
        s //= 2
    return out


def backbone_flops(config: BackboneConfig) -> Flops:
    """FLOPs of the backbone on **one image**."""
    weights = [p for p in backbone_spec(config) if p.name.endswith(".weight")
               and p.layout in (Layout.CONV2D, Layout.DENSE, Layout.FLATTEN_DENSE)]
    convs = [p for p in weights if p.layout is Layout.CONV2D]
    positions = _conv_positions(config, [p.shape[-1] for p in convs])
    per_layer = []
    for p in weights:
        per_position = 2.0 * float(np.prod(p.shape))  # 2 · Cout · Cin · k² or 2 · out · in
        per_layer.append(per_position * (positions[convs.index(p)] if p in convs else 1))
    first, rest = per_layer[0], sum(per_layer[1:])
    return Flops(forward=first + rest, train=2 * first + 3 * rest)


#: ``--backbone``, the option of every model built on a backbone.
BACKBONE_OPTION = Option(("--backbone",), {"default": "conv4", "choices": BACKBONES,
                                            "help": "embedding network: " + " | ".join(BACKBONES)})

#: ``--backbone`` and ``--width`` (conv4's channels): the options of every model built on a
#: backbone, read by :func:`backbone_from_args`.
BACKBONE_OPTIONS = (BACKBONE_OPTION, Option(("--width",), {
    "default": None, "type": int, "metavar": "C",
    "help": "conv4: the channels of each of its four conv layers (default 64; 128 or more is "
            "a wider Conv4, about (C/64)² the compute)"}))


def backbone_from_args(args: Any, size: int) -> BackboneConfig:
    """The backbone ``metalearn train`` builds from ``--backbone``, ``--width`` and the size."""
    width = getattr(args, "width", None)
    if width is None:
        return BackboneConfig(name=args.backbone, image_size=size)
    check(args.backbone == "conv4", f"--width sets conv4's channels; the {args.backbone} "
          "backbone's layers have fixed sizes: leave --width out.")
    return BackboneConfig(name=args.backbone, image_size=size, hidden=width)


def backbone_args(config: BackboneConfig) -> dict[str, Any]:
    """What a checkpoint's backbone fixes on ``metalearn eval``'s command line."""
    fixed = {"backbone": config.name, "size": config.image_size}
    return {**fixed, "width": config.hidden} if config.name == "conv4" else fixed
