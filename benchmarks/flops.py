"""Analytic FLOP counts of the registered models, and the machine's measured GEMM rate.

Formulas (one multiply-add = 2 FLOPs; float32):

* convolution, per image: ``2 · Cin · Cout · k² · Hout · Wout``;
* dense (and each LSTM weight matrix), per sample: ``2 · in · out``;
* training = forward + input gradient + weight gradient = **3 × forward** for every layer
  except the network's first, whose input (the images) needs no gradient: **2 ×**;
* MANN memory per step and episode: write ``2·H·N·W`` (outer products summed over heads),
  cosine numerators ``2·H·N·W``, norms ``2·N·W + 2·H·W``, read ``2·H·N·W``; its controller
  reads the previous read vector, so every MANN layer counts 3 × in training (torch's
  ``FlopCounterMode``, which counts only matrix products, finds ~7% less);
* ProtoNet distances: ``3 · Q · N · D`` (difference, square, sum).

Pooling, activations, BatchNorm, softmax and the optimiser are not counted (they are
memory-bound and small in FLOPs), so the achieved FLOP/s is a lower bound of the work the
machine does. Weight shapes come from the canonical parameter specs in
:mod:`metalearn_shared.models` (no layer sizes are repeated here); only the spatial size at
which each convolution runs is computed here: ``seed`` convolutions are "valid" and each is
followed by a 2× pooling, ``conv4`` convolutions are "same" with a 2× pooling after each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.common import Budget, Device, measure
from metalearn_shared.config import BackboneConfig, ModelConfig
from metalearn_shared.models.lstm import LSTMConfig
from metalearn_shared.models.mann import MANNConfig
from metalearn_shared.models.protonet import ProtoNetConfig
from metalearn_shared.models.siamese import SiameseConfig
from metalearn_shared.models import lstm as lstm_spec
from metalearn_shared.models import mann as mann_spec
from metalearn_shared.models.backbones import backbone_spec
from metalearn_shared.weights import Layout

__all__ = ["Flops", "backbone_flops", "model_flops", "gemm_flops", "run_gemm"]


@dataclass(frozen=True)
class Flops:
    """FLOPs of one call: forward, and a full training step (forward + backward)."""

    forward: float
    train: float

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.forward + other.forward, self.train + other.train)

    def __mul__(self, k: float) -> Flops:
        return Flops(self.forward * k, self.train * k)


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


def _dense_flops(spec: list) -> float:
    """``Σ 2 · numel`` of the weight matrices in ``spec`` (one sample, one step)."""
    return sum(2.0 * float(np.prod(p.shape)) for p in spec
               if p.layout in (Layout.DENSE, Layout.LSTM, Layout.FLATTEN_DENSE))


def model_flops(config: ModelConfig, *, batch: int = 1, ways: int = 5, shots: int = 1,
                queries: int = 15, steps: int = 50) -> Flops:
    """FLOPs of one training step / forward call of a registered model.

    Args:
        config: the model's config.
        batch: pairs (Siamese) or episodes (sequence models) per call.
        ways, shots, queries: the few-shot episode (ProtoNet: one episode per call).
        steps: sequence length ``T`` (sequence models).
    """
    if isinstance(config, SiameseConfig):
        return backbone_flops(config.backbone) * (2 * batch)  # both images of every pair
    if isinstance(config, ProtoNetConfig):
        images = ways * (shots + queries)
        dist = 3.0 * ways * queries * ways * config.backbone.output_dim
        return backbone_flops(config.backbone) * images + Flops(dist, 3 * dist)
    if isinstance(config, MANNConfig):
        h, n, w = config.read_heads, config.memory_slots, config.memory_width
        memory = 6.0 * h * n * w + 2.0 * n * w + 2.0 * h * w
        per_step = _dense_flops(mann_spec.param_spec(config)) + memory
        return Flops(per_step, 3 * per_step) * (batch * steps)
    if isinstance(config, LSTMConfig):
        spec = lstm_spec.param_spec(config)
        first = _dense_flops([p for p in spec if p.name == "controller.weight_ih"])
        rest = _dense_flops(spec) - first  # the input matmul reads data: no input gradient
        return Flops(first + rest, 2 * first + 3 * rest) * (batch * steps)
    raise ValueError(f"no FLOP formula for {type(config).__name__}; add one to benchmarks/flops.py.")


def gemm_flops(n: int) -> float:
    """FLOPs of an ``n × n`` by ``n × n`` matrix product: ``2 n³``."""
    return 2.0 * n**3


def _torch_gemm(n: int, device: Device) -> tuple[Callable[[], Any], Callable[[], None]]:
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(device.torch_device()) for _ in range(2))
    return (lambda: torch.mm(a, b)), device.torch_sync


def _tf_gemm(n: int, device: Device) -> tuple[Callable[[], Any], Callable[[], None]]:
    import tensorflow as tf

    with tf.device(device.tf_device()):
        a, b = (tf.random.stateless_normal((n, n), seed=(0, i)) for i in range(2))
    last: list[Any] = []

    def call() -> None:
        with tf.device(device.tf_device()):
            last[:] = [tf.linalg.matmul(a, b)]

    def barrier() -> None:  # a one-element read: waits for the product, copies 4 bytes
        if last:
            last[0][0, 0].numpy()

    return call, barrier


def run_gemm(quick: bool, budget: Budget, frameworks: tuple[str, ...], device: Device
             ) -> list[dict[str, Any]]:
    """fp32 ``n × n`` GEMM FLOP/s in each framework, in this process (n = 2048; quick 256)."""
    n = 256 if quick else 2048
    out = []
    for framework in frameworks:
        call, barrier = (_torch_gemm if framework == "torch" else _tf_gemm)(n, device)
        t = measure(call, budget, barrier)
        out.append({"framework": framework, "n": n, "dtype": "float32",
                    "gflops_per_s": gemm_flops(n) / t.median_s / 1e9, **t.to_dict()})
    return out
