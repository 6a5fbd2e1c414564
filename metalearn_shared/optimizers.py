"""Optimiser update rules (numpy float64 spec) and the one table of optimiser names.

PyTorch's and Keras' Adam and RMSprop are *different update rules* even at equal
hyper-parameters (checked against ``torch/optim/adam.py``, ``torch/optim/rmsprop.py``
of torch 2.13 and ``keras/src/optimizers/adam.py``, ``rmsprop.py`` of Keras 3.15):

* Adam: torch adds ``eps`` to the bias-corrected ``sqrt(v_hat)``; Keras adds it to the raw
  ``sqrt(v)`` and folds the bias correction into the step size ("epsilon hat"), so Keras'
  ``eps`` acts like torch's ``eps / sqrt(1 - beta2^t)`` (about 30x larger at step 1).
* RMSprop: torch adds ``eps`` outside the square root, Keras inside; torch's momentum
  buffer accumulates ``g / avg`` and is scaled by ``lr`` afterwards, Keras' accumulates
  ``lr * g / avg`` (the same while ``lr`` is constant). Defaults differ: torch
  ``alpha=0.99, eps=1e-8``, Keras ``rho=0.9, epsilon=1e-7``.

Each ``*_step`` function below is one step of one rule, ``rule in ("torch", "keras")``:
pure, float64, the inputs are never modified. A state is a small dict with torch's slot
names (:data:`SLOT_NAMES`) plus ``"step"`` (updates applied so far); an empty dict is a fresh
state. Both frameworks store the same slot names whatever the rule, but a slot's *meaning*
follows the rule (Keras' RMSprop momentum buffer includes ``lr``): a state is only ever
exchanged between two optimisers of the same rule.

The table :data:`OPTIMIZERS` is what both trainers, the parity driver and the CLI use:
``"sgd"``, ``"adam"``, ``"rmsprop"`` are each framework's own class (so the two frameworks
run *different* rules under the same name, with the hyper-parameter values pinned equal);
``"adam-torch"`` / ``"rmsprop-torch"`` run PyTorch's rule in both frameworks with PyTorch's
default hyper-parameters, ``"adam-keras"`` / ``"rmsprop-keras"`` Keras' rule with Keras'
defaults. numpy only — never imports a framework.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "RULES",
    "ALGORITHMS",
    "HYPERPARAMETERS",
    "COMMON_DEFAULTS",
    "SLOT_NAMES",
    "OptimizerEntry",
    "OPTIMIZERS",
    "OPTIMIZER_NAMES",
    "optimizer_entry",
    "optimizer_settings",
    "slot_names",
    "init_state",
    "check_state",
    "sgd_step",
    "adam_step",
    "rmsprop_step",
]

#: Update-rule conventions the spec implements.
RULES = ("torch", "keras")
#: Optimiser algorithms (each has one ``*_step`` function).
ALGORITHMS = ("sgd", "adam", "rmsprop")
#: Canonical hyper-parameter names per algorithm (besides ``lr``), as the ``*_step``
#: functions and every ``make_optimizer(**overrides)`` spell them.
HYPERPARAMETERS: dict[str, tuple[str, ...]] = {
    "sgd": (),
    "adam": ("beta1", "beta2", "eps"),
    "rmsprop": ("rho", "eps", "momentum", "centered"),
}
#: Hyper-parameters whose defaults are the same in torch and Keras.
COMMON_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {},
    "adam": {"beta1": 0.9, "beta2": 0.999},
    "rmsprop": {"momentum": 0.0, "centered": False},
}
#: Every canonical state slot (torch's ``state[p]`` keys), besides ``"step"``.
SLOT_NAMES = ("exp_avg", "exp_avg_sq", "square_avg", "momentum_buffer", "grad_avg")


@dataclass(frozen=True)
class OptimizerEntry:
    """One optimiser name.

    Attributes:
        name: the name ``--optimizer`` / ``TrainConfig.optimizer`` take.
        algorithm: ``"sgd"``, ``"adam"`` or ``"rmsprop"``.
        rule: ``"torch"`` or ``"keras"``: that library's update rule in both frameworks;
            ``None``: each framework's native class (different rules, see the module doc).
        settings: canonical hyper-parameters fixed by the name (``lr`` excluded); the
            hyper-parameters not listed take :data:`COMMON_DEFAULTS`.
        summary: one line for ``--help`` and docs.
    """

    name: str
    algorithm: str
    rule: str | None
    settings: Mapping[str, Any] = field(default_factory=dict)
    summary: str = ""


def _entries(*entries: OptimizerEntry) -> dict[str, OptimizerEntry]:
    return {e.name: e for e in entries}


#: The one table of optimiser names. Native names keep the values the trainers have always
#: pinned (Adam eps 1e-7; RMSprop rho 0.9, eps 1e-7 — the frameworks' defaults differ); the
#: matched names use the named library's own defaults: torch Adam (0.9, 0.999, 1e-8),
#: torch RMSprop (alpha 0.99, eps 1e-8), Keras Adam (0.9, 0.999, 1e-7), Keras RMSprop
#: (rho 0.9, epsilon 1e-7), momentum 0, not centered; ``rmsprop-santoro`` is the MANN paper's
#: setting under TF1's rule, which is Keras' rule with TF1's epsilon default.
OPTIMIZERS: dict[str, OptimizerEntry] = _entries(
    OptimizerEntry("sgd", "sgd", None, {}, "each framework's SGD (no momentum)"),
    OptimizerEntry("adam", "adam", None, {"eps": 1e-7},
                   "each framework's own Adam, eps 1e-7 in both (two different rules)"),
    OptimizerEntry("rmsprop", "rmsprop", None, {"rho": 0.9, "eps": 1e-7},
                   "each framework's own RMSprop, rho 0.9, eps 1e-7 in both (two different rules)"),
    OptimizerEntry("adam-torch", "adam", "torch", {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8},
                   "PyTorch's Adam rule and defaults in both frameworks"),
    OptimizerEntry("rmsprop-torch", "rmsprop", "torch",
                   {"rho": 0.99, "eps": 1e-8, "momentum": 0.0, "centered": False},
                   "PyTorch's RMSprop rule and defaults in both frameworks"),
    OptimizerEntry("adam-keras", "adam", "keras", {"beta1": 0.9, "beta2": 0.999, "eps": 1e-7},
                   "Keras' Adam rule and defaults in both frameworks"),
    OptimizerEntry("rmsprop-keras", "rmsprop", "keras",
                   {"rho": 0.9, "eps": 1e-7, "momentum": 0.0, "centered": False},
                   "Keras' RMSprop rule and defaults in both frameworks"),
    OptimizerEntry("rmsprop-santoro", "rmsprop", "keras",
                   {"rho": 0.95, "eps": 1e-10, "momentum": 0.9, "centered": False},
                   "Santoro et al.'s MANN optimiser (RMSprop, decay 0.95, momentum 0.9) with "
                   "TF1's RMSPropOptimizer rule (= Keras': eps 1e-10 inside the square root, "
                   "lr inside the momentum buffer) in both frameworks"),
)
#: The valid names, in table order.
OPTIMIZER_NAMES: tuple[str, ...] = tuple(OPTIMIZERS)


def optimizer_entry(name: str) -> OptimizerEntry:
    """The table entry of ``name``; ``ValueError`` listing the valid names otherwise."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZER_NAMES)}.")
    return OPTIMIZERS[name]


def optimizer_settings(name: str, **overrides: Any) -> dict[str, Any]:
    """Complete canonical hyper-parameters of ``name`` (``lr`` excluded), with overrides.

    Raises:
        ValueError: unknown name, or an override that ``name``'s algorithm does not have.
    """
    entry = optimizer_entry(name)
    allowed = HYPERPARAMETERS[entry.algorithm]
    bad = sorted(set(overrides) - set(allowed))
    if bad:
        raise ValueError(f"optimizer {name!r} ({entry.algorithm}) has no hyper-parameter "
                         f"{', '.join(bad)}; it takes {', '.join(allowed) or 'only lr'}.")
    return {**COMMON_DEFAULTS[entry.algorithm], **entry.settings, **overrides}


def slot_names(algorithm: str, *, momentum: float = 0.0, centered: bool = False) -> tuple[str, ...]:
    """The state slots (besides ``"step"``) an optimiser of ``algorithm`` keeps."""
    if algorithm == "sgd":
        return ()
    if algorithm == "adam":
        return ("exp_avg", "exp_avg_sq")
    if algorithm == "rmsprop":
        return (("square_avg",) + (("momentum_buffer",) if momentum > 0 else ())
                + (("grad_avg",) if centered else ()))
    raise ValueError(f"unknown algorithm {algorithm!r}; choose one of {ALGORITHMS}.")


def init_state(algorithm: str, param: np.ndarray, *, momentum: float = 0.0,
               centered: bool = False) -> dict[str, Any]:
    """A fresh state: ``step`` 0 and float64 zeros shaped like ``param`` for every slot."""
    zeros = np.zeros(np.shape(param), np.float64)
    return {"step": 0, **{s: zeros.copy() for s in slot_names(algorithm, momentum=momentum,
                                                              centered=centered)}}


def check_state(state: Mapping[str, Any], slots: tuple[str, ...], what: str) -> None:
    """Raise ``ValueError`` unless ``state`` is ``{"step", "slots"}`` with exactly ``slots``.

    The per-parameter check (missing, unexpected, mis-shaped) is the weight converter's.
    """
    if not isinstance(state, Mapping) or set(state) != {"step", "slots"}:
        found = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(f"an optimiser state is {{'step': int, 'slots': {{...}}}}; got keys {found}.")
    missing = sorted(set(slots) - set(state["slots"]))
    extra = sorted(set(state["slots"]) - set(slots))
    if missing or extra:
        raise ValueError(f"{what} keeps slots {list(slots)}; the state has {sorted(state['slots'])} "
                         f"(missing {missing}, extra {extra}). A state only moves between "
                         "optimisers of the same name and settings.")


def _check_rule(rule: str) -> None:
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}; got {rule!r}.")


def _f64(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64)


def sgd_step(param: np.ndarray, grad: np.ndarray, state: Mapping[str, Any] | None = None, *,
             lr: float) -> tuple[np.ndarray, dict[str, Any]]:
    """One plain SGD step (no momentum; the same in both libraries).

    Formula:
        ``p <- p - lr * g``

    Args:
        param, grad: arrays of one shape.
        state: ignored except ``step`` (SGD keeps no slots).

    Returns:
        ``(new_param, new_state)``, float64; ``new_state["step"]`` counts the updates.
    """
    step = int((state or {}).get("step", 0))
    return _f64(param) - lr * _f64(grad), {"step": step + 1}


def adam_step(param: np.ndarray, grad: np.ndarray, state: Mapping[str, Any] | None, *,
              lr: float, beta1: float, beta2: float, eps: float,
              rule: str) -> tuple[np.ndarray, dict[str, Any]]:
    """One Adam step in torch's or Keras' convention.

    Formula (``t`` = the step after this update, starting at 1):
        ``m <- beta1 m + (1 - beta1) g``; ``v <- beta2 v + (1 - beta2) g^2``;
        ``bc1 = 1 - beta1^t``, ``bc2 = 1 - beta2^t``;

        * ``rule="torch"``: ``p <- p - (lr / bc1) * m / (sqrt(v) / sqrt(bc2) + eps)``
        * ``rule="keras"``: ``p <- p - (lr sqrt(bc2) / bc1) * m / (sqrt(v) + eps)``

    Args:
        param, grad: arrays of one shape.
        state: ``{"step", "exp_avg", "exp_avg_sq"}`` or empty / ``None`` (fresh).
        rule: ``"torch"`` or ``"keras"``.

    Returns:
        ``(new_param, new_state)``, float64.

    Reference:
        Kingma & Ba 2015, Algorithm 1 (torch) and the "epsilon hat" form before its §2.1 (Keras).
    """
    _check_rule(rule)
    st = dict(state or {}) or init_state("adam", param)
    g = _f64(grad)
    t = int(st["step"]) + 1
    m = beta1 * _f64(st["exp_avg"]) + (1 - beta1) * g
    v = beta2 * _f64(st["exp_avg_sq"]) + (1 - beta2) * g * g
    bc1, bc2 = 1 - beta1**t, 1 - beta2**t
    if rule == "torch":
        new = _f64(param) - (lr / bc1) * m / (np.sqrt(v) / np.sqrt(bc2) + eps)
    else:
        new = _f64(param) - (lr * np.sqrt(bc2) / bc1) * m / (np.sqrt(v) + eps)
    return new, {"step": t, "exp_avg": m, "exp_avg_sq": v}


def rmsprop_step(param: np.ndarray, grad: np.ndarray, state: Mapping[str, Any] | None, *,
                 lr: float, rho: float, eps: float, momentum: float = 0.0,
                 centered: bool = False, rule: str) -> tuple[np.ndarray, dict[str, Any]]:
    """One RMSprop step in torch's or Keras' convention.

    Formula:
        ``s <- rho s + (1 - rho) g^2`` (``square_avg``); centered: ``a <- rho a + (1 - rho) g``
        (``grad_avg``) and ``s_c = s - a^2``, else ``s_c = s``;

        * ``rule="torch"``: ``d = g / (sqrt(s_c) + eps)``; momentum > 0:
          ``b <- momentum b + d``, ``p <- p - lr b``; else ``p <- p - lr d``.
        * ``rule="keras"``: ``d = lr g / sqrt(s_c + eps)``; momentum > 0:
          ``b <- momentum b + d``, ``p <- p - b``; else ``p <- p - d``.

        ``rho`` is torch's ``alpha``. ``b`` is ``momentum_buffer``: without ``lr`` (torch)
        or with it (Keras).

    Args:
        param, grad: arrays of one shape.
        state: ``{"step", "square_avg"[, "momentum_buffer"][, "grad_avg"]}`` or empty / ``None``.
        rule: ``"torch"`` or ``"keras"``.

    Returns:
        ``(new_param, new_state)``, float64.

    Reference:
        Tieleman & Hinton 2012, Lecture 6.5; Graves 2013 (centered), eq. 38-45.
    """
    _check_rule(rule)
    st = dict(state or {}) or init_state("rmsprop", param, momentum=momentum, centered=centered)
    g = _f64(grad)
    out: dict[str, Any] = {"step": int(st["step"]) + 1}
    s = rho * _f64(st["square_avg"]) + (1 - rho) * g * g
    out["square_avg"] = s
    if centered:
        a = rho * _f64(st["grad_avg"]) + (1 - rho) * g
        out["grad_avg"] = a
        s = s - a * a
    d = g / (np.sqrt(s) + eps) if rule == "torch" else lr * g / np.sqrt(s + eps)
    scale = lr if rule == "torch" else 1.0
    if momentum > 0:
        b = momentum * _f64(st["momentum_buffer"]) + d
        out["momentum_buffer"] = b
        return _f64(param) - scale * b, out
    return _f64(param) - scale * d, out
