"""Keras training: ``compile()`` / ``fit()`` on the shared sampler's batches, fed with static shapes.

Mirror of ``metalearn_torch/train.py``. What is not a tensor operation (configs, data
splits, which episode feeds step ``s``, the CSV log, the run folder) is shared, in
:mod:`metalearn_shared.training`. Step ``s`` always trains on episode/batch ``s`` of the
seeded sampler, so ``N`` steps + ``--resume`` + ``M`` steps equals ``N + M`` steps.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf  # Keras 3's backend: the input pipeline fit() reads

from metalearn_shared import training as T
from metalearn_shared.config import TrainConfig
from metalearn_tf import optimizers
from metalearn_tf.checkpoint import save_checkpoint, save_keras, set_canonical
from metalearn_tf.models import build_model
from metalearn_tf.models.backbones import batchnorm_statistics
from metalearn_tf.optimizers import OPTIMIZER_SETTINGS

__all__ = ["EpisodeDataset", "static_batches", "make_optimizer", "run_settings", "train",
           "main_train", "OPTIMIZER_SETTINGS"]


def run_settings() -> dict[str, Any]:
    """What a Keras run records in ``run.json`` besides its setup (the trainer and the
    distributed runner alike): the framework and how BatchNorm computes its statistics."""
    return {"framework": "keras", "batchnorm_statistics": batchnorm_statistics()}


def make_optimizer(cfg: TrainConfig) -> keras.optimizers.Optimizer:
    """The optimiser the trainer uses for ``cfg`` (``cfg.optimizer`` from the shared table).

    Kept with this signature for existing callers; it is
    :func:`metalearn_tf.optimizers.make_optimizer` ``(cfg.optimizer, lr=cfg.lr)``.
    """
    return optimizers.make_optimizer(cfg.optimizer, lr=cfg.lr)


class EpisodeDataset(keras.utils.PyDataset):
    """Item ``i`` = the batch of training step ``start + i``, as ``(inputs, target)`` numpy."""

    def __init__(self, model: keras.Model, sampler: Any, family: str, batch: int,
                 start: int, stop: int) -> None:
        super().__init__(workers=1, use_multiprocessing=False)
        self.model, self.sampler, self.family, self.batch = model, sampler, family, batch
        self.start, self.stop = start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i: int) -> tuple[Any, Any]:
        return self.model.inputs_and_target(
            T.step_batch(self.sampler, self.family, self.start + i, self.batch))


def static_batches(data: EpisodeDataset) -> tf.data.Dataset:
    """``data``'s items, in order, as the ``tf.data`` pipeline ``fit`` reads, with every
    element's shape static (all batches of a run have the shape of the first).

    ``fit`` on the :class:`EpisodeDataset` itself traces the step with the batch dimension
    unknown (Keras' adapter makes it ``None``), and that graph runs more ops per step:
    TensorFlow's profile of the LSTM trainer counts 2,943 executor node runs per step against
    2,459 with static shapes, and the step is ~15% faster (``docs/benchmarks.md``). Each
    item is drawn when its step asks for it, not ahead: the sampler is under 1% of a step
    (the benchmarks' sampler share), and nothing a step does can reach a batch drawn early.
    """
    spec = tf.nest.map_structure(
        lambda a: tf.TensorSpec(np.shape(a), tf.as_dtype(np.asarray(a).dtype)), data[0])
    steps = tf.data.Dataset.from_generator(lambda: (data[i] for i in range(len(data))),
                                           output_signature=spec)
    return steps.apply(tf.data.experimental.assert_cardinality(len(data)))


def _accuracy_metric(model: keras.Model) -> Any:
    """The model's ``batch_accuracy`` (the spec's, on device) as a Keras metric function."""

    def accuracy(y_true: Any, y_pred: Any) -> Any:
        return model.batch_accuracy(y_pred, y_true)

    return accuracy


class _RunCallback(keras.callbacks.Callback):
    """Writes the shared CSV log and the canonical checkpoint + optimiser state; stops on
    Ctrl-C (after the current step, with a checkpoint) and on a nan/inf loss (without one).

    The metrics are reset after every batch, so ``logs`` hold that one step's loss and
    accuracy (Keras would report running means since the start of ``fit``); the log row is
    the mean of the steps since the last row, as in the torch trainer. Those per-step values
    go into the optimiser-state file at each checkpoint, so a resumed run writes the same
    rows as an uninterrupted one.
    """

    def __init__(self, setup: T.TrainSetup, start: int, log: T.CSVLog, stop: T.StopRequest,
                 window: dict[str, list[float]]) -> None:
        super().__init__()
        self.setup, self.start, self.log, self.stop = setup, start, log, stop
        self.losses = list(window.get("losses", []))
        self.accs = list(window.get("accuracies", []))
        self.done = start
        self.saved: int | None = start or None
        self.failure: T.NonFiniteLoss | None = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        cfg = self.setup.train
        self.done = done = self.start + batch + 1
        loss, acc = float(logs["loss"]), float(logs["accuracy"])
        self.model.reset_metrics()
        if not np.isfinite(loss):
            self.failure = T.NonFiniteLoss(loss, done, self.setup.files.checkpoint, self.saved)
            self.model.stop_training = True
            return
        self.losses.append(np.float32(loss))
        self.accs.append(np.float32(acc))
        if done % cfg.log_every == 0 or done == cfg.steps:
            self.log.log(done, float(np.mean(self.losses, dtype=np.float64)),
                         float(np.mean(self.accs, dtype=np.float64)))
            self.losses.clear()
            self.accs.clear()
        if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.steps \
                or self.stop.requested:
            self.save()
        if self.stop.requested:
            self.model.stop_training = True

    def save(self) -> None:
        cfg = self.setup.train
        if not all(np.isfinite(np.asarray(v)).all() for v in self.model.weights
                   if np.issubdtype(np.asarray(v).dtype, np.floating)):
            self.failure = T.NonFiniteWeights(self.done, self.setup.files.checkpoint, self.saved)
            self.model.stop_training = True
            return
        save_checkpoint(self.model, self.setup.files.checkpoint, step=self.done, seed=cfg.seed,
                        data=self.setup.data, episode_stream="episode s = f(seed, s)")
        _save_train_state(self.model.optimizer, self.setup.files.train_state, self.done,
                          {"losses": [float(v) for v in self.losses],
                           "accuracies": [float(v) for v in self.accs]})
        self.saved = self.done


def _save_train_state(opt: keras.optimizers.Optimizer, path: Path, step: int,
                      window: dict[str, list[float]] | None = None) -> None:
    """Optimiser variables (iteration count, moments) as safetensors; never pickled.

    ``window``: the per-step losses and accuracies since the last ``log.csv`` row.
    """
    from metalearn_shared.weights import save_canonical

    arrays = {f"{i:04d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(opt.variables)}
    save_canonical(path, arrays, {"step": step, "paths": [v.path for v in opt.variables],
                                  "framework": "keras", "window": window or {}})


def _load_train_state(model: keras.Model, path: Path, lr: float | None = None
                      ) -> tuple[int, dict[str, list[float]]]:
    """The optimiser state of ``path`` into ``model.optimizer``; returns ``(step, window)``.
    ``lr``: the learning rate to continue at (the trainer's ``--lr``; a note on stderr when it
    differs from the state's, whose variables include ``learning_rate``); ``None`` keeps the
    state's."""
    from metalearn_shared.weights import load_canonical

    arrays, meta = load_canonical(path)
    opt = model.optimizer
    opt.build(model.trainable_variables)
    if len(opt.variables) != len(arrays):
        raise ValueError(f"{path}: optimiser state has {len(arrays)} variables, this optimiser "
                         f"{len(opt.variables)}; was the run trained with another --optimizer?")
    for i, v in enumerate(opt.variables):
        v.assign(arrays[f"{i:04d}"])
    if lr is not None:
        T.note_resumed_lr(float(keras.ops.convert_to_numpy(opt.learning_rate)), lr,
                          int(meta["step"]))
        opt.learning_rate = lr  # assigns the variable
    return int(meta["step"]), meta.get("window") or {}


def train(model: keras.Model, setup: T.TrainSetup, resume: bool = False, compile: bool = False,
          progress: bool | None = None) -> dict[str, Any]:
    """Train ``model`` for ``setup.train.steps`` steps with ``fit()``; write log, checkpoints, curves.

    Ctrl-C stops after the current step with a checkpoint at that step (``--resume``
    continues exactly); a nan/inf loss stops training with :class:`~metalearn_shared.
    training.NonFiniteLoss` naming the step, and no checkpoint of the bad weights is written.

    Args:
        compile: XLA (``jit_compile=True``); ``fit`` always runs under ``tf.function``.
        progress: Keras' progress bar (default: when stdout is a terminal; otherwise one
            line per log interval).

    Returns:
        ``{"steps": last step trained, "final_loss": ..., "interrupted": bool}``.
    """
    cfg, files = setup.train, setup.files
    if cfg.steps < 1:
        raise ValueError(f"--steps must be at least 1; got {cfg.steps}.")
    files.root.mkdir(parents=True, exist_ok=True)
    model.compile(optimizer=make_optimizer(cfg), loss=model.make_loss(),
                  metrics=[_accuracy_metric(model)], jit_compile=compile)
    start, window = 0, {}
    if resume:
        set_canonical(model, files.resume_weights())
        start, window = _load_train_state(model, files.train_state, lr=cfg.lr)
    T.write_json(files.config, {**setup.describe(), **run_settings()})
    bar_on = T.interactive() if progress is None else progress
    log = T.CSVLog(files.log, "keras", resume_step=start if resume else None,
                   echo=not bar_on, total_steps=cfg.steps)
    done = start
    if start < cfg.steps:
        data = EpisodeDataset(model, T.train_sampler(setup), setup.family, cfg.batch, start, cfg.steps)
        with T.interruptible() as stop:
            run = _RunCallback(setup, start, log, stop, window)
            model.fit(static_batches(data), epochs=1, verbose=1 if bar_on else 0, shuffle=False,
                      callbacks=[run])
        if run.failure is not None:
            raise run.failure
        done = run.done
    T.plot_curves([files.log], files.curves, labels=["keras"])
    d = T.read_log(files.log)
    return {"steps": done, "final_loss": float(d["loss"][-1]) if len(d["loss"]) else float("nan"),
            "interrupted": done < cfg.steps}


def main_train(args: Any) -> int:
    """``metalearn train --framework keras …`` in one process (the backend sends a run with
    ``--distribute`` or ``--meta-batch`` to :func:`metalearn_tf.distributed.main_train`)."""
    setup = T.setup_from_args(args)
    model = build_model(setup.model_config, seed=setup.train.seed)
    result = train(model, setup, resume=args.resume, compile=args.compile)
    save_keras(model, setup.files.root / "model.keras", {"step": result["steps"], "data": setup.data})
    if result["interrupted"]:
        print(T.interrupted_message(setup, result["steps"]), file=sys.stderr)
        return 130
    print(f"keras: trained {setup.model_config.model} for {result['steps']} steps; "
          f"final loss {result['final_loss']:.4f}; run folder {setup.files.root}")
    if args.eval_episodes:
        from metalearn_tf.evaluate import evaluate_model

        print(json.dumps(evaluate_model(model, setup, args.eval_episodes), indent=1))
    return 0
