"""Analytic FLOP counts: the pieces every model's formula is made of.

Formulas (one multiply-add = 2 FLOPs; float32):

* convolution, per image: ``2 · Cin · Cout · k² · Hout · Wout``;
* dense (and each LSTM weight matrix), per sample: ``2 · in · out``;
* training = forward + input gradient + weight gradient = **3 × forward** for every layer
  except the network's first, whose input (the images) needs no gradient: **2 ×**.

Pooling, activations, BatchNorm, softmax and the optimiser are not counted (they are
memory-bound and small in FLOPs), so an achieved FLOP/s is a lower bound of the work the
machine does. Weight shapes come from the canonical parameter specs (no layer sizes are
repeated here); only the spatial size at which each convolution runs is computed here:
``seed`` convolutions are "valid" and each is followed by a 2× pooling, ``conv4``
convolutions are "same" with a 2× pooling after each
(:func:`metalearn_shared.models.backbones.backbone_flops`). Each model's own formula is its
spec's ``flops`` (:class:`metalearn_shared.registry.ModelSpec`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from metalearn_shared.weights import Layout, ParamSpec

__all__ = ["Flops", "dense_flops"]


@dataclass(frozen=True)
class Flops:
    """FLOPs of one call: forward, and a full training step (forward + backward)."""

    forward: float
    train: float

    def __add__(self, other: Flops) -> Flops:
        return Flops(self.forward + other.forward, self.train + other.train)

    def __mul__(self, k: float) -> Flops:
        return Flops(self.forward * k, self.train * k)

    def __iter__(self):  # (forward, train), as ModelSpec.flops returns them
        return iter((self.forward, self.train))


def dense_flops(spec: Sequence[ParamSpec]) -> float:
    """``Σ 2 · numel`` of the weight matrices in ``spec`` (one sample, one step)."""
    return sum(2.0 * float(np.prod(p.shape)) for p in spec
               if p.layout in (Layout.DENSE, Layout.LSTM, Layout.FLATTEN_DENSE))
