"""The procedural glyphs dataset, rotations, reflections, alphabet splits, info and the
preview PNG."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from metalearn_shared.data import (
    add_reflections,
    add_rotations,
    info,
    load_dataset,
    make_glyphs,
    pixel_cost,
    preview_png,
    split_by_alphabet,
)


@pytest.fixture(scope="module")
def glyphs():
    return make_glyphs(num_classes=60, instances=20, size=28, seed=3)


def test_shapes_labels_and_alphabets(glyphs):
    assert glyphs.images.shape == (1200, 28, 28) and glyphs.images.dtype == np.uint8
    assert glyphs.num_classes == 60
    np.testing.assert_array_equal(glyphs.counts, np.full(60, 20))
    np.testing.assert_array_equal(glyphs.labels, np.repeat(np.arange(60), 20))
    assert glyphs.alphabets == ("alphabet000", "alphabet001", "alphabet002")
    assert glyphs.classes[21].alphabet == "alphabet001"
    assert glyphs.classes[21].character == "character02"
    assert len({c.key for c in glyphs.classes}) == 60


def test_stroke_high_with_ink_in_every_image(glyphs):
    ink = (glyphs.images > 128).mean(axis=(1, 2))  # fraction of inked pixels per image
    assert ink.min() > 0.01 and ink.max() < 0.5
    assert glyphs.images.max() == 255
    corners = glyphs.images[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert np.median(corners) == 0  # background is low


def test_same_seed_same_arrays_other_seed_differs():
    a = make_glyphs(30, 5, seed=11)
    b = make_glyphs(30, 5, seed=11)
    c = make_glyphs(30, 5, seed=12)
    np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(a.images, c.images)


def test_class_templates_do_not_depend_on_instances():
    few = make_glyphs(10, 2, seed=5)
    many = make_glyphs(10, 20, seed=5)
    # Same characters: instances of one class are closer to the same class's instances.
    cost = pixel_cost(few.images, many.images)  # (20, 200)
    nearest_class = many.labels[cost.argmin(axis=1)]
    assert (nearest_class == few.labels).mean() >= 0.9


def test_classes_are_distinguishable(glyphs):
    # Leave-one-out 1-nearest-neighbour on raw pixels, 60 classes: chance is 1/60.
    cost = pixel_cost(glyphs.images, glyphs.images)
    np.fill_diagonal(cost, np.inf)
    accuracy = (glyphs.labels[cost.argmin(axis=1)] == glyphs.labels).mean()
    assert accuracy > 0.4
    # ... but instances of a class are not copies of each other.
    first = glyphs.images[glyphs.labels == 0].astype(int)
    assert np.abs(first[0] - first[1]).sum() > 0


@pytest.mark.parametrize("size", [20, 105])
def test_other_sizes(size):
    ds = make_glyphs(4, 3, size=size)
    assert ds.image_shape == (size, size)
    assert ((ds.images > 128).mean(axis=(1, 2)) > 0.01).all()


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="num_classes"):
        make_glyphs(0)
    with pytest.raises(ValueError, match="at least 8 pixels"):
        make_glyphs(3, size=4)


def test_rotations_are_new_classes(glyphs):
    rotated = add_rotations(glyphs)
    assert rotated.num_classes == 4 * glyphs.num_classes
    assert [c.rotation for c in rotated.classes[::60]] == [0, 90, 180, 270]
    cls = 7
    for k, angle in enumerate((0, 90, 180, 270)):
        new = cls + k * glyphs.num_classes
        assert rotated.classes[new].rotation == angle
        assert rotated.classes[new].character == glyphs.classes[cls].character
        np.testing.assert_array_equal(
            rotated.images[rotated.labels == new],
            np.rot90(glyphs.images[glyphs.labels == cls], k, axes=(1, 2)),
        )
    with pytest.raises(ValueError, match="already has rotated"):
        add_rotations(rotated)


def test_reflections_mirror_every_class_rotated_ones_too(glyphs):
    both = add_reflections(add_rotations(glyphs))
    n = glyphs.num_classes
    assert both.num_classes == 8 * n
    cls = 7
    for k in range(4):
        mirrored = cls + k * n + 4 * n
        info_ = both.classes[mirrored]
        assert (info_.alphabet, info_.character, info_.rotation, info_.mirrored) == (
            glyphs.classes[cls].alphabet, glyphs.classes[cls].character, 90 * k, True)
        np.testing.assert_array_equal(  # the mirror of the rotated class, left to right
            both.images[both.labels == mirrored],
            np.rot90(glyphs.images[glyphs.labels == cls], k, axes=(1, 2))[:, :, ::-1])
    assert len({c.key for c in both.classes}) == 8 * n  # every class has its own id
    assert both.classes[cls + 4 * n].key.endswith("@mirror")
    assert both.classes[cls + 5 * n].key.endswith("@90+mirror")
    assert "mirrored classes: 240" in info(both)  # 60 characters × 4 rotations
    assert info(both).splitlines()[-1] == info(glyphs).splitlines()[-1]  # characters counted once
    from metalearn_shared.data.omniglot import merge_datasets

    assert merge_datasets([glyphs, add_reflections(glyphs)], "m").num_classes == 2 * n
    with pytest.raises(ValueError, match="already has mirrored classes; add reflections once"):
        add_reflections(both)
    with pytest.raises(ValueError, match="add rotations first, then reflections"):
        add_rotations(add_reflections(glyphs))


def test_alphabet_split_disjoint_and_seeded():
    ds = add_rotations(make_glyphs(200, 2, classes_per_alphabet=20))  # 10 alphabets
    train, val, test = split_by_alphabet(ds, (0.6, 0.2, 0.2), seed=4)
    sets = [set(p.alphabets) for p in (train, val, test)]
    assert [len(s) for s in sets] == [6, 2, 2]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert train.num_classes == 6 * 20 * 4  # rotations stay with their alphabet
    again = split_by_alphabet(ds, (6, 2, 2), seed=4)
    assert [p.alphabets for p in again] == [p.alphabets for p in (train, val, test)]
    others = {split_by_alphabet(ds, (0.6, 0.2, 0.2), seed=s)[0].alphabets for s in range(5)}
    assert len(others) > 1
    with pytest.raises(ValueError, match="empty"):
        split_by_alphabet(ds, (0.95, 0.05))
    with pytest.raises(ValueError, match="at most"):
        split_by_alphabet(ds, (8, 3))


def test_load_dataset_dispatch():
    ds = load_dataset("glyphs", size=20, num_classes=12, instances=3, rotations=True)
    assert ds.image_shape == (20, 20) and ds.num_classes == 48
    with pytest.raises(ValueError, match="glyphs, omniglot"):
        load_dataset("mnist")


def test_info_mentions_counts(glyphs):
    text = info(glyphs)
    assert "1200 images of 28×28" in text and "60 classes" in text and "3 alphabets" in text
    assert "alphabet001 (20)" in text


def test_preview_png(glyphs, tmp_path):
    path = preview_png(glyphs, tmp_path / "episode.png", ways=5, shots=2, queries=3, seed=1)
    with Image.open(path) as image:
        assert image.mode == "RGB"
        width, height = image.size
    # 5 columns, 2 + 3 rows of 56-px tiles (28 px × 2) with 2-px gaps, plus a 6-px rule.
    assert (width, height) == (5 * 58 + 2, 5 * 58 + 2 + 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episode.png"]
    with pytest.raises(ValueError, match="61 classes"):
        preview_png(glyphs, tmp_path / "x.png", ways=61)
    with pytest.raises(ValueError, match="≥ 21 instances"):
        preview_png(glyphs, tmp_path / "x.png", shots=1, queries=20)


def test_data_package_imports_no_framework():
    code = ("import sys, metalearn_shared.data; "
            "bad = [m for m in ('tensorflow', 'torch', 'tensorflow_datasets', 'keras') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
