"""``metalearn parity``: the tiny run passes and writes its table, JSON and plots; a broken
conversion or a tighter table makes it fail with a non-zero exit status."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from metalearn.cli import main
from metalearn_shared import parity
from metalearn_shared.models import names as model_names

pytestmark = pytest.mark.parity


@pytest.mark.parametrize("tiny", [False, True])
def test_every_registered_model_has_cases(tiny):
    assert {c.model for c in parity.cases(tiny=tiny)} == set(model_names())
    assert parity.cases("lstm", tiny=tiny) and all(c.model == "lstm" for c in parity.cases("lstm"))


def test_unknown_model_is_a_clear_error(capsys):
    assert main(["parity", "--model", "resnet", "--tiny"]) == 2
    err = capsys.readouterr().err
    assert "resnet" in err and all(name in err for name in model_names())


def test_tiny_run_passes_and_writes_table_json_and_plots(tmp_path, capsys):
    pytest.importorskip("keras")
    pytest.importorskip("torch")
    # One model here (the MANN: every group of figures, the LRUA's choices); .ci/parity-matrix
    # runs every registered model's tiny case under three CPU settings.
    assert main(["parity", "--tiny", "--model", "mann", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "worst/tol" in out and "all within the tolerance table" in out

    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["passed"] and report["tiny"] and report["steps"] == 3
    assert set(report["tolerances"]) >= {"forward", "loss", "grad", "train"}
    results = report["results"]
    assert {r["model"] for r in results} == {"mann"}
    assert {r["direction"] for r in results} == set(parity.DIRECTIONS)
    for r in results:
        groups = {f["group"] for f in r["figures"]}
        assert {"forward", "loss", "grad", "step", "update", "train", "exact"} <= groups, r["case"]
        assert len(r["step_errors"]) == 3 and r["moved"] > 0
        assert r["step_ms"]["torch"] > 0 and r["step_ms"]["keras"] > 0
        assert all(f["passed"] and f["ratio"] <= 1 for f in r["figures"])
    assert any(f["group"] == "exact" for r in results for f in r["figures"])

    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert "steps.png" in pngs and len(pngs) == 1 + len({r["case"] for r in results})
    for name in pngs:
        assert np.asarray(Image.open(tmp_path / name)).std() > 0


def test_a_corrupted_weight_fails(tmp_path, monkeypatch, capsys):
    """A destination that loads one bias off by 1e-3 (a converter bug) is caught."""
    pytest.importorskip("keras")
    pytest.importorskip("torch")
    import metalearn_tf.checkpoint as kckpt
    import metalearn_torch.checkpoint as tckpt
    from metalearn_shared.weights import load_canonical

    def corrupted(path):
        arrays, meta = load_canonical(path)
        arrays["classifier.bias"] = arrays["classifier.bias"] + np.float32(1e-3)
        return arrays, meta

    monkeypatch.setattr(kckpt, "load_canonical", corrupted)
    monkeypatch.setattr(tckpt, "load_canonical", corrupted)
    assert main(["parity", "--tiny", "--model", "lstm", "--out", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL lstm-tiny" in out and "logits vs src" in out
    assert not json.loads((tmp_path / "parity.json").read_text())["passed"]


def test_a_tighter_table_fails(tmp_path, monkeypatch):
    """The exit status reads the one table: tighten it below fp32 rounding and it fails."""
    pytest.importorskip("keras")
    pytest.importorskip("torch")
    from metalearn_shared import tolerances

    monkeypatch.setitem(tolerances.TOL, "forward", (0.0, 1e-12))
    # The cheapest tiny case (MAML's mlp: a second-order step in milliseconds).
    assert main(["parity", "--tiny", "--model", "maml", "--out", str(tmp_path)]) == 1
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["tolerances"]["forward"]["atol"] == 1e-12
    assert any(f["kind"] == "forward" and not f["passed"]
               for r in report["results"] for f in r["figures"])


def test_optimizers_threads_and_settings_are_recorded(tmp_path, capsys):
    """``--optimizers`` adds the matched-rule runs, ``--threads`` pins both frameworks,
    ``--direction`` keeps one direction, and the report records the kernel-selecting
    settings the run used."""
    pytest.importorskip("keras")
    pytest.importorskip("torch")
    assert main(["parity", "--tiny", "--model", "maml", "--optimizers", "sgd", "rmsprop-keras",
                 "--threads", "1", "--steps", "2", "--seed", "3", "--direction", "keras_to_torch",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "maml-mlp+rmsprop-keras" in out and "headroom" in out and "floor" in out
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["optimizers"] == ["sgd", "rmsprop-keras"] and report["seed"] == 3
    assert {r["optimizer"] for r in report["results"]} == {"sgd", "rmsprop-keras"}
    assert report["directions"] == ["keras_to_torch"]
    assert {r["direction"] for r in report["results"]} == {"keras_to_torch"}
    for r in report["results"]:
        assert len(r["divergence"]) == len(r["floor"]) == 2 and r["headroom"] > 1
        assert 0 <= r["forced_ratio"] <= 0.5
    settings = report["settings"]
    assert settings["torch"]["intra_op"] == 1
    assert "cpu_capability" in settings["torch"] and "intra_op" in settings["keras"]


def test_unknown_optimizer_and_zero_steps_are_clear_errors(capsys):
    assert main(["parity", "--tiny", "--optimizers", "adamw"]) == 2
    err = capsys.readouterr().err
    assert "adamw" in err and "adam-torch" in err
    assert main(["parity", "--tiny", "--steps", "0"]) == 2
    assert "--steps" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:  # argparse's own error, status 2
        main(["parity", "--tiny", "--direction", "sideways"])
    assert exit_.value.code == 2 and "sideways" in capsys.readouterr().err


def test_model_takes_a_comma_list_and_names_a_bad_one(capsys):
    chosen = parity.cases("maml,reptile", tiny=True)
    assert {c.spec.name for c in chosen} == {"maml", "reptile"}
    assert main(["parity", "--tiny", "--model", "maml,nosuch"]) == 2
    assert "nosuch" in capsys.readouterr().err
