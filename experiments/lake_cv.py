"""Lake et al.'s within-alphabet one-shot protocol with alphabet cross-validation (issue 14):
one command per framework trains a model once per fold (``--holdout fold:I/K``) and
evaluates each on its held-out alphabets, with Lake's 20-way within-alphabet trials
(``metalearn eval --protocol lake-within-alphabet``) and with random 5-way 1-shot episodes.

The small background sets have only 8 alphabets, so one 6/2 split is one lucky (or
unlucky) draw; ``K`` folds hold out every alphabet once. ``OUT/summary.json`` gives each
fold's figures and their mean with a Student-t 95% interval over folds
(:func:`metalearn_shared.metrics.fold_ci`). A fold whose training finished is evaluated
again, not retrained, and an interrupted training resumes from its last checkpoint.

The runs of ``docs/results.md`` (ProtoNet, the recipe of ``experiments/results.sh``; one
thread each, so two share a 2-core machine):

    python experiments/lake_cv.py --framework torch --out runs/lake-cv-protonet-torch
    python experiments/lake_cv.py --framework tf --out runs/lake-cv-protonet-tf

Any training option passes through after ``--``, e.g. ``-- --steps 5000 --compile``, and
``-- --no-rotations`` drops a flag of the recipe. ``--only 3`` (or ``1,3``) trains and
evaluates some folds of the K, for an ablation on the hardest fold before a full
cross-validation; the summary then covers those folds (its interval needs two or more).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

#: The ProtoNet recipe of experiments/results.sh (20-way training, rotations as classes).
RECIPE = ["--model", "protonet", "--rotations", "--ways", "20", "--shots", "1",
          "--queries", "5", "--steps", "2500"]


def _folds(text: str) -> list[int]:
    try:
        folds = sorted({int(t) for t in text.split(",") if t.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--only takes fold numbers separated by commas, e.g. 3 or 1,3; got {text!r}"
        ) from None
    if not folds or folds[0] < 1:
        raise argparse.ArgumentTypeError(f"--only: folds are numbered from 1; got {text!r}")
    return folds


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--framework", required=True, help="torch | tf")
    p.add_argument("--folds", type=int, default=4, help="alphabet folds, K")
    p.add_argument("--dataset", default="omniglot")
    p.add_argument("--data-dir", default=os.environ.get("METALEARN_OMNIGLOT_DIR",
                                                        "../shared/data/omniglot"))
    p.add_argument("--seed", type=int, default=0, help="folds, weights and episodes")
    p.add_argument("--trials", type=int, default=400,
                   help="within-alphabet trials per fold (Lake: 20 runs × 20 test images)")
    p.add_argument("--episodes", type=int, default=1000, help="random 5-way 1-shot episodes")
    p.add_argument("--only", type=_folds, default=None, metavar="I[,J…]",
                   help="these folds only (1-based), e.g. 3 or 1,3 (default: all K)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", required=True)
    p.add_argument("train", nargs="*", help="after --: training options replacing the recipe's")
    return p.parse_args(argv)


def _metalearn(args: list[str], env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "metalearn", *args], check=True, env=env)


def _override(recipe: list[str], extra: list[str]) -> list[str]:
    """The recipe with each ``--option [value]`` of ``extra`` replacing the recipe's own;
    ``--no-FLAG`` drops the recipe's ``--FLAG`` (e.g. ``--no-rotations``)."""
    def options(args: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        key = None
        for a in args:
            if a.startswith("--"):
                key = a
                out[key] = []
            elif key is not None:
                out[key].append(a)
        return out

    merged = {**options(recipe), **options(extra)}
    for key in [k for k in merged if k.startswith("--no-")]:
        dropped = "--" + key[len("--no-"):]
        if dropped not in merged:
            raise SystemExit(f"{key}: drops the recipe's flag {dropped}; the recipe "
                             f"({' '.join(recipe)}) has no such flag.")
        del merged[key], merged[dropped]
    return [x for k, v in merged.items() for x in (k, *v)]


def main(argv: list[str] | None = None) -> int:
    from metalearn_shared.metrics import fold_ci

    a = _args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads),
           "TF_NUM_INTRAOP_THREADS": str(a.threads), "TF_NUM_INTEROP_THREADS": str(a.threads)}
    data = ["--dataset", a.dataset, "--seed", str(a.seed)]
    if a.dataset == "omniglot":
        data += ["--data-dir", a.data_dir]
    train_args = _override(RECIPE, a.train)
    chosen = a.only or list(range(1, a.folds + 1))
    if chosen[-1] > a.folds:
        raise SystemExit(f"--only {chosen[-1]}: there are only {a.folds} folds (--folds).")
    folds = []
    for i in chosen:
        holdout = f"fold:{i}/{a.folds}"
        run = out / f"fold{i}"
        done = run / "trained.json"  # written once training finished
        if not done.exists():
            resume = ["--resume"] if (run / "checkpoint.safetensors").exists() else []
            t0 = time.perf_counter()
            _metalearn(["train", "--framework", a.framework, *data, *train_args,
                        "--holdout", holdout, "--out", str(run), *resume], env)
            done.write_text(json.dumps({"minutes": (time.perf_counter() - t0) / 60,
                                        "resumed": bool(resume)}))
        minutes = json.loads(done.read_text())["minutes"]
        ckpt = str(run / "checkpoint.safetensors")
        _metalearn(["eval", "--framework", a.framework, ckpt, "--protocol",
                    "lake-within-alphabet", "--episodes", str(a.trials),
                    "--out", str(run / "eval-within")], env)
        _metalearn(["eval", "--framework", a.framework, ckpt, "--ways", "5", "--shots", "1",
                    "--queries", "15", "--episodes", str(a.episodes),
                    "--out", str(run / "eval-5w1s")], env)
        within = json.loads((run / "eval-within" / "eval.json").read_text())
        random5 = json.loads((run / "eval-5w1s" / "eval.json").read_text())
        folds.append({"fold": i, "holdout": holdout, "test_alphabets": within["test_alphabets"],
                      "train_minutes": minutes,
                      "within_alphabet_20way": within["within_alphabet"]["accuracy"],
                      "per_alphabet": within["within_alphabet"]["per_alphabet"],
                      "skipped_alphabets": within["within_alphabet"]["skipped_alphabets"],
                      "random_5way_1shot": random5["accuracy"]})
    summary = {"framework": a.framework, "folds": folds, "of_folds": a.folds, "train_args": train_args,
               "seed": a.seed, "trials_per_fold": a.trials}
    for key in ("within_alphabet_20way", "random_5way_1shot"):
        means = [f[key]["mean"] for f in folds]
        ci = fold_ci(means) if len(means) > 1 else None  # one fold: no spread to estimate
        summary[key] = {"mean": ci.mean if ci else means[0],
                        "ci95_over_folds": ci.ci95 if ci else None}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    for f in folds:
        print(f"fold {f['fold']} {','.join(f['test_alphabets'])}: within-alphabet 20-way "
              f"{100 * f['within_alphabet_20way']['mean']:.1f}%, random 5-way "
              f"{100 * f['random_5way_1shot']['mean']:.1f}%")
    for key in ("within_alphabet_20way", "random_5way_1shot"):
        ci = summary[key]["ci95_over_folds"]
        spread = f" ± {100 * ci:.2f}%" if ci is not None else " (one fold: no interval)"
        print(f"{key}: {100 * summary[key]['mean']:.2f}%{spread} over folds "
              f"{','.join(map(str, chosen))} of {a.folds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
