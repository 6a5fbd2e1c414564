"""Which episodes each rank trains on: the framework-free half of multi-process training.

Both distributed trainers (``metalearn_torch/distributed.py`` on ``torch.distributed``,
``metalearn_tf/distributed.py`` on ``tf.distribute``) split a step the same way, by these
rules, so ``W`` ranks compute the step one process computes:

* **The meta-batch.** Step ``s`` trains on the ``E`` episodes ``s*E .. s*E + E - 1`` of the
  seeded sampler (episode ``i`` is a pure function of ``(seed, i)``). Sequence models
  (MANN, LSTM): ``E = --batch`` — exactly the batch one process already uses. Few-shot
  models (ProtoNet): ``E = --meta-batch`` (default 1, the one-process trainer's episode per
  step); each episode is its own forward pass (its own BatchNorm batch) and the step's loss
  is the mean of the ``E`` episode losses.
* **The split.** Rank ``r`` of ``W`` takes the episodes ``i ≡ r (mod W)`` of its step, ``E/W``
  of them; ``W`` must divide ``E`` so every rank's share has the same weight and the mean of
  the ranks' mean losses (what DDP's and ``tf.distribute``'s gradient averaging computes)
  *is* the step's mean loss.
* **BatchNorm statistics** (ProtoNet's Conv4): each episode's running-statistics update
  starts from the step's starting statistics, and the step keeps their mean — one EMA update
  with the mean of the episode batch statistics. That is linear, so the ranks' means
  averaged across ranks equal the one-process value; with ``E = 1`` it is the ordinary
  update.
* **Pairs** (Siamese): the whole pair batch is one BatchNorm batch, which no split of the
  pairs preserves, so Siamese networks train in one process only.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FAMILIES", "meta_batch_size", "check_split", "step_episodes", "rank_episodes",
           "rank_batches", "tiny_setup", "free_ports"]

#: Episode families the distributed trainers can split.
FAMILIES = ("fewshot", "sequence")


def meta_batch_size(family: str, batch: int, meta_batch: int | None) -> int:
    """``E``, the episodes of one step: ``batch`` for sequence models, ``meta_batch`` (default
    1) for few-shot models.

    Raises:
        ValueError: for pairs, or a sequence model given a ``meta_batch`` other than ``batch``.
    """
    if family not in FAMILIES:
        raise ValueError(f"distributed training splits episodes of the families {FAMILIES}; "
                         f"found {family!r} (a Siamese pair batch is one BatchNorm batch, "
                         "which no split preserves). Train it in one process.")
    if family == "sequence":
        if meta_batch not in (None, batch):
            raise ValueError(f"--meta-batch {meta_batch}: a sequence model's meta-batch is its "
                             f"--batch ({batch}); set --batch instead.")
        return batch
    return meta_batch or 1


def check_split(meta_batch: int, world: int) -> None:
    """Raise unless ``world`` ranks can share ``meta_batch`` episodes equally."""
    if world < 1 or meta_batch < 1 or meta_batch % world:
        raise ValueError(f"a meta-batch of {meta_batch} episodes does not split over {world} "
                         f"ranks/replicas; use a meta-batch that is a multiple of {world} "
                         "(--meta-batch for few-shot models, --batch for sequence models).")


def step_episodes(step: int, meta_batch: int) -> range:
    """The episode indices of step ``step``: ``step*E .. step*E + E - 1``."""
    return range(step * meta_batch, (step + 1) * meta_batch)


def rank_episodes(step: int, meta_batch: int, rank: int, world: int) -> list[int]:
    """The episodes rank ``rank`` of ``world`` trains on at ``step``: those ``i ≡ rank (mod world)``.

    Returns:
        ``meta_batch // world`` indices, ascending.
    """
    check_split(meta_batch, world)
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is outside 0 .. {world - 1}.")
    return [i for i in step_episodes(step, meta_batch) if i % world == rank]


def rank_batches(sampler: Any, family: str, step: int, meta_batch: int, rank: int,
                 world: int) -> list[Any]:
    """The numpy batches rank ``rank`` feeds through its model at ``step``.

    Few-shot: one ``FewShotEpisode`` per episode of :func:`rank_episodes` (each its own
    forward pass). Sequence: one ``SequenceEpisode`` batch stacking those episodes (``(B/W,
    T, ...)``); with ``world = 1`` it equals ``sampler.batch(step*B, B)``, the one-process
    trainer's batch.
    """
    index = rank_episodes(step, meta_batch, rank, world)
    if family == "fewshot":
        return [sampler.episode(i) for i in index]
    parts = [sampler.batch(i, 1) for i in index]
    return [type(parts[0])(*(np.concatenate(f, axis=0) for f in zip(*parts, strict=True)))]


def equivalence_models() -> list[str]:
    """The models the equivalence checks run by default: per family that splits a
    meta-batch (:data:`FAMILIES`), the registered model whose tiny parity case has the most
    weight arrays — the most for a split to get wrong."""
    from metalearn_shared import models

    def arrays(spec: Any) -> int:
        return len(spec.param_spec(spec.parity_cases(True)[0].config))

    return [max(specs, key=arrays).name for f in FAMILIES if (specs := models.specs(f))]


def tiny_setup(name: str, seed: int, meta_batch: int, root: Path, framework: str) -> Any:
    """The equivalence checks' run: model ``name`` at its tiny parity configuration
    (``spec.parity_cases(tiny=True)[0]``), 5-way 1-shot with 2 queries (sequences: 3
    presentations per class), plain SGD at 0.1, ``meta_batch`` episodes per step.

    Returns:
        A :class:`metalearn_shared.training.TrainSetup`.
    """
    from dataclasses import replace

    from metalearn_shared import models, registry
    from metalearn_shared import training as T

    spec = models.get(name)
    config = spec.parity_cases(True)[0].config
    args = argparse.Namespace(**{
        "model": name, "dataset": "glyphs", "data_dir": None, "rotations": False, "seed": seed,
        "steps": 3, "batch": meta_batch, "lr": 0.1, "optimizer": "sgd",
        "ways": registry.PARITY_WAYS, "shots": 1, "queries": 2, "samples_per_class": 3,
        "out": str(root / name), **spec.args_from_config(config)})
    return replace(T.setup_from_args(args), model_config=config)


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on 127.0.0.1 now, for local rendezvous (torchrun's
    master port, ``TF_CONFIG`` workers): loopback only, never another address."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()
