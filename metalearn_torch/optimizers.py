"""PyTorch optimisers for every name of :data:`metalearn_shared.optimizers.OPTIMIZERS`.

Mirror of ``metalearn_tf/optimizers.py``. :class:`KerasAdam` and :class:`KerasRMSprop`
apply Keras' update rules (``metalearn_shared.optimizers.adam_step(rule="keras")``, …) as
real ``torch.optim.Optimizer`` subclasses: state in ``self.state[p]`` under torch's slot
names, so ``state_dict()`` / ``load_state_dict()`` and the trainer's ``--resume`` work.
:func:`get_state` / :func:`set_state` read and write any supported optimiser's state by
canonical parameter name, so that the other framework can continue from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from metalearn_shared.models import param_spec
from metalearn_shared.optimizers import (
    OPTIMIZERS,
    check_state,
    optimizer_entry,
    optimizer_settings,
    slot_names,
)
from metalearn_shared.weights import to_canonical, to_framework

__all__ = ["KerasAdam", "KerasRMSprop", "OPTIMIZER_SETTINGS", "make_optimizer", "get_state",
           "set_state", "match_state_layout"]


def _torch_kwargs(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical hyper-parameter names → torch's (``beta1, beta2`` → ``betas``, ``rho`` → ``alpha``)."""
    out = {{"rho": "alpha"}.get(k, k): v for k, v in settings.items() if k not in ("beta1", "beta2")}
    if "beta1" in settings or "beta2" in settings:
        out["betas"] = (settings["beta1"], settings["beta2"])
    return out


#: The values the native names pin, in torch's keyword names (from the shared table; the
#: frameworks' defaults differ: Adam eps 1e-8 torch / 1e-7 Keras; RMSprop alpha 0.99 / rho 0.9).
OPTIMIZER_SETTINGS: dict[str, dict[str, Any]] = {
    e.name: _torch_kwargs(e.settings) for e in OPTIMIZERS.values() if e.rule is None}


class KerasAdam(torch.optim.Optimizer):
    """Adam with Keras' update rule, as a ``torch.optim.Optimizer``.

    Formula (``t`` = step after this update; scalars in the parameter's dtype, as Keras):
        ``m <- m + (g - m)(1 - beta1)``; ``v <- v + (g^2 - v)(1 - beta2)``;
        ``p <- p - m * (lr sqrt(1 - beta2^t) / (1 - beta1^t)) / (sqrt(v) + eps)``

    ``eps`` is Keras' "epsilon hat", added to the raw ``sqrt(v)``; torch's Adam adds it to the
    bias-corrected one. State per parameter: ``step`` (0-d float32), ``exp_avg`` (= Keras'
    ``momentum``), ``exp_avg_sq`` (= ``velocity``).

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        betas: ``(beta1, beta2)``.
        eps: Keras' epsilon (its default 1e-7).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-7) -> None:
        if lr < 0 or eps < 0 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"KerasAdam: need lr >= 0, eps >= 0, 0 <= betas < 1; got "
                             f"lr={lr}, betas={betas}, eps={eps}.")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                g, m, v = p.grad, state["exp_avg"], state["exp_avg_sq"]
                t = state["step"].to(p.dtype)
                one = torch.ones((), dtype=p.dtype, device=p.device)
                b1_t = torch.pow(one * beta1, t.to(p.device))
                b2_t = torch.pow(one * beta2, t.to(p.device))
                alpha = (one * group["lr"]) * torch.sqrt(1 - b2_t) / (1 - b1_t)
                m.add_((g - m) * (1 - beta1))
                v.add_((g * g - v) * (1 - beta2))
                p.sub_(m * alpha / (self._denominator(v, group["eps"])))
        return loss

    @staticmethod
    def _denominator(v: torch.Tensor, eps: float) -> torch.Tensor:
        """``sqrt(v) + eps`` (a hook for the mutation test)."""
        return v.sqrt() + eps


class KerasRMSprop(torch.optim.Optimizer):
    """RMSprop with Keras' update rule, as a ``torch.optim.Optimizer``.

    Formula:
        ``s <- alpha s + (1 - alpha) g^2``; centered: ``a <- alpha a + (1 - alpha) g``,
        ``den = s - a^2 + eps``, else ``den = s + eps``; ``d = lr g / sqrt(den)``;
        momentum > 0: ``b <- momentum b + d``, ``p <- p - b``; else ``p <- p - d``.

    ``eps`` is *inside* the square root and ``lr`` inside the momentum buffer (torch's
    RMSprop: outside and outside). State: ``step``, ``square_avg`` (= Keras' ``velocity``),
    ``momentum_buffer`` (= ``momentum``, includes ``lr``), ``grad_avg`` (= ``average_gradient``).

    Args:
        params: parameters or parameter groups.
        lr: learning rate.
        alpha: decay of the running averages (Keras' ``rho``; its default 0.9).
        eps: Keras' epsilon (its default 1e-7).
        momentum: 0 = none.
        centered: subtract the squared running mean of the gradient.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, alpha: float = 0.9,
                 eps: float = 1e-7, momentum: float = 0.0, centered: bool = False) -> None:
        if lr < 0 or eps < 0 or momentum < 0 or not 0 <= alpha < 1:
            raise ValueError(f"KerasRMSprop: need lr, eps, momentum >= 0 and 0 <= alpha < 1; got "
                             f"lr={lr}, alpha={alpha}, eps={eps}, momentum={momentum}.")
        super().__init__(params, {"lr": lr, "alpha": alpha, "eps": eps, "momentum": momentum,
                                  "centered": bool(centered)})

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            rho, eps, mom = group["alpha"], group["eps"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32)
                    for slot in slot_names("rmsprop", momentum=mom, centered=group["centered"]):
                        state[slot] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                g, s = p.grad, state["square_avg"]
                s.copy_(s * rho + g * g * (1 - rho))
                if group["centered"]:
                    a = state["grad_avg"]
                    a.copy_(a * rho + g * (1 - rho))
                    den = s - a * a + eps
                else:
                    den = s + eps
                increment = g * group["lr"] / torch.sqrt(den)
                if mom > 0:
                    b = state["momentum_buffer"]
                    b.copy_(b * mom + increment)
                    p.sub_(b)
                else:
                    p.sub_(increment)
        return loss


def make_optimizer(name: str, params: Iterable[Any], *, lr: float,
                   **overrides: Any) -> torch.optim.Optimizer:
    """The torch optimiser of table name ``name`` (see :data:`~metalearn_shared.optimizers.OPTIMIZERS`).

    Native names and ``adam-torch`` / ``rmsprop-torch`` build ``torch.optim``'s own classes
    with the trainer's fast kernels (fused Adam and SGD, foreach RMSprop: one pass over all
    parameters; docs/benchmarks.md measured the Adam update 37 ms -> 6 ms); ``-keras``
    names build :class:`KerasAdam` / :class:`KerasRMSprop`.

    Args:
        name: an optimiser name of the shared table.
        params: ``model.parameters()`` or parameter groups.
        lr: learning rate.
        **overrides: canonical hyper-parameters (``beta1, beta2, eps`` / ``rho, eps,
            momentum, centered``) replacing the table's.

    Raises:
        ValueError: unknown name (the message lists the valid ones) or hyper-parameter.
    """
    entry = optimizer_entry(name)
    kwargs = _torch_kwargs(optimizer_settings(name, **overrides))
    if entry.rule == "keras":
        cls = {"adam": KerasAdam, "rmsprop": KerasRMSprop}[entry.algorithm]
        return cls(params, lr=lr, **kwargs)
    native = {"adam": (torch.optim.Adam, {"fused": True}), "sgd": (torch.optim.SGD, {"fused": True}),
              "rmsprop": (torch.optim.RMSprop, {"foreach": True})}
    cls, speed = native[entry.algorithm]
    return cls(params, lr=lr, **kwargs, **speed)


def _like(value: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """``value`` with ``p``'s strides (a copy where they differ)."""
    if value.shape != p.shape or value.stride() == p.stride():
        return value
    return torch.empty_like(p, dtype=value.dtype).copy_(value)


def match_state_layout(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """Lay every per-element state tensor out as its parameter (channels-last or not).

    torch's fused kernels (the trainer's Adam and SGD) pair a parameter's elements with its
    state's in storage order: a contiguous ``exp_avg`` restored for a channels-last weight is
    updated against the wrong elements, with no error (a resumed channels-last ProtoNet's
    BatchNorm variance was 1% off the uninterrupted run's after two steps). The foreach and
    Python kernels index by shape and were right either way. ``load_state_dict`` keeps the
    strides it is given, so every restore calls this.
    """
    for p, st in optimizer.state.items():
        for k, v in st.items():
            if torch.is_tensor(v):
                st[k] = _like(v, p)
    return optimizer


# -- canonical state ------------------------------------------------------------------------
_ALGORITHM = {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.RMSprop: "rmsprop",
              KerasAdam: "adam", KerasRMSprop: "rmsprop"}


def _slots(opt: torch.optim.Optimizer) -> tuple[str, ...]:
    """Slot names ``opt`` keeps; raises for optimisers / settings without a canonical state."""
    algorithm = _ALGORITHM.get(type(opt))
    if algorithm is None:
        raise TypeError(f"no canonical state for {type(opt).__name__}; supported: "
                        f"{', '.join(c.__name__ for c in _ALGORITHM)}.")
    group = opt.param_groups[0]
    if algorithm == "adam" and group.get("amsgrad"):
        raise NotImplementedError("canonical optimiser state does not cover amsgrad.")
    if algorithm == "sgd":
        if group.get("momentum", 0):
            raise NotImplementedError("canonical optimiser state does not cover SGD momentum.")
        return ()
    return slot_names(algorithm, momentum=group.get("momentum", 0.0),
                      centered=group.get("centered", False))


def _named_params(opt: torch.optim.Optimizer, model: nn.Module) -> dict[str, nn.Parameter]:
    """``{canonical name: parameter}`` of the parameters ``opt`` updates (all of the model's
    trainable ones, and nothing else)."""
    names = {id(p): n for n, p in model.named_parameters()}
    held = [p for g in opt.param_groups for p in g["params"]]
    foreign = [tuple(p.shape) for p in held if id(p) not in names]
    if foreign:
        raise ValueError(f"the optimiser holds {len(foreign)} parameter(s) that are not the "
                         f"model's (shapes {foreign}); build it on model.parameters().")
    out = {names[id(p)]: p for p in held}
    missing = sorted(n for n, p in model.named_parameters() if p.requires_grad and n not in out)
    if missing:
        raise ValueError(f"the optimiser does not update the model's parameters {missing}; "
                         "build it on model.parameters().")
    return out


def get_state(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, Any]:
    """``optimizer``'s state in canonical form (copies).

    Returns:
        ``{"step": int, "slots": {slot: {canonical name: np.ndarray, torch layout}}}`` —
        slots as in :func:`metalearn_shared.optimizers.slot_names`; zeros and step 0 before
        the first update. ``torch.optim.SGD`` keeps no step count: its step is reported as 0.

    Raises:
        TypeError / NotImplementedError: an optimiser or setting without a canonical state.
        ValueError: the optimiser's parameters are not exactly the model's trainable ones,
            or its parameters are at different steps.
    """
    slots = _slots(optimizer)
    params = _named_params(optimizer, model)
    spec = [p for p in param_spec(model.config) if p.trainable]
    states = {n: optimizer.state.get(p, {}) for n, p in params.items()}
    started = {n for n, st in states.items() if "step" in st}
    if started and started != set(states):
        raise ValueError(f"parameters {sorted(set(states) - started)} have no optimiser state while "
                         "others have; every parameter must have had a gradient at every step.")
    steps = {int(states[n]["step"]) for n in started}
    if len(steps) > 1:
        raise ValueError(f"the parameters are at different optimiser steps {sorted(steps)}.")
    out: dict[str, Any] = {"step": steps.pop() if steps else 0, "slots": {}}
    for slot in slots:
        arrays = {n: (st[slot].detach().cpu().numpy().copy() if slot in st
                      else np.zeros(tuple(params[n].shape), np.float32))
                  for n, st in states.items()}
        out["slots"][slot] = to_canonical(arrays, spec, "torch")
    return out


def set_state(optimizer: torch.optim.Optimizer, model: nn.Module, state: Mapping[str, Any]) -> None:
    """Load a canonical state (see :func:`get_state`) into ``optimizer``, strictly.

    Raises:
        ValueError: ``state`` lacks or adds a key, a slot, or a parameter, or mis-shapes one
            (:class:`~metalearn_shared.weights.WeightMismatchError` lists every parameter).
    """
    slots = _slots(optimizer)
    params = _named_params(optimizer, model)
    spec = [p for p in param_spec(model.config) if p.trainable]
    check_state(state, slots, type(optimizer).__name__)
    step = int(state["step"])
    arrays = {slot: to_framework(state["slots"][slot], spec, "torch") for slot in slots}
    groups = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    for name, p in params.items():
        if not slots:  # SGD: nothing to load (and no step count)
            continue
        g = groups[id(p)]
        on_device = g.get("fused") or g.get("capturable")
        st: dict[str, Any] = {"step": torch.tensor(float(step), dtype=torch.float32,
                                                   device=p.device if on_device else "cpu")}
        for slot in slots:
            # A copy: the optimiser updates its slots in place, and the caller's arrays
            # (a recorded state, another framework's) must not change with them.
            st[slot] = _like(torch.tensor(np.array(arrays[slot][name]), dtype=p.dtype,
                                          device=p.device), p)
        optimizer.state[p] = st

