"""Keras training: ``compile()`` / ``fit()`` on a ``keras.utils.PyDataset`` over the shared sampler.

Mirror of ``metalearn_torch/train.py``. What is not a tensor operation (configs, data
splits, which episode feeds step ``s``, the CSV log, the run folder) is shared, in
:mod:`metalearn_shared.training`. Step ``s`` always trains on episode/batch ``s`` of the
seeded sampler, so ``N`` steps + ``--resume`` + ``M`` steps equals ``N + M`` steps.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from metalearn_shared import training as T
from metalearn_shared.config import TrainConfig
from metalearn_tf import optimizers
from metalearn_tf.checkpoint import save_checkpoint, save_keras, set_canonical
from metalearn_tf.models import build_model
from metalearn_tf.optimizers import OPTIMIZER_SETTINGS

__all__ = ["EpisodeDataset", "make_optimizer", "train", "main_train", "OPTIMIZER_SETTINGS"]


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


def _accuracy_metric(config: Any) -> Any:
    """Keras mirror of :func:`metalearn_shared.training.batch_accuracy`."""

    def accuracy(y_true: Any, y_pred: Any) -> Any:
        if config.model == "siamese":
            same = y_pred < config.margin / 2 if config.head == "contrastive" else y_pred > 0
            return ops.mean(ops.cast(ops.equal(same, y_true > 0), "float32"))
        pred = ops.argmax(y_pred, axis=-1)
        return ops.mean(ops.cast(ops.equal(pred, ops.cast(y_true, pred.dtype)), "float32"))

    return accuracy


class _RunCallback(keras.callbacks.Callback):
    """Writes the shared CSV log and the canonical checkpoint + optimiser state.

    Keras reports running means since the start of the epoch; the window mean of the last
    ``log_every`` steps is recovered from two running means (``(m_k k - m_j j) / (k - j)``).
    """

    def __init__(self, setup: T.TrainSetup, start: int, log: T.CSVLog) -> None:
        super().__init__()
        self.setup, self.start, self.log = setup, start, log
        self.prev = (0, 0.0, 0.0)  # (batches, loss sum, accuracy sum) at the last log

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        cfg = self.setup.train
        done = self.start + batch + 1
        k = batch + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            loss_sum, acc_sum = logs["loss"] * k, logs["accuracy"] * k
            j, l0, a0 = self.prev
            self.log.log(done, (loss_sum - l0) / (k - j), (acc_sum - a0) / (k - j))
            self.prev = (k, loss_sum, acc_sum)
        if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.steps:
            save_checkpoint(self.model, self.setup.files.checkpoint, step=done, seed=cfg.seed,
                            episode_stream="episode s = f(seed, s)")
            _save_train_state(self.model.optimizer, self.setup.files.train_state, done)


def _save_train_state(opt: keras.optimizers.Optimizer, path: Path, step: int) -> None:
    """Optimiser variables (iteration count, moments) as safetensors; never pickled."""
    from metalearn_shared.weights import save_canonical

    arrays = {f"{i:04d}": keras.ops.convert_to_numpy(v) for i, v in enumerate(opt.variables)}
    save_canonical(path, arrays, {"step": step, "paths": [v.path for v in opt.variables],
                                  "framework": "keras"})


def _load_train_state(model: keras.Model, path: Path) -> int:
    from metalearn_shared.weights import load_canonical

    arrays, meta = load_canonical(path)
    opt = model.optimizer
    opt.build(model.trainable_variables)
    if len(opt.variables) != len(arrays):
        raise ValueError(f"{path}: optimiser state has {len(arrays)} variables, this optimiser "
                         f"{len(opt.variables)}; was the run trained with another --optimizer?")
    for i, v in enumerate(opt.variables):
        v.assign(arrays[f"{i:04d}"])
    return int(meta["step"])


def train(model: keras.Model, setup: T.TrainSetup, resume: bool = False, compile: bool = False,
          progress: bool = True) -> dict[str, Any]:
    """Train ``model`` for ``setup.train.steps`` steps with ``fit()``; write log, checkpoints, curves.

    Args:
        compile: XLA (``jit_compile=True``); ``fit`` always runs under ``tf.function``.
    """
    cfg, files = setup.train, setup.files
    files.root.mkdir(parents=True, exist_ok=True)
    model.compile(optimizer=make_optimizer(cfg), loss=model.make_loss(),
                  metrics=[_accuracy_metric(model.config)], jit_compile=compile)
    start = 0
    if resume:
        set_canonical(model, files.resume_weights())
        start = _load_train_state(model, files.train_state)
    T.write_json(files.config, {**setup.describe(), "framework": "keras"})
    log = T.CSVLog(files.log, "keras", resume_step=start if resume else None)
    if start < cfg.steps:
        data = EpisodeDataset(model, T.train_sampler(setup), setup.family, cfg.batch, start, cfg.steps)
        hist = model.fit(data, epochs=1, verbose=1 if progress else 0, shuffle=False,
                         callbacks=[keras.callbacks.TerminateOnNaN(), _RunCallback(setup, start, log)])
        if model.stop_training and not np.isfinite(hist.history["loss"][-1]):
            raise FloatingPointError("loss became nan/inf; lower --lr. The last checkpoint is untouched.")
    T.plot_curves([files.log], files.curves, labels=["keras"])
    d = T.read_log(files.log)
    return {"steps": cfg.steps, "final_loss": float(d["loss"][-1]) if len(d["loss"]) else float("nan")}


def main_train(args: Any) -> int:
    """``metalearn train --framework tf …`` (with ``--distribute`` or ``--meta-batch``:
    :func:`metalearn_tf.distributed.main_train`)."""
    from metalearn_tf import distributed

    if distributed.requested(args):
        return distributed.main_train(args)
    setup = T.setup_from_args(args, "keras")
    model = build_model(setup.model_config, seed=setup.train.seed)
    result = train(model, setup, resume=args.resume, compile=args.compile)
    save_keras(model, setup.files.root / "model.keras", {"step": setup.train.steps})
    print(f"keras: trained {setup.model_config.model} for {result['steps']} steps; "
          f"final loss {result['final_loss']:.4f}; run folder {setup.files.root}")
    if args.eval_episodes:
        from metalearn_tf.evaluate import evaluate_model

        print(json.dumps(evaluate_model(model, setup, args.eval_episodes), indent=1))
    return 0
