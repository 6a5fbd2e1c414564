"""Trainers and evaluators of both frameworks: tiny runs through the CLI.

Resume exactness: N steps + --resume + M steps gives bit-identical weights to N + M steps.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest

from metalearn.cli import main
from metalearn_shared.training import LOG_COLUMNS, RunFiles
from metalearn_shared.weights import load_canonical

FRAMEWORKS = [
    pytest.param("torch", marks=pytest.mark.torch),
    pytest.param("tf", marks=pytest.mark.tf),
]
TINY = ["--ways", "3", "--shots", "1", "--queries", "2", "--seed", "3"]


def _train(fw, out, steps, *extra):
    args = ["train", "--framework", fw, "--model", "protonet", "--steps", str(steps),
            "--out", str(out), *TINY, *extra]
    assert main(args) == 0


def _weights(path):
    arrays, meta = load_canonical(path)
    return arrays, meta


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_resume_equals_uninterrupted(fw, tmp_path):
    pytest.importorskip("torch" if fw == "torch" else "keras")
    _train(fw, tmp_path / "full", 4)
    _train(fw, tmp_path / "split", 2)
    _train(fw, tmp_path / "split", 4, "--resume")
    full, meta_full = _weights(tmp_path / "full" / "checkpoint.safetensors")
    split, meta_split = _weights(tmp_path / "split" / "checkpoint.safetensors")
    assert meta_full["step"] == meta_split["step"] == 4
    for k in full:
        np.testing.assert_array_equal(split[k], full[k], err_msg=k)
    with open(tmp_path / "split" / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == LOG_COLUMNS
    assert [int(r["step"]) for r in rows] == sorted({int(r["step"]) for r in rows})
    assert (tmp_path / "split" / "curves.png").stat().st_size > 0


@pytest.mark.parametrize(("fw", "optimizer"), [
    pytest.param("tf", "adam-torch", marks=pytest.mark.tf),
    pytest.param("torch", "adam-keras", marks=pytest.mark.torch),
])
def test_resume_with_the_other_frameworks_rule(fw, optimizer, tmp_path):
    """2 steps + --resume 2 steps == 4 steps, bit-exactly, with the foreign-rule optimiser
    (its state goes through the trainer's optimiser-state file)."""
    pytest.importorskip("torch" if fw == "torch" else "keras")
    _train(fw, tmp_path / "full", 4, "--optimizer", optimizer)
    _train(fw, tmp_path / "split", 2, "--optimizer", optimizer)
    _train(fw, tmp_path / "split", 4, "--optimizer", optimizer, "--resume")
    full, _ = _weights(tmp_path / "full" / "checkpoint.safetensors")
    split, meta = _weights(tmp_path / "split" / "checkpoint.safetensors")
    assert meta["step"] == 4
    for k in full:
        np.testing.assert_array_equal(split[k], full[k], err_msg=k)
    assert optimizer in RunFiles(tmp_path / "split").config.read_text()


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_resume_without_checkpoint_is_a_clear_error(fw, tmp_path, capsys):
    pytest.importorskip("torch" if fw == "torch" else "keras")
    args = ["train", "--framework", fw, "--model", "protonet", "--steps", "2",
            "--out", str(tmp_path / "none"), "--resume", *TINY]
    assert main(args) == 2
    assert "no checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("model,extra", [
    ("siamese", ["--head", "koch", "--batch", "8"]),
    ("siamese", ["--head", "cosine", "--backbone", "seed", "--batch", "8"]),
    ("protonet", []),
])
def test_cross_framework_eval_of_a_checkpoint(model, extra, tmp_path, capsys):
    """Train in torch, evaluate the canonical checkpoint in Keras and torch: same accuracy."""
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    out = tmp_path / "run"
    assert main(["train", "--framework", "torch", "--model", model, "--steps", "2",
                 "--out", str(out), *TINY, *extra]) == 0
    accs = {}
    for fw in ("torch", "tf"):
        assert main(["eval", "--framework", fw, str(out / "checkpoint.safetensors"),
                     "--episodes", "6", "--out", str(tmp_path / fw), *TINY, *extra]) == 0
        import json

        accs[fw] = json.loads((tmp_path / fw / "eval.json").read_text())["accuracy"]["mean"]
    assert accs["torch"] == pytest.approx(accs["tf"])


def test_demo_runs_both_frameworks_side_by_side(tmp_path, capsys):
    """The README's main job, in a tiny mode."""
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    assert main(["demo", "--steps", "3", "--episodes", "4", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    table = out[out.index("trained in"):].splitlines()
    assert len(table) == 4  # header + torch/torch + torch/tf + tf/tf
    torch_torch, torch_tf = table[1].split()[-3], table[2].split()[-3]
    assert torch_torch == torch_tf  # one checkpoint, two frameworks, same accuracy


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_eval_on_official_one_shot_runs(fw, tmp_path, capsys):
    """``metalearn eval --lake-runs`` scores a folder in the official 20-run format."""
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    import json

    from metalearn_shared.data import write_runs
    from metalearn_shared.training import load_splits

    _, test = load_splits("glyphs", None, 28, False, seed=3)
    runs = write_runs(test, tmp_path / "runs", n_runs=2, seed=0)
    _train("torch", tmp_path / "run", 2)
    assert main(["eval", "--framework", fw, str(tmp_path / "run" / "checkpoint.safetensors"),
                 "--episodes", "2", "--lake-runs", str(runs), "--out", str(tmp_path / "ev"),
                 *TINY]) == 0
    rep = json.loads((tmp_path / "ev" / "eval.json").read_text())["lake_runs"]
    assert rep["runs"] == 2 and len(rep["errors"]) == 2
    assert 0.0 <= rep["mean_error"] < 0.95  # better than chance (19/20) on easy glyphs
