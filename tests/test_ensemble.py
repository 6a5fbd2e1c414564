"""``metalearn eval --ensemble``: the mean of several checkpoints' class probabilities, any
framework per member (issue 14: "an ensemble of a torch and a Keras model")."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metalearn.cli import main
from metalearn_shared.evaluation import ModelFns, ensemble

TINY = ["--ways", "3", "--shots", "1", "--queries", "2"]


def _fixed(scores):
    return ModelFns(class_scores=lambda sx, sy, qx, ways: np.asarray(scores, np.float64))


def test_ensemble_averages_probabilities_not_scores():
    """One query, 3 classes. Member A is extremely sure of class 0; B and C are fairly sure
    of class 1. Mean scores pick 0, mean probabilities pick 1."""
    a, b, c = _fixed([[12.0, 0.0, 0.0]]), _fixed([[0.0, 4.0, 0.0]]), _fixed([[0.0, 4.0, 0.0]])
    sy = np.arange(3)
    assert np.argmax(np.mean([[12.0, 0, 0], [0, 4.0, 0], [0, 4.0, 0]], axis=0)) == 0
    # probabilities: A gives class 0 ~1.0, B and C give class 1 0.965: mean 0.35 vs 0.64
    assert ensemble([a, b, c]).predict(None, sy, None).tolist() == [1]
    assert ensemble([a]).predict(None, sy, None).tolist() == [0]


def test_sequence_models_cannot_be_members():
    with pytest.raises(ValueError, match="sequence model"):
        ensemble([_fixed([[1.0, 0.0]]), ModelFns(logits=lambda x, p: x)])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """ProtoNets on glyphs, fold 2 of 4 held out: one torch, one Keras; one torch on fold 1."""
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    root = tmp_path_factory.mktemp("ensemble")
    for name, fw, fold in [("torch", "torch", "2/4"), ("keras", "keras", "2/4"),
                           ("other", "torch", "1/4")]:
        assert main(["train", "--framework", fw, "--model", "protonet", "--steps", "3",
                     "--holdout", f"fold:{fold}", "--out", str(root / name), *TINY]) == 0
    return root


def _eval(ckpt, out, *extra):
    assert main(["eval", str(ckpt), "--episodes", "12", "--out", str(out), *TINY, *extra]) == 0
    return json.loads((out / "eval.json").read_text())


def test_a_torch_and_a_keras_checkpoint_ensemble(runs, tmp_path):
    t, k = runs / "torch" / "checkpoint.safetensors", runs / "keras" / "checkpoint.safetensors"
    report = _eval(t, tmp_path / "tk", "--ensemble", f"keras:{k}")
    members = report["ensemble"]["members"]
    assert [m["framework"] for m in members] == ["torch", "keras"]
    assert members[0]["checkpoint"] == str(t) and members[1]["checkpoint"] == str(k)
    # each member's figure is its own evaluation on the same episodes
    assert members[0]["accuracy"] == _eval(t, tmp_path / "t")["accuracy"]
    assert members[1]["accuracy"] == _eval(k, tmp_path / "k", "--framework", "keras")["accuracy"]
    assert 0 <= report["accuracy"]["mean"] <= 1


def test_an_ensemble_of_one_model_twice_is_that_model(runs, tmp_path):
    t = runs / "torch" / "checkpoint.safetensors"
    report = _eval(t, tmp_path / "tt", "--ensemble", f"torch:{t}", "--ensemble", str(t))
    assert len(report["ensemble"]["members"]) == 3
    assert report["accuracy"] == report["ensemble"]["members"][0]["accuracy"]


def test_members_must_share_the_split(runs, tmp_path, capsys):
    code = main(["eval", str(runs / "torch" / "checkpoint.safetensors"), "--episodes", "4",
                 "--ensemble", str(runs / "other" / "checkpoint.safetensors"), *TINY])
    assert code != 0
    err = capsys.readouterr().err
    assert "was trained with --holdout fold:1/4, the first checkpoint with --holdout fold:2/4" in err
    assert "members must share the data and the split" in err


def test_members_may_differ_in_their_extra_training_classes():
    """Rotations and reflections add training classes, not held-out alphabets: such members
    combine; another split does not."""
    from metalearn_shared.evaluation import Member, ModelFns, _check_member

    first = {"dataset": "omniglot", "seed": 0, "holdout": "fold:3/4", "size": 28,
             "rotations": True, "reflections": False}

    def member(**data):
        return Member("m.safetensors", "torch", ModelFns(), {"data": {**first, **data}})

    _check_member(first, member(rotations=False, reflections=True))
    with pytest.raises(ValueError, match="trained with --holdout fold:1/4"):
        _check_member(first, member(holdout="fold:1/4"))


def test_tta_wraps_the_model_and_every_member_with_the_same_views(runs, tmp_path, capsys):
    """``--tta`` (tests/test_tta.py holds its rule): the report records it, it changes
    what the model sees, the same weights in Keras see the same views, and every ensemble
    member gets them (an ensemble of a model with itself is that model, under --tta too)."""
    t = runs / "torch" / "checkpoint.safetensors"
    plain = _eval(t, tmp_path / "t")
    tta = _eval(t, tmp_path / "t3", "--tta", "3")
    assert tta["test_time_augmentation"]["views"] == 3
    assert tta["test_time_augmentation"]["augment"] == "koch"
    assert tta["accuracy"] != plain["accuracy"]
    keras = _eval(t, tmp_path / "k3", "--tta", "3", "--framework", "keras")
    assert keras["accuracy"]["mean"] == pytest.approx(tta["accuracy"]["mean"], abs=1.01 / 24)
    both = _eval(t, tmp_path / "tt3", "--tta", "3", "--ensemble", f"keras:{t}")
    assert both["accuracy"] == tta["accuracy"]
    assert [m["accuracy"] for m in both["ensemble"]["members"]] == [tta["accuracy"], keras["accuracy"]]
    with pytest.raises(SystemExit):
        main(["eval", str(t), "--tta", "0", *TINY])
    assert "argument --tta: must be at least 1" in capsys.readouterr().err
    assert main(["eval", str(t), "--tta", "2", "--lake-runs", str(tmp_path), *TINY]) != 0
    assert "the official runs (--lake-runs) are scored without it" in capsys.readouterr().err
