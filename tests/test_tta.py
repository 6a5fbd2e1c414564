"""Test-time augmentation (``metalearn eval --tta VIEWS``, issue 14): the mean class
probabilities over an episode and distorted copies of it, for any few-shot or pair model."""

from __future__ import annotations

import numpy as np
import pytest

from metalearn_shared.augment import augment_spec
from metalearn_shared.evaluation import ModelFns, TestTimeAugmentation
from metalearn_shared.losses import log_softmax

KOCH = augment_spec("koch")


class Recorder:
    """A model that scores class c by the query's mean pixel distance to support image c,
    and records every episode version it is shown."""

    def __init__(self) -> None:
        self.seen: list[tuple[np.ndarray, np.ndarray]] = []

    def class_scores(self, sx, sy, qx, ways):
        self.seen.append((sx.copy(), qx.copy()))
        return -np.abs(qx.mean(axis=(1, 2))[:, None] - sx.mean(axis=(1, 2))[None, :]) * 50

    def fns(self) -> ModelFns:
        return ModelFns(class_scores=self.class_scores)


def _episode(seed=0, ways=4, queries=3, size=12):
    rng = np.random.default_rng(seed)
    sx = rng.random((ways, size, size), dtype=np.float32)
    qx = rng.random((queries, size, size), dtype=np.float32)
    return sx, np.arange(ways), qx


def test_one_view_is_the_model_itself():
    sx, sy, qx = _episode()
    model = Recorder()
    plain = np.asarray(model.class_scores(sx, sy, qx, 4), np.float64)
    tta = TestTimeAugmentation(model.fns(), 1, KOCH)
    np.testing.assert_allclose(tta.class_scores(sx, sy, qx, 4), log_softmax(plain), atol=1e-12)
    assert tta.predict(sx, sy, qx).tolist() == np.argmax(plain, axis=1).tolist()


def test_views_are_the_episode_then_distorted_copies_drawn_reproducibly():
    sx, sy, qx = _episode()
    model = Recorder()
    tta = TestTimeAugmentation(model.fns(), 3, KOCH, seed=7)
    tta.class_scores(sx, sy, qx, 4)
    (s0, q0), (s1, q1), (s2, q2) = model.seen
    np.testing.assert_array_equal(s0, sx)
    np.testing.assert_array_equal(q0, qx)
    for s, q in ((s1, q1), (s2, q2)):  # every support and every query image distorted
        assert all(not np.array_equal(a, b) for a, b in zip(s, sx, strict=True))
        assert all(not np.array_equal(a, b) for a, b in zip(q, qx, strict=True))
    assert not np.array_equal(s1, s2)
    # the same seed shows another model the same views; the next episode gets new ones
    other = Recorder()
    TestTimeAugmentation(other.fns(), 3, KOCH, seed=7).class_scores(sx, sy, qx, 4)
    for (a, b), (c, d) in zip(model.seen, other.seen, strict=True):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    tta.class_scores(sx, sy, qx, 4)
    assert not np.array_equal(model.seen[4][0], s1)


def test_the_views_probabilities_are_averaged():
    sx, sy, qx = _episode(seed=3)
    model = Recorder()
    got = TestTimeAugmentation(model.fns(), 4, KOCH, seed=1).class_scores(sx, sy, qx, 4)
    views = [model.class_scores(s, sy, q, 4) for s, q in model.seen[:4]]
    mean = np.mean([np.exp(log_softmax(np.asarray(v, np.float64))) for v in views], axis=0)
    np.testing.assert_allclose(got, np.log(mean), atol=1e-12)
    # ... which is not the mean of the scores: the check can tell the two apart
    assert not np.allclose(got, log_softmax(np.mean(views, axis=0)), atol=1e-3)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="sequence model"):
        TestTimeAugmentation(ModelFns(logits=lambda x, p: x), 2, KOCH)
    with pytest.raises(ValueError, match="at least 1"):
        TestTimeAugmentation(Recorder().fns(), 0, KOCH)
    with pytest.raises(ValueError, match="needs a distortion"):
        TestTimeAugmentation(Recorder().fns(), 2, None)
