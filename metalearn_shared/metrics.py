"""Evaluation metrics shared by both frameworks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AccuracyCI", "accuracy_ci", "fold_ci", "per_instance_accuracy", "DEFAULT_INSTANCES"]

#: Presentations reported by Santoro et al. (2016), Table 1 (1-based).
DEFAULT_INSTANCES = (1, 2, 3, 4, 5, 10)


@dataclass(frozen=True)
class AccuracyCI:
    """A mean accuracy with its 95% confidence half-width, both as fractions in [0, 1]."""

    mean: float
    ci95: float
    n: int

    def __str__(self) -> str:
        return f"{100 * self.mean:.2f}% ± {100 * self.ci95:.2f}% (n={self.n})"


def accuracy_ci(correct_per_episode: np.ndarray) -> AccuracyCI:
    """Mean accuracy over episodes with a normal-approximation 95% interval.

    Formula:
        ``mean ± 1.96 · std / sqrt(n)``, with the sample standard deviation (ddof = 1),
        as the few-shot literature reports it over >= 600 test episodes.

    Args:
        correct_per_episode: ``(n,)`` accuracy of each episode in [0, 1] (or booleans).

    Returns:
        :class:`AccuracyCI`; ``ci95 = 0`` when ``n = 1``.
    """
    acc = np.asarray(correct_per_episode, dtype=np.float64).ravel()
    if acc.size == 0:
        raise ValueError("accuracy_ci needs at least one episode; got an empty array.")
    std = acc.std(ddof=1) if acc.size > 1 else 0.0
    return AccuracyCI(float(acc.mean()), float(1.96 * std / np.sqrt(acc.size)), int(acc.size))


#: Two-sided 95% quantiles of Student's t for 1 .. 10 degrees of freedom.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228)


def fold_ci(fold_means: np.ndarray) -> AccuracyCI:
    """Mean over cross-validation folds with a Student-t 95% interval.

    Formula:
        ``mean ± t(0.975, n - 1) · std / sqrt(n)`` (ddof = 1): a few folds are a small
        sample, so the normal quantile of :func:`accuracy_ci` would overstate the precision;
        beyond 11 folds the normal 1.96 is used.

    Args:
        fold_means: ``(n,)`` each fold's accuracy, ``n >= 2``.
    """
    acc = np.asarray(fold_means, dtype=np.float64).ravel()
    if acc.size < 2:
        raise ValueError(f"fold_ci needs at least two folds; got {acc.size}.")
    t = _T95[acc.size - 2] if acc.size - 1 <= len(_T95) else 1.96
    return AccuracyCI(float(acc.mean()), float(t * acc.std(ddof=1) / np.sqrt(acc.size)),
                      int(acc.size))


def per_instance_accuracy(
    correct: np.ndarray,
    instance: np.ndarray,
    instances: tuple[int, ...] = DEFAULT_INSTANCES,
) -> dict[int, AccuracyCI]:
    """Accuracy by presentation number in sequence (MANN) episodes.

    Args:
        correct: ``(E, T)`` booleans, prediction at step t was right.
        instance: ``(E, T)`` 0-based count of earlier presentations of the step's class
            (``SequenceEpisode.instance``); presentation number = instance + 1.
        instances: 1-based presentation numbers to report.

    Returns:
        ``{k: AccuracyCI}``: for each k, the per-episode mean accuracy over the steps that
        show a class for the k-th time, summarised over episodes. Episodes with no k-th
        presentation are left out of that k.
    """
    correct = np.asarray(correct, dtype=np.float64)
    instance = np.asarray(instance)
    if correct.shape != instance.shape:
        raise ValueError(
            f"correct {correct.shape} and instance {instance.shape} must have the same shape."
        )
    out: dict[int, AccuracyCI] = {}
    for k in instances:
        mask = instance == (k - 1)  # (E, T)
        has = mask.any(axis=1)
        if not has.any():
            continue
        per_ep = (correct * mask).sum(axis=1)[has] / mask.sum(axis=1)[has]
        out[k] = accuracy_ci(per_ep)
    return out
