"""Keras half of the parity machinery: numpy in, numpy (canonical layout) out.

Mirror of ``metalearn_torch/parity.py`` — same functions, same arguments, same results — so
the framework-agnostic driver :mod:`metalearn_shared.parity` (``metalearn parity`` and the
parity tests) treats both frameworks alike. Every array returned is numpy, in canonical
(torch) names, layouts and element order (Keras-flattened ``conv4`` embeddings are
reordered to ``(C, H, W)``); every model is one of ``metalearn_tf.models``. Training uses
the trainer's own pieces: ``compile(loss=model.make_loss())`` + ``fit`` on the trainer's
:class:`~metalearn_tf.train.EpisodeDataset`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from metalearn_shared.models import param_spec
from metalearn_shared.models.backbones import embedding_chw, flat_hwc_to_chw
from metalearn_shared.models.mann import MANNTrace
from metalearn_shared.parity import TrainRecord
from metalearn_shared.weights import to_canonical
from metalearn_tf.checkpoint import get_canonical, keras_variables
from metalearn_tf.train import EpisodeDataset

__all__ = ["parity_context", "forward", "embed", "trace", "loss_and_grads", "train_steps"]


@contextmanager
def parity_context(seed: int) -> Iterator[None]:
    """A seeded global RNG (``keras.utils.set_random_seed``) for a parity run.

    Threads are left alone: TF fixes its thread pools when it starts, and its results do not
    depend on them here. Keras has no scoped RNG, so the seed stays set afterwards. TF's
    retracing warnings are silenced meanwhile: every ``fit`` here traces anew, by design.
    """
    keras.utils.set_random_seed(seed)
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def forward(model: keras.Model, inputs: Sequence[np.ndarray], training: bool) -> np.ndarray:
    """The model's output on numpy ``inputs`` (the task contract's), eagerly.

    Args:
        training: BatchNorm mode; in training mode the moving statistics are updated, as in
            a training step.
    """
    return keras.ops.convert_to_numpy(model(tuple(inputs), training=training))


def embed(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """Inference-mode embeddings ``(B, D)`` of images ``x (B, H, W)``, canonical element order."""
    emb = keras.ops.convert_to_numpy(model.embed(x, training=False))
    return flat_hwc_to_chw(emb, embedding_chw(model.config.backbone))


def trace(model: keras.Model, inputs: Sequence[np.ndarray]) -> MANNTrace:
    """A MANN's logits and memory diagnostics at every step, as numpy arrays."""
    return model.forward_with_trace(*inputs)


def loss_and_grads(model: keras.Model, inputs: Sequence[np.ndarray], target: np.ndarray
                   ) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
    """One training-mode forward and backward pass (``tf.GradientTape``), no optimiser step.

    Returns:
        ``(output, loss, grads)``: the model output, the mean loss (``make_loss()``), and
        the gradient of every trainable variable by canonical name, canonical layout.
    """
    trainable = {k: v for k, v in keras_variables(model).items() if v.trainable}
    with tf.GradientTape() as tape:
        out = model(tuple(inputs), training=True)
        loss = model.make_loss()(target, out)
    grads = tape.gradient(loss, list(trainable.values()))
    arrays = {k: g.numpy() for k, g in zip(trainable, grads, strict=True)}
    spec = [p for p in param_spec(model.config) if p.trainable]
    return out.numpy(), float(loss), to_canonical(arrays, spec, "keras")


class _Recorder(keras.callbacks.Callback):
    """Canonical weights and wall time of every ``fit`` step."""

    def __init__(self, record: TrainRecord) -> None:
        super().__init__()
        self.record = record
        self._t0 = 0.0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.record.seconds.append(time.perf_counter() - self._t0)
        self.record.weights.append(get_canonical(self.model))


def train_steps(model: keras.Model, sampler: Any, family: str, steps: int, lr: float,
                batch: int, optimizer: str = "sgd", **settings: Any) -> TrainRecord:
    """Train on batches ``1 .. steps`` of ``sampler`` by ``compile`` + ``fit``.

    Step ``s`` trains on ``training.step_batch(sampler, family, s, batch)`` through the
    trainer's ``EpisodeDataset`` — the batch the trainer feeds step ``s`` — so the torch
    mirror sees the same data. ``fit`` runs the steps under ``tf.function``; the first
    step's time includes tracing.

    Args:
        optimizer: ``"sgd"``, ``"adam"`` or ``"rmsprop"`` (``keras.optimizers``').
        settings: its keyword arguments beyond the learning rate (Keras names:
            ``epsilon``, ``rho``); none = Keras' defaults.

    Returns:
        The canonical weights after every step and the seconds each step took.
    """
    kinds = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam,
             "rmsprop": keras.optimizers.RMSprop}
    model.compile(optimizer=kinds[optimizer](learning_rate=lr, **settings), loss=model.make_loss())
    record = TrainRecord()
    data = EpisodeDataset(model, sampler, family, batch, 1, steps + 1)
    model.fit(data, epochs=1, shuffle=False, verbose=0, callbacks=[_Recorder(record)])
    return record
