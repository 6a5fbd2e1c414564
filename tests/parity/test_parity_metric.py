"""Keras ↔ PyTorch parity of the metric models (issue 3), through a canonical checkpoint file.

For each Siamese head × backbone and ProtoNet backbone of the registry
(:func:`metalearn_shared.parity.cases`), in both directions, :func:`~metalearn_shared.parity.run_case`
creates weights in the source framework (BatchNorm statistics and affine made non-trivial),
saves a canonical checkpoint file, loads it with the other framework's ``load_checkpoint``,
and on identical episodes from the shared samplers compares:

* forward outputs and embeddings in inference mode, and outputs in training mode;
* the loss (from each framework's own ``make_loss()``);
* gradients of every trainable parameter, converted to canonical layout by the shared
  converter;
* every parameter and BatchNorm running statistic after each of 10 SGD steps — torch with a
  plain loop, Keras with ``compile(loss=model.make_loss())`` + ``fit`` on the trainer's
  ``PyDataset`` — and the inference outputs after training.

Each is asserted against the one tolerance table (:mod:`metalearn_shared.tolerances`),
relative to a quantity's size when it exceeds 1 (``assert_close_scaled``'s rule). Why the learning
rates are what they are: the docstring of :mod:`metalearn_shared.parity`.
"""

from __future__ import annotations

import numpy as np
import pytest

from metalearn_shared import parity
from metalearn_shared.models import protonet, siamese
from metalearn_shared.tolerances import TOL, assert_measured

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
    result = parity.run_case(case, direction, tmp_path, steps=STEPS)
    for c in result.comparisons:
        assert np.all(np.isfinite(c.expected)), c.what
        assert_measured(c.actual, c.expected, c.kind, what=f"{direction} {c.what}", scale=c.scale)
    assert max(c.step or 0 for c in result.comparisons) == STEPS
    # Not vacuous: training moved the weights several times the tolerance, so a framework
    # that did not train (or trained wrongly) would fail above. Some tensors rightly stay
    # put: the last bias of a distance-based model cancels in e1 - e2 and in q - c.
    assert result.moved > 3 * TOL["train"][1], result.moved
