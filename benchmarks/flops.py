"""FLOPs of a benchmark call, from the model's own formula, and the machine's GEMM rate.

Each registered model's spec owns its FLOP formula
(:attr:`metalearn_shared.registry.ModelSpec.flops`, built from the pieces in
:mod:`metalearn_shared.flops` and :func:`metalearn_shared.models.backbones.backbone_flops`,
where the conventions are written down: one multiply-add = 2 FLOPs, training = 3 × forward
but for the first layer, pooling / activations / BatchNorm / the optimiser not counted, so
an achieved FLOP/s is a lower bound). :func:`model_flops` looks the formula up in the
registry; this module adds the fp32 GEMM the achieved rates are compared against.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from benchmarks.common import Budget, Device, measure
from metalearn_shared import models
from metalearn_shared.flops import Flops
from metalearn_shared.registry import Task

__all__ = ["Flops", "model_flops", "gemm_flops", "run_gemm"]


def model_flops(config: Any, task: Task) -> Flops:
    """FLOPs of one training step / forward call of the registered model ``config``
    describes, on ``task`` (the model spec's ``flops``)."""
    return Flops(*models.get(config.model).flops(config, task))


def gemm_flops(n: int) -> float:
    """FLOPs of an ``n × n`` by ``n × n`` matrix product: ``2 n³``."""
    return 2.0 * n**3


def _torch_gemm(n: int, device: Device) -> tuple[Callable[[], Any], Callable[[], None]]:
    import torch

    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(device.torch_device()) for _ in range(2))
    return (lambda: torch.mm(a, b)), device.torch_sync


def _keras_gemm(n: int, device: Device) -> tuple[Callable[[], Any], Callable[[], None]]:
    """The product the Keras models' matmuls run on: Keras 3's TensorFlow backend."""
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
        call, barrier = (_torch_gemm if framework == "torch" else _keras_gemm)(n, device)
        t = measure(call, budget, barrier)
        out.append({"framework": framework, "n": n, "dtype": "float32",
                    "gflops_per_s": gemm_flops(n) / t.median_s / 1e9, **t.to_dict()})
    return out
