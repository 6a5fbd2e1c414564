"""Memory-augmented neural network with LRUA memory — the numpy spec.

Santoro, Bartunov, Botvinick, Wierstra & Lillicrap, "One-shot learning with
memory-augmented neural networks" (ICML 2016; arXiv:1605.06065), Sec. 3. Where the paper
leaves a choice open we follow its best-known reference implementation
(github.com/tristandeleu/ntm-one-shot, ``mann/model.py``) and say so below. The Keras
cell (``metalearn_tf.models.mann``) and the torch cell (``metalearn_torch.models.mann``)
implement exactly this step; :func:`reference_forward` is their float64 witness.

Notation: ``B`` episodes, ``T`` steps, ``U`` controller units, ``H`` heads
(``read_heads``), ``N`` memory slots, ``W`` memory width, ``C`` classes, ``G`` label groups.

State before step t (``t = 0, 1, ...``), with its initial value:
    ``h, c (B, U)`` controller state, 0;
    ``memory M (B, N, W)``, the constant ``memory_init`` (1e-6), so cosines are defined;
    ``usage w^u (B, N)``, 0;
    ``read_weights w^r (B, H, N)``, 0;
    ``read r (B, H*W)``, 0 — the previous read vectors, ``r = w^r M`` head-major.
    The least-used weights ``w^lu`` are not stored: they are a function of ``w^u``
    (computed once per step, below), so the state cannot disagree with itself.

One step, in this order (write, then read — as the reference implementation):
    1. Controller: ``(h, c) = LSTM([x_t ; prev_label_t ; r_{t-1}], h, c)``. The previous
       read vectors are an input to the controller, as the paper says ("as an
       additional input for the next controller state", Sec. 3.1).
    2. Keys and gates from the controller output: ``k_t = tanh(W_k h + b_k)`` reshaped
       ``(H, W)`` — tanh as in the reference implementation, which bounds every key
       component to (-1, 1); ``σ(α_t) = sigmoid(W_α h + b_α)``, one scalar per head.
       What is written (``write_vector``): ``"key"`` writes the key itself, ``v_t = k_t``,
       as the paper's Eq. 23 is printed; ``"add"`` writes a separate add vector
       ``v_t = a_t = tanh(W_a h + b_a)`` (``(H, W)``, one per head), as the reference
       implementation does, so that what a head reads by (the key) and what it stores
       (image features bound to the label that arrived with this step) can differ.
    3. Least used from the *previous* usage: the slots are ranked by ``w^u_{t-1}``
       ascending, **ties broken by the lowest index** (:func:`least_used_ranks`). The
       ``H`` slots of rank ``< H`` are the least used (the paper's ``m(w^u, n)`` with
       ``n = H``); at ``t = 0`` usage is all zero and they are slots ``0 .. H-1``.
    4. Write weights, per head ``j``: ``w^w_t(j) = σ(α_t(j)) w^r_{t-1}(j) +
       (1 - σ(α_t(j))) w^lu_{t-1}(j)``, where ``w^lu_{t-1}(j)`` is one-hot at the slot of
       rank ``j``: each head gets its own least-used slot, and the heads' ``w^lu`` sum to
       the paper's ``n``-hot vector (Eq. 21-22 are written for one head; this is how the
       reference implementation generalises them). The literal alternative — every head
       writing to all ``n`` least-used slots — writes the same increment to ``n`` slots
       at once; slots that were identical before (all untouched slots are) then differ
       only by the erased slot's ``memory_init``, their usages stay equal to about
       ``1e-9`` relative, and which of them is least used later is decided by float32
       rounding: the float32 implementations disagreed with the float64 spec on 1-6 of
       800 steps per batch at the default sizes. Per head, the float32 implementations
       chose the spec's slots at every step of every batch we tried.
    5. Erase, then write: the single least-used slot (rank 0) is set to zero, then
       ``M_t(i) = M'(i) + sum_j w^w_t(j, i) v_t(j)``.
    6. Read from the new memory: ``K(j, i) = cosine(k_t(j), M_t(i))`` (:func:`cosine`),
       ``w^r_t(j) = softmax_i (s K(j, i))``, ``r_t(j) = sum_i w^r_t(j, i) M_t(i)``, where
       ``s = read_sharpness`` is 1 in the paper (its Eq. 17 has no key strength, unlike the
       NTM's ``β``). The cosines lie in [-1, 1], so at ``s = 1`` no read can weight a slot
       more than ``e^2`` times another: over ``N = 128`` slots the best match gets at most
       ``e / (e + 127/e) ≈ 5.5%`` — the trained MANN's reads are nearly uniform
       (``docs/results.md``). A constant ``s > 1`` sharpens every read alike.
       ``key_strength="learned"`` lets the controller choose each head's sharpness at
       every step, as the NTM's key strength ``β`` (Graves et al. 2014, Eq. 5):
       ``s_t(j) = s · softplus(W_β h_t + b_β)_j / ln 2`` — positive, and ``s`` where the
       pre-activation is 0 (the initial bias), so a learned run starts where the fixed one
       is and moves each head's focus from there.
    7. Usage: ``w^u_t = γ w^u_{t-1} + sum_j w^r_t(j) + sum_j w^w_t(j)``.
    8. Output: ``logits_t = W_o [h_t ; r_t] + b_o``; ``G`` softmaxes of ``C`` (the model
       returns logits; the loss applies the softmax).

Exact ties must stay exact (the first steps are all ties: every slot a write has not yet
touched holds the same vector). Both frameworks therefore compute the memory dot products
and the write as broadcast products reduced by ``sum``, never as a matrix product, whose
accumulation order may differ from one output column to the next.

Parameters (canonical names; see :func:`param_spec`):
    ``cell.controller.{weight_ih (4U, I+L+H*W), weight_hh (4U, U), bias (4U,)}``,
    ``cell.key.{weight (H*W, U), bias}``, ``cell.alpha.{weight (H, U), bias}``,
    ``cell.classifier.{weight (C*G, U+H*W), bias}``; with ``write_vector="add"`` also
    ``cell.add.{weight (H*W, U), bias}``; with ``key_strength="learned"`` also
    ``cell.strength.{weight (H, U), bias}``.

Task contract: the LSTM baseline's (:func:`metalearn_shared.models.lstm.inputs_and_target`,
re-exported here so that every model's spec module has one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import numpy as np

from metalearn_shared import registry
from metalearn_shared.config import ConfigMixin, check
from metalearn_shared.flops import Flops, dense_flops
from metalearn_shared.models.lstm import (
    SequenceSizes,
    group_logits,
    inputs_and_target,
    join_inputs,
    lstm_step,
    sequence_parity_cases,
    sequence_spec,
    sequence_workloads,
    sigmoid,
)
from metalearn_shared.weights import ParamSpec, dense, lstm_cell

#: What the LRUA writes: the key (the paper's Eq. 23) or a separate add vector.
WRITE_VECTORS = ("key", "add")
#: How sharp a read is: the constant ``read_sharpness`` or a per-head, per-step strength.
KEY_STRENGTHS = ("fixed", "learned")

__all__ = [
    "MANNConfig",
    "WRITE_VECTORS",
    "KEY_STRENGTHS",
    "SPEC",
    "param_spec",
    "MANNTrace",
    "cosine",
    "least_used_ranks",
    "least_used_slots",
    "read_strength",
    "reference_forward",
    "inputs_and_target",
]


@dataclass(frozen=True)
class MANNConfig(SequenceSizes, ConfigMixin):
    """Memory-augmented neural network with LRUA memory (Santoro et al. 2016).

    Attributes:
        image_size: images are flattened to ``image_size**2`` inputs (20 default).
        num_classes: output classes per step (ways); ``label_groups`` softmaxes of this size.
        label_groups: 1 for one-hot labels; 5 for Santoro's 5-character string labels.
        controller_units: LSTM controller size.
        memory_slots, memory_width: memory ``M`` is ``(slots, width)``.
        read_heads: number of read (and write) heads.
        gamma: usage decay.
        memory_init: constant the memory starts at, so cosine similarity is defined.
        cosine_eps: epsilon in the cosine similarity's denominator.
        write_vector: ``"key"`` (the paper's Eq. 23: write the key) or ``"add"`` (a separate
            add vector, as the reference implementation; see the module docstring).
        read_sharpness: the constant ``s`` the cosines are multiplied by before the read
            softmax; 1 (the paper's Eq. 17) by default (see the module docstring, step 6).
        key_strength: ``"fixed"`` (every read at ``read_sharpness``) or ``"learned"`` (the
            controller sets each head's sharpness per step, starting at ``read_sharpness``).
    """

    model: ClassVar[str] = "mann"
    image_size: int = 20
    num_classes: int = 5
    label_groups: int = 1
    controller_units: int = 200
    memory_slots: int = 128
    memory_width: int = 40
    read_heads: int = 4
    gamma: float = 0.95
    memory_init: float = 1e-6
    cosine_eps: float = 1e-8
    write_vector: str = "key"
    read_sharpness: float = 1.0
    key_strength: str = "fixed"

    def __post_init__(self) -> None:
        check(self.read_sharpness > 0,
              f"read_sharpness must be positive; found {self.read_sharpness}.")
        check(self.read_heads <= self.memory_slots, "read_heads must not exceed memory_slots.")
        check(self.write_vector in WRITE_VECTORS,
              f"write_vector must be one of {WRITE_VECTORS}; found {self.write_vector!r}.")
        check(self.key_strength in KEY_STRENGTHS,
              f"key_strength must be one of {KEY_STRENGTHS}; found {self.key_strength!r}.")

    @property
    def strength_scale(self) -> float:
        """The learned strength's factor on ``softplus(W_β h + b_β)``: ``s / ln 2``, so that a
        zero pre-activation reads at ``read_sharpness``."""
        return self.read_sharpness / float(np.log(2.0))


class MANNTrace(NamedTuple):
    """A MANN forward pass with its diagnostics (all framework implementations return
    this record, holding their own tensors).

    Attributes:
        logits: ``(B, T, C)`` or ``(B, T, G, C)``.
        read_weights: ``w^r_t (B, T, H, N)``.
        write_weights: ``w^w_t (B, T, H, N)``.
        usage: ``w^u_t (B, T, N)``.
        least_used: ``int (B, T, H)``: the least-used slots of ``w^u_{t-1}`` in rank order
            (least used first, ties by lowest index): head ``j`` of step t wrote to
            ``least_used[:, t, j]``, and step t erased ``least_used[:, t, 0]``.
    """

    logits: np.ndarray
    read_weights: np.ndarray
    write_weights: np.ndarray
    usage: np.ndarray
    least_used: np.ndarray


def param_spec(config: MANNConfig) -> list[ParamSpec]:
    """Canonical parameters of the MANN (see the module docstring)."""
    units, heads, width = config.controller_units, config.read_heads, config.memory_width
    controller_in = config.input_size + config.label_size + heads * width
    return [
        *lstm_cell("cell.controller", controller_in, units),
        *dense("cell.key", units, heads * width),
        *dense("cell.alpha", units, heads),
        *dense("cell.classifier", units + heads * width, config.label_size),
        *(dense("cell.add", units, heads * width) if config.write_vector == "add" else []),
        *(dense("cell.strength", units, heads) if config.key_strength == "learned" else []),
    ]


def cosine(keys: np.ndarray, memory: np.ndarray, eps: float) -> np.ndarray:
    """Cosine similarity of every key with every memory slot.

    Formula (``eps`` inside the square root, as the reference implementation):
        ``K(j, i) = <k_j, M_i> / sqrt(|k_j|^2 |M_i|^2 + eps)``.
    With ``eps > 0`` the denominator and its gradient stay finite for a zero key or a
    zero slot (an erased slot is zero until written).

    Args:
        keys: ``(B, H, W)``.
        memory: ``(B, N, W)``.
        eps: ``config.cosine_eps``.

    Returns:
        ``(B, H, N)``.
    """
    dot = np.sum(keys[:, :, None, :] * memory[:, None, :, :], axis=-1)  # (B, H, N)
    kk = np.sum(keys * keys, axis=-1)[:, :, None]  # (B, H, 1)
    mm = np.sum(memory * memory, axis=-1)[:, None, :]  # (B, 1, N)
    return dot / np.sqrt(kk * mm + eps)


def least_used_ranks(usage: np.ndarray) -> np.ndarray:
    """Rank of every slot by usage, ascending, ties broken by the lowest index.

    This is the rule both frameworks implement (by pairwise comparison:
    ``rank_i = #{j : u_j < u_i or (u_j = u_i and j < i)}``); here it comes from a stable
    sort, an independent algorithm for the same order.

    Args:
        usage: ``(B, N)``.

    Returns:
        ``int64 (B, N)``, a permutation of ``0 .. N-1`` per row.
    """
    order = np.argsort(usage, axis=-1, kind="stable")  # (B, N) slots, least used first
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(usage.shape[-1]), axis=-1)
    return ranks


def least_used_slots(usage: np.ndarray, n: int) -> np.ndarray:
    """``int64 (B, n)``: the ``n`` least-used slots, least used first, ties by lowest index."""
    return np.argsort(usage, axis=-1, kind="stable")[..., :n]


def read_strength(params: Mapping[str, np.ndarray], config: MANNConfig, h: np.ndarray
                  ) -> float | np.ndarray:
    """The factor on the cosines before the read softmax (step 6): ``read_sharpness``, or
    with ``key_strength="learned"`` the ``(B, H, 1)`` strengths
    ``s · softplus(W_β h + b_β) / ln 2``."""
    if config.key_strength == "fixed":
        return config.read_sharpness
    z = h @ params["cell.strength.weight"].T + params["cell.strength.bias"]  # (B, H)
    return config.strength_scale * np.logaddexp(0.0, z)[:, :, None]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def reference_forward(
    params: Mapping[str, np.ndarray], config: MANNConfig, x: np.ndarray, prev_label: np.ndarray
) -> MANNTrace:
    """The MANN over a batch of episodes, in float64, step by step as the module docstring
    specifies.

    Args:
        params: canonical arrays (:func:`param_spec` names and shapes).
        config: the model's config.
        x: ``(B, T, image_size**2)`` flattened images.
        prev_label: ``(B, T, C*G)`` previous step's label encoding (zeros at ``t = 0``).

    Returns:
        :class:`MANNTrace` of float64 arrays (``least_used`` int64).
    """
    inputs = join_inputs(config, x, prev_label)  # (B, T, I + L)
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    b, t, _ = inputs.shape
    heads, slots, width = config.read_heads, config.memory_slots, config.memory_width
    rows = np.arange(b)

    h = c = np.zeros((b, config.controller_units))
    memory = np.full((b, slots, width), config.memory_init)
    usage = np.zeros((b, slots))
    read_weights = np.zeros((b, heads, slots))
    read = np.zeros((b, heads * width))

    out = MANNTrace(
        logits=np.empty((b, t, config.label_size)),
        read_weights=np.empty((b, t, heads, slots)),
        write_weights=np.empty((b, t, heads, slots)),
        usage=np.empty((b, t, slots)),
        least_used=np.empty((b, t, heads), np.int64),
    )
    for step in range(t):
        # 1-2. controller, keys, gates
        h, c = lstm_step(p, "cell.controller",
                         np.concatenate([inputs[:, step], read], -1), h, c)
        keys = np.tanh(h @ p["cell.key.weight"].T + p["cell.key.bias"]).reshape(b, heads, width)
        written = keys if config.write_vector == "key" else np.tanh(
            h @ p["cell.add.weight"].T + p["cell.add.bias"]).reshape(b, heads, width)
        gate = sigmoid(h @ p["cell.alpha.weight"].T + p["cell.alpha.bias"])[:, :, None]  # (B,H,1)
        # 3-4. least used (from the previous usage) and write weights
        lu = least_used_slots(usage, heads)  # (B, H)
        w_lu = np.zeros((b, heads, slots))  # head j -> the j-th least-used slot
        w_lu[rows[:, None], np.arange(heads), lu] = 1.0
        write_weights = gate * read_weights + (1.0 - gate) * w_lu  # (B, H, N)
        # 5. erase the least-used slot, then write every head's vector
        memory = memory.copy()
        memory[rows, lu[:, 0]] = 0.0
        memory = memory + np.sum(write_weights[..., None] * written[:, :, None, :], axis=1)
        # 6. read from the new memory
        read_weights = _softmax(read_strength(p, config, h)
                                * cosine(keys, memory, config.cosine_eps))  # (B, H, N)
        read = np.sum(read_weights[..., None] * memory[:, None], axis=2).reshape(b, -1)
        # 7. usage
        usage = config.gamma * usage + read_weights.sum(1) + write_weights.sum(1)
        # 8. output
        out.logits[:, step] = (np.concatenate([h, read], -1) @ p["cell.classifier.weight"].T
                               + p["cell.classifier.bias"])
        out.read_weights[:, step] = read_weights
        out.write_weights[:, step] = write_weights
        out.usage[:, step] = usage
        out.least_used[:, step] = lu
    return out._replace(logits=group_logits(out.logits, config))


# -- the model contract (metalearn_shared.registry) -----------------------------------------
def _parity_cases(tiny: bool) -> list[registry.ParityCase]:
    """The sequence models' cases; beyond the tiny one, the separate add vector and the
    learned key strength too (torch → Keras: the new code of each is one dense layer and
    where its output enters the step)."""
    small = {"memory_slots": 16, "memory_width": 6, "read_heads": 3}
    cases = sequence_parity_cases(MANNConfig, "mann", tiny,
                                  {"memory_slots": 8, "memory_width": 4, "read_heads": 2}, small)
    if tiny:
        return cases
    add = MANNConfig(image_size=10, num_classes=registry.PARITY_WAYS, controller_units=24,
                     write_vector="add", **small)
    strength = add.replace(write_vector="key", key_strength="learned", read_sharpness=4.0)
    return [*cases, *(registry.ParityCase(name, config, batch=2, glyphs=(12, 10),
                                          both_directions=False)
                      for name, config in (("mann-add", add), ("mann-strength", strength)))]


def _flops(config: MANNConfig, task: registry.Task) -> tuple[float, float]:
    """Controller and heads (dense), plus the memory per step and episode: write
    ``2·H·N·W`` (outer products summed over heads), cosine numerators ``2·H·N·W``, norms
    ``2·N·W + 2·H·W``, read ``2·H·N·W``. The controller reads the previous read vector, so
    every layer counts 3 × in training (torch's ``FlopCounterMode``, which counts only matrix
    products, finds ~7% less)."""
    h, n, w = config.read_heads, config.memory_slots, config.memory_width
    memory = 6.0 * h * n * w + 2.0 * n * w + 2.0 * h * w
    per_step = dense_flops(param_spec(config)) + memory
    return tuple(Flops(per_step, 3 * per_step) * (task.batch * task.steps))


SPEC = registry.register_model(sequence_spec(
    name="mann",
    summary="MANN with LRUA memory (Santoro et al. 2016)",
    config_cls=MANNConfig,
    param_spec=param_spec,
    # Small enough to be quick, large enough that the LRUA reuses every slot (50 steps x 3
    # heads over 16 slots); then the paper's sizes (128 x 40 memory, 4 heads), forward only.
    parity_cases=_parity_cases,
    # --write-vector, --read-sharpness and --key-strength map onto the config fields of their names
    # (sequence_spec).
    options=(registry.Option(("--write-vector",), {
        "default": None, "choices": WRITE_VECTORS,
        "help": "mann: what the LRUA writes: key (the paper's Eq. 23, default) or add (a "
                "separate add vector, as the reference implementation)"}),
             registry.Option(("--read-sharpness",), {
        "default": None, "type": float, "metavar": "S",
        "help": "mann: reads weight the slots by softmax(S · cosine); 1 (the paper's Eq. 17, "
                "default) cannot focus a read on one of 128 slots"}),
             registry.Option(("--key-strength",), {
        "default": None, "choices": KEY_STRENGTHS,
        "help": "mann: fixed (every read at --read-sharpness, default) or learned (the "
                "controller sets each head's sharpness per step, starting at S)"}),),
    workloads=lambda quick: sequence_workloads(MANNConfig, "mann", quick, {
        "controller_units": 16, "memory_slots": 8, "memory_width": 4, "read_heads": 1}),
    flops=_flops,
    reference_forward=reference_forward,
    trace_fields=("logits", "read_weights", "write_weights", "usage"),
    trace_exact=("least_used",),
))
