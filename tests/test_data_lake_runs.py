"""The official one-shot runs format: reader, protocol, and the fixture writer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metalearn_shared.data import (
    DataError,
    ImageDataset,
    evaluate_runs,
    load_omniglot,
    make_glyphs,
    pixel_cost,
    read_runs,
    write_runs,
)


def _lookup_score(dataset: ImageDataset):
    """A perfect score function: 1 where test and training image show the same class."""
    class_of = {image.tobytes(): label for image, label in zip(dataset.images, dataset.labels,
                                                               strict=True)}

    def score(test, train):
        t = np.array([class_of[x.tobytes()] for x in test])
        k = np.array([class_of[x.tobytes()] for x in train])
        return (t[:, None] == k[None, :]).astype(float)  # (Q, K)

    return score, class_of


def _write_png(path: Path, value: int, size: int = 8) -> None:
    """A flat grey image whose stroke-high value is ``value`` (paper-white on disk)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size), 255 - value, np.uint8), mode="L").save(path)


@pytest.fixture
def hand_run(tmp_path) -> Path:
    """run01: 4 training images (values 10, 20, 30, 40) and 4 test items, answers known."""
    run = tmp_path / "run01"
    for k, value in enumerate((10, 20, 30, 40), start=1):
        _write_png(run / "training" / f"class{k:02d}.png", value)
    # item: (value, answer). item02 is nearest class03 but is class02 (wrong); item03 ties
    # between class02 and class03, argmin takes the first, class02, but it is class03 (wrong).
    items = {"item01": (11, 1), "item02": (29, 2), "item03": (25, 3), "item04": (38, 4)}
    for name, (value, _) in items.items():
        _write_png(run / "test" / f"{name}.png", value)
    lines = [f"run01/test/{n}.png run01/training/class{a:02d}.png" for n, (_, a) in items.items()]
    (run / "class_labels.txt").write_text("\n".join(reversed(lines)) + "\n")  # any line order
    return tmp_path


def _mean_cost(test, train):
    return np.abs(test.mean(axis=(1, 2))[:, None] - train.mean(axis=(1, 2))[None, :])


def test_hand_checked_argmin(hand_run):
    (run,) = read_runs(hand_run, size=None)
    assert run.train_files == tuple(f"run01/training/class{k:02d}.png" for k in (1, 2, 3, 4))
    assert run.test_files == tuple(f"run01/test/item{k:02d}.png" for k in (1, 2, 3, 4))
    np.testing.assert_array_equal(run.answers, [0, 1, 2, 3])
    np.testing.assert_array_equal(run.train_images[:, 0, 0], [10, 20, 30, 40])
    result = evaluate_runs(hand_run, _mean_cost, kind="cost", size=None)
    np.testing.assert_array_equal(result.predictions[0], [0, 2, 1, 3])
    assert result.runs == ("run01",)
    assert result.errors.tolist() == [0.5] and result.mean_error == 0.5
    # The same numbers as a score: argmax of the negated cost, ties still to the first.
    negated = evaluate_runs(hand_run, lambda q, k: -_mean_cost(q, k), kind="score", size=None)
    np.testing.assert_array_equal(negated.predictions[0], [0, 2, 1, 3])
    assert "50.00% error" in str(result)


def test_all_runs_subfolder_is_found(hand_run):
    nested = hand_run / "all_runs"
    nested.mkdir()
    (hand_run / "run01").rename(nested / "run01")
    assert evaluate_runs(hand_run, _mean_cost, kind="cost", size=None).mean_error == 0.5


def test_protocol_errors(hand_run, tmp_path):
    with pytest.raises(ValueError, match="'score' or 'cost'"):
        evaluate_runs(hand_run, _mean_cost, kind="distance")
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        evaluate_runs(hand_run, lambda q, k: np.zeros((3, 4)), size=None)
    with pytest.raises(ValueError, match="NaN"):
        evaluate_runs(hand_run, lambda q, k: np.full((4, 4), np.nan), size=None)
    with pytest.raises(FileNotFoundError):
        read_runs(tmp_path / "missing")
    with pytest.raises(DataError, match="runNN"):
        read_runs(hand_run / "run01" / "training")


def test_bad_label_file_names_file_and_line(hand_run):
    labels = hand_run / "run01" / "class_labels.txt"
    labels.write_text("run01/test/item01.png run01/training/class01.png\njust-one-token\n")
    with pytest.raises(DataError, match=r"class_labels.txt:2"):
        read_runs(hand_run)
    labels.unlink()
    with pytest.raises(DataError, match="missing class_labels.txt"):
        read_runs(hand_run)


def test_unnamed_training_image_is_refused(hand_run):
    _write_png(hand_run / "run01" / "training" / "class05.png", 50)
    with pytest.raises(DataError, match="class05.png"):
        read_runs(hand_run)


def test_truncated_run_png_names_the_file(hand_run):
    png = hand_run / "run01" / "test" / "item03.png"
    png.write_bytes(png.read_bytes()[:30])
    with pytest.raises(DataError, match="item03.png"):
        read_runs(hand_run)


def _check_written_runs(dataset: ImageDataset, root: Path, n_runs: int) -> None:
    runs = read_runs(root, size=None)
    assert [r.name for r in runs] == [f"run{i:02d}" for i in range(1, n_runs + 1)]
    score, class_of = _lookup_score(dataset)
    for run in runs:
        assert run.train_images.shape[0] == run.test_images.shape[0] == 20
        assert sorted(run.answers.tolist()) == list(range(20))  # one item per class
        train_classes = [class_of[x.tobytes()] for x in run.train_images]
        test_classes = [class_of[x.tobytes()] for x in run.test_images]
        assert sorted(train_classes) == sorted(test_classes)
        assert len({dataset.classes[c].alphabet for c in train_classes}) == 1  # within alphabet
        # Test and training drawings of a character are different instances.
        assert not any(np.array_equal(a, b) for a, b in zip(run.train_images[run.answers],
                                                             run.test_images, strict=True))
    perfect = evaluate_runs(root, score, kind="score")
    assert perfect.errors.tolist() == [0.0] * n_runs and perfect.mean_error == 0.0


def test_write_runs_from_glyphs(tmp_path):
    glyphs = make_glyphs(60, 4, seed=1)
    write_runs(glyphs, tmp_path, n_runs=3, seed=2)
    _check_written_runs(glyphs, tmp_path, 3)
    label_line = (tmp_path / "run01" / "class_labels.txt").read_text().splitlines()[0]
    assert label_line.startswith("run01/test/item01.png run01/training/class")
    again = tmp_path / "again"
    write_runs(glyphs, again, n_runs=3, seed=2)
    for a, b in zip(read_runs(tmp_path), read_runs(again), strict=True):  # seeded
        np.testing.assert_array_equal(a.test_images, b.test_images)


def test_write_runs_mixes_alphabets_only_when_it_must(tmp_path):
    small_alphabets = make_glyphs(30, 2, classes_per_alphabet=10)
    with pytest.warns(UserWarning, match="mix alphabets"):
        write_runs(small_alphabets, tmp_path, n_runs=1)
    with pytest.raises(ValueError, match="20-way runs need 20 classes"):
        write_runs(make_glyphs(10, 2), tmp_path / "x", n_runs=1)


def test_runs_from_the_small_omniglot_sets(tmp_path):
    folder = os.environ.get("METALEARN_OMNIGLOT_DIR")
    if not folder:
        pytest.skip("METALEARN_OMNIGLOT_DIR not set: point it at a folder holding "
                    "images_background_small1.zip and images_background_small2.zip")
    small = load_omniglot("small", data_dir=folder, cache_dir=tmp_path / "cache",
                          download_missing=False)
    write_runs(small, tmp_path / "runs", n_runs=20, seed=0)
    _check_written_runs(small, tmp_path / "runs", 20)
    baseline = evaluate_runs(tmp_path / "runs", pixel_cost, kind="cost")
    # Raw-pixel nearest neighbour: far from perfect, clearly better than chance (95% error).
    assert 0.4 < baseline.mean_error < 0.93
