"""The numpy loss specs against hand-computed values and edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from metalearn_shared import losses as L


def test_contrastive_hand_values():
    y = np.array([1, 0, 0, 1])
    d = np.array([0.5, 0.5, 2.0, 0.0])
    got = L.contrastive(y, d, margin=1.0)
    np.testing.assert_allclose(got, [0.125, 0.125, 0.0, 0.0])
    # The seed's L = 1/(2N) sum [...] is the mean of the per-pair values.
    np.testing.assert_allclose(got.mean(), (0.25 + 0.25 + 0 + 0) / (2 * 4))


def test_contrastive_large_margin_and_zero_distance():
    assert L.contrastive(np.array([0]), np.array([0.0]), margin=1e3)[0] == pytest.approx(5e5)
    assert L.contrastive(np.array([1]), np.array([0.0]), margin=1e3)[0] == 0.0


def test_euclidean_distance_floor_keeps_zero_distance_finite():
    a = np.ones((2, 3))
    d = L.euclidean_distance(a, a)
    assert np.all(np.isfinite(d)) and np.all(d == np.sqrt(L.DISTANCE_EPS))
    np.testing.assert_allclose(L.euclidean_distance(np.zeros((1, 2)), np.array([[3.0, 4.0]])), [5.0])


def test_cosine_embedding_hand_values():
    x1 = np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    x2 = np.array([[0.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    y = np.array([1, -1, -1])
    c = 1 / np.sqrt(2)
    np.testing.assert_allclose(L.cosine_embedding(y, x1, x2, margin=0.0), [1.0, c, c], rtol=1e-12)
    np.testing.assert_allclose(L.cosine_embedding(y, x1, x2, margin=0.9), [1.0, 0.0, 0.0], atol=1e-12)


def test_cosine_embedding_zero_vectors_stay_finite():
    z = np.zeros((1, 4))
    out = L.cosine_embedding(np.array([1]), z, z)
    assert np.isfinite(out).all() and out[0] == pytest.approx(1.0)


def test_pair_labels_to_sign():
    np.testing.assert_array_equal(L.pair_labels_to_sign(np.array([1, 0, 1])), [1.0, -1.0, 1.0])


def test_koch_matches_naive_bce_and_is_stable():
    z = np.array([-3.0, 0.0, 2.0])
    y = np.array([1.0, 0.0, 1.0])
    p = 1 / (1 + np.exp(-z))
    naive = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    np.testing.assert_allclose(L.koch_verification(y, z), naive, rtol=1e-12)
    big = L.koch_verification(np.array([1.0, 0.0, 1.0, 0.0]), np.array([np.inf, -np.inf, 1e4, 1e4]))
    assert np.all(np.isfinite(big))
    np.testing.assert_allclose(big, [0.0, 0.0, 0.0, 1e4])


def test_softmax_cross_entropy_and_extremes():
    logits = np.array([[0.0, 0.0], [1000.0, -1000.0]])
    np.testing.assert_allclose(L.softmax_cross_entropy(np.array([0, 0]), logits), [np.log(2), 0.0])
    assert np.isfinite(L.softmax_cross_entropy(np.array([1]), logits[1:])).all()


def test_prototypical_logits_by_hand():
    sup = np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 4.0], [0.0, 6.0]])
    sy = np.array([0, 0, 1, 1])
    np.testing.assert_allclose(L.prototypes(sup, sy, 2), [[1.0, 0.0], [0.0, 5.0]])
    q = np.array([[1.0, 1.0]])
    np.testing.assert_allclose(L.prototypical_logits(sup, sy, q, 2), [[-1.0, -17.0]])
    loss = L.prototypical(np.array([0]), L.prototypical_logits(sup, sy, q, 2))
    np.testing.assert_allclose(loss, [np.log1p(np.exp(-16.0))])


def test_sequence_cross_entropy_mean_over_steps_and_groups():
    logits = np.zeros((2, 3, 4))
    y = np.zeros((2, 3), dtype=int)
    np.testing.assert_allclose(L.sequence_cross_entropy(y, logits), [np.log(4)] * 2)
    g = L.sequence_cross_entropy(np.zeros((1, 3, 5), dtype=int), np.zeros((1, 3, 5, 5)))
    np.testing.assert_allclose(g, [5 * np.log(5)])
