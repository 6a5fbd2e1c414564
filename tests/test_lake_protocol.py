"""Lake et al.'s within-alphabet one-shot protocol and the choice of held-out alphabets
(issue 14, part 1): ``--holdout`` (auto, fold:I/K, alphabets:..., none), the
:class:`WithinAlphabetSampler`, ``evaluate_within_alphabet`` and ``metalearn eval --protocol
lake-within-alphabet``."""

from __future__ import annotations

import json

import numpy as np
import pytest

from metalearn.cli import main
from metalearn_shared.data import (
    alphabet_folds,
    holdout_split,
    make_glyphs,
    parse_holdout,
    split_by_alphabet,
)
from metalearn_shared.episodes import WithinAlphabetSampler
from metalearn_shared.training import evaluate_within_alphabet

TINY = ["--ways", "3", "--shots", "1", "--queries", "2"]


@pytest.fixture(scope="module")
def glyphs():
    """8 alphabets: 6 of 20 characters, then one of 20 and one of 12 (the last alphabet is
    short, like Tagalog's 17 in the small sets)."""
    return make_glyphs(num_classes=152, instances=6, size=12, seed=0)


# -- --holdout ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, kind", [("auto", "auto"), ("none", "none"),
                                         ("fold:2/4", "fold"), ("alphabets:a,b", "alphabets")])
def test_holdout_values_parse(text, kind):
    h = parse_holdout(text)
    assert h.kind == kind
    if kind == "fold":
        assert (h.fold, h.folds) == (2, 4)
    if kind == "alphabets":
        assert h.alphabets == ("a", "b")


@pytest.mark.parametrize("text, says", [("fold:0/4", "1 ≤ I ≤ K"), ("fold:5/4", "1 ≤ I ≤ K"),
                                        ("fold:1/1", "K ≥ 2"), ("fold:x", "fold:I/K"),
                                        ("alphabets:", "name the held-out alphabets"),
                                        ("official", "expected auto, none")])
def test_bad_holdout_values_say_what_is_accepted(text, says):
    with pytest.raises(ValueError, match="--holdout") as e:
        parse_holdout(text)
    assert says in str(e.value)


def test_alphabet_folds_partition_the_alphabets(glyphs):
    folds = alphabet_folds(glyphs, 3, seed=1)
    flat = [a for f in folds for a in f]
    assert sorted(flat) == sorted(glyphs.alphabets)  # every alphabet exactly once
    assert sorted(len(f) for f in folds) == [2, 3, 3]
    assert alphabet_folds(glyphs, 3, seed=1) == folds
    assert alphabet_folds(glyphs, 3, seed=2) != folds
    for k in (1, len(glyphs.alphabets) + 1):
        with pytest.raises(ValueError, match="alphabet folds need 2 ≤ k"):
            alphabet_folds(glyphs, k)


def test_holdout_split_of_each_kind(glyphs):
    folds = alphabet_folds(glyphs, 4, seed=0)
    for i, fold in enumerate(folds, start=1):
        train, test = holdout_split(glyphs, f"fold:{i}/4", seed=0)
        assert set(test.alphabets) == set(fold)
        assert set(train.alphabets) == set(glyphs.alphabets) - set(fold)
        assert train.num_classes + test.num_classes == glyphs.num_classes
    train, test = holdout_split(glyphs, "auto", seed=3)  # the trainers' old default
    old = split_by_alphabet(glyphs, (0.75, 0.25), seed=3)
    assert train.alphabets == old[0].alphabets and test.alphabets == old[1].alphabets
    train, test = holdout_split(glyphs, "none")
    assert train is glyphs and test.num_classes == 0 and len(test) == 0
    a, b = glyphs.alphabets[:2]
    _, test = holdout_split(glyphs, f"alphabets:{a},{b}")
    assert test.alphabets == (a, b)
    with pytest.raises(ValueError, match="has no alphabet"):
        holdout_split(glyphs, "alphabets:Klingon")
    with pytest.raises(ValueError, match="leaves nothing to train on"):
        holdout_split(glyphs, "alphabets:" + ",".join(glyphs.alphabets))


# -- the trials --------------------------------------------------------------------------
def _position(dataset, index):
    """Each image's position among its class's drawings (the drawer, for Omniglot)."""
    rows = dataset.by_class[dataset.labels[index]]
    return np.argmax(rows == np.asarray(index)[..., None], axis=-1)


def test_trials_are_one_alphabet_with_drawers_apart(glyphs):
    s = WithinAlphabetSampler(glyphs, ways=20, seed=4)
    assert len(s.alphabets) == 7 and s.skipped == {glyphs.alphabets[-1]: 12}
    seen = set()
    for i in range(40):
        ep = s.episode(i)
        alphabets = {glyphs.classes[c].alphabet for c in ep.classes}
        assert len(alphabets) == 1 and alphabets <= set(s.alphabets)
        seen |= alphabets
        assert len(set(ep.classes.tolist())) == 20
        assert np.array_equal(glyphs.labels[ep.support_index], ep.classes)  # class-major
        assert np.array_equal(glyphs.labels[ep.query_index], ep.classes)
        train_pos, test_pos = _position(glyphs, ep.support_index), _position(glyphs, ep.query_index)
        # one drawer for all training images of a trial, another for all test images
        assert len(set(train_pos.tolist())) == 1 and len(set(test_pos.tolist())) == 1
        assert train_pos[0] != test_pos[0]
    assert seen == set(s.alphabets)
    b = s.batch(10, 3)
    assert np.array_equal(b.support_index[2], s.episode(12).support_index)
    assert np.array_equal(b.query_x[0], s.episode(10).query_x)


def test_no_alphabet_large_enough_is_a_clear_error(glyphs):
    with pytest.raises(ValueError, match="needs an alphabet with 21 characters") as e:
        WithinAlphabetSampler(glyphs, ways=21)
    assert "Lower ways" in str(e.value)


def test_within_alphabet_accuracy_is_over_trials(glyphs):
    s = WithinAlphabetSampler(glyphs, seed=1_000_003 + 7)
    label_of = {}  # the correct answer for every test image of the first trials

    def oracle(support_x, support_y, query_x):
        return np.array([label_of[q.tobytes()] for q in query_x])

    for i in range(12):
        ep = s.episode(i)
        label_of.update({q.tobytes(): y for q, y in zip(ep.query_x, ep.query_y, strict=True)})
    rep = evaluate_within_alphabet(oracle, glyphs, 12, seed=7, progress=False)
    assert rep["accuracy"]["mean"] == 1.0 and rep["error"] == 0.0 and rep["trials"] == 12
    assert sum(a["trials"] for a in rep["per_alphabet"].values()) == 12
    assert rep["skipped_alphabets"] == {glyphs.alphabets[-1]: 12}
    rep = evaluate_within_alphabet(lambda sx, sy, qx: np.zeros(len(qx), np.int64), glyphs, 12,
                                   seed=7, progress=False)
    assert rep["accuracy"]["mean"] == pytest.approx(1 / 20)  # one test image per label


# -- the command line --------------------------------------------------------------------
@pytest.fixture(scope="module")
def fold_run(tmp_path_factory):
    """A torch ProtoNet trained on glyphs with fold 2 of 4 held out."""
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("fold")
    assert main(["train", "--model", "protonet", "--steps", "1", "--holdout", "fold:2/4",
                 "--out", str(out), *TINY]) == 0
    return out


@pytest.mark.parametrize("fw", ["torch", "tf"])
def test_eval_runs_the_protocol_on_the_held_out_fold(fw, fold_run, tmp_path, capsys):
    from metalearn_shared.training import load_splits

    pytest.importorskip("torch" if fw == "torch" else "keras")
    assert main(["eval", str(fold_run / "checkpoint.safetensors"), "--framework", fw,
                 "--protocol", "lake-within-alphabet", "--episodes", "6",
                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "eval.json").read_text())
    _, test = load_splits("glyphs", None, 28, False, seed=0, holdout="fold:2/4")
    assert report["data"]["holdout"] == "fold:2/4" and report["protocol"] == "lake-within-alphabet"
    assert report["test_alphabets"] == list(test.alphabets)
    within = report["within_alphabet"]
    assert within["ways"] == 20 and within["trials"] == 6
    assert set(within["per_alphabet"]) <= set(test.alphabets)
    assert report["accuracy"] == within["accuracy"]
    assert "--holdout fold:2/4" in capsys.readouterr().err


def test_holding_nothing_out_needs_an_external_evaluation(tmp_path, capsys):
    pytest.importorskip("torch")
    code = main(["train", "--model", "protonet", "--steps", "1", "--holdout", "none",
                 "--eval-episodes", "5", "--out", str(tmp_path / "a"), *TINY])
    assert code != 0
    assert "--holdout none holds none out" in capsys.readouterr().err
    assert not (tmp_path / "a" / "checkpoint.safetensors").exists()
    assert main(["train", "--model", "protonet", "--steps", "1", "--holdout", "none",
                 "--out", str(tmp_path / "b"), *TINY]) == 0
    code = main(["eval", str(tmp_path / "b" / "checkpoint.safetensors"), "--episodes", "2"])
    assert code != 0
    assert "no alphabet is held out" in capsys.readouterr().err


def test_bad_holdout_and_protocol_for_sequence_models(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--holdout", "fold:5/4", "--out", str(tmp_path)])
    assert e.value.code == 2 and "1 ≤ I ≤ K" in capsys.readouterr().err
    pytest.importorskip("torch")
    run = tmp_path / "lstm"
    assert main(["train", "--model", "lstm", "--steps", "1", "--batch", "2", "--ways", "3",
                 "--samples-per-class", "2", "--out", str(run)]) == 0
    code = main(["eval", str(run / "checkpoint.safetensors"), "--protocol",
                 "lake-within-alphabet", "--episodes", "2"])
    assert code != 0 and "is a sequence model" in capsys.readouterr().err


# -- training on within-alphabet episodes (--episode-classes within-alphabet) ------------
def test_within_alphabet_training_episodes_reach_the_sampler(tmp_path):
    """``metalearn train --episode-classes within-alphabet`` → TrainConfig.episode_classes → a
    WithinAlphabetSampler over the training alphabets, distorted by ``--augment`` without
    changing its draws; the default stays random episodes across alphabets."""
    from metalearn.cli import build_parser
    from metalearn_shared import training as T
    from metalearn_shared.augment import AUGMENTS
    from metalearn_shared.episodes import FewShotSampler

    def setup(*extra):
        return T.setup_from_args(build_parser().parse_args(
            ["train", "--model", "protonet", "--out", str(tmp_path), *TINY, *extra]))

    within = setup("--episode-classes", "within-alphabet", "--augment", "koch")
    assert within.train.episode_classes == "within-alphabet"
    assert within.describe()["train"]["episode_classes"] == "within-alphabet"  # run.json records it
    sampler = T.train_sampler(within)
    assert isinstance(sampler, WithinAlphabetSampler) and sampler.augment == AUGMENTS["koch"]
    assert set(sampler.alphabets) <= set(within.train_data.alphabets)
    plain = WithinAlphabetSampler(within.train_data, 3, 1, 2, seed=within.train.seed)
    for i in range(12):
        ep, p = sampler.episode(i), plain.episode(i)
        assert len({within.train_data.classes[c].alphabet for c in ep.classes}) == 1
        np.testing.assert_array_equal(ep.support_index, p.support_index)
        assert np.abs(ep.query_x - p.query_x).max() > 1e-3  # distorted, same draws
    default = setup()
    assert default.train.episode_classes == "random"
    rand = T.train_sampler(default)
    assert isinstance(rand, FewShotSampler)
    assert any(len({default.train_data.classes[c].alphabet for c in rand.episode(i).classes}) > 1
               for i in range(12))


def test_within_alphabet_training_episodes_are_for_few_shot_models(capsys):
    from metalearn_shared.config import TrainConfig

    code = main(["train", "--model", "lstm", "--episode-classes", "within-alphabet", "--steps", "1"])
    assert code != 0
    assert ("--episode-classes within-alphabet draws the classes of few-shot episodes or of "
            "different pairs; lstm trains on") in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown --episode-classes 'lake'.*within-alphabet"):
        TrainConfig(episode_classes="lake")


def test_within_alphabet_negatives_for_pair_models(glyphs):
    """PairSampler(within_alphabet=True): every different pair's two classes are distinct
    and of one alphabet (the default's cross alphabets), and the draw is seeded;
    ``--episode-classes within-alphabet`` gives a Siamese network that sampler."""
    from metalearn.cli import build_parser
    from metalearn_shared import training as T
    from metalearn_shared.episodes import PairSampler

    hard, plain = (PairSampler(glyphs, 16, seed=3, within_alphabet=w) for w in (True, False))
    alphabet = np.array([c.alphabet for c in glyphs.classes])
    crossed = 0
    for i in range(8):
        h, p = hard.episode(i), plain.episode(i)
        c1, c2 = glyphs.labels[h.index1], glyphs.labels[h.index2]
        diff = h.y == 0
        assert np.all(c1[diff] != c2[diff]) and np.all(alphabet[c1[diff]] == alphabet[c2[diff]])
        assert np.all(c1[~diff] == c2[~diff])
        assert diff.sum() == 8  # balanced, as the default
        q1, q2 = glyphs.labels[p.index1], glyphs.labels[p.index2]
        crossed += int(np.sum(alphabet[q1[diff]] != alphabet[q2[diff]]))
    assert crossed > 0  # the default's negatives do cross alphabets: the check can fail
    np.testing.assert_array_equal(hard.episode(5).index2,
                                  PairSampler(glyphs, 16, seed=3, within_alphabet=True).episode(5).index2)
    setup = T.setup_from_args(build_parser().parse_args(
        ["train", "--model", "siamese", "--episode-classes", "within-alphabet", "--steps", "1"]))
    assert T.train_sampler(setup)._alphabets is not None
    one = make_glyphs(num_classes=20, instances=3, size=12, seed=0, classes_per_alphabet=1)
    with pytest.raises(ValueError, match="within-alphabet negatives need an alphabet with 2"):
        PairSampler(one, 4, within_alphabet=True)


@pytest.mark.parametrize("fw", ["torch", "tf"])
def test_both_trainers_train_on_within_alphabet_episodes(fw, tmp_path):
    pytest.importorskip("torch" if fw == "torch" else "keras")
    out = tmp_path / fw
    assert main(["train", "--framework", fw, "--model", "protonet", "--steps", "2",
                 "--episode-classes", "within-alphabet", "--out", str(out), *TINY]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["train"]["episode_classes"] == "within-alphabet"
    assert (out / "checkpoint.safetensors").exists()
