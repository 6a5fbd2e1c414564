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
from metalearn_shared.parity import TrainRecord
from metalearn_shared.weights import to_canonical, to_framework
from metalearn_torch.checkpoint import get_canonical, set_canonical
from metalearn_torch.models import objective

__all__ = ["parity_context", "forward", "embed", "trace", "loss_and_grads", "train_steps",
           "forced_steps", "apply_update", "set_weights",
           "threads_in_use"]


@contextmanager
def parity_context(seed: int, threads: int = 1) -> Iterator[None]:
    """``threads`` intra-op threads and a seeded global RNG for the duration of a parity run.

    The thread count is part of the run's settings (torch's CPU reductions split work by
    thread count), recorded by :func:`threads_in_use`; one thread by default, since next to
    TF's thread pools on a busy 2-core machine, OpenMP barriers waiting for a descheduled
    thread made a ``conv4`` step ~15x slower.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(before)


def threads_in_use() -> dict[str, int]:
    """torch's intra-op thread count now, and the CPU kernels' instruction set."""
    return {"intra_op": torch.get_num_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def _tensors(arrays: Sequence[np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.ascontiguousarray(a)) for a in arrays]


def set_weights(model: Any, canonical: dict[str, np.ndarray]) -> None:
    """Load canonical weights (parameters and BatchNorm statistics) into the model."""
    set_canonical(model, canonical)


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


def trace(model: nn.Module, inputs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The model's ``forward_with_trace`` (a NamedTuple of per-step diagnostics, e.g. a
    memory's read and write weights) as ``{field: numpy array}``."""
    with torch.no_grad():
        tr = model.forward_with_trace(*_tensors(inputs))
    return {k: v.numpy() for k, v in tr._asdict().items()}


def loss_and_grads(model: nn.Module, inputs: Sequence[np.ndarray], target: np.ndarray
                   ) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
    """One training-mode forward and backward pass, no optimiser step.

    Returns:
        ``(output, loss, grads)``: the model output, the mean loss (``make_loss()``), and
        the gradient of every trainable parameter by canonical name, canonical layout.
    """
    model.train()
    model.zero_grad()
    loss, out = objective(model, _tensors(inputs), torch.from_numpy(target), model.make_loss())
    loss.backward()
    # A parameter the loss does not reach has no .grad: its gradient is zero (a port that
    # leaves a weight unused is then a gradient figure, not a crash).
    grads = {n: p.grad.numpy().copy() if p.grad is not None else np.zeros(tuple(p.shape), np.float32)
             for n, p in model.named_parameters()}
    spec = [p for p in param_spec(model.config) if p.trainable]
    return out.detach().numpy(), float(loss.detach()), to_canonical(grads, spec, "torch")


def _optimizer(model: nn.Module, optimizer: str, lr: float, **overrides: Any
               ) -> torch.optim.Optimizer:
    """The trainer's own optimiser object for ``optimizer`` at rate ``lr`` (fused kernels
    included), so parity compares what ``metalearn train`` runs; ``overrides`` are the
    table's hyper-parameter names (``eps``, ``rho``, ...)."""
    from metalearn_torch.optimizers import make_optimizer

    return make_optimizer(optimizer, model.parameters(), lr=lr, **overrides)


def _set_state(opt: torch.optim.Optimizer, model: nn.Module, state: dict | None) -> None:
    """Canonical optimiser state into ``opt``; ``None`` is a fresh optimiser (torch creates
    its slots lazily, at the first step)."""
    from metalearn_torch.optimizers import set_state

    if state is None:
        opt.state.clear()
    else:
        set_state(opt, model, state)


def _one_step(model: nn.Module, opt: torch.optim.Optimizer, loss_fn: nn.Module, batch: Any) -> float:
    inputs, target = model.inputs_and_target(batch)
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    objective(model, inputs, target, loss_fn)[0].backward()
    opt.step()
    return time.perf_counter() - t0


def train_steps(model: nn.Module, sampler: Any, family: str, steps: int, lr: float,
                batch: int, optimizer: str = "sgd", **overrides: Any) -> TrainRecord:
    """Train freely on batches ``1 .. steps`` of ``sampler`` with a plain loop.

    Step ``s`` trains on ``training.step_batch(sampler, family, s, batch)`` — the batch
    the trainer feeds step ``s`` — so the Keras mirror sees the same data.

    Args:
        optimizer: a name of :data:`metalearn_shared.optimizers.OPTIMIZERS`, built by the
            trainer's ``make_optimizer`` (fused kernels included).
        overrides: hyper-parameters by the table's names (``eps``, ``rho``, ...); none =
            the table's settings for ``optimizer``.

    Returns:
        The canonical weights (parameters and BatchNorm statistics) and the canonical
        optimiser state after every step, and the seconds each step took.
    """
    from metalearn_torch.optimizers import get_state

    model.train()
    opt = _optimizer(model, optimizer, lr, **overrides)
    loss_fn = model.make_loss()
    record = TrainRecord()
    for step in range(1, steps + 1):
        record.seconds.append(_one_step(model, opt, loss_fn, T.step_batch(sampler, family, step, batch)))
        record.weights.append(get_canonical(model))
        record.states.append(get_state(opt, model))
    return record


def forced_steps(model: nn.Module, starts: Sequence[tuple[dict[str, np.ndarray], dict]],
                 sampler: Any, family: str, lr: float, batch: int,
                 optimizer: str = "sgd") -> TrainRecord:
    """Teacher-forced steps: step ``k`` (1-based) starts from ``starts[k - 1]`` — canonical
    weights and canonical optimiser state, typically the other framework's after ``k - 1``
    steps — and trains on batch ``k``, whatever this framework did at step ``k - 1``.

    Returns:
        The canonical weights and optimiser state after each forced step.
    """
    from metalearn_torch.optimizers import get_state

    model.train()
    opt = _optimizer(model, optimizer, lr)
    loss_fn = model.make_loss()
    record = TrainRecord()
    for step, (weights, state) in enumerate(starts, start=1):
        set_canonical(model, weights)
        _set_state(opt, model, state)
        record.seconds.append(_one_step(model, opt, loss_fn, T.step_batch(sampler, family, step, batch)))
        record.weights.append(get_canonical(model))
        record.states.append(get_state(opt, model))
    return record


def apply_update(model: nn.Module, weights: dict[str, np.ndarray], state: dict,
                 grads: dict[str, np.ndarray], lr: float, optimizer: str) -> dict[str, np.ndarray]:
    """One optimiser step from given canonical ``weights``, ``state`` and gradients ``grads``
    (no forward pass): the update rule alone, with the trainer's optimiser object.

    Returns:
        The canonical weights after the step.
    """
    set_canonical(model, weights)
    opt = _optimizer(model, optimizer, lr)
    _set_state(opt, model, state)
    spec = [p for p in param_spec(model.config) if p.trainable]
    native = to_framework(grads, spec, "torch")
    for name, p in model.named_parameters():
        p.grad = torch.tensor(np.array(native[name]))
    opt.step()
    return get_canonical(model)
