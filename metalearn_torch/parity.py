"""PyTorch half of the parity machinery: numpy in, numpy (canonical layout) out.

Mirror of ``metalearn_tf/parity.py`` — same functions, same arguments, same results — so
the framework-agnostic driver :mod:`metalearn_shared.parity` (``metalearn parity`` and the
parity tests) treats both frameworks alike. Every array returned is numpy, in canonical
(torch) names, layouts and element order; every model is one of ``metalearn_torch.models``.
Training uses the trainer's own pieces: ``torch.optim`` and a plain loop over the task
contract (``inputs_and_target`` → forward → ``make_loss()`` → backward → step).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from metalearn_shared import training as T
from metalearn_shared.models import param_spec
from metalearn_shared.models.mann import MANNTrace
from metalearn_shared.parity import TrainRecord
from metalearn_shared.weights import to_canonical
from metalearn_torch.checkpoint import get_canonical

__all__ = ["parity_context", "forward", "embed", "trace", "loss_and_grads", "train_steps"]


@contextmanager
def parity_context(seed: int) -> Iterator[None]:
    """One intra-op thread and a seeded global RNG for the duration of a parity run.

    One thread: torch's CPU reductions split work by thread count, so figures then repeat
    on any machine; and next to TF's thread pools on a busy 2-core machine, OpenMP
    barriers waiting for a descheduled thread made a ``conv4`` step ~15x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads)


def _tensors(arrays: Sequence[np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


def forward(model: nn.Module, inputs: Sequence[np.ndarray], training: bool) -> np.ndarray:
    """The model's output on numpy ``inputs`` (the task contract's), without gradients.

    Args:
        training: BatchNorm mode (``model.train(training)``); in training mode the running
            statistics are updated, as in a training step.
    """
    model.train(training)
    with torch.no_grad():
        return model(*_tensors(inputs)).numpy()


def embed(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """Inference-mode embeddings ``(B, D)`` of images ``x (B, H, W)``, canonical element order."""
    model.eval()
    with torch.no_grad():
        return model.embed(torch.from_numpy(x)).numpy()


def trace(model: nn.Module, inputs: Sequence[np.ndarray]) -> MANNTrace:
    """A MANN's logits and memory diagnostics at every step, as numpy arrays."""
    tr = model.forward_with_trace(*_tensors(inputs))
    return MANNTrace(*(v.numpy() for v in tr))


def loss_and_grads(model: nn.Module, inputs: Sequence[np.ndarray], target: np.ndarray
                   ) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
    """One training-mode forward and backward pass, no optimiser step.

    Returns:
        ``(output, loss, grads)``: the model output, the mean loss (``make_loss()``), and
        the gradient of every trainable parameter by canonical name, canonical layout.
    """
    model.train()
    model.zero_grad()
    out = model(*_tensors(inputs))
    loss = model.make_loss()(out, torch.from_numpy(target))
    loss.backward()
    grads = {n: p.grad.numpy().copy() for n, p in model.named_parameters()}
    spec = [p for p in param_spec(model.config) if p.trainable]
    return out.detach().numpy(), float(loss.detach()), to_canonical(grads, spec, "torch")


def train_steps(model: nn.Module, sampler: Any, family: str, steps: int, lr: float,
                batch: int, optimizer: str = "sgd", **settings: Any) -> TrainRecord:
    """Train on batches ``1 .. steps`` of ``sampler`` with a plain loop.

    Step ``s`` trains on ``training.step_batch(sampler, family, s, batch)`` — the batch
    the trainer feeds step ``s`` — so the Keras mirror sees the same data.

    Args:
        optimizer: ``"sgd"``, ``"adam"`` or ``"rmsprop"`` (``torch.optim``'s).
        settings: its keyword arguments beyond ``lr`` (torch names: ``eps``, ``alpha``);
            none = torch's defaults.

    Returns:
        The canonical weights after every step and the seconds each step took.
    """
    kinds = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop}
    model.train()
    opt = kinds[optimizer](model.parameters(), lr=lr, **settings)
    loss_fn = model.make_loss()
    record = TrainRecord()
    for step in range(1, steps + 1):
        inputs, target = model.inputs_and_target(T.step_batch(sampler, family, step, batch))
        t0 = time.perf_counter()
        opt.zero_grad()
        loss_fn(model(*inputs), target).backward()
        opt.step()
        record.seconds.append(time.perf_counter() - t0)
        record.weights.append(get_canonical(model))
    return record
