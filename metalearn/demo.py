"""``metalearn demo`` — the README's main job: train the same model on the embedded glyphs
in both frameworks, evaluate both on identical held-out episodes, print them side by side,
then load the PyTorch checkpoint into Keras to show the weights mean the same thing there."""

from __future__ import annotations

import time
from typing import Any

__all__ = ["main"]


def main(args: Any) -> int:
    from metalearn import backends
    from metalearn.arguments import build_parser

    common = ["--model", args.model, "--dataset", "glyphs", "--ways", str(args.ways),
              "--shots", str(args.shots), "--queries", "5", "--seed", str(args.seed)]
    rows = []
    for fw in backends.FRAMEWORKS:
        out = f"{args.out}/{fw}"
        t0 = time.perf_counter()
        train_args = build_parser().parse_args(
            ["train", "--framework", fw, "--steps", str(args.steps), "--out", out, *common])
        backends.get(fw).main_train(train_args)
        seconds = time.perf_counter() - t0
        for evaluator in backends.FRAMEWORKS:
            if evaluator != fw and fw != backends.FRAMEWORKS[0]:
                continue  # one cross-framework direction keeps the demo short
            eval_args = build_parser().parse_args(
                ["eval", "--framework", evaluator, f"{out}/checkpoint.safetensors",
                 "--episodes", str(args.episodes), "--out", f"{out}/eval-{evaluator}", *common])
            backends.get(evaluator).main_eval(eval_args)
            import json
            from pathlib import Path

            rep = json.loads(Path(f"{out}/eval-{evaluator}/eval.json").read_text())
            rows.append((fw, evaluator, seconds, rep["accuracy"]["mean"], rep["accuracy"]["ci95"]))
    print(f"\n{args.model} on glyphs, {args.ways}-way {args.shots}-shot, {args.steps} training "
          f"steps, {args.episodes} held-out episodes (alphabet-disjoint):")
    print(f"{'trained in':>10} {'evaluated in':>12} {'train s':>8} {'accuracy':>18}")
    for fw, ev, sec, mean, ci in rows:
        print(f"{fw:>10} {ev:>12} {sec:8.1f} {100 * mean:9.2f}% ± {100 * ci:.2f}%")
    return 0
