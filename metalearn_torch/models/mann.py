"""Memory-augmented neural network with LRUA memory (Santoro et al. 2016), PyTorch.

Spec — the order of operations within a step, where the epsilon enters the cosine, the
tie rule of the least-used slots — is :mod:`metalearn_shared.models.mann`; this file
implements it. Mirror: ``metalearn_tf/models/mann.py``.

The cell is an ``nn.Module`` with ``forward(x_t, state) -> (logits_t, state)`` and a
:class:`MANNState` NamedTuple; :class:`MANN` runs it in an explicit time loop. Nothing in
the loop reads a value back to the host, so the loop can run on an accelerator without
synchronising, and :meth:`MANN.compile_cell` can hand the cell to ``torch.compile``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from metalearn_shared.models.mann import MANNConfig, MANNTrace
from metalearn_torch.models.backbones import seeded
from metalearn_torch.models.lstm import LSTMCell, LSTMState, SequenceModel, glorot_dense, unroll

__all__ = ["MANNState", "MANNCell", "MANN", "least_used_ranks", "slots_from_ranks", "build"]


class MANNState(NamedTuple):
    """The cell's state between steps (see the spec for the initial values).

    Attributes:
        h, c: ``(B, U)`` controller state.
        memory: ``(B, N, W)``.
        usage: ``w^u (B, N)``.
        read_weights: ``w^r (B, H, N)``.
        read: ``(B, H*W)`` the read vectors, head-major.
    """

    h: torch.Tensor
    c: torch.Tensor
    memory: torch.Tensor
    usage: torch.Tensor
    read_weights: torch.Tensor
    read: torch.Tensor


def least_used_ranks(usage: torch.Tensor) -> torch.Tensor:
    """Rank of each slot by usage, ascending, ties broken by the lowest index.

    ``rank_i = #{j : u_j < u_i or (u_j = u_i and j < i)}`` by pairwise comparison: the
    same algorithm as the Keras side, and no reliance on ``topk``'s unspecified tie order.

    Args:
        usage: ``(B, N)``.

    Returns:
        ``int64 (B, N)``.
    """
    n = usage.shape[-1]
    lower = torch.ones(n, n, dtype=torch.bool, device=usage.device).tril(-1)  # [i, j]: j < i
    ui, uj = usage.unsqueeze(-1), usage.unsqueeze(-2)  # (B, N, 1), (B, 1, N)
    before = (uj < ui) | ((uj == ui) & lower)  # (B, N, N): slot j ranks before slot i
    return before.sum(-1)


def slots_from_ranks(ranks: torch.Tensor, n: int) -> torch.Tensor:
    """``int64 (B, n)``: the slots of rank ``0 .. n-1`` (least used first)."""
    slots = torch.arange(ranks.shape[-1], device=ranks.device)
    wanted = torch.arange(n, device=ranks.device)[:, None]  # (n, 1)
    return ((ranks.unsqueeze(-2) == wanted) * slots).sum(-1)  # (B, n)


class MANNCell(nn.Module):
    """One MANN step: LSTM controller, LRUA write, content read, classifier.

    Args:
        config: :class:`~metalearn_shared.config.MANNConfig`.

    Submodules (canonical names under ``cell.``): ``controller`` (:class:`LSTMCell` on
    ``[x_t ; prev_label_t ; r_{t-1}]``), ``key`` (U → H*W, tanh), ``alpha`` (U → H,
    sigmoid), ``classifier`` (U + H*W → C*G); with ``write_vector="add"``, ``add``
    (U → H*W, tanh); with ``key_strength="learned"``, ``strength`` (U → H, softplus).
    """

    def __init__(self, config: MANNConfig) -> None:
        super().__init__()
        self.config = config
        units, heads, width = config.controller_units, config.read_heads, config.memory_width
        self.controller = LSTMCell(
            config.input_size + config.label_size + heads * width, units)
        self.key = glorot_dense(nn.Linear(units, heads * width))
        self.alpha = glorot_dense(nn.Linear(units, heads))
        self.classifier = glorot_dense(nn.Linear(units + heads * width, config.label_size))
        self.add = (glorot_dense(nn.Linear(units, heads * width))
                    if config.write_vector == "add" else None)
        self.strength = (glorot_dense(nn.Linear(units, heads))
                         if config.key_strength == "learned" else None)

    def initial_state(self, batch_size: int, like: torch.Tensor) -> MANNState:
        """The spec's initial state, in ``like``'s dtype and device."""
        cfg = self.config
        zeros = like.new_zeros
        return MANNState(
            h=zeros(batch_size, cfg.controller_units),
            c=zeros(batch_size, cfg.controller_units),  # not h itself: aliasing recompiles
            memory=like.new_full((batch_size, cfg.memory_slots, cfg.memory_width),
                                 cfg.memory_init),
            usage=zeros(batch_size, cfg.memory_slots),
            read_weights=zeros(batch_size, cfg.read_heads, cfg.memory_slots),
            read=zeros(batch_size, cfg.read_heads * cfg.memory_width),
        )

    def written(self, h: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """What the heads write (spec, ``write_vector``): the keys ``(B, H, W)``, or the add
        vectors ``tanh(add(h))``."""
        if self.add is None:
            return keys
        return torch.tanh(self.add(h)).view_as(keys)

    def read_strength(self, h: torch.Tensor) -> float | torch.Tensor:
        """The factor on the cosines before the read softmax (spec, ``key_strength``):
        ``read_sharpness``, or the ``(B, H, 1)`` strengths ``s · softplus(strength(h)) / ln 2``."""
        if self.strength is None:
            return self.config.read_sharpness
        return self.config.strength_scale * nn.functional.softplus(self.strength(h)).unsqueeze(-1)

    def forward(self, x_t: torch.Tensor, state: MANNState) -> tuple[torch.Tensor, MANNState]:
        """``x_t (B, I + L)`` = ``[image ; prev_label]``, ``state`` → ``(logits (B, C*G), state)``."""
        logits, state, _, _ = self.step(x_t, state)
        return logits, state

    def step(self, x_t: torch.Tensor, state: MANNState
             ) -> tuple[torch.Tensor, MANNState, torch.Tensor, torch.Tensor]:
        """:meth:`forward` plus diagnostics: the ranks of ``w^u_{t-1}`` ``(B, N)`` and the
        write weights ``(B, H, N)``. Steps numbered as in the spec."""
        cfg = self.config
        b = x_t.shape[0]
        heads, width = cfg.read_heads, cfg.memory_width
        # 1-2. controller, keys, gates
        _, (h, c) = self.controller(torch.cat([x_t, state.read], dim=-1),
                                    LSTMState(state.h, state.c))
        keys = torch.tanh(self.key(h)).view(b, heads, width)  # (B, H, W)
        written = self.written(h, keys)  # (B, H, W)
        gate = torch.sigmoid(self.alpha(h)).unsqueeze(-1)  # (B, H, 1)
        # 3-4. least used (from the previous usage) and write weights
        ranks = least_used_ranks(state.usage)  # (B, N)
        order = torch.arange(heads, device=ranks.device)[:, None]  # (H, 1)
        w_lu = (ranks.unsqueeze(1) == order).to(h.dtype)  # (B, H, N): head j -> rank j
        write = gate * state.read_weights + (1.0 - gate) * w_lu  # (B, H, N)
        # 5. erase the least-used slot, then write every head's vector
        keep = (ranks != 0).to(h.dtype).unsqueeze(-1)  # (B, N, 1)
        memory = state.memory * keep + (write.unsqueeze(-1) * written.unsqueeze(2)).sum(1)  # (B,N,W)
        # 6. read from the new memory (cosine: broadcast product, see the spec on ties)
        dot = (keys.unsqueeze(2) * memory.unsqueeze(1)).sum(-1)  # (B, H, N)
        kk = (keys * keys).sum(-1).unsqueeze(-1)  # (B, H, 1)
        mm = (memory * memory).sum(-1).unsqueeze(1)  # (B, 1, N)
        read_weights = torch.softmax(
            self.read_strength(h) * (dot / torch.sqrt(kk * mm + cfg.cosine_eps)), dim=-1)
        read = torch.bmm(read_weights, memory).flatten(1)  # (B, H*W)
        # 7. usage
        usage = cfg.gamma * state.usage + read_weights.sum(1) + write.sum(1)  # (B, N)
        # 8. output
        logits = self.classifier(torch.cat([h, read], dim=-1))  # (B, C*G)
        return logits, MANNState(h, c, memory, usage, read_weights, read), ranks, write


class MANN(SequenceModel):
    """MANN over whole episodes: :class:`MANNCell` in an explicit time loop.

    Args:
        config: :class:`~metalearn_shared.config.MANNConfig`.

    Inputs, outputs and the task contract: see
    :class:`~metalearn_torch.models.lstm.SequenceModel`.
    """

    def __init__(self, config: MANNConfig) -> None:
        super().__init__(config)
        self.cell = MANNCell(config)

    def forward(self, x: torch.Tensor, prev_label: torch.Tensor) -> torch.Tensor:
        inputs = self.join_inputs(x, prev_label)  # (B, T, I + L)
        outs, _ = unroll(self.cell, inputs, self.cell.initial_state(inputs.shape[0], inputs))
        return self.group_logits(torch.stack(outs, dim=1))  # (B, T, C[, G])

    @torch.no_grad()
    def forward_with_trace(self, x: torch.Tensor, prev_label: torch.Tensor) -> MANNTrace:
        """Logits plus the memory diagnostics of every step (eager, no gradients)."""
        inputs = self.join_inputs(x, prev_label)
        heads = self.config.read_heads

        def traced(x_t: torch.Tensor, state: MANNState) -> tuple[tuple, MANNState]:
            logits, state, ranks, write = self.cell.step(x_t, state)
            return (logits, state.read_weights, write, state.usage,
                    slots_from_ranks(ranks, heads)), state

        outs, _ = unroll(traced, inputs, self.cell.initial_state(inputs.shape[0], inputs))
        logits, read_w, write_w, usage, least_used = (torch.stack(v, 1) for v in zip(*outs, strict=True))
        return MANNTrace(self.group_logits(logits), read_w, write_w, usage, least_used)


def build(config: MANNConfig, seed: int | None = None) -> MANN:
    """The MANN of ``config``; ``seed`` makes its initial weights repeatable."""
    with seeded(seed):
        return MANN(config)
