from __future__ import annotations

import numpy as np
import pytest

from metalearn_shared.metrics import accuracy_ci, fold_ci, per_instance_accuracy


def test_accuracy_ci_formula():
    acc = np.array([1.0, 0.0, 1.0, 1.0])
    r = accuracy_ci(acc)
    assert r.mean == pytest.approx(0.75)
    assert r.ci95 == pytest.approx(1.96 * acc.std(ddof=1) / 2)
    assert r.n == 4 and "75.00%" in str(r)


def test_accuracy_ci_single_and_empty():
    assert accuracy_ci([0.5]).ci95 == 0.0
    with pytest.raises(ValueError, match="at least one episode"):
        accuracy_ci([])


def test_fold_ci_uses_student_t():
    folds = np.array([0.70, 0.80, 0.75, 0.85])
    r = fold_ci(folds)
    assert r.mean == pytest.approx(0.775) and r.n == 4
    assert r.ci95 == pytest.approx(3.182 * folds.std(ddof=1) / 2)  # t(0.975, 3)
    assert fold_ci(np.full(20, 0.5) + np.arange(20) / 100).ci95 == pytest.approx(
        1.96 * (np.arange(20) / 100).std(ddof=1) / np.sqrt(20))
    with pytest.raises(ValueError, match="at least two folds"):
        fold_ci([0.9])


def test_per_instance_accuracy():
    # two episodes, one class shown 3 times each
    instance = np.array([[0, 1, 2], [0, 1, 2]])
    correct = np.array([[False, True, True], [False, False, True]])
    r = per_instance_accuracy(correct, instance, instances=(1, 2, 3, 10))
    assert r[1].mean == 0.0 and r[2].mean == 0.5 and r[3].mean == 1.0
    assert 10 not in r
    with pytest.raises(ValueError, match="same shape"):
        per_instance_accuracy(correct, instance[:, :2])
