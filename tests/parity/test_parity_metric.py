"""Keras ↔ PyTorch parity of the metric models (issue 3), through a canonical checkpoint file.

For each Siamese head × backbone and ProtoNet backbone of the registry
(:func:`metalearn_shared.parity.cases`), in both directions, :func:`~metalearn.parity.run_case`
creates weights in the source framework (BatchNorm statistics and affine made non-trivial),
saves a canonical checkpoint file, loads it with the other framework's ``load_checkpoint``,
and on identical episodes from the shared samplers compares:

* forward outputs and embeddings in inference mode, and outputs in training mode;
* the loss (from each framework's own ``make_loss()``);
* gradients of every trainable parameter, converted to canonical layout by the shared
  converter;
* teacher-forced, for each of 10 SGD steps: both frameworks start step k from the source's
  weights after k - 1 steps — gradients, the optimiser's update from identical gradients,
  BatchNorm statistics and the whole trainer step (torch's loop, Keras' ``fit`` on the
  trainer's ``PyDataset``), each within half its single-step bound;
* free-running: every parameter after each step, within the "train" bound plus
  ``FLOOR_MULTIPLE`` times the noise floor both frameworks measure on themselves (their
  trajectories from starts nudged by a few ulps); and the inference outputs after training.

Each is asserted against the one tolerance table (:mod:`metalearn_shared.tolerances`),
relative to a quantity's size when it exceeds 1 (``assert_close_scaled``'s rule). The design:
the docstring of :mod:`metalearn_shared.parity`.
"""

from __future__ import annotations

import pytest

from metalearn.parity import run_case
from metalearn_shared import parity
from metalearn_shared.models import protonet, siamese

from .checks import assert_case

pytestmark = pytest.mark.parity

STEPS = 10
CASES = [c for c in parity.cases() if c.family in ("pairs", "fewshot")]


def test_every_variant_is_a_case():
    names = {c.name for c in CASES}
    assert {n for n, _ in siamese.variants() + protonet.variants()} <= names
    assert "siamese-koch-conv4-32px" in names  # the flatten permutation before a dense head


@pytest.mark.parametrize(("case", "direction"),
                         [pytest.param(c, d, id=f"{c.name}-{d}") for c in CASES for d in c.directions])
def test_parity(case, direction, tmp_path):
    assert_case(run_case(case, direction, tmp_path, steps=STEPS), STEPS)
