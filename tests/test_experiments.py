"""``experiments/``: the MANN ablation script runs end to end on the real small sets (two
steps), writes one row per evaluation, and plots its curves; the alphabet cross-validation
of Lake's protocol trains and evaluates every fold."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mann_ablation_trains_evaluates_and_plots(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from metalearn_shared.data import ENV_DIR

    folder = os.environ.get(ENV_DIR)
    if not folder:
        pytest.skip(f"{ENV_DIR} not set: point it at a folder holding the official small zips")
    monkeypatch.setenv("METALEARN_HOME", str(tmp_path / "home"))
    script = _script("mann_ablation")
    out = tmp_path / "add.jsonl"
    assert script.main(["--data-dir", folder, "--write-vector", "add", "--rotate", "--clip", "1",
                        "--memory-slots", "16", "--read-heads", "2", "--augment", "santoro",
                        "--key-strength", "learned", "--read-sharpness", "5",
                        "--steps", "2", "--eval-every", "1", "--eval-episodes", "4",
                        "--batch", "2", "--out", str(out)]) == 0
    header, *rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert header["args"]["write_vector"] == "add" and header["test_classes"] > 0
    assert header["args"]["augment"] == "santoro"
    assert header["model"]["memory_slots"] == 16 and header["model"]["read_heads"] == 2
    assert header["model"]["write_vector"] == "add" and header["model"]["key_strength"] == "learned"
    assert [r["step"] for r in rows] == [0, 1, 2] and rows[-1]["episodes"] == 4
    assert rows[0]["train_loss"] is None and rows[-1]["train_loss"] > 0
    assert set(rows[-1]["per_instance"]) >= {"1", "2", "10"}
    assert set(rows[-1]["train_per_instance"]) == set(rows[-1]["per_instance"])
    # continue from the checkpoint written at the last evaluation, appending to the log
    assert script.main(["--data-dir", folder, "--write-vector", "add", "--memory-slots", "16",
                        "--read-heads", "2", "--key-strength", "learned", "--read-sharpness", "5",
                        "--steps", "4", "--eval-every", "1",
                        "--eval-episodes", "4", "--batch", "2", "--out", str(out),
                        "--resume", "--resume-lr", "5e-4"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()][1:]
    assert rows[3] == {"resumed_at": 2, "lr": 5e-4}  # the change of rate, where it happened
    from metalearn_shared.weights import load_canonical

    meta = load_canonical(out.with_suffix(".state.safetensors"))[1]
    assert meta["step"] == 4 and meta["param_groups"][0]["lr"] == 5e-4
    rows = [r for r in rows if "step" in r]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    assert rows[3]["minutes"] >= rows[2]["minutes"]
    from metalearn.cli import main as cli

    assert cli(["eval", str(tmp_path / "add.safetensors"), "--episodes", "4",
                "--out", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["checkpoint_step"] == 4 and report["data"]["dataset"] == "omniglot"
    # the memory probe: the trained MANN with its reads replaced, and its read weights
    probe = tmp_path / "probe.json"
    assert script.main(["--data-dir", folder, "--probe", str(tmp_path / "add.safetensors"),
                        "--eval-episodes", "4", "--out", str(probe)]) == 0
    got = json.loads(probe.read_text())
    last = json.loads(out.read_text().splitlines()[-1])  # the run's own evaluation at step 4
    assert got["step"] == 4 and got["as_trained"]["per_instance"] == last["per_instance"]
    for name in ("as_trained", "reads_zeroed", "reads_of_another_episode"):
        assert set(got[name]["per_instance"]) >= {"1", "2", "10"}, name
    assert got["reads_zeroed"] != got["as_trained"]  # the replaced reads reach the output
    w = got["read_weights"]
    assert w["slots"] == 16 and w["uniform"] <= w["mean_max"] <= w["max"] <= 1
    assert 0 < w["entropy"] <= w["uniform_entropy"] + 1e-9
    k = got["key_strength"]  # each head's learned strength, from about S = 5 after 4 steps
    assert k["start"] == 5 and len(k["head_mean"]) == 2 and 0 < k["min"] < k["max"]
    assert all(k["min"] <= m <= k["max"] for m in k["head_mean"]) and 2 < k["min"] < k["max"] < 12
    png = tmp_path / "curves.png"
    for axis in ("episodes", "minutes"):
        assert script.main(["--plot", str(out), "--x", axis, "--out", str(png)]) == 0
        assert png.stat().st_size > 0
    with pytest.raises(SystemExit, match="add --resume"):
        script.main(["--data-dir", folder, "--resume-lr", "1e-4", "--out", str(out)])
    # the LSTM baseline under the same loop: its own model in the header and checkpoint
    lstm = tmp_path / "lstm.jsonl"
    assert script.main(["--data-dir", folder, "--model", "lstm", "--steps", "1",
                        "--eval-every", "1", "--eval-episodes", "4", "--batch", "2",
                        "--out", str(lstm)]) == 0
    header = json.loads(lstm.read_text().splitlines()[0])
    assert header["model"]["model"] == "lstm"
    assert load_canonical(lstm.with_suffix(".safetensors"))[1]["model"] == "lstm"


def test_lake_cv_trains_and_evaluates_every_fold(tmp_path, monkeypatch):
    """Two alphabet folds of glyphs, one step each: a summary per fold and over folds; a
    second call evaluates the trained folds again without retraining them."""
    pytest.importorskip("torch")
    script = _script("lake_cv")
    out = tmp_path / "cv"
    argv = ["--framework", "torch", "--dataset", "glyphs", "--folds", "2", "--trials", "3",
            "--episodes", "2", "--out", str(out), "--", "--steps", "1", "--ways", "3",
            "--queries", "2"]
    assert script.main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [f["holdout"] for f in summary["folds"]] == ["fold:1/2", "fold:2/2"]
    alphabets = [a for f in summary["folds"] for a in f["test_alphabets"]]
    assert len(alphabets) == len(set(alphabets)) == 20  # every glyph alphabet held out once
    assert summary["train_args"][summary["train_args"].index("--steps") + 1] == "1"
    assert 0 <= summary["within_alphabet_20way"]["mean"] <= 1
    assert summary["within_alphabet_20way"]["ci95_over_folds"] >= 0
    stamp = (out / "fold1" / "checkpoint.safetensors").stat().st_mtime_ns
    assert script.main(argv) == 0
    assert (out / "fold1" / "checkpoint.safetensors").stat().st_mtime_ns == stamp
    # --only: one fold of the two, evaluated again (trained above); no interval from one fold
    assert script.main(["--only", "2", *argv]) == 0
    one = json.loads((out / "summary.json").read_text())
    assert [f["holdout"] for f in one["folds"]] == ["fold:2/2"] and one["of_folds"] == 2
    assert one["within_alphabet_20way"]["ci95_over_folds"] is None
    assert one["within_alphabet_20way"]["mean"] == summary["folds"][1]["within_alphabet_20way"]["mean"]
    for bad in ("3", "0", "x"):
        with pytest.raises(SystemExit):
            script.main(["--only", bad, *argv])


def test_lake_cv_override_replaces_and_drops_recipe_options():
    script = _script("lake_cv")
    recipe = ["--model", "protonet", "--rotations", "--steps", "2500"]
    assert script._override(recipe, ["--steps", "10", "--augment", "koch"]) == [
        "--model", "protonet", "--rotations", "--steps", "10", "--augment", "koch"]
    assert script._override(recipe, ["--no-rotations"]) == ["--model", "protonet", "--steps", "2500"]
    with pytest.raises(SystemExit, match="has no such flag"):
        script._override(recipe, ["--no-compile"])


def test_siamese_probe_reports_the_embeddings_of_held_out_trials(tmp_path):
    pytest.importorskip("torch")
    from metalearn.cli import main as cli

    script = _script("siamese_probe")
    run = tmp_path / "cos"
    assert cli(["train", "--model", "siamese", "--head", "cosine", "--steps", "1", "--batch", "4",
                "--out", str(run)]) == 0
    out = tmp_path / "probe.json"
    assert script.main([str(run / "checkpoint.safetensors"), "--trials", "2", "--ways", "3",
                        "--out", str(out)]) == 0
    (r,) = json.loads(out.read_text())
    assert r["head"] == "cosine" and r["margin"] == 0.0 and r["trials"] == 2
    assert 0 <= r["zero_embedding_share"] <= r["zero_feature_share"] <= 1
    assert -1 <= r["cosine_different"]["mean"] <= 1 and r["cosine_same"]["sd"] >= 0
    proto = tmp_path / "proto"
    assert cli(["train", "--model", "protonet", "--steps", "1", "--ways", "3", "--queries", "1",
                "--out", str(proto)]) == 0
    with pytest.raises(SystemExit, match="reads Siamese networks"):
        script.main([str(proto / "checkpoint.safetensors"), "--out", str(out)])
