"""PyTorch training: a plain loop with ``tqdm``, ``torch.optim`` and optional ``torch.compile``.

Mirror of ``metalearn_tf/train.py``. What is not a tensor operation (configs, data splits,
which episode feeds step ``s``, the CSV log, the run folder) is shared, in
:mod:`metalearn_shared.training`. Step ``s`` always trains on episode/batch ``s`` of the
seeded sampler, so ``N`` steps + ``--resume`` + ``M`` steps equals ``N + M`` steps.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from metalearn_shared import training as T
from metalearn_shared.allocator import malloc_setting
from metalearn_shared.config import TrainConfig
from metalearn_torch import models, optimizers
from metalearn_torch.checkpoint import save_checkpoint, set_canonical
from metalearn_torch.models import build_model, objective
from metalearn_torch.optimizers import OPTIMIZER_SETTINGS

__all__ = ["make_optimizer", "run_settings", "train", "main_train", "OPTIMIZER_SETTINGS"]


def run_settings() -> dict[str, Any]:
    """What a torch run records in ``run.json`` besides its setup (the trainer and the
    distributed runner alike): the framework and the malloc setting applied at start."""
    return {"framework": "torch", "malloc": malloc_setting()}


def make_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser the trainer uses for ``cfg`` (``cfg.optimizer`` from the shared table).

    Kept with this signature for existing callers; it is
    :func:`metalearn_torch.optimizers.make_optimizer` ``(cfg.optimizer, params, lr=cfg.lr)``.
    """
    return optimizers.make_optimizer(cfg.optimizer, params, lr=cfg.lr)


def _save_train_state(opt: torch.optim.Optimizer, path: Path, step: int,
                      window: dict[str, list[float]] | None = None) -> None:
    """Optimiser state as safetensors (tensors) + JSON (hyper-parameters); never pickled.

    ``window``: the per-step losses and accuracies logged since the last ``log.csv`` row,
    so that a resumed run writes the same next row as an uninterrupted one.
    """
    from metalearn_shared.weights import save_canonical

    sd = opt.state_dict()
    arrays = {f"{i}.{k}": v.detach().cpu().numpy() for i, st in sd["state"].items()
              for k, v in st.items() if torch.is_tensor(v)}
    save_canonical(path, arrays, {"step": step, "param_groups": sd["param_groups"],
                                  "framework": "torch", "window": window or {}})


def _load_train_state(opt: torch.optim.Optimizer, path: Path, lr: float | None = None
                      ) -> tuple[int, dict[str, list[float]]]:
    """The optimiser state of ``path`` into ``opt``; returns ``(step, window)``. ``lr``: the
    learning rate to continue at (the trainer's ``--lr``; a note on stderr when it differs
    from the state's); ``None`` keeps the state's."""
    from metalearn_shared.weights import load_canonical

    arrays, meta = load_canonical(path)
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in arrays.items():
        i, k = key.split(".", 1)
        state.setdefault(int(i), {})[k] = torch.from_numpy(np.array(value))
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    optimizers.match_state_layout(opt)
    if lr is not None:
        T.note_resumed_lr(opt.param_groups[0]["lr"], lr, int(meta["step"]))
        for group in opt.param_groups:
            group["lr"] = lr
    return int(meta["step"]), meta.get("window") or {}


def train(model: nn.Module, setup: T.TrainSetup, resume: bool = False, compile: bool = False,
          progress: bool | None = None, memory_format: str = "auto") -> dict[str, Any]:
    """Train ``model`` for ``setup.train.steps`` steps; write log, checkpoints and curves.

    Ctrl-C stops after the current step with a checkpoint at that step (``--resume``
    continues exactly); a nan/inf loss stops training with :class:`~metalearn_shared.
    training.NonFiniteLoss` naming the step, and no checkpoint of the bad weights is written.

    Args:
        progress: a tqdm bar (default: when stdout is a terminal; otherwise one line per
            log interval).
        memory_format: ``auto`` (channels-last where the model's eager step is faster so,
            see :func:`~metalearn_torch.models.memory_format`), ``contiguous`` or
            ``channels-last``; the model is laid out so in place, and ``run.json`` records it.

    Returns:
        ``{"steps": last step trained, "final_loss": ..., "interrupted": bool}``.
    """
    cfg, files = setup.train, setup.files
    if cfg.steps < 1:
        raise ValueError(f"--steps must be at least 1; got {cfg.steps}.")
    fmt = models.memory_format(model, compiled=compile, choice=memory_format)
    files.root.mkdir(parents=True, exist_ok=True)
    models.use_memory_format(model, fmt)
    opt = make_optimizer(model.parameters(), cfg)
    start, window = 0, {}
    if resume:
        set_canonical(model, files.resume_weights())
        start, window = _load_train_state(opt, files.train_state, lr=cfg.lr)
    T.write_json(files.config, {**setup.describe(), **run_settings(), "memory_format": fmt})
    bar_on = T.interactive() if progress is None else progress
    log = T.CSVLog(files.log, "torch", resume_step=start if resume else None,
                   echo=not bar_on, total_steps=cfg.steps)
    sampler = T.train_sampler(setup)
    loss_fn = model.make_loss()
    forward = model
    if compile and not getattr(model, "compilable", True):
        print(f"note: {model.config.model} trains eager: {model.not_compiled_because}",
              file=sys.stderr)
    elif compile:
        # The whole forward, a recurrent model's unrolled episode included: one graph for
        # forward and one for backward (see benchmarks/steps.py for the measured trade).
        forward = torch.compile(model)
    model.train()

    from tqdm import tqdm

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="torch train",
               disable=not bar_on)
    # Per-step loss and accuracy since the last log row, on the device (one host sync per
    # log interval or checkpoint).
    # (A resumed window goes to the model's device: a GPU model's step values live there.)
    device = next(model.parameters()).device
    losses = [torch.tensor(v, device=device) for v in window.get("losses", [])]
    accs = [torch.tensor(v, device=device) for v in window.get("accuracies", [])]
    last_loss = float("nan")
    saved = start or None
    done = start

    def host_window() -> tuple[np.ndarray, np.ndarray]:
        if not losses:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        return torch.stack(losses).cpu().numpy(), torch.stack(accs).cpu().numpy()

    def check(step_losses: np.ndarray) -> None:
        bad = T.first_non_finite(step_losses, done - len(step_losses) + 1)
        if bad is not None:
            raise T.NonFiniteLoss(bad[1], bad[0], files.checkpoint, saved)

    def save() -> None:
        nonlocal saved
        step_losses, step_accs = host_window()
        check(step_losses)
        if not all(bool(torch.isfinite(t).all()) for t in model.state_dict().values()
                   if t.is_floating_point()):
            raise T.NonFiniteWeights(done, files.checkpoint, saved)
        save_checkpoint(model, files.checkpoint, step=done, seed=cfg.seed, data=setup.data,
                        episode_stream="episode s = f(seed, s)")
        _save_train_state(opt, files.train_state, done,
                          {"losses": step_losses.tolist(), "accuracies": step_accs.tolist()})
        saved = done

    with T.interruptible() as stop:
        for step in bar:
            inputs, target = model.inputs_and_target(T.step_batch(sampler, setup.family, step, cfg.batch))
            loss, output = objective(model, inputs, target, loss_fn, forward)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
            accs.append(model.batch_accuracy(output.detach(), target))
            done = step + 1
            if done % cfg.log_every == 0 or done == cfg.steps:
                step_losses, step_accs = host_window()
                check(step_losses)
                last_loss = float(np.mean(step_losses, dtype=np.float64))
                log.log(done, last_loss, float(np.mean(step_accs, dtype=np.float64)))
                bar.set_postfix(loss=f"{last_loss:.4f}", acc=f"{np.mean(step_accs):.3f}")
                losses.clear()
                accs.clear()
            if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == cfg.steps:
                save()
            if stop.requested:
                if saved != done:
                    save()
                break
    bar.close()
    if files.log.exists():
        T.plot_curves([files.log], files.curves, labels=["torch"])
    if np.isnan(last_loss):
        d = T.read_log(files.log)
        last_loss = float(d["loss"][-1]) if len(d["loss"]) else last_loss
    return {"steps": done, "final_loss": last_loss, "interrupted": done < cfg.steps}


def main_train(args: Any) -> int:
    """``metalearn train --framework torch …`` in one process (the backend sends a run under
    ``torchrun`` or with ``--meta-batch`` to :func:`metalearn_torch.distributed.main_train`)."""
    setup = T.setup_from_args(args)
    model = build_model(setup.model_config, seed=setup.train.seed)
    result = train(model, setup, resume=args.resume, compile=args.compile,
                   memory_format=getattr(args, "memory_format", "auto"))
    if result["interrupted"]:
        print(T.interrupted_message(setup, result["steps"]), file=sys.stderr)
        return 130
    print(f"torch: trained {setup.model_config.model} for {result['steps']} steps; "
          f"final loss {result['final_loss']:.4f}; run folder {setup.files.root}")
    if args.eval_episodes:
        from metalearn_torch.evaluate import evaluate_model

        res = evaluate_model(model, setup, args.eval_episodes)
        print(json.dumps(res, indent=1))
    return 0
