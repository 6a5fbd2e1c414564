"""LSTM baseline on MANN episodes (PyTorch); also the one-bias LSTM cell the MANN reuses.

Spec: :mod:`metalearn_shared.models.lstm`. Mirror: ``metalearn_tf/models/lstm.py``.

The cell keeps **one** bias vector (Keras' convention) instead of torch's ``bias_ih`` +
``bias_hh``, so that torch → Keras → torch is bit-identical; gate blocks are ordered
i, f, g, o as in ``torch.nn.LSTMCell`` and ``keras.layers.LSTMCell``. Initialisation
follows Keras' defaults (Glorot-uniform input kernel, orthogonal recurrent kernel, zero
bias with the forget block at 1, Glorot-uniform dense kernels, zero biases), so that the
two frameworks start from the same distributions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn_shared.episodes import SequenceEpisode
from metalearn_shared.models import lstm as spec
from metalearn_shared.models.lstm import LSTMConfig, SequenceConfig, check_sequence_inputs
from metalearn_torch import losses
from metalearn_torch.models.backbones import seeded, to_tensors

__all__ = ["LSTMState", "LSTMCell", "SequenceModel", "LSTMBaseline", "glorot_dense", "unroll",
           "build"]


class LSTMState(NamedTuple):
    """Controller state: ``h, c (B, U)``."""

    h: torch.Tensor
    c: torch.Tensor


def _glorot_(weight: torch.Tensor) -> None:
    fan_out, fan_in = weight.shape
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    nn.init.uniform_(weight, -bound, bound)


def glorot_dense(layer: nn.Linear) -> nn.Linear:
    """Keras ``Dense`` defaults on a torch ``Linear``: Glorot-uniform weight, zero bias."""
    with torch.no_grad():
        _glorot_(layer.weight)
        if layer.bias is not None:
            layer.bias.zero_()
    return layer


class LSTMCell(nn.Module):
    """LSTM cell with one bias vector.

    Formula:
        ``z = W_ih x + b + W_hh h`` split i, f, g, o; ``c' = σ(f) c + σ(i) tanh(g)``,
        ``h' = σ(o) tanh(c')``.

    Args:
        input_size: ``I``.
        hidden_size: ``U``.

    Parameters: ``weight_ih (4U, I)``, ``weight_hh (4U, U)``, ``bias (4U,)``.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.weight_ih = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Keras ``LSTMCell`` defaults (``unit_forget_bias=True``)."""
        u = self.hidden_size
        with torch.no_grad():
            _glorot_(self.weight_ih)
            nn.init.orthogonal_(self.weight_hh)
            self.bias.zero_()
            self.bias[u:2 * u] = 1.0  # forget gate block

    def initial_state(self, batch_size: int, like: torch.Tensor) -> LSTMState:
        """Zeros of ``like``'s dtype and device."""
        # Two tensors, not one twice: aliased inputs would make torch.compile recompile.
        return LSTMState(like.new_zeros(batch_size, self.hidden_size),
                         like.new_zeros(batch_size, self.hidden_size))

    def forward(self, x_t: torch.Tensor, state: LSTMState) -> tuple[torch.Tensor, LSTMState]:
        """``x_t (B, I)``, ``state`` → ``(h (B, U), LSTMState)``."""
        z = F.linear(x_t, self.weight_ih, self.bias) + F.linear(state.h, self.weight_hh)  # (B, 4U)
        i, f, g, o = z.chunk(4, dim=-1)
        c = torch.sigmoid(f) * state.c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, LSTMState(h, c)


def unroll(step: Callable[[Tensor, Any], tuple[Any, Any]], inputs: Tensor,
           state: Any) -> tuple[list[Any], Any]:
    """Run ``step(x_t, state) -> (out, state)`` over ``inputs (B, T, ...)``; no host syncs.

    Returns:
        The per-step outputs (a list of length ``T``) and the final state.
    """
    outs = []
    for t in range(inputs.shape[1]):
        out, state = step(inputs[:, t], state)
        outs.append(out)
    return outs, state


class SequenceModel(nn.Module):
    """What the sequence models share: input checks, logit grouping, the task contract.

    Task contract (what a generic trainer calls)::

        inputs, target = model.inputs_and_target(episode)  # ((x, prev_label), y) tensors
        logits = model(*inputs)                             # (B, T, C) or (B, T, G, C)
        loss = model.make_loss()(logits, target)            # == model.compute_loss_on(episode)

    Inputs: ``x (B, T, image_size**2)``, ``prev_label (B, T, C*G)`` (zeros at ``t = 0``).
    Returns: logits ``(B, T, C)``, or ``(B, T, G, C)`` when ``label_groups > 1``.
    """

    #: the module :meth:`compile_cell` compiles; set by subclasses.
    cell: nn.Module

    def __init__(self, config: SequenceConfig) -> None:
        super().__init__()
        self.config = config

    def compile_cell(self, **compile_kwargs: Any) -> SequenceModel:
        """``torch.compile`` the per-step cell in place (weights and names unchanged)."""
        self.cell.compile(**compile_kwargs)
        return self

    def join_inputs(self, x: Tensor, prev_label: Tensor) -> Tensor:
        """Check shapes (the shared messages) and return ``[x ; prev_label]`` ``(B, T, I + L)``."""
        name = self.config.model
        if not (torch.is_tensor(x) and torch.is_tensor(prev_label)):
            raise ValueError(f"{name} expects torch tensors x and prev_label; found "
                             f"{type(x).__name__} and {type(prev_label).__name__}.")
        check_sequence_inputs(self.config, tuple(x.shape), tuple(prev_label.shape))
        if not (x.is_floating_point() and prev_label.is_floating_point()):
            raise ValueError(f"{name} expects floating-point x and prev_label; found "
                             f"{x.dtype} and {prev_label.dtype}.")
        dtype = next(self.parameters()).dtype  # float64 numpy input meets float32 weights
        return torch.cat([x, prev_label], dim=-1).to(dtype)

    def group_logits(self, logits: Tensor) -> Tensor:
        """``(B, T, G*C)`` → ``(B, T, C)`` or ``(B, T, G, C)`` (group-major)."""
        cfg = self.config
        if cfg.label_groups == 1:
            return logits
        return logits.unflatten(-1, (cfg.label_groups, cfg.num_classes))

    # -- task contract ----------------------------------------------------------------------
    def make_loss(self) -> nn.Module:
        """Sequence cross-entropy, mean over steps and episodes; ``loss(logits, y)``."""
        return losses.SequenceCrossEntropy()

    def inputs_and_target(self, episode: SequenceEpisode
                          ) -> tuple[tuple[Tensor, Tensor], Tensor]:
        """Episodes (batched or one) → ``((x, prev_label), y)`` tensors on the model's device."""
        (x, prev_label), y = spec.inputs_and_target(episode)
        x, prev_label, y = to_tensors((x, prev_label, y), self)
        return (x, prev_label), y

    def batch_accuracy(self, output: Tensor, target: Tensor) -> Tensor:
        """On-device mirror of the spec's ``batch_accuracy`` (argmax of the logits; no host sync)."""
        return (output.argmax(-1) == target).float().mean()

    def compute_loss_on(self, episode: SequenceEpisode) -> Tensor:
        """Mean loss of the model on a batch of episodes."""
        inputs, target = self.inputs_and_target(episode)
        return self.make_loss()(self(*inputs), target)


class LSTMBaseline(SequenceModel):
    """LSTM(U) on ``[x_t ; prev_label_t]`` → dense → logits at every step.

    Args:
        config: :class:`~metalearn_shared.config.LSTMConfig`.

    Submodules: ``controller`` (:class:`LSTMCell`, also :attr:`cell`), ``classifier``.
    Inputs and outputs: see :class:`SequenceModel`.
    """

    def __init__(self, config: LSTMConfig) -> None:
        super().__init__(config)
        units = config.controller_units
        self.controller = LSTMCell(config.input_size + config.label_size, units)
        self.classifier = glorot_dense(nn.Linear(units, config.label_size))

    @property
    def cell(self) -> nn.Module:
        return self.controller

    def forward(self, x: Tensor, prev_label: Tensor) -> Tensor:
        inputs = self.join_inputs(x, prev_label)  # (B, T, I + L)
        hs, _ = unroll(self.controller, inputs,
                       self.controller.initial_state(inputs.shape[0], inputs))
        return self.group_logits(self.classifier(torch.stack(hs, dim=1)))  # (B, T, C[, G])


def build(config: LSTMConfig, seed: int | None = None) -> LSTMBaseline:
    """The LSTM baseline of ``config``; ``seed`` makes its initial weights repeatable."""
    with seeded(seed):
        return LSTMBaseline(config)
