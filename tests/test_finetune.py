"""Transductive fine-tuning on the support set (``metalearn eval --finetune STEPS``, issue 14):
the episode it tunes on (numpy, :class:`FineTuning`), the SGD steps in each framework, and
the two frameworks tuning the same weights alike."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metalearn.cli import main
from metalearn_shared.augment import _affine_warp, _koch_params, augment_spec
from metalearn_shared.evaluation import FineTuning, ModelFns, SupportFineTuning
from metalearn_shared.losses import log_softmax

TINY = ["--ways", "3", "--shots", "1", "--queries", "2"]
KOCH = augment_spec("koch")


def _trial(seed=0):
    """A 3-way 1-shot trial of held-out glyph classes (the checkpoint's split)."""
    from metalearn_shared.episodes import FewShotSampler
    from metalearn_shared.training import load_splits

    _, test = load_splits("glyphs", None, 28, False, seed=0, holdout="fold:2/4")
    e = FewShotSampler(test, 3, 1, 4, seed=seed).episode(0)
    return e.support_x, e.support_y, e.query_x


def test_the_tuning_episode_is_the_support_set_and_distorted_copies_of_it():
    sx, sy, _ = _trial()
    tuning = FineTuning(steps=2, views=3)
    e = tuning.episode(sx, sy, np.random.default_rng(1))
    np.testing.assert_array_equal(e.support_x, sx)
    np.testing.assert_array_equal(e.support_y, sy)
    assert e.query_x.shape == (9, 28, 28) and e.query_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # each query is its own class's support image under one draw of Koch's distortion,
    # drawn for the nine copies at once from the trial's generator (the spec both
    # frameworks' tuning episodes come from)
    rng = np.random.default_rng(1)
    expected = _affine_warp(np.repeat(sx, 3, axis=0), _koch_params(rng, KOCH, (9,), (28, 28)))
    np.testing.assert_array_equal(e.query_x, expected)
    assert all(np.abs(e.query_x[j] - sx[j // 3]).max() > 0.1 for j in range(9))  # all moved
    again = tuning.episode(sx, sy, np.random.default_rng(1))
    np.testing.assert_array_equal(again.query_x, e.query_x)


@pytest.mark.parametrize("bad, says", [
    (dict(steps=-1), "--finetune STEPS >= 0"),
    (dict(steps=1, lr=0.0), "--finetune-lr > 0"),
    (dict(steps=1, views=0), "--finetune-views >= 1"),
    (dict(steps=1, augment="none"), "a distortion is needed"),
    (dict(steps=1, entropy=-1.0), "--finetune-entropy >= 0"),
])
def test_bad_settings_are_named(bad, says):
    with pytest.raises(ValueError, match=says):
        FineTuning(**bad)


def test_models_without_a_few_shot_loss_are_refused():
    with pytest.raises(ValueError, match="pair or sequence model has no few-shot loss"):
        SupportFineTuning(ModelFns(class_scores=lambda *a: None), FineTuning(1))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A ProtoNet trained a few steps on glyphs (fold 2 of 4 held out)."""
    pytest.importorskip("torch")
    pytest.importorskip("keras")
    out = tmp_path_factory.mktemp("finetune") / "run"
    assert main(["train", "--framework", "torch", "--model", "protonet", "--steps", "3",
                 "--holdout", "fold:2/4", "--out", str(out), *TINY]) == 0
    return out / "checkpoint.safetensors"


def _frameworks(checkpoint):
    from metalearn_tf.evaluate import load_any
    from metalearn_tf.evaluate import model_fns as keras_fns
    from metalearn_torch.evaluate import _load
    from metalearn_torch.evaluate import model_fns as torch_fns

    return torch_fns(_load(str(checkpoint))[0]), keras_fns(load_any(str(checkpoint))[0])


def _tuning_loss(fns, episode, steps, lr):
    """The mean cross-entropy of the tuning episode's own queries after ``steps`` steps."""
    trial = FineTuning.trial(episode.support_x, episode.support_y, episode.query_x)
    scores = fns.adapted_scores(episode, trial, steps, lr, 0.0)
    return -np.mean(log_softmax(np.asarray(scores, np.float64))[np.arange(len(episode.query_y)),
                                                                 episode.query_y])


def _entropy(scores):
    logp = log_softmax(np.asarray(scores, np.float64))
    return np.mean(-np.sum(np.exp(logp) * logp, axis=-1))


def test_both_frameworks_tune_the_same_weights_alike_and_restore_them(checkpoint):
    """From one canonical checkpoint: the SGD steps lower the tuning loss in each
    framework; torch and Keras end at the same scores (far closer than tuning moves them);
    zero steps and the weights afterwards are the untuned model."""
    sx, sy, qx = _trial(3)
    episode = FineTuning(5, lr=0.2, views=2).episode(sx, sy, np.random.default_rng(0))
    trial = FineTuning.trial(sx, sy, qx)
    tuned, plain = {}, {}
    for name, fns in zip(("torch", "keras"), _frameworks(checkpoint), strict=True):
        plain[name] = fns.class_scores(sx, sy, qx, 3)
        np.testing.assert_array_equal(fns.adapted_scores(episode, trial, 0, 0.2, 1.0), plain[name])
        before = _tuning_loss(fns, episode, 0, 0.2)
        after = _tuning_loss(fns, episode, 5, 0.2)
        assert after < 0.5 * before, (name, before, after)  # the steps descend the loss
        tuned[name] = fns.adapted_scores(episode, trial, 5, 0.2, 0.0)
        # the transductive term makes the model surer of the trial's own queries
        sure = fns.adapted_scores(episode, trial, 5, 0.05, 2.0)
        tuned[name, "entropy"] = sure
        assert _entropy(sure) < _entropy(fns.adapted_scores(episode, trial, 5, 0.05, 0.0)), name
        np.testing.assert_array_equal(fns.class_scores(sx, sy, qx, 3), plain[name])  # restored
    for key in ("torch", ("torch", "entropy")):
        other = "keras" if key == "torch" else ("keras", "entropy")
        moved = np.abs(tuned[key] - plain["torch"]).max()
        gap = np.abs(tuned[key] - tuned[other]).max()
        assert gap < 1e-3 * moved, (key, gap, moved)
    np.testing.assert_allclose(plain["torch"], plain["keras"], rtol=1e-4, atol=1e-4)


def test_the_objective_reference_adds_the_weighted_query_entropy():
    uniform, sure = np.zeros((2, 4)), np.array([[50.0, 0, 0, 0], [0, 50.0, 0, 0]])
    assert FineTuning(1, entropy=0.5).objective(0.25, uniform) == pytest.approx(0.25 + 0.5 * np.log(4))
    assert FineTuning(1, entropy=0.5).objective(0.25, sure) == pytest.approx(0.25, abs=1e-18)
    assert FineTuning(1).objective(0.25, uniform) == 0.25


def test_each_framework_descends_the_spec_objective(checkpoint):
    """What each framework's SGD steps descend is the spec's objective: the model's loss on
    the tuning episode (the cross-entropy of its scores) plus the weighted entropy of its
    scores for the trial's queries."""
    from metalearn_tf import evaluate as keras_eval
    from metalearn_torch import evaluate as torch_eval

    sx, sy, qx = _trial(4)
    tuning = FineTuning(1, views=2, entropy=0.7)
    episode, trial = tuning.episode(sx, sy, np.random.default_rng(2)), tuning.trial(sx, sy, qx)
    for module, model in ((torch_eval, torch_eval._load(str(checkpoint))[0]),
                          (keras_eval, keras_eval.load_any(str(checkpoint))[0])):
        fns = module.model_fns(model)
        logp = log_softmax(np.asarray(fns.class_scores(*episode[:3], 3), np.float64))
        loss = -np.mean(logp[np.arange(len(episode.query_y)), episode.query_y])
        expected = tuning.objective(loss, fns.class_scores(sx, sy, qx, 3))
        if module is torch_eval:
            model.eval()  # as adapted_scores sets it (Keras: training=False inside)
        value = module.tuning_objective(model, episode, trial, tuning.entropy)()
        got = float(value.detach()) if module is torch_eval else float(np.asarray(value))
        assert got == pytest.approx(expected, rel=1e-5), module.__name__


def test_eval_finetune_is_reported_and_zero_steps_change_nothing(checkpoint, tmp_path):
    def run(out, *extra):
        assert main(["eval", str(checkpoint), "--episodes", "6", "--out", str(out), *TINY,
                     *extra]) == 0
        return json.loads((out / "eval.json").read_text())

    plain = run(tmp_path / "plain")
    tuned = run(tmp_path / "tuned", "--finetune", "2", "--finetune-lr", "0.01",
                "--finetune-views", "2", "--framework", "keras")
    assert tuned["finetune"]["steps"] == 2 and tuned["finetune"]["views"] == 2
    assert "restored after every trial" in tuned["finetune"]["rule"]
    assert "finetune" not in plain
    assert run(tmp_path / "zero", "--finetune", "0")["accuracy"] == plain["accuracy"]


def test_eval_finetune_bad_settings_and_the_official_runs_are_named(checkpoint, tmp_path, capsys):
    base = ["eval", str(checkpoint), "--episodes", "2", *TINY]
    assert main([*base, "--finetune", "1", "--finetune-lr", "0"]) != 0
    assert "--finetune-lr > 0" in capsys.readouterr().err
    assert main([*base, "--finetune", "1", "--lake-runs", str(tmp_path)]) != 0
    assert "the official runs (--lake-runs) are scored without it" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["siamese", "maml"])
def test_eval_finetune_refuses_pair_and_inner_loop_models(model, tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / model
    assert main(["train", "--framework", "torch", "--model", model, "--batch", "4",
                 "--steps", "1", "--out", str(out), *TINY]) == 0
    assert main(["eval", str(out / "checkpoint.safetensors"), "--episodes", "2",
                 "--finetune", "1", *TINY]) != 0
    assert "the MAML family adapts to the support set itself" in capsys.readouterr().err
