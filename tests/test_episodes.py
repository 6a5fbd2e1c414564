"""Property tests of the episode samplers (metalearn_shared/episodes.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from metalearn_shared import episodes
from metalearn_shared.data.dataset import ClassInfo, ImageDataset
from metalearn_shared.episodes import (
    FewShotEpisode,
    FewShotSampler,
    KochAffine,
    PairBatch,
    PairSampler,
    SequenceEpisode,
    SequenceSampler,
    episode_rng,
)

SETTINGS = settings(max_examples=60, deadline=None)


def make_dataset(
    counts: list[int], shape: tuple[int, int] = (5, 5), seed: int = 0, shuffle: bool = True
) -> ImageDataset:
    """Random uint8 images; ``counts[c]`` instances of class c, interleaved when shuffled."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    if shuffle:
        labels = rng.permutation(labels)
    images = rng.integers(0, 256, (labels.size, *shape), dtype=np.uint8)
    classes = tuple(ClassInfo(f"alpha{c % 3}", f"character{c:02d}") for c in range(len(counts)))
    return ImageDataset(images, labels, classes, name="test")


def as_float(dataset: ImageDataset, index: np.ndarray) -> np.ndarray:
    return dataset.images[index].astype(np.float32) / np.float32(255)


def assert_same(a: tuple, b: tuple) -> None:
    assert type(a) is type(b)
    for name, x, y in zip(a._fields, a, b, strict=True):
        np.testing.assert_array_equal(x, y, err_msg=name)


@st.composite
def few_shot_requests(draw):
    ways = draw(st.integers(1, 6))
    shots = draw(st.integers(1, 4))
    queries = draw(st.integers(0, 4))
    need = shots + queries
    counts = draw(st.lists(st.integers(need, need + 4), min_size=ways, max_size=ways + 5))
    shape = draw(st.sampled_from([(5, 5), (3, 6)]))
    dataset = make_dataset(counts, shape, seed=draw(st.integers(0, 99)))
    return dataset, ways, shots, queries, draw(st.integers(0, 2**40)), draw(st.integers(0, 10**6))


# -- determinism -------------------------------------------------------------------------
def test_episode_rng_is_the_documented_derivation():
    a = episode_rng(3, 7).random(4)
    b = np.random.default_rng(np.random.SeedSequence([3, 7])).random(4)
    np.testing.assert_array_equal(a, b)


def test_all_exports_exist():
    for name in episodes.__all__:
        assert hasattr(episodes, name), name


# -- few-shot ----------------------------------------------------------------------------
@SETTINGS
@given(few_shot_requests())
def test_few_shot_episode_properties(request):
    dataset, n, k, q, seed, i = request
    ep = FewShotSampler(dataset, n, k, q, seed=seed).episode(i)
    h, w = dataset.image_shape
    assert ep.support_x.shape == (n * k, h, w) and ep.support_x.dtype == np.float32
    assert ep.query_x.shape == (n * q, h, w) and ep.query_x.dtype == np.float32
    # Labels 0..N-1, class-major, exact counts.
    np.testing.assert_array_equal(ep.support_y, np.repeat(np.arange(n), k))
    np.testing.assert_array_equal(ep.query_y, np.repeat(np.arange(n), q))
    assert ep.support_y.dtype == ep.query_y.dtype == np.int64
    # Distinct classes; label j is classes[j]; images are those instances, exactly x / 255.
    assert len(set(ep.classes.tolist())) == n
    np.testing.assert_array_equal(dataset.labels[ep.support_index], ep.classes[ep.support_y])
    np.testing.assert_array_equal(dataset.labels[ep.query_index], ep.classes[ep.query_y])
    np.testing.assert_array_equal(ep.support_x, as_float(dataset, ep.support_index))
    np.testing.assert_array_equal(ep.query_x, as_float(dataset, ep.query_index))
    assert ep.support_x.min(initial=0) >= 0 and ep.support_x.max(initial=1) <= 1
    # No instance twice: support and query never overlap.
    both = np.concatenate([ep.support_index, ep.query_index])
    assert np.unique(both).size == both.size


@SETTINGS
@given(few_shot_requests(), st.integers(1, 5))
def test_few_shot_batch_is_stacked_episodes(request, size):
    dataset, n, k, q, seed, start = request
    sampler = FewShotSampler(dataset, n, k, q, seed=seed)
    batch = sampler.batch(start, size)
    assert batch.support_x.shape == (size, n * k, *dataset.image_shape)
    assert batch.classes.shape == (size, n)
    for b in range(size):
        assert_same(FewShotEpisode(*(f[b] for f in batch)), sampler.episode(start + b))


def test_few_shot_seed_and_index_change_the_episode():
    dataset = make_dataset([20] * 100, seed=1)
    a = FewShotSampler(dataset, 5, 1, 15, seed=0)
    assert_same(a.episode(5), FewShotSampler(dataset, 5, 1, 15, seed=0).episode(5))
    index = np.stack(
        [
            np.concatenate([e.support_index, e.query_index])
            for e in (a.episode(i) for i in range(20))
        ]
    )
    assert len({tuple(row) for row in index.tolist()}) == 20  # different i ⇒ different
    other = FewShotSampler(dataset, 5, 1, 15, seed=1).episode(5)
    assert not np.array_equal(other.query_index, a.episode(5).query_index)


def test_few_shot_class_order_is_random():
    dataset = make_dataset([4] * 6, seed=2)
    sampler = FewShotSampler(dataset, 6, 1, 1, seed=0)
    orders = {tuple(sampler.episode(i).classes.tolist()) for i in range(30)}
    assert len(orders) > 20  # all 6 classes every time, in many orders


def test_few_shot_uses_every_class_and_instance():
    dataset = make_dataset([3, 5, 4, 6], seed=3)
    sampler = FewShotSampler(dataset, 2, 1, 2, seed=0)
    seen = np.concatenate(
        [
            np.concatenate([e.support_index, e.query_index])
            for e in (sampler.episode(i) for i in range(300))
        ]
    )
    assert set(seen.tolist()) == set(range(len(dataset)))


def test_few_shot_large_pools_use_the_sparse_draw():
    # ways² <= classes and (shots + queries)² <= instances: the rejection path.
    dataset = make_dataset([30] * 40, shape=(2, 2), seed=4)
    batch = FewShotSampler(dataset, 6, 2, 3, seed=9).batch(0, 50)
    for b in range(50):
        assert np.unique(batch.classes[b]).size == 6
        both = np.concatenate([batch.support_index[b], batch.query_index[b]])
        assert np.unique(both).size == both.size
        np.testing.assert_array_equal(
            dataset.labels[batch.query_index[b]], batch.classes[b][batch.query_y[b]]
        )


def test_draws_are_uniform_enough():
    # 6 classes × 4 instances, 2-way 1-shot 1-query: each class in 1/3 of the episodes.
    dataset = make_dataset([4] * 6, seed=5)
    batch = FewShotSampler(dataset, 2, 1, 1, seed=0).batch(0, 3000)
    freq = np.bincount(batch.classes.ravel(), minlength=6) / 3000
    np.testing.assert_allclose(freq, 1 / 3, atol=0.04)
    inst = np.bincount(batch.support_index.ravel(), minlength=24) / 6000
    np.testing.assert_allclose(inst, 1 / 24, atol=0.015)


# -- pairs -------------------------------------------------------------------------------
@SETTINGS
@given(
    st.lists(st.integers(2, 6), min_size=2, max_size=8),
    st.integers(1, 40),
    st.integers(0, 2**32),
    st.integers(0, 10**6),
)
def test_pairs_are_balanced_and_labelled(counts, size, seed, i):
    dataset = make_dataset(counts, seed=seed % 97)
    pb = PairSampler(dataset, size, seed=seed).episode(i)
    assert pb.x1.shape == pb.x2.shape == (size, *dataset.image_shape)
    assert pb.y.dtype == np.float32 and pb.y.shape == (size,)
    assert pb.y.sum() == size // 2  # exactly B//2 same pairs
    same = dataset.labels[pb.index1] == dataset.labels[pb.index2]
    np.testing.assert_array_equal(pb.y, same.astype(np.float32))
    assert (pb.index1 != pb.index2).all()  # two distinct instances
    np.testing.assert_array_equal(pb.x1, as_float(dataset, pb.index1))
    np.testing.assert_array_equal(pb.x2, as_float(dataset, pb.index2))


def test_pairs_are_shuffled_and_deterministic():
    dataset = make_dataset([5] * 30, seed=6)
    sampler = PairSampler(dataset, 64, seed=2)
    y = np.stack([sampler.episode(i).y for i in range(10)])
    assert 0.3 < y[:, :32].mean() < 0.7  # same pairs not all first
    assert_same(sampler.episode(4), PairSampler(dataset, 64, seed=2).episode(4))
    assert not np.array_equal(sampler.episode(4).index1, sampler.episode(5).index1)
    assert not np.array_equal(
        sampler.episode(4).index1, PairSampler(dataset, 64, seed=3).episode(4).index1
    )


@pytest.mark.parametrize("augment", [False, True])
def test_pair_batch_is_stacked_pair_batches(augment):
    dataset = make_dataset([4] * 10, shape=(8, 8), seed=7)
    sampler = PairSampler(dataset, 9, seed=1, augment=augment)
    batch = sampler.batch(2, 3)
    assert batch.x1.shape == (3, 9, 8, 8)
    for b in range(3):
        assert_same(PairBatch(*(f[b] for f in batch)), sampler.episode(2 + b))


def test_augmentation_is_deterministic_bounded_and_changes_images():
    dataset = make_dataset([4] * 10, shape=(12, 12), seed=8)
    plain = PairSampler(dataset, 32, seed=4).episode(3)
    aug = PairSampler(dataset, 32, seed=4, augment=True)
    a = aug.episode(3)
    assert_same(a, aug.episode(3))
    # Same pairs and labels as without augmentation; only the pixels move.
    np.testing.assert_array_equal(a.index1, plain.index1)
    np.testing.assert_array_equal(a.y, plain.y)
    assert a.x1.dtype == np.float32
    assert a.x1.min() >= 0 and a.x1.max() <= 1 + 1e-6
    changed = np.abs(a.x1 - plain.x1).reshape(32, -1).max(axis=1) > 1e-3
    assert changed.mean() > 0.5  # 7 parameters at p = 0.5: most images move
    never = PairSampler(dataset, 32, seed=4, augment=KochAffine(p=0.0)).episode(3)
    np.testing.assert_allclose(never.x1, plain.x1, atol=1e-6)


def test_affine_warp_geometry():
    rng = np.random.default_rng(0)
    images = rng.random((3, 9, 9)).astype(np.float32)
    identity = np.array([[0, 0, 0, 1, 1, 0, 0]] * 3, dtype=np.float32)
    np.testing.assert_allclose(episodes._affine_warp(images, identity), images, atol=1e-6)
    shift = identity.copy()
    shift[:, 5] = 2  # tx = +2 px: content moves right by 2, zeros enter on the left
    out = episodes._affine_warp(images, shift)
    np.testing.assert_allclose(out[:, :, 2:], images[:, :, :-2], atol=1e-6)
    np.testing.assert_allclose(out[:, :, :2], 0, atol=1e-6)
    quarter = identity.copy()
    quarter[:, 0] = np.pi / 2
    out = episodes._affine_warp(images, quarter)
    turned = np.rot90(images, 1, axes=(1, 2))
    assert min(np.abs(out - turned).max(), np.abs(out - turned[:, ::-1, ::-1]).max()) < 1e-4


def test_elastic_fields_are_smooth_sized_and_move_pixels_the_right_way():
    """An elastic displacement ``d`` is added to the output coordinates: a constant field of
    −2 px in x is Koch's shift by +2 px; a drawn field has the spec's RMS length, is smooth
    (neighbours move alike) and is redrawn identically from the same generator."""
    from metalearn_shared.augment import _elastic_fields, _koch_params, param_count

    rng = np.random.default_rng(0)
    images = rng.random((3, 9, 9)).astype(np.float32)
    identity = np.array([[0, 0, 0, 1, 1, 0, 0]] * 3, dtype=np.float32)
    shift = identity.copy()
    shift[:, 5] = 2
    field = np.zeros((3, 2 * 81), np.float32)
    field[:, :81] = -2  # dx everywhere; dy = 0
    np.testing.assert_allclose(
        episodes._affine_warp(images, np.concatenate([identity, field], axis=1)),
        episodes._affine_warp(images, shift), atol=1e-6)
    with pytest.raises(ValueError, match="expected 7 .affine. or 169"):
        episodes._affine_warp(images, field)

    spec = KochAffine(elastic=2 / 28, elastic_sigma=3 / 28)
    assert param_count(spec, (28, 28)) == 7 + 2 * 28 * 28 and param_count(KochAffine(), (28, 28)) == 7
    d = _elastic_fields(np.random.default_rng(5), spec, (4, 6), (28, 28))
    assert d.shape == (4, 6, 2 * 28 * 28) and d.dtype == np.float32
    np.testing.assert_array_equal(d, _elastic_fields(np.random.default_rng(5), spec, (4, 6), (28, 28)))
    dx, dy = d.reshape(24, 2, 28, 28).transpose(1, 0, 2, 3)
    rms = np.sqrt((dx**2 + dy**2).mean(axis=(1, 2)))
    np.testing.assert_allclose(rms, 2.0, rtol=1e-5)  # 2/28 of the 28 px side, every image
    step = np.abs(np.diff(dx, axis=2)).mean()
    assert step < 0.3 * np.abs(dx).mean()  # smooth: neighbours differ far less than they move
    plain = _koch_params(np.random.default_rng(5), KochAffine(), (4, 6), (28, 28))
    full = _koch_params(np.random.default_rng(5), spec, (4, 6), (28, 28))
    np.testing.assert_array_equal(full[..., :7], plain)  # the affine draws are unchanged
    after = np.random.default_rng(5)
    after.random((2, 4, 6, 7))  # the affine draw's numbers, then the field
    np.testing.assert_array_equal(full[..., 7:], _elastic_fields(after, spec, (4, 6), (28, 28)))
    with pytest.raises(ValueError, match="elastic must be >= 0 and elastic_sigma > 0"):
        KochAffine(elastic=-0.1)


# -- sequences ---------------------------------------------------------------------------
@st.composite
def sequence_requests(draw):
    ways = draw(st.integers(1, 6))
    per = draw(st.integers(1, 5))
    counts = draw(st.lists(st.integers(per, per + 3), min_size=ways, max_size=ways + 4))
    length = draw(st.one_of(st.none(), st.integers(1, ways * per)))
    labels = draw(st.sampled_from(["onehot", "string"]))
    rotate = draw(st.booleans())
    dataset = make_dataset(counts, (4, 4), seed=draw(st.integers(0, 99)))
    sampler = SequenceSampler(
        dataset,
        ways,
        per,
        length=length,
        seed=draw(st.integers(0, 2**32)),
        labels=labels,
        rotate=rotate,
    )
    return dataset, sampler, draw(st.integers(0, 10**6))


@SETTINGS
@given(sequence_requests())
def test_sequence_episode_properties(request):
    dataset, s, i = request
    ep = s.episode(i)
    n, per = s.ways, s.samples_per_class
    t = s.length
    assert ep.x.shape == (t, 16) and ep.x.dtype == np.float32
    assert ep.prev_label.shape == (t, s.label_size) and ep.prev_label.dtype == np.float32
    assert ep.instance.shape == ep.label.shape == ep.index.shape == (t,)
    assert ep.classes.shape == (n,) and np.unique(ep.classes).size == n
    assert ((ep.label >= 0) & (ep.label < n)).all()
    np.testing.assert_array_equal(dataset.labels[ep.index], ep.classes[ep.label])
    assert np.unique(ep.index).size == t  # distinct instances within an episode
    # Presentation counts: how many earlier steps showed the same class.
    expect = [int((ep.label[:k] == ep.label[k]).sum()) for k in range(t)]
    np.testing.assert_array_equal(ep.instance, expect)
    if t == n * per:  # full length: exactly `per` presentations of each class
        np.testing.assert_array_equal(np.bincount(ep.label, minlength=n), [per] * n)
    # Targets and prev_label = encoding of the previous target, zeros at t = 0.
    if s.labels == "onehot":
        np.testing.assert_array_equal(ep.y, ep.label)
        encoded = np.eye(n, dtype=np.float32)[ep.y]
    else:
        assert ep.y.shape == (t, 5) and ep.strings.shape == (n, 5)
        assert len({tuple(row) for row in ep.strings.tolist()}) == n  # distinct per class
        assert ((ep.strings >= 0) & (ep.strings < 5)).all()
        np.testing.assert_array_equal(ep.y, ep.strings[ep.label])
        encoded = np.eye(5, dtype=np.float32)[ep.y].reshape(t, 25)
        assert (ep.prev_label[1:].sum(axis=1) == 5).all()  # 5-hot
    np.testing.assert_array_equal(ep.prev_label[0], 0)
    np.testing.assert_array_equal(ep.prev_label[1:], encoded[:-1])
    # Images: those instances, rotated by one multiple of 90° per class when asked.
    original = dataset.images[ep.index].astype(np.float32) / np.float32(255)  # (T, 4, 4)
    shown = ep.x.reshape(t, 4, 4)
    for c in np.unique(ep.label):
        steps = ep.label == c
        turns = [
            r
            for r in range(4)
            if np.array_equal(shown[steps], np.rot90(original[steps], r, axes=(1, 2)))
        ]
        assert turns == [0] or (s.rotate and turns), (c, turns)


@SETTINGS
@given(sequence_requests(), st.integers(1, 4))
def test_sequence_batch_is_stacked_episodes(request, size):
    _, s, start = request
    batch = s.batch(start, size)
    assert batch.x.shape[:2] == (size, s.length)
    for b in range(size):
        assert_same(SequenceEpisode(*(f[b] for f in batch)), s.episode(start + b))


def test_sequence_determinism_and_randomness():
    dataset = make_dataset([20] * 50, shape=(4, 4), seed=9)
    s = SequenceSampler(dataset, 5, 10, seed=0)
    assert_same(s.episode(3), SequenceSampler(dataset, 5, 10, seed=0).episode(3))
    assert not np.array_equal(s.episode(3).index, s.episode(4).index)
    assert not np.array_equal(
        s.episode(3).index, SequenceSampler(dataset, 5, 10, seed=1).episode(3).index
    )
    # Labels are shuffled per episode: the first step's label varies.
    firsts = {int(s.episode(i).y[0]) for i in range(40)}
    assert firsts == set(range(5))


def test_sequence_rotation_happens():
    dataset = make_dataset([10] * 8, shape=(6, 6), seed=10)
    s = SequenceSampler(dataset, 4, 3, seed=0, rotate=True)
    plain = SequenceSampler(dataset, 4, 3, seed=0, rotate=False)
    rotated = sum(not np.array_equal(s.episode(i).x, plain.episode(i).x) for i in range(10))
    assert rotated >= 8  # 4 classes stay unrotated together with probability 1/256


# -- impossible requests -----------------------------------------------------------------
SMALL = make_dataset([5, 3, 7], seed=11)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: FewShotSampler(SMALL, 4, 1, 1), r"ways = 4 .* only 3"),
        (lambda: FewShotSampler(SMALL, 2, 2, 2), r"shots \+ queries = 2 \+ 2 = 4 .* has only 3"),
        (lambda: FewShotSampler(SMALL, 0, 1, 1), r"ways must be positive; found 0"),
        (lambda: FewShotSampler(SMALL, 2, 0, 1), r"shots must be positive; found 0"),
        (lambda: FewShotSampler(SMALL, 2, 1, -1), r"queries must be >= 0; found -1"),
        (lambda: FewShotSampler(SMALL, 2, 1, 1, seed=-1), r"seed must be >= 0"),
        (lambda: FewShotSampler(SMALL, 2.5, 1, 1), r"ways must be an integer"),
        (
            lambda: FewShotSampler(SMALL, 2, 1, 1).episode(-1),
            r"episode index i must be >= 0; found -1",
        ),
        (lambda: FewShotSampler(SMALL, 2, 1, 1).batch(0, 0), r"size must be positive"),
        (lambda: FewShotSampler(SMALL, 2, 1, 1).batch(-2, 1), r"start must be >= 0; found -2"),
        (lambda: PairSampler(SMALL, 0), r"batch must be positive"),
        (lambda: PairSampler(make_dataset([4]), 8), r"2 distinct classes .* only 1"),
        (lambda: PairSampler(make_dataset([4, 1]), 8), r"images per same pair = 2 .* only 1"),
        (lambda: SequenceSampler(SMALL, 4, 2), r"ways = 4 .* only 3"),
        (lambda: SequenceSampler(SMALL, 2, 5), r"samples_per_class = 5 .* has only 3"),
        (lambda: SequenceSampler(SMALL, 2, 2, length=5), r"length=5 exceeds .* 2 × 2 = 4"),
        (lambda: SequenceSampler(SMALL, 2, 2, length=0), r"length must be positive"),
        (lambda: SequenceSampler(SMALL, 3126, 1, labels="string"), r"5\*\*5 = 3125 .* ways=3126"),
        (lambda: SequenceSampler(SMALL, 2, 2, labels="hex"), r"'onehot' or 'string'"),
        (
            lambda: SequenceSampler(make_dataset([4] * 3, (4, 5)), 2, 2, rotate=True),
            r"square images .* 4 × 5",
        ),
    ],
)
def test_impossible_requests_say_what_and_how(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_error_names_the_smallest_class_and_the_fix():
    with pytest.raises(ValueError) as info:
        FewShotSampler(SMALL, 2, 1, 15)
    text = str(info.value)
    assert "character01" in text and "only 3" in text and "counts >= 16" in text


# -- benchmark tiny mode -----------------------------------------------------------------
def test_bench_sampling_quick(capsys):
    import json

    from benchmarks.bench_sampling import main

    assert main(["--quick", "--no-pin"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    benches = {line["bench"] for line in lines}
    assert {"env", "fewshot", "pairs", "sequences"} <= benches
    assert all(line["per_s"] > 0 for line in lines if "per_s" in line)


@pytest.mark.parametrize("make", [
    lambda d, a: SequenceSampler(d, 3, 4, seed=5, augment=a),
    lambda d, a: FewShotSampler(d, 3, 2, 2, seed=5, augment=a),
], ids=["sequence", "fewshot"])
@pytest.mark.parametrize("name", ["santoro", "elastic"])
def test_augmented_episodes_keep_their_draws_and_move_only_pixels(make, name):
    """Per-image distortion for the MANN and few-shot samplers: the classes, instances and
    labels of ``augment=False``; deterministic; batch = stacked episodes; p = 0 changes
    nothing; the reference implementation's rotation and shift, or an elastic field, move
    every image."""
    from metalearn_shared.augment import AUGMENTS

    spec = AUGMENTS[name]

    dataset = make_dataset([6] * 8, shape=(12, 12), seed=9)
    plain, aug = make(dataset, False), make(dataset, spec)
    p, a = plain.episode(3), aug.episode(3)
    images = [n for n in p._fields if n in ("x", "support_x", "query_x")]
    for name in p._fields:
        if name not in images:
            np.testing.assert_array_equal(getattr(a, name), getattr(p, name), err_msg=name)
    assert_same(a, aug.episode(3))
    batch = aug.batch(2, 3)
    for b in range(3):
        assert_same(type(a)(*(f[b] for f in batch)), aug.episode(2 + b))
    for name in images:
        moved = np.abs(getattr(a, name) - getattr(p, name))
        assert (moved.reshape(moved.shape[0], -1).max(axis=1) > 1e-3).all(), name
        assert getattr(a, name).min() >= 0 and getattr(a, name).max() <= 1 + 1e-6
    never = make(dataset, KochAffine(p=0.0)).episode(3)
    for name in images:
        np.testing.assert_allclose(getattr(never, name), getattr(p, name), atol=1e-6)


def test_augment_must_be_a_bool_or_ranges():
    dataset = make_dataset([6] * 8, shape=(12, 12))
    with pytest.raises(TypeError, match="bool or a KochAffine.*Pass True"):
        SequenceSampler(dataset, 3, 4, augment="koch")


def test_named_augmentations_reach_the_training_sampler():
    """``metalearn train --augment NAME`` → TrainConfig.augment → the sampler's ranges; an
    unknown name is refused with the known ones."""
    from metalearn.cli import build_parser
    from metalearn_shared import training as T
    from metalearn_shared.augment import AUGMENTS
    from metalearn_shared.config import TrainConfig

    for name, spec in AUGMENTS.items():
        args = build_parser().parse_args(["train", "--model", "protonet", "--augment", name])
        setup = T.setup_from_args(args)
        assert setup.train.augment == name
        assert T.train_sampler(setup).augment == spec
    with pytest.raises(ValueError, match="unknown augmentation 'twist'.*koch"):
        TrainConfig(augment="twist")
