"""The assertions every parity test makes on a :class:`~metalearn_shared.parity.CaseResult`."""

from __future__ import annotations

import numpy as np

from metalearn_shared.parity import CaseResult
from metalearn_shared.tolerances import TOL, assert_measured, measure

#: Teacher-forced figures — the one-step update and BatchNorm statistics, both frameworks
#: starting from the same weights, state and batch — must use at most this share of their
#: bound on any CPU: they test the math of one step. (The gradients at the forced weights
#: are held to the "grad" bound, as batch 0's.)
FORCED_SHARE = 0.5
FORCED = ("step", "update")


def assert_case(result: CaseResult, steps: int, moved_factor: float = 3.0) -> None:
    """Every figure within the table (with its measured allowance); teacher-forced figures
    within :data:`FORCED_SHARE` of it; all three new checks present; training not vacuous."""
    direction = result.direction
    for c in result.comparisons:
        assert np.all(np.isfinite(c.expected)), c.what
        m = assert_measured(c.actual, c.expected, c.kind, what=f"{direction} {c.what}",
                            scale=c.scale, allow=c.allow)
        if c.group in FORCED:
            assert m.ratio <= FORCED_SHARE, (f"{direction} {c.what}: teacher-forced figure uses "
                                             f"{m.ratio:.2f} of its bound (> {FORCED_SHARE})")
    if not result.case.train:
        return
    groups = {c.group for c in result.comparisons}
    assert {"update", "train"} <= groups, groups
    assert any("(forced)" in c.what and c.group == "grad" for c in result.comparisons)
    # The whole forced step: SGD's trainable weights, and any BatchNorm statistics (an
    # adaptive optimiser on a model without BatchNorm is checked through grad + update).
    if result.case.optimizer == "sgd" or any(".bn" in (c.param or "") for c in result.comparisons):
        assert "step" in groups, groups
    assert max(c.step or 0 for c in result.comparisons) == steps
    assert len(result.floor) == steps and all(f > 0 for f in result.floor), result.floor
    # Not vacuous: training moved the trainable parameters (BatchNorm statistics move in
    # training mode whatever the optimiser does, so they do not count) several times the
    # bound, so a framework that did not train, or trained wrongly, would fail above.
    assert result.moved > moved_factor * TOL["train"][1], result.moved


def worst_forced(result: CaseResult) -> float:
    """The largest share of its bound any teacher-forced figure used."""
    return max(measure(c.actual, c.expected, c.kind, c.scale, c.allow).ratio
               for c in result.comparisons if c.group in FORCED)
