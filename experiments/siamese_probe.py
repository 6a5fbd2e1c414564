"""What a trained Siamese network's embeddings look like on the held-out alphabets
(issue 14: why the cosine head trails): on Lake's within-alphabet trials of the
checkpoint's own held-out split, the share of embedding features that are exactly zero,
the share of images embedded to the zero vector (their cosine is undefined), and the
cosine similarity of same-character and different-character pairs (mean and standard
deviation). PyTorch; the checkpoint is a canonical file of either framework's training.
The probes of ``docs/results.md``:

    python experiments/siamese_probe.py runs/lake/siamese-cosine/fold3/checkpoint.safetensors \\
        runs/lake/siamese-cosine-m05/fold3/checkpoint.safetensors --out runs/lake/siamese-probe.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+", help="canonical .safetensors of Siamese runs")
    p.add_argument("--trials", type=int, default=40, help="within-alphabet 20-way trials")
    p.add_argument("--ways", type=int, default=20)
    p.add_argument("--out", required=True, help="JSON file of the figures")
    return p.parse_args(argv)


def probe(checkpoint: str, trials: int, ways: int) -> dict[str, Any]:
    import torch

    from metalearn.arguments import build_parser
    from metalearn_shared import training as T
    from metalearn_shared.episodes import WithinAlphabetSampler
    from metalearn_shared.evaluation import recorded_data, resolve_eval_data
    from metalearn_torch.checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint)
    if model.config.model != "siamese":
        raise SystemExit(f"{checkpoint}: a {model.config.model} checkpoint; the probe reads "
                         "Siamese networks.")
    model.eval()
    args = build_parser().parse_args(["eval", checkpoint])
    resolve_eval_data(args, recorded_data(meta, checkpoint))
    args.model, args.steps, args.size = "siamese", 0, model.config.backbone.image_size
    setup = T.setup_from_args(args)
    sampler = WithinAlphabetSampler(setup.test_data, ways, 1, 1, seed=setup.train.seed + T.EVAL_SEED_OFFSET)
    zero_features, zero_vectors, same, different = [], [], [], []
    with torch.no_grad():
        for i in range(trials):
            ep = sampler.episode(i)
            s = model.embed(torch.from_numpy(ep.support_x)).numpy()
            q = model.embed(torch.from_numpy(ep.query_x)).numpy()
            both = np.concatenate([s, q])
            zero_features.append(np.mean(both == 0))
            zero_vectors.append(np.mean(np.linalg.norm(both, axis=1) == 0))
            with np.errstate(invalid="ignore", divide="ignore"):
                unit = both / np.linalg.norm(both, axis=1, keepdims=True)
            cos = unit[len(s):] @ unit[:len(s)].T  # (Q, N); NaN where a vector is zero
            match = ep.query_y[:, None] == ep.support_y[None, :]
            same.append(cos[match])
            different.append(cos[~match])
    same_c, diff_c = np.concatenate(same), np.concatenate(different)
    same_c, diff_c = same_c[np.isfinite(same_c)], diff_c[np.isfinite(diff_c)]
    return {"checkpoint": checkpoint, "head": model.config.head, "margin": model.config.margin,
            "trials": trials, "zero_feature_share": float(np.mean(zero_features)),
            "zero_embedding_share": float(np.mean(zero_vectors)),
            "cosine_same": {"mean": float(same_c.mean()), "sd": float(same_c.std())},
            "cosine_different": {"mean": float(diff_c.mean()), "sd": float(diff_c.std())}}


def main(argv: list[str] | None = None) -> int:
    a = _args(argv)
    report = [probe(c, a.trials, a.ways) for c in a.checkpoints]
    for r in report:
        print(f"{r['checkpoint']} ({r['head']}, margin {r['margin']}): zero features "
              f"{100 * r['zero_feature_share']:.1f}%, zero embeddings "
              f"{100 * r['zero_embedding_share']:.1f}%, cosine same "
              f"{r['cosine_same']['mean']:.3f} ± {r['cosine_same']['sd']:.3f}, different "
              f"{r['cosine_different']['mean']:.3f} ± {r['cosine_different']['sd']:.3f}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
