"""One tiny CLI run per path no other test takes: sequence models, the contrastive head,
--rotations/--size/--samples-per-class/--optimizer/--lr/--compile/--checkpoint-every/
--eval-episodes, Omniglot from --data-dir, eval of sequence models and --episodes 0,
demo --model siamese. Each in both frameworks where it applies; a few steps each."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import pytest

from metalearn.cli import main
from metalearn_shared.weights import load_canonical

FRAMEWORKS = [pytest.param("torch", marks=pytest.mark.torch),
              pytest.param("tf", marks=pytest.mark.tf)]


def _needs(fw: str) -> None:
    pytest.importorskip("torch" if fw == "torch" else "keras")


def _run_json(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


@pytest.mark.parametrize("fw", FRAMEWORKS)
@pytest.mark.parametrize("model", ["mann", "lstm"])
def test_sequence_model_train_and_eval(fw, model, tmp_path, capsys):
    """--size, --samples-per-class, --optimizer, --lr, --checkpoint-every, --eval-episodes;
    then eval of the sequence checkpoint (per-instance accuracy)."""
    _needs(fw)
    out = tmp_path / "run"
    assert main(["train", "--framework", fw, "--model", model, "--size", "12", "--ways", "3",
                 "--samples-per-class", "2", "--batch", "2", "--steps", "2", "--optimizer", "sgd",
                 "--lr", "0.05", "--checkpoint-every", "1", "--eval-episodes", "2",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert '"per_instance"' in printed  # --eval-episodes evaluated at the end
    train = _run_json(out)["train"]
    assert (train["optimizer"], train["lr"], train["checkpoint_every"]) == ("sgd", 0.05, 1)
    meta = load_canonical(out / "checkpoint.safetensors")[1]
    assert meta["config"]["image_size"] == 12 and meta["step"] == 2
    assert main(["eval", "--framework", fw, str(out / "checkpoint.safetensors"), "--episodes", "2",
                 "--samples-per-class", "2", "--out", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert set(report["per_instance"]) == {"1", "2"} and report["ways"] == 3


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_siamese_contrastive_with_rotations(fw, tmp_path):
    _needs(fw)
    out = tmp_path / "run"
    assert main(["train", "--framework", fw, "--model", "siamese", "--head", "contrastive",
                 "--rotations", "--batch", "4", "--steps", "1", "--out", str(out)]) == 0
    described = _run_json(out)
    assert described["model"]["head"] == "contrastive" and described["data"]["rotations"]
    assert described["train_classes"] == 4 * 300  # 75% of 400 glyph classes, ×4 rotations
    assert described["data"]["reflections"] is False


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_reflections_are_recorded_and_eval_keeps_the_held_out_split(fw, tmp_path, capsys):
    """--reflections doubles the training classes, is written to run.json and the
    checkpoint, and eval takes it from there (test classes stay as drawn)."""
    _needs(fw)
    out = tmp_path / "run"
    assert main(["train", "--framework", fw, "--model", "protonet", "--rotations",
                 "--reflections", "--ways", "3", "--queries", "2", "--steps", "1",
                 "--out", str(out)]) == 0
    described = _run_json(out)
    assert described["data"]["reflections"] is True
    assert (described["train_classes"], described["test_classes"]) == (8 * 300, 100)
    assert load_canonical(out / "checkpoint.safetensors")[1]["data"]["reflections"] is True
    assert main(["eval", "--framework", fw, str(out / "checkpoint.safetensors"),
                 "--episodes", "2", "--out", str(tmp_path / "ev")]) == 0
    assert "was trained with" not in capsys.readouterr().err
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["data"]["reflections"] is True


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_siamese_margin_reaches_the_model_and_bad_margins_are_named(fw, tmp_path, capsys):
    _needs(fw)
    out = tmp_path / "run"
    assert main(["train", "--framework", fw, "--model", "siamese", "--head", "cosine",
                 "--margin", "0.5", "--batch", "4", "--steps", "1", "--out", str(out)]) == 0
    assert _run_json(out)["model"]["margin"] == 0.5
    for head, margin, says in (("koch", "0.5", "the koch head has none"),
                               ("contrastive", "0", "a distance, above 0"),
                               ("cosine", "1", "a cosine in [-1, 1)")):
        assert main(["train", "--framework", fw, "--model", "siamese", "--head", head,
                     "--margin", margin, "--steps", "1", "--out", str(tmp_path / head)]) != 0
        assert says in capsys.readouterr().err


def test_a_wider_conv4_trains_and_evaluates_the_same_in_both_frameworks(tmp_path, capsys):
    """--width C: conv4 with C channels per layer (protonet, siamese and the MAML family
    take it); the checkpoint carries it, so eval in either framework rebuilds that width."""
    _needs("torch")
    _needs("keras")
    out = tmp_path / "wide"
    tiny = ["--ways", "3", "--shots", "1", "--queries", "2"]
    assert main(["train", "--model", "protonet", "--width", "12", "--steps", "2",
                 "--holdout", "fold:1/4", "--out", str(out), *tiny]) == 0
    assert _run_json(out)["model"]["backbone"]["hidden"] == 12
    arrays, _ = load_canonical(out / "checkpoint.safetensors")
    assert {a.shape[0] for a in arrays.values() if a.ndim == 4} == {12}  # every conv (OIHW)
    ckpt = str(out / "checkpoint.safetensors")
    reports = []
    for fw in ("torch", "keras"):
        assert main(["eval", "--framework", fw, ckpt, "--episodes", "6", "--out",
                     str(tmp_path / fw), *tiny]) == 0
        reports.append(json.loads((tmp_path / fw / "eval.json").read_text()))
    assert reports[0]["accuracy"] == reports[1]["accuracy"]
    for model in ("siamese", "maml"):
        assert main(["train", "--model", model, "--width", "8", "--steps", "1", "--batch", "2",
                     "--out", str(tmp_path / model), *tiny]) == 0
        assert _run_json(tmp_path / model)["model"]["backbone"]["hidden"] == 8
    resnet = tmp_path / "resnet12"  # --width is ResNet-12's first block: 4-10-20-40 here
    assert main(["train", "--framework", "keras", "--model", "protonet", "--backbone",
                 "resnet12", "--width", "4", "--steps", "1", "--out", str(resnet), *tiny]) == 0
    arrays, _ = load_canonical(resnet / "checkpoint.safetensors")
    assert arrays["embedding.block4.conv3.weight"].shape == (40, 40, 3, 3)
    scores = []
    for fw in ("torch", "keras"):
        assert main(["eval", "--framework", fw, str(resnet / "checkpoint.safetensors"),
                     "--episodes", "4", "--out", str(resnet / fw), *tiny]) == 0
        scores.append(json.loads((resnet / fw / "eval.json").read_text())["accuracy"])
    assert scores[0] == scores[1]
    assert main(["train", "--model", "protonet", "--backbone", "seed", "--width", "8",
                 "--steps", "1", "--out", str(tmp_path / "seed")]) != 0
    assert "--width sets conv4's or resnet12's channels" in capsys.readouterr().err


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_compile(fw, tmp_path, monkeypatch):
    """--compile: XLA in Keras; torch.compile with the eager backend (the path, without
    inductor's C++ build: 30 s on 2 cores). The seed backbone on 16×16 images keeps XLA's
    compile to a few seconds (Conv4 on 28×28: 15 s)."""
    _needs(fw)
    if fw == "torch":
        import torch

        monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    out = tmp_path / "run"
    assert main(["train", "--framework", fw, "--compile", "--steps", "2", "--ways", "2",
                 "--queries", "1", "--size", "16", "--backbone", "seed", "--out", str(out)]) == 0
    assert load_canonical(out / "checkpoint.safetensors")[1]["step"] == 2


def test_keras_omniglot_from_data_dir(tmp_path, capsys):
    """--dataset omniglot --data-dir in Keras (torch: tests/test_traps.py)."""
    _needs("tf")
    from metalearn_shared.data import ENV_DIR

    folder = os.environ.get(ENV_DIR)
    if not folder:
        pytest.skip(f"{ENV_DIR} not set: point it at a folder holding the official small zips")
    out = tmp_path / "run"
    assert main(["train", "--framework", "tf", "--dataset", "omniglot", "--data-dir",
                 str(Path(folder) / "images_background_small2.zip"), "--steps", "1", "--ways", "3",
                 "--queries", "2", "--out", str(out)]) == 0
    assert _run_json(out)["data"]["dataset"] == "omniglot"
    assert not any(a.startswith("alphabet") for a in _run_json(out)["test_alphabets"])


def test_eval_zero_episodes_is_a_clear_error(tmp_path, capsys):
    _needs("torch")
    out = tmp_path / "run"
    assert main(["train", "--steps", "1", "--ways", "3", "--queries", "2", "--out", str(out)]) == 0
    assert main(["eval", str(out / "checkpoint.safetensors"), "--episodes", "0"]) == 2
    assert "--episodes must be at least 1; got 0" in capsys.readouterr().err


def test_demo_siamese(tmp_path, capsys):
    _needs("torch")
    _needs("tf")
    assert main(["demo", "--model", "siamese", "--steps", "1", "--episodes", "2",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out[out.index("siamese on glyphs"):].count("%") == 6  # 3 rows, mean and CI each
