"""Traps a new user fell into: evaluation on the wrong data, noisy output in log files,
``.keras`` files that did not load the Keras way."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from metalearn.cli import main

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--ways", "3", "--shots", "1", "--queries", "2"]


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def _eval(checkpoint, tmp_path, capsys, *extra):
    out = tmp_path / "ev"
    assert main(["eval", str(checkpoint), "--episodes", "2", "--out", str(out), *TINY, *extra]) == 0
    err = capsys.readouterr().err
    return json.loads((out / "eval.json").read_text()), err


@pytest.fixture(scope="module")
def glyph_run(tmp_path_factory):
    """A torch ProtoNet trained on glyphs with a non-default split seed."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--model", "protonet", "--steps", "1", "--seed", "5", "--out", str(out),
                 *TINY]) == 0
    return out


@pytest.mark.parametrize("fw", ["torch", "tf"])
def test_eval_defaults_to_the_training_data(fw, glyph_run, tmp_path, capsys):
    from metalearn_shared.training import load_splits

    pytest.importorskip("torch" if fw == "torch" else "keras")
    report, err = _eval(glyph_run / "checkpoint.safetensors", tmp_path, capsys, "--framework", fw)
    _, test = load_splits("glyphs", None, 28, False, seed=5)
    assert report["test_alphabets"] == list(test.alphabets)
    assert report["data"]["seed"] == 5 and report["data"]["dataset"] == "glyphs"
    assert "evaluating on glyphs, held-out alphabets of --holdout auto (seed 5)" in err and "warning" not in err


def test_checkpoint_carries_its_data_when_moved(glyph_run, tmp_path, capsys):
    """No run.json beside it: the checkpoint's own metadata says what it was trained on."""
    moved = tmp_path / "elsewhere.safetensors"
    moved.write_bytes((glyph_run / "checkpoint.safetensors").read_bytes())
    report, err = _eval(moved, tmp_path, capsys)
    assert report["data"]["seed"] == 5 and "warning" not in err


def test_eval_warns_when_the_user_overrides_the_training_data(glyph_run, tmp_path, capsys):
    report, err = _eval(glyph_run / "checkpoint.safetensors", tmp_path, capsys, "--seed", "0")
    assert report["data"]["seed"] == 0
    assert "warning: the checkpoint was trained with --seed 5, but this evaluation uses --seed 0" in err


def test_eval_of_an_omniglot_run_stays_on_omniglot(tmp_path, capsys):
    """The reported trap: trained on Omniglot, `metalearn eval CHECKPOINT` used glyphs."""
    pytest.importorskip("torch")
    from metalearn_shared.data import ENV_DIR

    folder = os.environ.get(ENV_DIR)
    if not folder:
        pytest.skip(f"{ENV_DIR} not set: point it at a folder holding the official small zips")
    zip1 = Path(folder) / "images_background_small1.zip"
    run = tmp_path / "run"
    assert main(["train", "--dataset", "omniglot", "--data-dir", str(zip1), "--steps", "1",
                 "--out", str(run), *TINY]) == 0
    report, err = _eval(run / "checkpoint.safetensors", tmp_path, capsys)
    assert report["data"]["dataset"] == "omniglot"
    assert not any(a.startswith("alphabet") for a in report["test_alphabets"])
    assert f"evaluating on omniglot from {zip1.resolve()}" in err
    _, err = _eval(run / "checkpoint.safetensors", tmp_path, capsys, "--dataset", "glyphs")
    assert "trained with --dataset omniglot, but this evaluation uses --dataset glyphs" in err


@pytest.mark.parametrize("fw", ["torch", "tf"])
def test_output_into_a_file_is_one_line_per_log_interval(fw, tmp_path):
    """No progress-bar carriage returns in a non-terminal stdout; no TensorFlow C++ notices."""
    pytest.importorskip("torch" if fw == "torch" else "keras")
    res = subprocess.run(
        [sys.executable, "-m", "metalearn.cli", "train", "--framework", fw, "--steps", "6",
         "--out", str(tmp_path), *TINY], capture_output=True, text=True, env=_env(), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "\r" not in res.stdout + res.stderr
    name = "keras" if fw == "tf" else "torch"
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith(f"{name} step ")]
    # log_every = max(1, 6 // 20) = 1: one line per step, the CSV's rows
    assert [ln.split()[2] for ln in lines] == [f"{s}/6" for s in range(1, 7)]
    for noise in ("oneDNN", "cuInit", "cuda", "absl", "cpu_feature_guard", "Memory patch"):
        assert noise not in res.stderr, res.stderr


CONFIGS = {
    "protonet": "ProtoNetConfig()",
    "siamese": "SiameseConfig(head='koch')",
    "mann": "MANNConfig(image_size=20, num_classes=3, memory_slots=16, memory_width=8, "
            "controller_units=32)",
    "lstm": "LSTMConfig(image_size=20, num_classes=3, controller_units=16)",
    "maml": "MAMLConfig(backbone=BackboneConfig(image_size=32, hidden=8))",
    "fomaml": "FOMAMLConfig(net='mlp', hidden=4, backbone=BackboneConfig(image_size=16))",
    "metasgd": "MetaSGDConfig(backbone=BackboneConfig(image_size=32, hidden=8))",
    "anil": "ANILConfig(backbone=BackboneConfig(image_size=16, hidden=8))",
    "reptile": "ReptileConfig(net='mlp', hidden=4, backbone=BackboneConfig(image_size=16))",
}


def test_keras_files_load_after_importing_the_package_only(tmp_path):
    """``import metalearn_tf`` then ``keras.models.load_model`` — in a fresh process that
    imports no model module, for every model of the registry."""
    keras = pytest.importorskip("keras")
    from metalearn_shared import config as C
    from metalearn_shared import models
    from metalearn_shared.models import names as model_names
    from metalearn_tf.checkpoint import get_canonical, save_keras
    from metalearn_tf.models import build_model

    assert set(CONFIGS) == set(model_names())
    expected = {}
    for name, text in CONFIGS.items():
        model = build_model(eval(text, {**vars(C), **{s.config_cls.__name__: s.config_cls
                                                       for s in models.specs()}}), seed=0)
        save_keras(model, tmp_path / f"{name}.keras")
        expected[name] = {k: v.tolist() for k, v in get_canonical(model).items()}
    (tmp_path / "expected.json").write_text(json.dumps(expected))
    code = (
        "import json, sys, keras, numpy as np, metalearn_tf\n"
        "from metalearn_tf.checkpoint import get_canonical\n"
        "expected = json.load(open('expected.json'))\n"
        "for name in expected:\n"
        "    model = keras.models.load_model(f'{name}.keras')\n"
        "    got = get_canonical(model)\n"
        "    assert set(got) == set(expected[name]), name\n"
        "    for k, v in got.items(): np.testing.assert_array_equal(v, np.array(expected[name][k], v.dtype))\n"
        "    print(name, type(model).__name__)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=_env(KERAS_BACKEND="tensorflow"), cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert [ln.split()[0] for ln in res.stdout.splitlines()] == list(CONFIGS)
    del keras


def test_eval_of_a_keras_file_knows_its_data(tmp_path, capsys):
    pytest.importorskip("keras")
    run = tmp_path / "run"
    assert main(["train", "--framework", "tf", "--steps", "1", "--seed", "4", "--out", str(run),
                 *TINY]) == 0
    capsys.readouterr()
    report, err = _eval(run / "model.keras", tmp_path, capsys, "--framework", "tf")
    assert report["data"]["seed"] == 4 and "warning" not in err
    assert np.isfinite(report["accuracy"]["mean"])
