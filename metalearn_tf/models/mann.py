"""Memory-augmented neural network with LRUA memory (Santoro et al. 2016), Keras 3.

Spec — the order of operations within a step, where the epsilon enters the cosine, the
tie rule of the least-used slots — is :mod:`metalearn_shared.models.mann`; this file
implements it. Mirror: ``metalearn_torch/models/mann.py``.

:class:`MANNCell` is a serialisable cell layer (``state_size`` a list, ``get_initial_state``)
run by ``keras.layers.RNN``, written with ``keras.ops`` only. Under ``tf.function`` (and
XLA) the whole episode is one ``while`` loop with no host round trip per step.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from metalearn_shared.models.mann import MANNConfig, MANNTrace
from metalearn_tf.models.backbones import seeded
from metalearn_tf.models.lstm import SequenceModel

__all__ = ["MANNCell", "MANN", "least_used_ranks", "slots_from_ranks", "build"]

_PACKAGE = "metalearn_tf"


def least_used_ranks(usage: Any) -> Any:
    """Rank of each slot by usage, ascending, ties broken by the lowest index.

    ``rank_i = #{j : u_j < u_i or (u_j = u_i and j < i)}`` by pairwise comparison — the
    same algorithm as the torch side, independent of any sort's tie order.

    Args:
        usage: ``(B, N)``.

    Returns:
        ``int32 (B, N)``.
    """
    n = usage.shape[-1]
    idx = ops.arange(n)
    lower = ops.less(idx[None, :], idx[:, None])  # (N, N) [i, j]: j < i
    ui, uj = ops.expand_dims(usage, -1), ops.expand_dims(usage, -2)  # (B, N, 1), (B, 1, N)
    before = ops.logical_or(ops.less(uj, ui), ops.logical_and(ops.equal(uj, ui), lower))
    return ops.sum(ops.cast(before, "int32"), axis=-1)  # (B, N)


def slots_from_ranks(ranks: Any, n: int) -> Any:
    """``int32 (B, n)``: the slots of rank ``0 .. n-1`` (least used first)."""
    wanted = ops.arange(n, dtype="int32")[:, None]  # (n, 1)
    hit = ops.cast(ops.equal(ops.expand_dims(ranks, -2), wanted), "int32")  # (B, n, N)
    return ops.sum(hit * ops.arange(ranks.shape[-1], dtype="int32"), axis=-1)


@keras.saving.register_keras_serializable(_PACKAGE)
class MANNCell(keras.layers.Layer):
    """One MANN step: LSTM controller, LRUA write, content read, classifier.

    Args:
        config: :class:`~metalearn_shared.config.MANNConfig` (or its dict).

    Sublayers (variable paths under ``cell/``): ``controller`` (``LSTMCell`` on
    ``[x_t ; prev_label_t ; r_{t-1}]``), ``key`` (``Dense(H*W)``, tanh), ``alpha``
    (``Dense(H)``, sigmoid), ``classifier`` (``Dense(C*G)`` on ``[h_t ; r_t]``); with
    ``write_vector="add"``, ``add`` (``Dense(H*W)``, tanh); with ``key_strength="learned"``,
    ``strength`` (``Dense(H)``, softplus).

    State (``state_size``, in order): ``h (U)``, ``c (U)``, ``memory (N, W)``,
    ``usage (N)``, ``read_weights (H, N)``, ``read (H*W)``. Output: logits ``(C*G)``.
    """

    def __init__(self, config: MANNConfig | dict[str, Any], **kwargs: Any) -> None:
        if isinstance(config, dict):
            config = MANNConfig.from_dict(config)
        super().__init__(**kwargs)
        self.config = config
        units, heads, width = config.controller_units, config.read_heads, config.memory_width
        slots = config.memory_slots
        self.controller = keras.layers.LSTMCell(units, name="controller")
        self.key = keras.layers.Dense(heads * width, name="key")
        self.alpha = keras.layers.Dense(heads, name="alpha")
        self.classifier = keras.layers.Dense(config.label_size, name="classifier")
        self.add = (keras.layers.Dense(heads * width, name="add")
                    if config.write_vector == "add" else None)
        self.strength = (keras.layers.Dense(heads, name="strength")
                         if config.key_strength == "learned" else None)
        self.state_size = [units, units, (slots, width), slots, (heads, slots), heads * width]
        self.output_size = config.label_size

    def build(self, input_shape: Any) -> None:
        cfg = self.config
        units, reads = cfg.controller_units, cfg.read_heads * cfg.memory_width
        self.controller.build((None, input_shape[-1] + reads))
        self.key.build((None, units))
        self.alpha.build((None, units))
        self.classifier.build((None, units + reads))
        for optional in (self.add, self.strength):
            if optional is not None:
                optional.build((None, units))

    def get_initial_state(self, batch_size: Any = None) -> list[Any]:
        """The spec's initial state (zeros; memory at ``memory_init``)."""
        cfg = self.config
        dtype = self.compute_dtype
        h = ops.zeros((batch_size, cfg.controller_units), dtype=dtype)
        return [
            h,
            h,
            ops.full((batch_size, cfg.memory_slots, cfg.memory_width), cfg.memory_init,
                     dtype=dtype),
            ops.zeros((batch_size, cfg.memory_slots), dtype=dtype),
            ops.zeros((batch_size, cfg.read_heads, cfg.memory_slots), dtype=dtype),
            ops.zeros((batch_size, cfg.read_heads * cfg.memory_width), dtype=dtype),
        ]

    def call(self, inputs: Any, states: Any, training: bool | None = None) -> tuple[Any, list]:
        logits, states, _, _ = self.step(inputs, states)
        return logits, states

    def step(self, x_t: Any, states: Any) -> tuple[Any, list, Any, Any]:
        """:meth:`call` plus diagnostics: the ranks of ``w^u_{t-1}`` ``(B, N)`` and the
        write weights ``(B, H, N)``. Steps numbered as in the spec."""
        cfg = self.config
        heads, width = cfg.read_heads, cfg.memory_width
        h, c, memory, usage, read_weights, read = states
        # 1-2. controller, keys, gates
        h, (h, c) = self.controller(ops.concatenate([x_t, read], axis=-1), [h, c])
        keys = ops.reshape(ops.tanh(self.key(h)), (-1, heads, width))  # (B, H, W)
        written = self.written(h, keys)  # (B, H, W)
        gate = ops.expand_dims(ops.sigmoid(self.alpha(h)), -1)  # (B, H, 1)
        # 3-4. least used (from the previous usage) and write weights
        ranks = least_used_ranks(usage)  # (B, N)
        order = ops.arange(heads, dtype="int32")[:, None]  # (H, 1)
        w_lu = ops.cast(ops.equal(ops.expand_dims(ranks, 1), order), h.dtype)  # (B, H, N)
        write = gate * read_weights + (1.0 - gate) * w_lu  # (B, H, N)
        # 5. erase the least-used slot, then write every head's vector
        keep = ops.expand_dims(ops.cast(ops.not_equal(ranks, 0), h.dtype), -1)  # (B, N, 1)
        added = ops.sum(ops.expand_dims(write, -1) * ops.expand_dims(written, 2), axis=1)
        memory = memory * keep + added  # (B, N, W)
        # 6. read from the new memory (cosine: broadcast product, see the spec on ties)
        dot = ops.sum(ops.expand_dims(keys, 2) * ops.expand_dims(memory, 1), axis=-1)  # (B,H,N)
        kk = ops.expand_dims(ops.sum(keys * keys, axis=-1), -1)  # (B, H, 1)
        mm = ops.expand_dims(ops.sum(memory * memory, axis=-1), 1)  # (B, 1, N)
        read_weights = ops.softmax(
            self.read_strength(h) * (dot / ops.sqrt(kk * mm + cfg.cosine_eps)), axis=-1)
        read = ops.reshape(ops.matmul(read_weights, memory), (-1, heads * width))  # (B, H*W)
        # 7. usage
        usage = cfg.gamma * usage + ops.sum(read_weights, axis=1) + ops.sum(write, axis=1)
        # 8. output
        logits = self.classifier(ops.concatenate([h, read], axis=-1))  # (B, C*G)
        return logits, [h, c, memory, usage, read_weights, read], ranks, write

    def written(self, h: Any, keys: Any) -> Any:
        """What the heads write (spec, ``write_vector``): the keys ``(B, H, W)``, or the add
        vectors ``tanh(add(h))``."""
        if self.add is None:
            return keys
        return ops.reshape(ops.tanh(self.add(h)), (-1, self.config.read_heads,
                                                  self.config.memory_width))

    def read_strength(self, h: Any) -> Any:
        """The factor on the cosines before the read softmax (spec, ``key_strength``):
        ``read_sharpness``, or the ``(B, H, 1)`` strengths ``s · softplus(strength(h)) / ln 2``."""
        if self.strength is None:
            return self.config.read_sharpness
        return self.config.strength_scale * ops.expand_dims(ops.softplus(self.strength(h)), -1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.config.to_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MANNCell:
        config = dict(config)
        kwargs = {k: config.pop(k) for k in ("name", "trainable", "dtype") if k in config}
        return cls(MANNConfig.from_dict(config), **kwargs)


@keras.saving.register_keras_serializable(_PACKAGE)
class MANN(SequenceModel):
    """MANN over whole episodes: :class:`MANNCell` run by ``keras.layers.RNN``.

    Args:
        config: :class:`~metalearn_shared.config.MANNConfig` (or its dict).

    Inputs: ``(x (B, T, image_size**2), prev_label (B, T, C*G))`` (zeros at ``t = 0``).
    Returns: logits ``(B, T, C)``, or ``(B, T, G, C)`` when ``label_groups > 1``.
    """

    config_cls = MANNConfig

    def __init__(self, config: MANNConfig | dict[str, Any], **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.cell = MANNCell(self.config, name="cell")
        self.rnn = keras.layers.RNN(self.cell, return_sequences=True, name="rnn")

    def build(self, input_shape: Any = None) -> None:
        # Built here, in the model's name scope: paths "cell/controller/kernel", not "rnn/...".
        self.cell.build((None, self.step_input_size))

    def call(self, inputs: Any) -> Any:
        return self.group_logits(self.rnn(self.join_inputs(inputs)))  # (B, T, C[, G])

    def forward_with_trace(self, x: Any, prev_label: Any) -> MANNTrace:
        """Logits plus the memory diagnostics of every step (eager loop, numpy arrays)."""
        if not self.built:
            self.build(self.build_input_shape())
        inputs = self.join_inputs((x, prev_label))  # (B, T, I + L)
        states = self.cell.get_initial_state(batch_size=inputs.shape[0])
        steps = []
        for t in range(inputs.shape[1]):
            logits, states, ranks, write = self.cell.step(inputs[:, t], states)
            steps.append((logits, states[4], write, states[3],
                          slots_from_ranks(ranks, self.config.read_heads)))
        logits, read_w, write_w, usage, least_used = (
            np.stack([ops.convert_to_numpy(v) for v in field], axis=1)
            for field in zip(*steps, strict=True))
        return MANNTrace(ops.convert_to_numpy(self.group_logits(logits)), read_w, write_w,
                         usage, least_used)


def build(config: MANNConfig, seed: int | None = None) -> MANN:
    """The MANN of ``config``, variables created; ``seed`` seeds Keras' global RNG."""
    with seeded(seed):
        model = MANN(config)
        model.build(model.build_input_shape())
    return model
