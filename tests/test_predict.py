"""``metalearn predict``: few-shot prediction on one's own images, CLI and API, both frameworks."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from metalearn.cli import main
from metalearn_shared.data import DataError
from metalearn_shared.training import load_splits

TINY = ["--ways", "3", "--shots", "1", "--queries", "2", "--seed", "3"]


def _save(img: np.ndarray, path, size: int, invert: bool, rgb: bool) -> None:
    """A stroke-high glyph as a user's file: another size, maybe colour, maybe dark ink."""
    pil = Image.fromarray(255 - img if invert else img, mode="L").resize((size, size))
    (pil.convert("RGB") if rgb else pil).save(path)


@pytest.fixture(scope="module")
def user_images(tmp_path_factory):
    """support/<class>/… (1 or 2 images, PNG and JPEG, sizes 40…90) and query files."""
    root = tmp_path_factory.mktemp("images")
    _, test = load_splits("glyphs", None, 28, False, seed=3)
    for c in range(3):
        idx = np.flatnonzero(test.labels == c)
        folder = root / "support" / f"class_{c}"
        folder.mkdir(parents=True)
        _save(test.images[idx[0]], folder / "a.png", 40 + 10 * c, invert=True, rgb=False)
        if c:  # classes with 1 and 2 examples
            _save(test.images[idx[1]], folder / "b.jpg", 90, invert=False, rgb=True)
        _save(test.images[idx[2]], root / f"query_{c}.jpg" if c % 2 else root / f"query_{c}.png",
              33 + c, invert=bool(c % 2), rgb=True)
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    pytest.importorskip("torch")
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--framework", "torch", "--model", "protonet", "--steps", "2",
                 "--out", str(out), *TINY]) == 0
    return out / "checkpoint.safetensors"


@pytest.mark.parametrize("fw", ["torch", "tf"])
def test_predict_cli_writes_csv_and_contact_sheet(fw, user_images, checkpoint, tmp_path, capsys):
    pytest.importorskip("torch" if fw == "torch" else "keras")
    queries = sorted(str(p) for p in user_images.glob("query_*"))
    assert main(["predict", "--framework", fw, str(checkpoint), "--support",
                 str(user_images / "support"), "--query", *queries, "--top-k", "2",
                 "--out", str(tmp_path)]) == 0
    with open(tmp_path / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == queries
    assert all(r["predicted"] in {"class_0", "class_1", "class_2"} for r in rows)
    assert all(len(r["top_k"].split(";")) == 2 and 0 < float(r["confidence"]) <= 1 for r in rows)
    sheet = Image.open(tmp_path / "predictions.png")
    assert sheet.size[1] > 3 * 72


def test_predict_api_same_in_both_frameworks(user_images, checkpoint):
    """The public API of each framework; one checkpoint gives the same probabilities."""
    pytest.importorskip("keras")
    from metalearn_tf.predict import predict as predict_tf
    from metalearn_torch.predict import predict as predict_torch

    a = predict_torch(checkpoint, user_images / "support", [user_images])
    b = predict_tf(str(checkpoint), user_images / "support", [user_images])
    assert a.classes == b.classes == ("class_0", "class_1", "class_2")
    assert len(a.files) == 3 + 5  # the query folder: its 3 queries + the 5 support images
    np.testing.assert_allclose(a.probabilities, b.probabilities, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(a.probabilities.sum(axis=1), 1.0, rtol=1e-6)


def test_predict_siamese_scores_classes_by_best_match(user_images, tmp_path):
    pytest.importorskip("torch")
    from metalearn_torch.predict import predict

    out = tmp_path / "run"
    assert main(["train", "--framework", "torch", "--model", "siamese", "--batch", "4",
                 "--steps", "1", "--out", str(out), *TINY]) == 0
    pred = predict(out / "checkpoint.safetensors", user_images / "support",
                   [user_images / "support" / "class_2"])
    assert pred.predicted == ["class_2", "class_2"]  # a support image is its own best match


def test_conversion_polarity_and_size_do_not_matter(tmp_path):
    from metalearn_shared.predict import load_image

    glyph = np.zeros((50, 30), np.uint8)
    glyph[10:40, 12:18] = 255  # a bar, ink high
    Image.fromarray(255 - glyph).save(tmp_path / "dark_ink.png")
    Image.fromarray(glyph).convert("RGB").save(tmp_path / "light_ink.jpg", quality=95)
    a, b = load_image(tmp_path / "dark_ink.png", 28), load_image(tmp_path / "light_ink.jpg", 28)
    assert a.shape == b.shape == (28, 28) and a.dtype == np.uint8
    assert a[14, 14] > 200 and a[1, 1] < 30  # ink high, paper low, after inversion
    assert np.abs(a.astype(int) - b).max() < 40  # JPEG noise only


@pytest.mark.parametrize("case,message", [
    ("empty_class", "holds no images"),
    ("non_image", "not an image file"),
    ("single_class", "at least 2 classes"),
    ("corrupt_image", "not a readable image"),
])
def test_bad_support_folders_are_clear_errors(case, message, user_images, checkpoint, tmp_path,
                                              capsys):
    import shutil

    support = tmp_path / "support"
    shutil.copytree(user_images / "support", support)
    if case == "empty_class":
        (support / "class_3").mkdir()
    elif case == "non_image":
        (support / "class_1" / "notes.txt").write_text("hello")
    elif case == "single_class":
        shutil.rmtree(support / "class_1")
        shutil.rmtree(support / "class_2")
    else:
        (support / "class_1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    assert main(["predict", str(checkpoint), "--support", str(support), "--query",
                 str(user_images / "query_0.png"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_predict_refuses_a_sequence_model(user_images, tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "run"
    assert main(["train", "--framework", "torch", "--model", "lstm", "--steps", "1", "--batch",
                 "2", "--ways", "3", "--samples-per-class", "2", "--out", str(out)]) == 0
    assert main(["predict", str(out / "checkpoint.safetensors"), "--support",
                 str(user_images / "support"), "--query", str(user_images)]) == 2
    assert "sequence model" in capsys.readouterr().err


def test_read_support_errors_are_data_errors(tmp_path):
    from metalearn_shared.predict import read_support

    with pytest.raises(DataError, match="at least 2 classes"):
        read_support(tmp_path, 28)
