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


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_eval_applies_evaluation_time_options_and_notes_the_others(fw, tmp_path, capsys):
    """`metalearn eval --eval-inner-steps 1 --bn running` on a MAML checkpoint evaluates as a
    model trained with those settings would (training does not read them, so the same seed
    gives the same weights); a training-time option given to eval draws a note and changes
    nothing. Before, eval silently kept the checkpoint's values for all of them."""
    import json

    pytest.importorskip("torch" if fw == "torch" else "keras")
    maml = ["--model", "maml", "--steps", "2", *TINY]
    settings = ["--eval-inner-steps", "1", "--bn", "running"]
    assert main(["train", "--framework", fw, *maml, "--out", str(tmp_path / "default")]) == 0
    assert main(["train", "--framework", fw, *maml, *settings, "--out", str(tmp_path / "set")]) == 0

    def evaluate(run, out, *extra):
        assert main(["eval", "--framework", fw, str(tmp_path / run / "checkpoint.safetensors"),
                     "--episodes", "20", "--out", str(tmp_path / out), *TINY, *extra]) == 0
        return json.loads((tmp_path / out / "eval.json").read_text())

    capsys.readouterr()
    given = evaluate("default", "given", *settings, "--inner-steps", "4")
    err = capsys.readouterr().err
    assert "evaluating with --eval-inner-steps 1 (the checkpoint's maml was trained with " \
           "--eval-inner-steps 3)" in err
    assert "evaluating with --bn running" in err
    assert "--inner-steps is fixed in training: the checkpoint's maml has --inner-steps 1; " \
           "using it (not --inner-steps 4)" in err
    assert "--backbone is fixed" not in err  # taken from the checkpoint (args_from_config)
    assert given["eval_options"] == {"eval_inner_steps": 1, "bn": "running"}
    trained_so = evaluate("set", "trained-so")
    default = evaluate("default", "default")
    assert "eval_options" not in default
    assert given["accuracy"] == trained_so["accuracy"]
    assert default["accuracy"] != trained_so["accuracy"]  # the settings change the result


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


def _api_train_torch(tmp_path, model_name, *extra, memory_format="auto"):
    """A 2-step torch run through ``train()`` (so the model can be inspected); returns the
    model and its ``run.json``."""
    import json

    from metalearn.cli import build_parser
    from metalearn_shared import training as T
    from metalearn_torch.models import build_model
    from metalearn_torch.train import train

    args = build_parser().parse_args(["train", "--framework", "torch", "--model", model_name,
                                      "--steps", "2", "--out", str(tmp_path), *TINY, *extra])
    setup = T.setup_from_args(args)
    model = build_model(setup.model_config, seed=setup.train.seed)
    train(model, setup, progress=False, memory_format=memory_format)
    return model, json.loads(setup.files.config.read_text())


def _layout(model):
    """The layout of the model's 4-D weights with several input channels (a 1-channel
    kernel is both contiguous and channels-last)."""
    import torch

    kernels = [p for p in model.parameters() if p.dim() == 4 and p.shape[1] > 1]
    assert kernels
    if all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels):
        return "channels-last"
    assert all(p.is_contiguous() for p in kernels)
    return "contiguous"


@pytest.mark.torch
@pytest.mark.parametrize(("model", "extra", "expected"), [
    ("protonet", [], "channels-last"),
    ("siamese", ["--head", "koch", "--batch", "8"], "channels-last"),
    ("anil", [], "channels-last"),
    ("reptile", [], "channels-last"),
    ("maml", [], "contiguous"),
    ("metasgd", [], "contiguous"),
])
def test_torch_trainer_lays_each_model_out_as_its_eager_step_measured_fastest(
        model, extra, expected, tmp_path):
    pytest.importorskip("torch")
    trained, run = _api_train_torch(tmp_path, model, *extra)
    assert run["memory_format"] == expected
    assert _layout(trained) == expected


@pytest.mark.torch
def test_a_channels_last_run_trains_the_contiguous_runs_model(tmp_path):
    """The layout changes the kernels, not the model: 2 SGD steps each way from the same
    seed end at the same weights (float32 rounding apart), and either choice is honoured."""
    pytest.importorskip("torch")
    sgd = ("--optimizer", "sgd", "--lr", "0.05")
    cl, run_cl = _api_train_torch(tmp_path / "cl", "protonet", *sgd, memory_format="channels-last")
    nchw, run_nchw = _api_train_torch(tmp_path / "nchw", "protonet", *sgd,
                                      memory_format="contiguous")
    assert (_layout(cl), run_cl["memory_format"]) == ("channels-last", "channels-last")
    assert (_layout(nchw), run_nchw["memory_format"]) == ("contiguous", "contiguous")
    from metalearn_torch.checkpoint import get_canonical
    from metalearn_torch.models import build_model

    init = get_canonical(build_model(nchw.config, seed=3))
    a, _ = _weights(tmp_path / "cl" / "checkpoint.safetensors")
    b, _ = _weights(tmp_path / "nchw" / "checkpoint.safetensors")
    # Judged per tensor against its update: the kernels' float32 rounding differs, and
    # ProtoNet's squared distances amplify it, but far less than 2 steps move a weight.
    ratios = {k: np.linalg.norm(a[k] - b[k]) / np.linalg.norm(b[k] - init[k]) for k in a}
    assert all(np.isfinite(r) and r < 1e-2 for r in ratios.values()), ratios


@pytest.mark.torch
def test_memory_format_choice():
    pytest.importorskip("torch")
    from metalearn_shared.models import protonet
    from metalearn_torch.models import build_model, memory_format

    model = build_model(protonet.ProtoNetConfig(), seed=0)
    assert memory_format(model) == "channels-last"
    assert memory_format(model, compiled=True) == "contiguous"  # compile-cl measured slower
    assert memory_format(model, compiled=True, choice="channels-last") == "channels-last"
    with pytest.raises(ValueError, match="choose one of auto, contiguous, channels-last"):
        memory_format(model, choice="nhwc")


@pytest.mark.tf
def test_keras_rejects_a_torch_memory_format(tmp_path, capsys):
    pytest.importorskip("keras")
    args = ["train", "--framework", "tf", "--model", "protonet", "--steps", "1",
            "--out", str(tmp_path), "--memory-format", "channels-last", *TINY]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--memory-format channels-last is a PyTorch setting" in err and "NHWC" in err
    assert not (tmp_path / "log.csv").exists()


@pytest.mark.torch
def test_the_distributed_trainer_rejects_channels_last(tmp_path, capsys):
    pytest.importorskip("torch")
    args = ["train", "--framework", "torch", "--model", "protonet", "--steps", "1",
            "--meta-batch", "2", "--out", str(tmp_path), "--memory-format", "channels-last", *TINY]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "trains contiguous (NCHW) weights only" in err and "Drop the option" in err
    assert not (tmp_path / "log.csv").exists()


def _saved_lr(fw, path):
    arrays, meta = load_canonical(path)
    if fw == "torch":
        return meta["param_groups"][0]["lr"]
    i = next(i for i, p in enumerate(meta["paths"]) if p.endswith("/learning_rate"))
    return float(arrays[f"{i:04d}"])


@pytest.mark.parametrize("fw", FRAMEWORKS)
def test_resume_continues_at_the_commands_learning_rate(fw, tmp_path, capsys):
    """--resume --lr X continues at X (a decay), says so, and records it; the same command
    (the existing exactness test) says nothing. Without the change the optimiser state's
    rate would silently win while run.json recorded X."""
    pytest.importorskip("torch" if fw == "torch" else "keras")
    _train(fw, tmp_path / "run", 2, "--lr", "0.01")
    capsys.readouterr()
    _train(fw, tmp_path / "run", 4, "--lr", "0.001", "--resume")
    err = capsys.readouterr().err
    assert "--resume continues at learning rate 0.001" in err and "at 0.01 up to step 2" in err
    files = RunFiles(tmp_path / "run")
    assert _saved_lr(fw, files.train_state) == pytest.approx(0.001, rel=1e-6)
    import json

    assert json.loads(files.config.read_text())["train"]["lr"] == 0.001
    _train(fw, tmp_path / "same", 2, "--lr", "0.01")
    _train(fw, tmp_path / "same", 4, "--lr", "0.01", "--resume")
    assert "--resume continues at" not in capsys.readouterr().err
    assert _saved_lr(fw, RunFiles(tmp_path / "same").train_state) == pytest.approx(0.01, rel=1e-6)
