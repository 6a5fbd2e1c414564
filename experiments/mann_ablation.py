"""MANN ablations (issue 12) and the LSTM baseline under the same budget: one change at a
time, each run judged on the same held-out episodes at fixed intervals, so that curves of
different runs compare point by point.

The data are those of ``experiments/results.sh`` (the official small background sets,
alphabet-disjoint split, seed 0; rotations as extra training classes unless
``--no-rotation-classes``); training is PyTorch (the library's MANN, whole-episode
``torch.compile`` with ``--compile``), one thread by default so that two runs share a
2-core machine. Every ``--eval-every`` steps the model is evaluated on the same
``--eval-episodes`` held-out episodes (``metalearn_shared.training.evaluate_sequences``,
seed 0) and a row is appended to ``OUT.jsonl``; ``--plot`` draws the 1st-, 2nd- and
10th-instance curves of several such files. At every evaluation the weights
(``OUT.safetensors``, canonical: ``metalearn eval`` reads it) and the optimiser state are
written, so ``--resume`` continues a run (``--steps`` is the total). The runs of
``docs/results.md``:

    python experiments/mann_ablation.py --compile --steps 5000 --eval-every 500 --out runs/mann-abl/key.jsonl
    python experiments/mann_ablation.py --compile --steps 5000 --eval-every 500 --write-vector add --out runs/mann-abl/add.jsonl
    python experiments/mann_ablation.py --compile --batch 4 --steps 150000 --eval-every 4000 --out runs/mann-b4/key-batch4.jsonl  # + --resume to continue
    python experiments/mann_ablation.py --compile --batch 4 --steps 150000 --eval-every 4000 --augment santoro --out runs/mann-b4/santoro-batch4.jsonl
    python experiments/mann_ablation.py --compile --batch 4 --steps 40000 --eval-every 4000 --read-sharpness 10 --augment santoro --out runs/mann-b4/sharp10-santoro-batch4.jsonl
    python experiments/mann_ablation.py --model lstm --compile --batch 4 --steps 150000 --eval-every 4000 --augment santoro --out runs/mann-b4/lstm-santoro-batch4.jsonl
    python experiments/mann_ablation.py --plot runs/mann-abl/key.jsonl runs/mann-abl/add.jsonl --out docs/images/mann-ablation-write-vector.png
    python experiments/mann_ablation.py --probe runs/mann-b4/key-batch4.safetensors --out runs/mann-b4/key-batch4-probe.json

``--probe CKPT`` asks what a trained MANN's memory does: the checkpoint is evaluated on the same
held-out episodes as trained, with its read vectors zeroed (classifier and controller), and
with the read vectors of another episode of the batch; and the read weights' sharpness is
measured (mean and largest weight a head puts on one slot, entropy against uniform's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from metalearn_shared.augment import AUGMENTS, augment_spec


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=os.environ.get("METALEARN_OMNIGLOT_DIR",
                                                        "../shared/data/omniglot"))
    p.add_argument("--model", default="mann", choices=("mann", "lstm"),
                   help="lstm: the paper's LSTM baseline under the same data, budget and "
                        "evaluation (the MANN options --write-vector, --memory-slots, "
                        "--read-heads, --read-sharpness and --key-strength do not apply)")
    p.add_argument("--write-vector", default="key", choices=("key", "add"))
    p.add_argument("--memory-slots", type=int, default=128, help="memory rows N")
    p.add_argument("--read-heads", type=int, default=4)
    p.add_argument("--read-sharpness", type=float, default=1.0, metavar="S",
                   help="reads weight the slots by softmax(S · cosine); 1 is the paper's")
    p.add_argument("--key-strength", default="fixed", choices=("fixed", "learned"),
                   help="learned: the controller sets each head's sharpness per step, "
                        "starting at S (the NTM's key strength)")
    p.add_argument("--optimizer", default="adam", help="a trainer optimiser name")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--clip", type=float, default=0.0, help="gradient-norm clip (0: none)")
    p.add_argument("--batch", type=int, default=16, help="episodes per step")
    p.add_argument("--rotate", action="store_true",
                   help="per-episode augmentation: each class rotated by a random quarter turn")
    p.add_argument("--augment", default="none", choices=tuple(AUGMENTS),
                   help="per-image affine distortion of the training episodes: 'santoro' is "
                        "the MANN reference implementation's (each image rotated by up to "
                        "±30° and shifted by up to 10/105 of its side), 'koch' Koch et al.'s")
    p.add_argument("--no-rotation-classes", action="store_true")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--eval-every", type=int, default=250)
    p.add_argument("--eval-episodes", type=int, default=320)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--resume", action="store_true",
                   help="continue from OUT's checkpoint (OUT.safetensors, written at every "
                        "evaluation with the optimiser state beside it), appending to OUT.jsonl")
    p.add_argument("--resume-lr", type=float, default=None, metavar="LR",
                   help="with --resume: continue at this learning rate (the optimiser state "
                        "restores the run's own otherwise); recorded in the log")
    p.add_argument("--probe", default=None, metavar="CKPT",
                   help="instead of training: what a trained MANN's memory does (see above); "
                        "the figures are printed and written to OUT as JSON")
    p.add_argument("--plot", nargs="+", default=None, metavar="JSONL",
                   help="draw these runs' held-out curves instead of training")
    p.add_argument("--x", default="episodes", choices=("episodes", "step", "minutes"),
                   help="--plot: the curves' x axis (training episodes, optimiser steps, or "
                        "minutes of the run)")
    p.add_argument("--out", required=True)
    return p.parse_args(argv)


#: --plot's x axes: (row key, scale, label).
_AXES = {"episodes": ("episodes", 1e-3, "training episodes (thousands)"),
         "step": ("step", 1e-3, "optimiser steps (thousands)"),
         "minutes": ("minutes", 1.0, "minutes of training (one thread)")}


def plot(runs: list[str], out: str, axis: str = "episodes") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    instances = (("1", "1st"), ("2", "2nd"), ("10", "10th"))
    fig, axes = plt.subplots(1, len(instances), figsize=(13, 3.6))
    for path in runs:
        rows = [r for r in map(json.loads, Path(path).read_text().splitlines())
                if "episodes" in r]  # the first line holds the run's arguments
        key, scale, xlabel = _AXES[axis]
        x = [r[key] * scale for r in rows]
        for ax, (k, _) in zip(axes, instances, strict=True):
            ax.plot(x, [r["per_instance"][k] for r in rows], label=Path(path).stem)
    for ax, (_, k) in zip(axes, instances, strict=True):
        ax.set(xlabel=_AXES[axis][2], ylabel=f"{k} instance accuracy, %",
               title=f"held-out, {k} presentation")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


def probe(a: argparse.Namespace) -> dict:
    """``--probe``: the checkpoint's held-out per-instance accuracy as trained, with its read
    vectors replaced (zeros; another episode's), its read weights' sharpness, and with a
    learned key strength the strengths its heads chose."""
    import types

    import torch

    from metalearn_shared.episodes import SequenceSampler
    from metalearn_shared.training import evaluate_sequences, load_splits
    from metalearn_torch.checkpoint import load_checkpoint

    torch.set_num_threads(a.threads)
    model, meta = load_checkpoint(a.probe)
    if model.config.model != "mann":
        raise SystemExit(f"--probe: {a.probe} holds a {model.config.model}, not a MANN.")
    model.eval()
    data = meta.get("data") or {}
    _, test_data = load_splits("omniglot", a.data_dir, model.config.image_size,
                               bool(data.get("rotations", True)), int(data.get("seed", a.seed)))
    cell, step = model.cell, model.cell.step

    def replaced(read: Any) -> Any:
        def run(self: Any, x_t: Any, state: Any) -> Any:  # the cell's step, reads swapped
            # the replaced read goes to the classifier now and to the controller next step
            logits, new, ranks, write = step(x_t, state)
            r = read(new.read)
            return self.classifier(torch.cat([new.h, r], -1)), new._replace(read=r), ranks, write
        return run

    def accuracy() -> dict:
        def logits(x: np.ndarray, prev: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return model(torch.as_tensor(x), torch.as_tensor(prev)).numpy()
        per, overall = evaluate_sequences(logits, test_data, 5, 10, a.eval_episodes, seed=0)
        return {"overall": round(100 * overall.mean, 1),
                "per_instance": {k: round(100 * v.mean, 1) for k, v in per.items()}}

    out: dict = {"checkpoint": str(a.probe), "step": meta.get("step"), "as_trained": accuracy()}
    for name, read in (("reads_zeroed", torch.zeros_like),
                       ("reads_of_another_episode", lambda r: r.roll(1, 0))):
        cell.step = types.MethodType(replaced(read), cell)
        try:
            out[name] = accuracy()
        finally:
            del cell.step  # the class's own step again
    b = SequenceSampler(test_data, 5, 10, seed=1_000_003).batch(0, 16)
    strengths: list = []  # (B, H, 1) per step, when the strength is learned
    if model.config.key_strength == "learned":
        def recorded(h: Any, own: Any = cell.read_strength) -> Any:
            strengths.append(own(h))
            return strengths[-1]
        cell.read_strength = recorded
    try:
        weights = model.forward_with_trace(torch.as_tensor(b.x),
                                           torch.as_tensor(b.prev_label)).read_weights.numpy()
    finally:
        vars(cell).pop("read_strength", None)  # the class's own method again
    top = weights.max(-1)  # (B, T, H): the largest weight of each read
    out["read_weights"] = {
        "slots": weights.shape[-1], "uniform": 1 / weights.shape[-1],
        "mean_max": float(top.mean()), "max": float(top.max()),
        "entropy": float(-(weights * np.log(weights + 1e-12)).sum(-1).mean()),
        "uniform_entropy": float(np.log(weights.shape[-1]))}
    if strengths:  # over 16 episodes x 50 steps, per head
        s = torch.stack(strengths).squeeze(-1).numpy()  # (T, B, H)
        out["key_strength"] = {"start": model.config.read_sharpness,
                               "head_mean": [round(float(v), 3) for v in s.mean((0, 1))],
                               "min": float(s.min()), "max": float(s.max())}
    print(json.dumps(out, indent=1))
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    return out


def train(a: argparse.Namespace) -> None:
    import torch

    from metalearn_shared.episodes import SequenceSampler
    from metalearn_shared.models.lstm import LSTMConfig
    from metalearn_shared.models.mann import MANNConfig
    from metalearn_shared.training import data_record, evaluate_sequences, load_splits
    from metalearn_torch.models import build_model
    from metalearn_torch.optimizers import make_optimizer

    torch.set_num_threads(a.threads)
    config = (MANNConfig(image_size=20, num_classes=5, write_vector=a.write_vector,
                         memory_slots=a.memory_slots, read_heads=a.read_heads,
                         read_sharpness=a.read_sharpness, key_strength=a.key_strength)
              if a.model == "mann" else LSTMConfig(image_size=20, num_classes=5))
    model = build_model(config, seed=a.seed)
    forward = torch.compile(model) if a.compile else model
    train_data, test_data = load_splits("omniglot", a.data_dir, 20,
                                        not a.no_rotation_classes, a.seed)
    sampler = SequenceSampler(train_data, 5, 10, seed=a.seed, rotate=a.rotate,
                              augment=augment_spec(a.augment))
    opt = make_optimizer(a.optimizer, model.parameters(), lr=a.lr)
    loss_fn = model.make_loss()

    def logits(x: np.ndarray, prev: np.ndarray) -> np.ndarray:
        model.eval()
        with torch.no_grad():
            out = model(torch.as_tensor(x), torch.as_tensor(prev)).numpy()
        model.train()
        return out

    from metalearn_torch.checkpoint import save_checkpoint, set_canonical
    from metalearn_torch.train import _load_train_state, _save_train_state

    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # The weights (canonical, `metalearn eval` reads them) and the optimiser state, written
    # atomically at every evaluation, so a run can stop and continue across sessions.
    ckpt, state = out.with_suffix(".safetensors"), out.with_suffix(".state.safetensors")
    start = 0
    if a.resume:
        from metalearn_shared.weights import load_canonical

        if not ckpt.exists() or not state.exists():
            raise SystemExit(f"--resume: {ckpt} or {state} is missing; start without --resume.")
        set_canonical(model, load_canonical(ckpt)[0])
        start, _ = _load_train_state(opt, state, lr=a.resume_lr)  # None: the run's own
    losses: list[torch.Tensor] = []
    t0 = time.perf_counter()
    minutes0 = 0.0
    if a.resume:  # the clock continues from the last row written
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        minutes0 = max(r.get("minutes", 0.0) for r in rows)
    with open(out, "a" if a.resume else "w") as log:
        if not a.resume:
            log.write(json.dumps({"args": vars(a), "model": config.to_dict(),
                                  "train_classes": train_data.num_classes,
                                  "test_classes": test_data.num_classes}) + "\n")
        elif a.resume_lr is not None:
            log.write(json.dumps({"resumed_at": start, "lr": a.resume_lr}) + "\n")
        for step in range(start, a.steps + 1):
            if step % a.eval_every == 0 and not (a.resume and step == start):
                per, overall = evaluate_sequences(logits, test_data, 5, 10, a.eval_episodes, seed=0)
                # The same count of episodes from the training classes, undistorted: the
                # gap between the two is how far the MANN generalises to new alphabets.
                seen, _ = evaluate_sequences(logits, train_data, 5, 10, a.eval_episodes, seed=0)
                row = {"step": step, "episodes": step * a.batch,
                       "minutes": round(minutes0 + (time.perf_counter() - t0) / 60, 2),
                       # one host sync per evaluation, not per step
                       "train_loss": float(torch.stack(losses).mean()) if losses else None,
                       "overall": round(100 * overall.mean, 2),
                       "per_instance": {k: round(100 * v.mean, 1) for k, v in per.items()},
                       "train_per_instance": {k: round(100 * v.mean, 1)
                                              for k, v in seen.items()}}
                losses = []
                print(json.dumps(row), flush=True)
                log.write(json.dumps(row) + "\n")
                log.flush()
                save_checkpoint(model, ckpt, step=step, data=data_record(
                    "omniglot", a.data_dir, a.seed, 20, not a.no_rotation_classes))
                _save_train_state(opt, state, step)
            if step == a.steps:
                break
            (x, prev), y = model.inputs_and_target(sampler.batch(step * a.batch, a.batch))
            loss = loss_fn(forward(x, prev), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if a.clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), a.clip)
            opt.step()
            losses.append(loss.detach())


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    if a.resume_lr is not None and not a.resume:
        raise SystemExit("--resume-lr changes the learning rate of a resumed run; add --resume.")
    if a.plot:
        plot(a.plot, a.out, a.x)
    elif a.probe:
        probe(a)
    else:
        train(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
