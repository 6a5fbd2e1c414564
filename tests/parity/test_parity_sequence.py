"""Keras ↔ PyTorch parity of the sequence models (issue 4), through a canonical checkpoint file.

For the MANN and the LSTM baseline (:func:`metalearn_shared.parity.cases`), in both
directions, :func:`~metalearn.parity.run_case` creates weights in the source
framework, saves a canonical checkpoint file and loads it with the other framework's
``load_checkpoint``; then, on identical episodes from the shared ``SequenceSampler``, compares:

* logits at every one of 50 steps, and for the MANN the slots the LRUA chose at every step
  (exactly) with the read/write weights and usage — the numpy float64 reference forward
  pass is the third witness for all of them;
* the loss (each framework's ``make_loss()``), also against the numpy loss spec;
* gradients of every parameter, converted to canonical layout by the shared converter;
* teacher-forced, for each of 10 SGD steps (both frameworks start step k from the source's
  weights after k - 1 steps): gradients, the optimiser's update, the whole trainer step —
  torch's loop, Keras' ``fit`` on the trainer's ``EpisodeDataset`` — within half the bound;
* free-running: every parameter after each step, against the "train" bound plus the
  measured noise floor; and the logits after training.

The paper's default sizes get one forward-only case (all three witnesses). Each figure is
asserted against the one tolerance table, :mod:`metalearn_shared.tolerances`.
"""

from __future__ import annotations

import pytest

from metalearn.parity import run_case
from metalearn_shared import parity
from metalearn_shared.models.lstm import LSTMConfig
from metalearn_shared.models.mann import MANNConfig

from .checks import assert_case

pytestmark = pytest.mark.parity

STEPS = 10
CASES = [c for c in parity.cases() if c.family == "sequence"]


def test_paper_sizes_are_a_case():
    configs = [c.config for c in CASES]
    assert MANNConfig() in configs and LSTMConfig() in configs


@pytest.mark.parametrize(("case", "direction"),
                         [pytest.param(c, d, id=f"{c.name}-{d}") for c in CASES for d in c.directions])
def test_parity(case, direction, tmp_path):
    result = run_case(case, direction, tmp_path, steps=STEPS)
    first = result.comparisons[0]  # before training: logits vs src, (B, T, C)
    assert first.expected.shape == (case.batch, parity.WAYS * case.samples_per_class,
                                    case.config.num_classes), first.what
    assert all(c.scale == 1.0 for c in result.comparisons)  # absolute bounds for sequences
    if case.model == "mann":
        assert any(c.group == "exact" for c in result.comparisons)
    assert_case(result, STEPS, moved_factor=100.0)
