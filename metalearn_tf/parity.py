"""Keras half of the parity machinery: numpy in, numpy (canonical layout) out.

Mirror of ``metalearn_torch/parity.py`` — same functions, same arguments, same results — so
the framework-agnostic driver :mod:`metalearn_shared.parity` (``metalearn parity`` and the
parity tests) treats both frameworks alike. Every array returned is numpy, in canonical
(torch) names, layouts and element order (Keras-flattened ``conv4`` embeddings are
reordered to ``(C, H, W)``); every model is one of ``metalearn_tf.models``. Training uses
the trainer's own pieces: ``compile(loss=model.make_loss())`` + ``fit`` on the trainer's
:class:`~metalearn_tf.train.EpisodeDataset`, fed as the trainer feeds it
(:func:`~metalearn_tf.train.static_batches`).
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
from metalearn_shared.parity import TrainRecord
from metalearn_shared.weights import to_canonical, to_framework
from metalearn_tf.checkpoint import get_canonical, keras_variables, set_canonical
from metalearn_tf.models import objective
from metalearn_tf.train import EpisodeDataset, static_batches

__all__ = ["parity_context", "forward", "embed", "trace", "loss_and_grads", "train_steps",
           "forced_steps", "apply_update", "set_weights", "pin_threads",
           "threads_in_use"]


@contextmanager
def parity_context(seed: int, threads: int = 1) -> Iterator[None]:
    """``threads`` TensorFlow threads and a seeded global RNG for a parity run.

    TensorFlow fixes its intra- and inter-op thread pools when its runtime starts: they are
    pinned here if it has not started yet (``TF_NUM_INTRAOP_THREADS`` /
    ``TF_NUM_INTEROP_THREADS`` set before the first op do the same), else left as they are
    with a warning. :func:`threads_in_use` reports what the run actually used. Keras has no
    scoped RNG, so the seed stays set afterwards. TF's retracing warnings are silenced
    meanwhile: the parity runs compile the same model more than once, by design.
    """
    pin_threads(threads)
    keras.utils.set_random_seed(seed)
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel("ERROR")
    try:
        yield
    finally:
        logger.setLevel(level)


def pin_threads(threads: int) -> None:
    """Set TensorFlow's intra- and inter-op pools to ``threads`` threads if it has not
    started; warn when it already runs with other pools."""
    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # the runtime already started: its pools are fixed
        if threads_in_use()["intra_op"] != threads:
            import warnings

            warnings.warn(f"TensorFlow already started with {threads_in_use()} threads; parity "
                          f"asked for {threads}. Set TF_NUM_INTRAOP_THREADS={threads} and "
                          f"TF_NUM_INTEROP_THREADS={threads} before TensorFlow starts.",
                          stacklevel=2)


def threads_in_use() -> dict[str, int]:
    """TensorFlow's thread pools (0 = TensorFlow's default: one per core)."""
    import os

    def pool(get: Any, env: str) -> int:
        return get() or int(os.environ.get(env, "0") or 0)

    return {"intra_op": pool(tf.config.threading.get_intra_op_parallelism_threads,
                             "TF_NUM_INTRAOP_THREADS"),
            "inter_op": pool(tf.config.threading.get_inter_op_parallelism_threads,
                             "TF_NUM_INTEROP_THREADS")}


def set_weights(model: Any, canonical: dict[str, np.ndarray]) -> None:
    """Load canonical weights (parameters and BatchNorm statistics) into the model."""
    set_canonical(model, canonical)


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


def trace(model: keras.Model, inputs: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    """The model's ``forward_with_trace`` (a NamedTuple of per-step diagnostics, e.g. a
    memory's read and write weights) as ``{field: numpy array}``."""
    tr = model.forward_with_trace(*inputs)
    return {k: keras.ops.convert_to_numpy(v) for k, v in tr._asdict().items()}


def loss_and_grads(model: keras.Model, inputs: Sequence[np.ndarray], target: np.ndarray
                   ) -> tuple[np.ndarray, float, dict[str, np.ndarray]]:
    """One training-mode forward and backward pass (``tf.GradientTape`` in a ``tf.function``,
    as ``fit``'s step runs), no optimiser step.

    Returns:
        ``(output, loss, grads)``: the model output, the mean loss (``make_loss()``), and
        the gradient of every trainable variable by canonical name, canonical layout.
    """
    names, step = _grad_step(model)
    out, loss, grads = step(tuple(tf.constant(x) for x in inputs), tf.constant(target))
    arrays = {k: g.numpy() for k, g in zip(names, grads, strict=True)}
    spec = [p for p in param_spec(model.config) if p.trainable]
    return out.numpy(), float(loss), to_canonical(arrays, spec, "keras")


def _grad_step(model: keras.Model) -> tuple[list[str], Any]:
    """The model's traced forward + backward pass, made once per model (a 50-step recurrent
    model takes seconds per eager pass, a few ms traced)."""
    if getattr(model, "_parity_grad_step", None) is None:
        trainable = {k: v for k, v in keras_variables(model).items() if v.trainable}
        loss_fn = model.make_loss()

        @tf.function(reduce_retracing=True)
        def step(inputs: tuple[Any, ...], target: Any) -> tuple[Any, Any, list[Any]]:
            with tf.GradientTape() as tape:
                loss, out = objective(model, inputs, target, loss_fn)
            grads = tape.gradient(loss, list(trainable.values()))
            # A variable the loss does not reach gets a zero gradient, not None (see torch).
            return out, loss, [tf.zeros(v.shape, v.dtype) if g is None else g
                               for g, v in zip(grads, trainable.values(), strict=True)]

        model._parity_grad_step = (list(trainable), step)
    return model._parity_grad_step


class _Recorder(keras.callbacks.Callback):
    """Canonical weights, canonical optimiser state and wall time of every ``fit`` step."""

    def __init__(self, record: TrainRecord) -> None:
        super().__init__()
        self.record = record
        self._t0 = 0.0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        from metalearn_tf.optimizers import get_state

        self.record.seconds.append(time.perf_counter() - self._t0)
        self.record.weights.append(get_canonical(self.model))
        self.record.states.append(get_state(self.model.optimizer, self.model))


def _compiled(model: keras.Model, optimizer: str, lr: float, **overrides: Any
              ) -> keras.optimizers.Optimizer:
    """``compile`` the model with the trainer's optimiser object (once per optimiser, rate
    and overrides: a second ``fit`` reuses the traced step) and reset the optimiser's state."""
    from metalearn_tf.optimizers import make_optimizer, set_state

    key = (optimizer, lr, tuple(sorted(overrides.items())))
    if getattr(model, "_parity_optimizer", None) != key:
        model.compile(optimizer=make_optimizer(optimizer, lr=lr, **overrides),
                      loss=model.make_loss())
        model.optimizer.build(model.trainable_variables)
        model._parity_optimizer = key
        model._parity_fresh_state = _state(model)
    set_state(model.optimizer, model, model._parity_fresh_state)
    return model.optimizer


def _state(model: keras.Model) -> dict:
    from metalearn_tf.optimizers import get_state

    return get_state(model.optimizer, model)


def _fit(model: keras.Model, sampler: Any, family: str, batch: int, start: int, stop: int,
         record: TrainRecord) -> None:
    data = EpisodeDataset(model, sampler, family, batch, start, stop)
    model.fit(static_batches(data), epochs=1, shuffle=False, verbose=0,
              callbacks=[_Recorder(record)])


def train_steps(model: keras.Model, sampler: Any, family: str, steps: int, lr: float,
                batch: int, optimizer: str = "sgd", **overrides: Any) -> TrainRecord:
    """Train freely on batches ``1 .. steps`` of ``sampler`` by ``compile`` + ``fit``.

    Step ``s`` trains on ``training.step_batch(sampler, family, s, batch)`` through the
    trainer's ``EpisodeDataset`` and ``static_batches`` — the batch the trainer feeds step
    ``s``, with the same static shapes — so the torch
    mirror sees the same data. ``fit`` runs the steps under ``tf.function``; the first
    step's time includes tracing.

    Args:
        optimizer: a name of :data:`metalearn_shared.optimizers.OPTIMIZERS`, built by the
            trainer's ``make_optimizer``.
        overrides: hyper-parameters by the table's names (``eps``, ``rho``, ...); none =
            the table's settings for ``optimizer``.

    Returns:
        The canonical weights (variables and BatchNorm statistics) and the canonical
        optimiser state after every step, and the seconds each step took.
    """
    _compiled(model, optimizer, lr, **overrides)
    record = TrainRecord()
    _fit(model, sampler, family, batch, 1, steps + 1, record)
    return record


def forced_steps(model: keras.Model, starts: Sequence[tuple[dict[str, np.ndarray], dict]],
                 sampler: Any, family: str, lr: float, batch: int,
                 optimizer: str = "sgd") -> TrainRecord:
    """Teacher-forced steps: step ``k`` (1-based) starts from ``starts[k - 1]`` — canonical
    weights and canonical optimiser state, typically the other framework's after ``k - 1``
    steps — and trains on batch ``k`` (the trainer's dataset item) with the compiled model's
    own train step (``train_on_batch`` runs the ``train_function`` that ``fit`` runs, without
    ``fit``'s per-call set-up; the free-running :func:`train_steps` covers ``fit`` itself).

    Returns:
        The canonical weights and optimiser state after each forced step.
    """
    from metalearn_tf.optimizers import get_state, set_state

    opt = _compiled(model, optimizer, lr)
    data = EpisodeDataset(model, sampler, family, batch, 0, len(starts) + 1)
    record = TrainRecord()
    for step, (weights, state) in enumerate(starts, start=1):
        set_canonical(model, weights)
        set_state(opt, model, model._parity_fresh_state if state is None else state)
        x, y = data[step]
        t0 = time.perf_counter()
        model.train_on_batch(x, y)
        record.seconds.append(time.perf_counter() - t0)
        record.weights.append(get_canonical(model))
        record.states.append(get_state(opt, model))
    return record


def apply_update(model: keras.Model, weights: dict[str, np.ndarray], state: dict,
                 grads: dict[str, np.ndarray], lr: float, optimizer: str) -> dict[str, np.ndarray]:
    """One optimiser step from given canonical ``weights``, ``state`` and gradients ``grads``
    (no forward pass): the update rule alone, with the trainer's optimiser object.

    Returns:
        The canonical weights after the step.
    """
    from metalearn_tf.optimizers import set_state

    opt = _compiled(model, optimizer, lr)
    set_canonical(model, weights)
    set_state(opt, model, model._parity_fresh_state if state is None else state)
    spec = [p for p in param_spec(model.config) if p.trainable]
    native = to_framework(grads, spec, "keras")
    trainable = {k: v for k, v in keras_variables(model).items() if v.trainable}
    opt.apply_gradients([(tf.constant(native[k]), v) for k, v in trainable.items()])
    return get_canonical(model)
