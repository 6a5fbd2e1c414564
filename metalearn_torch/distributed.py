"""PyTorch meta-training over several processes: ``DistributedDataParallel`` under ``torchrun``.

Mirror of ``metalearn_tf/distributed.py``. Which episodes a rank trains on, and how a step
splits, is framework-free (:mod:`metalearn_shared.distributed`): step ``s`` is the
meta-batch of ``E`` episodes ``s*E .. s*E + E - 1``, rank ``r`` of ``W`` takes those
``i ≡ r (mod W)``. Launch::

    python -m torch.distributed.run --nproc-per-node 2 -m metalearn_shared.cli train \\
        --framework torch --model protonet --meta-batch 4 --steps 1000 --out runs/pn

Gradients are averaged across ranks by DDP (gloo on CPU, NCCL on CUDA), its all-reduce
overlapping the backward pass; a rank's several episodes accumulate under ``no_sync()`` so
DDP communicates once per step. A learner whose meta-gradient needs double backward (a
second-order learner: ``create_graph=True`` through an inner loop) cannot use DDP — its
autograd hooks fire on the first backward, not on the meta-gradient — so ``mode="allreduce"``
keeps the model unwrapped and all-reduces the finished gradients explicitly
(``torch.distributed.all_reduce``). BatchNorm running statistics are averaged across ranks
explicitly too (see :mod:`metalearn_shared.distributed`), never DDP's broadcast from rank 0.

Rank 0 alone writes the log, the checkpoint and the optimiser state (each atomically); every
rank reads them on ``--resume``, so a run resumes on any world size.

``python -m torch.distributed.run --nproc-per-node 2 -m metalearn_torch.distributed --out
eq.json`` runs the teacher-forced equivalence check (:func:`teacher_forced_equivalence`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from metalearn_shared import distributed as D
from metalearn_shared import training as T
from metalearn_torch.models import objective

__all__ = ["DistContext", "MODES", "init_from_env", "shutdown", "requested", "wrap",
           "meta_step", "train_distributed", "main_train", "teacher_forced_equivalence", "main"]

#: How gradients are averaged: DDP's bucketed all-reduce, or an explicit one after backward.
MODES = ("ddp", "allreduce")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job.

    Attributes:
        rank, world: rank ``0 .. world-1`` and the number of processes.
        device: where the model lives (``cuda:LOCAL_RANK`` under NCCL, else CPU).
    """

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(backend: str | None = None, timeout_s: float = 300.0) -> DistContext:
    """Join the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ``MASTER_*``).

    One process (no ``WORLD_SIZE``, or 1) gets a context without a process group.

    Args:
        backend: ``"gloo"`` or ``"nccl"``; default NCCL when CUDA is available, else gloo.
        timeout_s: how long a collective may wait for a missing rank before failing.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    device = torch.device("cpu")
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s))
    return DistContext(dist.get_rank(), dist.get_world_size(), device)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (after a barrier, so no rank exits while another writes)."""
    if ctx.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def requested(args: Any) -> bool:
    """Whether ``metalearn train`` should use this trainer: launched by ``torchrun`` with
    several processes, or given ``--meta-batch`` above 1."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 or (getattr(args, "meta_batch", None) or 1) > 1


def wrap(model: nn.Module, ctx: DistContext, mode: str = "ddp") -> nn.Module:
    """The module the step calls: ``DistributedDataParallel(model)`` for ``mode="ddp"`` with
    several ranks, else ``model`` itself. Buffers are not broadcast (see :func:`meta_step`)."""
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: expected one of {MODES}.")
    if ctx.world == 1 or mode == "allreduce":
        return model
    ids = [ctx.device.index] if ctx.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, forward_sync_buffers=False)


def _float_buffers(model: nn.Module) -> list[torch.Tensor]:
    return [b for b in model.buffers() if b.is_floating_point()]


def meta_step(model: nn.Module, wrapped: nn.Module, opt: torch.optim.Optimizer,
              batches: Sequence[Any], ctx: DistContext, mode: str = "ddp"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimiser step on this rank's share of a meta-batch; every rank calls it.

    Args:
        model: the bare model (its ``inputs_and_target`` / ``make_loss``).
        wrapped: :func:`wrap` ``(model)``.
        batches: :func:`metalearn_shared.distributed.rank_batches` of this rank (equal
            lengths on every rank).

    Returns:
        ``(loss, accuracy)`` of the whole meta-batch (mean over ranks), 0-d tensors.
    """
    loss_fn = model.make_loss()
    n = len(batches)
    buffers = _float_buffers(model)
    start = [b.detach().clone() for b in buffers]
    total = [torch.zeros_like(b) for b in buffers]
    opt.zero_grad(set_to_none=True)
    stats = torch.zeros(2, device=ctx.device)  # (loss, accuracy) sums
    for j, batch in enumerate(batches):
        with torch.no_grad():  # every episode's BN update starts from the step's statistics
            for b, s in zip(buffers, start, strict=True):
                b.copy_(s)
        inputs, target = model.inputs_and_target(batch)
        sync = isinstance(wrapped, DistributedDataParallel) and j < n - 1
        with wrapped.no_sync() if sync else contextlib.nullcontext():
            loss, output = objective(model, inputs, target, loss_fn, wrapped)
            (loss / n).backward()
        with torch.no_grad():
            for t, b in zip(total, buffers, strict=True):
                t += b
            stats += torch.stack([loss.detach(), model.batch_accuracy(output.detach(), target)])
    with torch.no_grad():
        for b, t in zip(buffers, total, strict=True):
            b.copy_(t / n)  # the mean of the episodes' updates
    if ctx.world > 1:
        flat = [torch.cat([b.reshape(-1) for b in buffers])] if buffers else []
        if mode == "allreduce":  # explicit meta-gradient average (second-order learners)
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            flat.append(torch.cat([g.reshape(-1) for g in grads]))
        for t in (*flat, stats):
            dist.all_reduce(t)  # SUM: gloo has no AVG
        if buffers:
            _unflatten(flat[0] / ctx.world, buffers)
        if mode == "allreduce":
            _unflatten(flat[-1] / ctx.world, grads)
    opt.step()
    loss, acc = stats / (n * ctx.world)
    return loss, acc


def _unflatten(flat: torch.Tensor, into: Sequence[torch.Tensor]) -> None:
    offset = 0
    with torch.no_grad():
        for t in into:
            t.copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def train_distributed(model: nn.Module, setup: T.TrainSetup, meta_batch: int | None = None,
                      resume: bool = False, progress: bool = True, ctx: DistContext | None = None,
                      mode: str = "ddp") -> dict[str, Any]:
    """:func:`metalearn_torch.train.train` over ``ctx.world`` ranks (or one, with a meta-batch).

    Same run folder, log columns and checkpoints as the one-process trainer; rank 0 writes
    them. Step ``s`` of any world size trains on the same ``E`` episodes.

    Args:
        meta_batch: few-shot models' episodes per step (default 1); sequence models use
            ``setup.train.batch``.
        ctx: :func:`init_from_env` (default: one process).
        mode: ``"ddp"`` or ``"allreduce"`` (:data:`MODES`).

    Returns:
        ``{"steps": ..., "final_loss": ..., "meta_batch": ..., "world": ...}``.
    """
    from metalearn_torch.checkpoint import save_checkpoint, set_canonical
    from metalearn_torch.train import (
        _load_train_state,
        _save_train_state,
        make_optimizer,
        run_settings,
    )

    ctx = ctx or DistContext()
    cfg, files = setup.train, setup.files
    e = D.meta_batch_size(setup.family, cfg.batch, meta_batch)
    D.check_split(e, ctx.world)
    model.to(ctx.device)
    opt = make_optimizer(model.parameters(), cfg)
    start = 0
    if resume:  # the files are global, so any world size resumes them
        set_canonical(model, files.resume_weights())
        start, _window = _load_train_state(opt, files.train_state, lr=cfg.lr)
    wrapped = wrap(model, ctx, mode)
    log = None
    if ctx.is_main:
        files.root.mkdir(parents=True, exist_ok=True)
        T.write_json(files.config, {**setup.describe(), **run_settings(), "meta_batch": e,
                                    "world": ctx.world, "distributed_mode": mode})
        log = T.CSVLog(files.log, "torch", resume_step=start if resume else None)
    sampler = T.train_sampler(setup)
    model.train()
    from tqdm import tqdm

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps,
               desc=f"torch train ×{ctx.world}", disable=not (progress and ctx.is_main))
    sums, n, last_loss = torch.zeros(2), 0, float("nan")
    for step in bar:
        batches = D.rank_batches(sampler, setup.family, step, e, ctx.rank, ctx.world)
        loss, acc = meta_step(model, wrapped, opt, batches, ctx, mode)
        sums += torch.stack([loss, acc]).detach().cpu()
        n += 1
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            last_loss, mean_acc = (float(v) / n for v in sums)
            if not np.isfinite(last_loss):
                raise FloatingPointError(f"loss became {last_loss} at step {done}; "
                                         "lower --lr. The last checkpoint is untouched.")
            if log is not None:
                log.log(done, last_loss, mean_acc)
            bar.set_postfix(loss=f"{last_loss:.4f}", acc=f"{mean_acc:.3f}")
            sums.zero_()
            n = 0
        if ((cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.steps) \
                and ctx.is_main:  # atomic writes (safetensors through atomic_write)
            save_checkpoint(model, files.checkpoint, step=done, seed=cfg.seed, meta_batch=e,
                            world=ctx.world, episode_stream="step s = episodes s*E .. s*E+E-1")
            _save_train_state(opt, files.train_state, done)
    bar.close()
    if ctx.is_main and files.log.exists():
        T.plot_curves([files.log], files.curves, labels=[f"torch ×{ctx.world}"])
    return {"steps": cfg.steps, "final_loss": last_loss, "meta_batch": e, "world": ctx.world}


def main_train(args: Any) -> int:
    """``metalearn train --framework torch …`` under ``torchrun`` or with ``--meta-batch``."""
    from metalearn_torch.models import build_model

    if getattr(args, "memory_format", "auto") not in ("auto", "contiguous"):
        raise ValueError(f"--memory-format {args.memory_format}: the distributed trainer (torchrun "
                         "or --meta-batch) trains contiguous (NCHW) weights only (channels-last "
                         "was neither measured nor tested there). Drop the option, or train in "
                         "one process without --meta-batch.")
    ctx = init_from_env()
    try:
        setup = T.setup_from_args(args)
        model = build_model(setup.model_config, seed=setup.train.seed)
        # A learner that needs it (double backward, or an objective that does not run the
        # wrapped forward) names its mode; DDP otherwise.
        result = train_distributed(model, setup, getattr(args, "meta_batch", None),
                                   resume=args.resume, ctx=ctx,
                                   mode=getattr(model, "distributed_mode", "ddp"))
        if ctx.is_main:
            print(f"torch: trained {setup.model_config.model} for {result['steps']} steps on "
                  f"{ctx.world} process(es), meta-batch {result['meta_batch']}; final loss "
                  f"{result['final_loss']:.4f}; run folder {setup.files.root}")
            if args.eval_episodes:
                from metalearn_torch.evaluate import evaluate_model

                print(json.dumps(evaluate_model(model, setup, args.eval_episodes), indent=1))
    finally:
        shutdown(ctx)
    return 0


# -- the equivalence check ------------------------------------------------------------------
def teacher_forced_equivalence(ctx: DistContext, models: Sequence[str] | None = None,
                               steps: int = 3, meta_batch: int = 4, seed: int = 0,
                               modes: Sequence[str] = MODES) -> dict[str, Any]:
    """``ctx.world`` ranks against one process, step by step from identical weights.

    Every rank also computes the one-process step (all ``E`` episodes, no communication) on
    its own copy of the model, so no files move. Step ``k`` of both starts from the
    one-process weights after step ``k-1`` (teacher forcing, as in :mod:`metalearn_shared.parity`);
    the weights after it are compared under the tolerance table's ``"step"`` entry (plus
    ``EVENT_SHARE`` of the update, as parity allows), and the gradients under ``"grad"``.
    Plain SGD, so a step is its gradient: the comparison sees the gradient's summation order
    and nothing else.

    Returns:
        ``{"world", "meta_batch", "cases": [{"model", "mode", "step", "weights": Measure,
        "grads": Measure}], "passed"}`` (measures as dicts; worst over tensors).
    """
    import tempfile
    from dataclasses import asdict

    from metalearn_shared.tolerances import EVENT_SHARE, measure
    from metalearn_torch.models import build_model
    from metalearn_torch.train import make_optimizer

    cases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models or D.equivalence_models():
            setup = D.tiny_setup(name, seed, meta_batch, Path(tmp), "torch")
            e = D.meta_batch_size(setup.family, setup.train.batch, meta_batch)
            sampler = T.train_sampler(setup)
            for mode in modes:
                ref = build_model(setup.model_config, seed=seed).to(ctx.device).train()
                ref_opt = make_optimizer(ref.parameters(), setup.train)
                model = copy.deepcopy(ref)
                opt = make_optimizer(model.parameters(), setup.train)
                wrapped = wrap(model, ctx, mode)
                for k in range(steps):
                    before = {n: t.detach().clone() for n, t in ref.state_dict().items()}
                    one = DistContext(0, 1, ctx.device)
                    meta_step(ref, ref, ref_opt, D.rank_batches(sampler, setup.family, k, e, 0, 1),
                              one, mode)
                    meta_step(model, wrapped, opt,
                              D.rank_batches(sampler, setup.family, k, e, ctx.rank, ctx.world),
                              ctx, mode)
                    worst: dict[str, Any] = {"weights": None, "grads": None}
                    params = dict(ref.named_parameters())
                    for pname, want in ref.state_dict().items():
                        if not want.is_floating_point():
                            continue
                        got = model.state_dict()[pname].cpu().numpy()
                        w = want.cpu().numpy()
                        allow = 0.0
                        if pname in params:
                            upd = np.abs(w - before[pname].cpu().numpy()).max()
                            allow = EVENT_SHARE * float(upd) / max(1.0, float(np.abs(w).max()))
                        m = measure(got, w, "step", scale=None, allow=allow)
                        if worst["weights"] is None or m.ratio > worst["weights"].ratio:
                            worst["weights"] = m
                        if pname in params:
                            g = measure(dict(model.named_parameters())[pname].grad.cpu().numpy(),
                                        params[pname].grad.cpu().numpy(), "grad", scale=None)
                            if worst["grads"] is None or g.ratio > worst["grads"].ratio:
                                worst["grads"] = g
                    cases.append({"model": name, "mode": mode, "step": k + 1,
                                  **{key: asdict(v) for key, v in worst.items()}})
                    model.load_state_dict(ref.state_dict())  # teacher forcing (SGD: no state)
    passed = all(c["weights"]["passed"] and c["grads"]["passed"] for c in cases)
    return {"world": ctx.world, "meta_batch": meta_batch, "cases": cases, "passed": passed}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m torch.distributed.run --nproc-per-node W -m metalearn_torch.distributed``."""
    p = argparse.ArgumentParser(prog="python -m metalearn_torch.distributed",
                                description="teacher-forced equivalence of W ranks and 1 process")
    p.add_argument("--out", default="equivalence-torch.json")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--meta-batch", type=int, default=4)
    p.add_argument("--models", nargs="+", default=None,
                   help="registered models (default: D.equivalence_models())")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    ctx = init_from_env()
    try:
        report = teacher_forced_equivalence(ctx, args.models, args.steps, args.meta_batch)
        if ctx.is_main:
            T.write_json(Path(args.out), report)
            for c in report["cases"]:
                print(f"{c['model']:9s} {c['mode']:9s} step {c['step']}: weights max|Δ| "
                      f"{c['weights']['max_abs']:.2e} (ratio {c['weights']['ratio']:.3f}), grads "
                      f"max|Δ| {c['grads']['max_abs']:.2e} (ratio {c['grads']['ratio']:.3f})")
    finally:
        shutdown(ctx)
    return 0 if report["passed"] else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
