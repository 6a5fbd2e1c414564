"""Keras meta-training over several replicas: ``tf.distribute`` with a custom training loop.

Mirror of ``metalearn_torch/distributed.py``. Which episodes a replica trains on is
framework-free (:mod:`metalearn_shared.distributed`): step ``s`` is the meta-batch of ``E``
episodes ``s*E .. s*E + E - 1``, replica ``r`` of ``W`` takes those ``i ≡ r (mod W)``.

* ``--distribute mirrored``: ``tf.distribute.MirroredStrategy`` over this host's GPUs, or,
  with ``--replicas N`` and no GPU, over ``N`` logical CPU devices.
* ``--distribute multiworker``: ``tf.distribute.MultiWorkerMirroredStrategy``; the hosts
  come from ``TF_CONFIG`` (worker 0 is the chief and writes the run folder).

Why not ``fit`` and why not ``keras.distribution``: Keras 3's ``keras.distribution`` API
supports the JAX backend only, and ``fit`` under ``MultiWorkerMirroredStrategy`` has open
Keras 3 bugs; a meta-batch of few-shot episodes is also not a batch ``fit`` could split (each
episode is its own forward pass and BatchNorm batch). So a short custom loop: ``strategy.run``
of one replica step inside ``tf.function``, each replica's episodes given by
``experimental_distribute_values_from_function``. The Keras optimiser all-reduces (sums) the
replicas' gradients itself in ``apply_gradients``, and a Keras ``Loss`` divides its value by
``W`` under ``tf.distribute`` (``keras.src.losses.loss.scale_loss_for_distribution``), so each
replica differentiates its episodes' mean loss as Keras returns it and the sum is the
meta-batch's mean — measured equal to one replica by the teacher-forced check. BatchNorm moving statistics: each episode's update starts from the
step's statistics, the replica returns their mean, and the step assigns the mean over
replicas (``strategy.reduce(MEAN)``) in cross-replica context.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from metalearn_shared import distributed as D
from metalearn_shared import training as T
from metalearn_tf.models import objective

__all__ = ["STRATEGIES", "make_strategy", "is_chief", "requested", "DistributedStep", "main",
           "train_distributed", "main_train", "teacher_forced_equivalence"]

#: ``--distribute`` values.
STRATEGIES = ("mirrored", "multiworker")


_CACHE: dict[tuple[str, int | None], tf.distribute.Strategy] = {}


def make_strategy(kind: str | None, replicas: int | None = None,
                  timeout_s: float = 300.0) -> tf.distribute.Strategy:
    """The strategy for ``--distribute kind``; call before TensorFlow runs any op.

    One strategy per ``(kind, replicas)`` and process: a second ``MirroredStrategy`` over
    the same devices would start a second set of collectives that the first one's confuse.

    Args:
        kind: ``"mirrored"``, ``"multiworker"`` or None (the default one-replica strategy).
        replicas: mirrored without GPUs: split the CPU into this many logical devices.
        timeout_s: multiworker collectives fail after this long instead of waiting forever.
    """
    if kind is None:
        return tf.distribute.get_strategy()
    if (kind, replicas) not in _CACHE:
        _CACHE[kind, replicas] = _new_strategy(kind, replicas, timeout_s)
    return _CACHE[kind, replicas]


def _new_strategy(kind: str, replicas: int | None, timeout_s: float) -> tf.distribute.Strategy:
    if kind == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError("--distribute multiworker needs TF_CONFIG (the cluster's workers "
                             "and this one's index); see docs/scaling.md.")
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=timeout_s)
        return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    if kind != "mirrored":
        raise ValueError(f"--distribute {kind!r}: expected one of {STRATEGIES}.")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus and not replicas:
        return tf.distribute.MirroredStrategy()
    n = replicas or 1
    if gpus:
        return tf.distribute.MirroredStrategy([f"/gpu:{i}" for i in range(n)])
    cpu = tf.config.list_physical_devices("CPU")[0]
    if n > 1:
        try:  # listing logical devices would start the runtime: try the split first
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)])
        except RuntimeError as e:
            if len(tf.config.list_logical_devices("CPU")) >= n:  # split earlier in this process
                return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])
            raise ValueError(f"--replicas {n}: TensorFlow started before the CPU could be "
                             "split into logical devices; pass --distribute before any "
                             "TensorFlow op runs (a fresh process).") from e
    return tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])


def is_chief() -> bool:
    """Worker 0 of ``TF_CONFIG`` (or a single process): the one that writes files."""
    config = json.loads(os.environ.get("TF_CONFIG", "{}"))
    task = config.get("task", {})
    return task.get("type", "worker") in ("worker", "chief") and int(task.get("index", 0)) == 0 \
        or task.get("type") == "chief"


def requested(args: Any) -> bool:
    """Whether ``metalearn train`` should use this trainer (``--distribute``, ``--meta-batch``)."""
    return bool(getattr(args, "distribute", None)) or (getattr(args, "meta_batch", None) or 1) > 1


class DistributedStep:
    """One optimiser step of a meta-batch over ``strategy``'s replicas.

    Args:
        model, optimizer: built under ``strategy.scope()``.
        strategy: any ``tf.distribute.Strategy`` (the default one = one process).
        family: the episode family (``"fewshot"`` or ``"sequence"``).
        meta_batch: ``E``; divisible by ``strategy.num_replicas_in_sync``.
    """

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                 strategy: tf.distribute.Strategy, family: str, meta_batch: int) -> None:
        self.model, self.optimizer, self.strategy = model, optimizer, strategy
        self.family, self.meta_batch = family, meta_batch
        self.world = strategy.num_replicas_in_sync
        D.check_split(meta_batch, self.world)
        self.loss_fn = model.make_loss()
        self.moving = [v for v in model.non_trainable_variables
                       if "moving" in v.path]  # BatchNorm statistics
        self._step = tf.function(self._cross_replica)

    def _replica(self, batches: Sequence[tuple[Any, Any]]) -> tuple[Any, Any, list[Any]]:
        model, n = self.model, len(batches)
        start = [tf.identity(v.value) for v in self.moving]
        total = [tf.zeros_like(s) for s in start]
        loss_sum = tf.zeros(())
        acc_sum = tf.zeros(())
        with tf.GradientTape() as tape:
            for inputs, target in batches:
                for v, s in zip(self.moving, start, strict=True):
                    v.assign(s)  # every episode's update starts from the step's statistics
                loss, output = objective(model, inputs, target, self.loss_fn)
                loss_sum += loss
                acc_sum += model.batch_accuracy(output, target)
                total = [t + tf.identity(v.value) for t, v in zip(total, self.moving, strict=True)]
            scaled = loss_sum / n  # Keras' Loss already divided each by W (see module doc)
        grads = tape.gradient(scaled, model.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss_sum / n, acc_sum / n, [t / n for t in total]

    def _cross_replica(self, per_replica: Any) -> tuple[Any, Any]:
        loss, acc, stats = self.strategy.run(self._replica, args=(per_replica,))
        mean = tf.distribute.ReduceOp.MEAN
        for v, s in zip(self.moving, stats, strict=True):
            v.assign(self.strategy.reduce(mean, s, axis=None))
        total = tf.distribute.ReduceOp.SUM  # the replicas' losses arrive divided by W
        return self.strategy.reduce(total, loss, axis=None), self.strategy.reduce(mean, acc, axis=None)

    def __call__(self, sampler: Any, step: int) -> tuple[float, float]:
        """Train step ``step``; returns the meta-batch's mean ``(loss, accuracy)``."""
        def replica_batches(ctx: tf.distribute.InputContext) -> list[tuple[Any, Any]]:
            r = ctx.replica_id_in_sync_group
            return [self.model.inputs_and_target(b)
                    for b in D.rank_batches(sampler, self.family, step, self.meta_batch, r,
                                            self.world)]

        per_replica = self.strategy.experimental_distribute_values_from_function(replica_batches)
        loss, acc = self._step(per_replica)
        return float(loss), float(acc)


def train_distributed(model: keras.Model, setup: T.TrainSetup, strategy: tf.distribute.Strategy,
                      meta_batch: int | None = None, resume: bool = False,
                      progress: bool = True) -> dict[str, Any]:
    """:func:`metalearn_tf.train.train` over ``strategy``'s replicas; the chief writes the run.

    ``model`` must have been built under ``strategy.scope()``.
    """
    from metalearn_tf.checkpoint import save_checkpoint, set_canonical
    from metalearn_tf.train import (
        _load_train_state,
        _save_train_state,
        make_optimizer,
        run_settings,
    )

    cfg, files = setup.train, setup.files
    e = D.meta_batch_size(setup.family, cfg.batch, meta_batch)
    world = strategy.num_replicas_in_sync
    chief = is_chief()
    with strategy.scope():
        model.compile(optimizer=make_optimizer(cfg))
        model.optimizer.build(model.trainable_variables)
    start = 0
    if resume:
        set_canonical(model, files.resume_weights())
        start, _window = _load_train_state(model, files.train_state, lr=cfg.lr)
    step_fn = DistributedStep(model, model.optimizer, strategy, setup.family, e)
    log = None
    if chief:
        files.root.mkdir(parents=True, exist_ok=True)
        T.write_json(files.config, {**setup.describe(), **run_settings(), "meta_batch": e,
                                    "world": world, "strategy": type(strategy).__name__})
        log = T.CSVLog(files.log, "keras", resume_step=start if resume else None)
    sampler = T.train_sampler(setup)
    from tqdm import tqdm

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps,
               desc=f"keras train ×{world}", disable=not (progress and chief))
    sums, n, last_loss = np.zeros(2), 0, float("nan")
    for step in bar:
        sums += step_fn(sampler, step)
        n += 1
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            last_loss, mean_acc = sums / n
            if not np.isfinite(last_loss):
                raise FloatingPointError(f"loss became {last_loss} at step {done}; lower --lr. "
                                         "The last checkpoint is untouched.")
            if log is not None:
                log.log(done, float(last_loss), float(mean_acc))
            sums[:] = 0
            n = 0
        if ((cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.steps) \
                and chief:  # atomic writes (safetensors through atomic_write)
            save_checkpoint(model, files.checkpoint, step=done, seed=cfg.seed, meta_batch=e,
                            world=world, episode_stream="step s = episodes s*E .. s*E+E-1")
            _save_train_state(model.optimizer, files.train_state, done)
    bar.close()
    if chief and files.log.exists():
        T.plot_curves([files.log], files.curves, labels=[f"keras ×{world}"])
    return {"steps": cfg.steps, "final_loss": float(last_loss), "meta_batch": e, "world": world}


def main_train(args: Any) -> int:
    """``metalearn train --framework tf --distribute …`` (or ``--meta-batch``)."""
    from metalearn_tf.models import build_model

    strategy = make_strategy(getattr(args, "distribute", None), getattr(args, "replicas", None))
    setup = T.setup_from_args(args)
    with strategy.scope():
        model = build_model(setup.model_config, seed=setup.train.seed)
    result = train_distributed(model, setup, strategy, getattr(args, "meta_batch", None),
                               resume=args.resume)
    if is_chief():
        print(f"keras: trained {setup.model_config.model} for {result['steps']} steps on "
              f"{result['world']} replica(s), meta-batch {result['meta_batch']}; final loss "
              f"{result['final_loss']:.4f}; run folder {setup.files.root}")
    return 0


def teacher_forced_equivalence(strategy: tf.distribute.Strategy,
                               models: Sequence[str] | None = None, steps: int = 3,
                               meta_batch: int = 4, seed: int = 0) -> dict[str, Any]:
    """``strategy``'s replicas against one replica, step by step from identical weights.

    As :func:`metalearn_torch.distributed.teacher_forced_equivalence`: plain SGD, both start
    step ``k`` from the one-replica weights after step ``k-1``; weights under ``"step"`` (+
    ``EVENT_SHARE`` of the update for trainable ones), in canonical layout.
    """
    import tempfile
    from dataclasses import asdict

    from metalearn_shared.models import param_spec
    from metalearn_shared.tolerances import EVENT_SHARE, measure
    from metalearn_tf.checkpoint import get_canonical, set_canonical
    from metalearn_tf.models import build_model
    from metalearn_tf.train import make_optimizer

    one = tf.distribute.get_strategy()
    cases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models or D.equivalence_models():
            setup = D.tiny_setup(name, seed, meta_batch, Path(tmp), "keras")
            e = D.meta_batch_size(setup.family, setup.train.batch, meta_batch)
            trainable = {p.name for p in param_spec(setup.model_config) if p.trainable}
            sampler = T.train_sampler(setup)
            ref = build_model(setup.model_config, seed=seed)
            ref_step = DistributedStep(ref, make_optimizer(setup.train), one, setup.family, e)
            with strategy.scope():
                model = build_model(setup.model_config, seed=seed)
                opt = make_optimizer(setup.train)
                opt.build(model.trainable_variables)
            dist_step = DistributedStep(model, opt, strategy, setup.family, e)
            for k in range(steps):
                before = get_canonical(ref)
                set_canonical(model, before)  # teacher forcing (SGD: no optimiser state)
                ref_step(sampler, k)
                dist_step(sampler, k)
                want, got = get_canonical(ref), get_canonical(model)
                worst = None
                for pname, w in want.items():
                    allow = 0.0
                    if pname in trainable:
                        upd = float(np.abs(w - before[pname]).max())
                        allow = EVENT_SHARE * upd / max(1.0, float(np.abs(w).max()))
                    m = measure(got[pname], w, "step", scale=None, allow=allow)
                    if worst is None or m.ratio > worst.ratio:
                        worst = m
                cases.append({"model": name, "step": k + 1, "weights": asdict(worst)})
    passed = all(c["weights"]["passed"] for c in cases)
    return {"world": strategy.num_replicas_in_sync, "meta_batch": meta_batch,
            "strategy": type(strategy).__name__, "cases": cases, "passed": passed}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m metalearn_tf.distributed --replicas 2``: the teacher-forced check on
    ``MirroredStrategy`` (``--distribute multiworker`` under ``TF_CONFIG``)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m metalearn_tf.distributed",
                                description="teacher-forced equivalence of W replicas and 1")
    p.add_argument("--distribute", default="mirrored", choices=STRATEGIES)
    p.add_argument("--replicas", type=int, default=2)
    p.add_argument("--out", default="equivalence-tf.json")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--meta-batch", type=int, default=4)
    p.add_argument("--models", nargs="+", default=None,
                   help="registered models (default: D.equivalence_models())")
    args = p.parse_args(argv)
    strategy = make_strategy(args.distribute, args.replicas)
    report = teacher_forced_equivalence(strategy, args.models, args.steps, args.meta_batch)
    if is_chief():
        T.write_json(Path(args.out), report)
        for c in report["cases"]:
            print(f"{c['model']:9s} step {c['step']}: weights max|Δ| "
                  f"{c['weights']['max_abs']:.2e} (ratio {c['weights']['ratio']:.3f})")
    return 0 if report["passed"] else 1


if __name__ == "__main__":  # pragma: no cover
    import sys

    sys.exit(main())
