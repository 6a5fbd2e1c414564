"""Keras optimisers for every name of :data:`metalearn_shared.optimizers.OPTIMIZERS`.

Mirror of ``metalearn_torch/optimizers.py``. :class:`TorchAdam` and :class:`TorchRMSprop`
apply PyTorch's update rules (``metalearn_shared.optimizers.adam_step(rule="torch")``, …)
as real ``keras.optimizers.Optimizer`` subclasses (``build`` + ``update_step`` in
``keras.ops``), registered serializable so that a compiled model's ``.keras`` file loads
them back. :func:`get_state` / :func:`set_state` read and write any supported optimiser's
state by canonical parameter name and in canonical (torch) layout.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import keras
import numpy as np
from keras import ops

from metalearn_shared.models import param_spec
from metalearn_shared.optimizers import (
    OPTIMIZERS,
    check_state,
    optimizer_entry,
    optimizer_settings,
)
from metalearn_shared.weights import to_canonical, to_framework
from metalearn_tf.checkpoint import keras_variables

__all__ = ["TorchAdam", "TorchRMSprop", "OPTIMIZER_SETTINGS", "make_optimizer", "get_state",
           "set_state"]

_KERAS_NAMES = {"beta1": "beta_1", "beta2": "beta_2", "eps": "epsilon"}


def _keras_kwargs(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical hyper-parameter names → Keras' (``beta1`` → ``beta_1``, ``eps`` → ``epsilon``)."""
    return {_KERAS_NAMES.get(k, k): v for k, v in settings.items()}


#: The values the native names pin, in Keras' keyword names (from the shared table; the
#: frameworks' defaults differ: Adam epsilon 1e-7 Keras / 1e-8 torch; RMSprop rho 0.9 / alpha 0.99).
OPTIMIZER_SETTINGS: dict[str, dict[str, Any]] = {
    e.name: _keras_kwargs(e.settings) for e in OPTIMIZERS.values() if e.rule is None}


def _f64(x: Any) -> Any:
    """``x`` as float64; a Python float directly (``ops.cast`` would round it to float32 first)."""
    return ops.convert_to_tensor(x, "float64") if isinstance(x, float) else ops.cast(x, "float64")


@keras.saving.register_keras_serializable("metalearn_tf")
class TorchAdam(keras.optimizers.Optimizer):
    """Adam with PyTorch's update rule, as a Keras optimiser.

    Formula (``t`` = step after this update; the scalar factors in float64, as torch):
        ``m <- m + (g - m)(1 - beta_1)``; ``v <- beta_2 v + (1 - beta_2) g^2``;
        ``p <- p - (lr / (1 - beta_1^t)) * m / (sqrt(v) / sqrt(1 - beta_2^t) + epsilon)``

    ``epsilon`` is added to the *bias-corrected* ``sqrt(v)``, as in ``torch.optim.Adam``
    (Keras' Adam adds it to the raw one). Slots: ``exp_avg``, ``exp_avg_sq``.

    Args:
        learning_rate: float, schedule or callable.
        beta_1, beta_2: decay rates of the moment estimates.
        epsilon: torch's eps (its default 1e-8).
        name, **kwargs: ``keras.optimizers.Optimizer``'s.
    """

    #: Canonical slot name → attribute holding its variables (aligned with the trainables).
    SLOTS: ClassVar[dict[str, str]] = {"exp_avg": "_exp_avgs", "exp_avg_sq": "_exp_avg_sqs"}

    def __init__(self, learning_rate: Any = 1e-3, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-8, name: str = "torch_adam", **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def build(self, var_list: list[Any]) -> None:
        """One ``exp_avg`` and one ``exp_avg_sq`` variable per trainable variable."""
        if self.built:
            return
        super().build(var_list)
        self._exp_avgs, self._exp_avg_sqs = self.add_optimizer_variables(
            var_list, ["exp_avg", "exp_avg_sq"])

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """One update of ``variable``."""
        dtype = variable.dtype
        g = ops.cast(gradient, dtype)
        i = self._get_variable_index(variable)
        m, v = self._exp_avgs[i], self._exp_avg_sqs[i]
        t = _f64(self.iterations + 1)
        step_size = ops.cast(_f64(learning_rate) / (1.0 - ops.power(_f64(self.beta_1), t)), dtype)
        bc2_sqrt = ops.cast(ops.sqrt(1.0 - ops.power(_f64(self.beta_2), t)), dtype)
        self.assign(m, ops.add(m, ops.multiply(ops.subtract(g, m), 1 - self.beta_1)))
        self.assign(v, ops.add(ops.multiply(v, self.beta_2),
                               ops.multiply(ops.square(g), 1 - self.beta_2)))
        self.assign_sub(variable, ops.divide(ops.multiply(m, step_size),
                                             self._denominator(v, bc2_sqrt)))

    def _denominator(self, v: Any, bc2_sqrt: Any) -> Any:
        """``sqrt(v) / sqrt(1 - beta_2^t) + epsilon`` (a hook for the mutation test)."""
        return ops.add(ops.divide(ops.sqrt(v), bc2_sqrt), self.epsilon)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon}


@keras.saving.register_keras_serializable("metalearn_tf")
class TorchRMSprop(keras.optimizers.Optimizer):
    """RMSprop with PyTorch's update rule, as a Keras optimiser.

    Formula:
        ``s <- rho s + (1 - rho) g^2``; centered: ``a <- a + (g - a)(1 - rho)``,
        ``avg = sqrt(s - a^2) + epsilon``, else ``avg = sqrt(s) + epsilon``;
        momentum > 0: ``b <- momentum b + g / avg``, ``p <- p - lr b``;
        else ``p <- p - lr g / avg``.

    ``epsilon`` outside the square root and ``lr`` outside the momentum buffer, as in
    ``torch.optim.RMSprop`` (whose ``alpha`` is ``rho`` here). Slots: ``square_avg``,
    ``momentum_buffer`` (momentum > 0), ``grad_avg`` (centered).

    Args:
        learning_rate: float, schedule or callable.
        rho: decay of the running averages (torch's default 0.99).
        momentum: 0 = none.
        epsilon: torch's eps (its default 1e-8).
        centered: subtract the squared running mean of the gradient.
        name, **kwargs: ``keras.optimizers.Optimizer``'s.
    """

    SLOTS: ClassVar[dict[str, str]] = {"square_avg": "_square_avgs",
                                       "momentum_buffer": "_momentum_buffers",
                                       "grad_avg": "_grad_avgs"}

    def __init__(self, learning_rate: Any = 1e-2, rho: float = 0.99, momentum: float = 0.0,
                 epsilon: float = 1e-8, centered: bool = False, name: str = "torch_rmsprop",
                 **kwargs: Any) -> None:
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        self.rho, self.momentum, self.epsilon, self.centered = rho, momentum, epsilon, centered

    def build(self, var_list: list[Any]) -> None:
        """``square_avg`` per trainable variable, plus ``momentum_buffer`` / ``grad_avg``."""
        if self.built:
            return
        super().build(var_list)
        self._square_avgs = self.add_optimizer_variables(var_list, "square_avg")
        self._momentum_buffers = (self.add_optimizer_variables(var_list, "momentum_buffer")
                                  if self.momentum > 0 else [])
        self._grad_avgs = self.add_optimizer_variables(var_list, "grad_avg") if self.centered else []

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """One update of ``variable``."""
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = ops.cast(gradient, dtype)
        i = self._get_variable_index(variable)
        s = self._square_avgs[i]
        self.assign(s, ops.add(ops.multiply(s, self.rho), ops.multiply(ops.square(g), 1 - self.rho)))
        if self.centered:
            a = self._grad_avgs[i]
            self.assign(a, ops.add(a, ops.multiply(ops.subtract(g, a), 1 - self.rho)))
            avg = ops.add(ops.sqrt(ops.subtract(s, ops.square(a))), self.epsilon)
        else:
            avg = ops.add(ops.sqrt(s), self.epsilon)
        if self.momentum > 0:
            b = self._momentum_buffers[i]
            self.assign(b, ops.add(ops.multiply(b, self.momentum), ops.divide(g, avg)))
            self.assign_sub(variable, ops.multiply(b, lr))
        else:
            self.assign_sub(variable, ops.multiply(ops.divide(g, avg), lr))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


def make_optimizer(name: str, *, lr: float, **overrides: Any) -> keras.optimizers.Optimizer:
    """The Keras optimiser of table name ``name`` (see :data:`~metalearn_shared.optimizers.OPTIMIZERS`).

    Native names and ``adam-keras`` / ``rmsprop-keras`` build ``keras.optimizers``' own
    classes; ``-torch`` names build :class:`TorchAdam` / :class:`TorchRMSprop`.

    Args:
        name: an optimiser name of the shared table.
        lr: learning rate.
        **overrides: canonical hyper-parameters (``beta1, beta2, eps`` / ``rho, eps,
            momentum, centered``) replacing the table's.

    Raises:
        ValueError: unknown name (the message lists the valid ones) or hyper-parameter.
    """
    entry = optimizer_entry(name)
    kwargs = _keras_kwargs(optimizer_settings(name, **overrides))
    classes = ({"adam": TorchAdam, "rmsprop": TorchRMSprop} if entry.rule == "torch" else
               {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
                "sgd": keras.optimizers.SGD})
    return classes[entry.algorithm](learning_rate=lr, **kwargs)


# -- canonical state ------------------------------------------------------------------------
#: Keras' native slot attributes under the canonical names. The meaning follows the rule:
#: Keras' RMSprop ``momentum`` includes lr, torch's ``momentum_buffer`` does not.
_NATIVE_SLOTS: dict[type, dict[str, str]] = {
    keras.optimizers.SGD: {},
    keras.optimizers.Adam: {"exp_avg": "_momentums", "exp_avg_sq": "_velocities"},
    keras.optimizers.RMSprop: {"square_avg": "_velocities", "momentum_buffer": "_momentums",
                               "grad_avg": "_average_gradients"},
}


def _slot_lists(opt: keras.optimizers.Optimizer, model: keras.Model) -> dict[str, list[Any]]:
    """``{canonical slot: variables aligned with opt's trainables}`` of the slots ``opt`` keeps;
    builds ``opt`` on ``model.trainable_variables`` first if needed."""
    table = getattr(type(opt), "SLOTS", None)
    if table is None:
        table = _NATIVE_SLOTS.get(type(opt))
    if table is None:
        raise TypeError(f"no canonical state for {type(opt).__name__}; supported: "
                        f"TorchAdam, TorchRMSprop, {', '.join(c.__name__ for c in _NATIVE_SLOTS)}.")
    if getattr(opt, "amsgrad", False) or (isinstance(opt, keras.optimizers.SGD) and opt.momentum):
        raise NotImplementedError("canonical optimiser state covers neither amsgrad nor SGD momentum.")
    if getattr(opt, "gradient_accumulation_steps", None) or getattr(opt, "use_ema", False):
        raise NotImplementedError("canonical optimiser state covers neither gradient "
                                  "accumulation nor EMA.")
    if not opt.built:
        opt.build(model.trainable_variables)
    held = {id(v) for v in opt._trainable_variables}
    if held != {id(v) for v in model.trainable_variables}:
        raise ValueError(f"the optimiser was built on {len(held)} variables that are not exactly "
                         f"the model's {len(model.trainable_variables)} trainable ones.")
    return {slot: getattr(opt, attr) for slot, attr in table.items() if getattr(opt, attr, None)}


def _trainables(model: keras.Model) -> tuple[dict[str, Any], list[Any]]:
    """``({keras name: variable}, trainable canonical spec)``."""
    variables = {k: v for k, v in keras_variables(model).items() if v.trainable}
    return variables, [p for p in param_spec(model.config) if p.trainable]


def get_state(optimizer: keras.optimizers.Optimizer, model: keras.Model) -> dict[str, Any]:
    """``optimizer``'s state in canonical form (builds it on the model's trainables if needed).

    Returns:
        ``{"step": int, "slots": {slot: {canonical name: np.ndarray, torch layout}}}`` —
        ``step`` is ``optimizer.iterations``; native slots under the canonical names (Adam
        ``momentum`` → ``exp_avg``, ``velocity`` → ``exp_avg_sq``; RMSprop ``velocity`` →
        ``square_avg``, ``momentum`` → ``momentum_buffer``, ``average_gradient`` → ``grad_avg``).

    Raises:
        TypeError / NotImplementedError: an optimiser or setting without a canonical state.
        ValueError: the optimiser was built on other variables than the model's trainables.
    """
    slots = _slot_lists(optimizer, model)
    variables, spec = _trainables(model)
    out: dict[str, Any] = {"step": int(ops.convert_to_numpy(optimizer.iterations)), "slots": {}}
    for slot, lst in slots.items():
        arrays = {k: ops.convert_to_numpy(lst[optimizer._get_variable_index(v)])
                  for k, v in variables.items()}
        out["slots"][slot] = to_canonical(arrays, spec, "keras")
    return out


def set_state(optimizer: keras.optimizers.Optimizer, model: keras.Model,
              state: Mapping[str, Any]) -> None:
    """Load a canonical state (see :func:`get_state`) into ``optimizer``, strictly.

    Raises:
        ValueError: ``state`` lacks or adds a key, a slot, or a parameter, or mis-shapes one
            (:class:`~metalearn_shared.weights.WeightMismatchError` lists every parameter).
    """
    slots = _slot_lists(optimizer, model)
    variables, spec = _trainables(model)
    check_state(state, tuple(slots), type(optimizer).__name__)
    arrays = {slot: to_framework(state["slots"][slot], spec, "keras") for slot in slots}
    for slot, lst in slots.items():
        for k, v in variables.items():
            target = lst[optimizer._get_variable_index(v)]
            target.assign(np.asarray(arrays[slot][k], dtype=target.dtype))
    optimizer.iterations.assign(int(state["step"]))
