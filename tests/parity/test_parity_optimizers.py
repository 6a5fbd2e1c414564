"""Keras ↔ PyTorch parity with the optimisers people train with (Adam, RMSprop).

Each framework uses its trainer's own optimiser object (torch's fused Adam, foreach RMSprop;
Keras' classes) for a rule both share: ``adam-torch`` / ``rmsprop-torch`` (PyTorch's rules;
in Keras :class:`metalearn_tf.optimizers.TorchAdam` / ``TorchRMSprop``) and ``adam-keras`` /
``rmsprop-keras`` (Keras' rules; in torch ``KerasAdam`` / ``KerasRMSprop``). Ten steps of each,
both directions, are held to the same bounds as SGD, on a convolutional model with
BatchNorm (ProtoNet) and a recurrent one (the LSTM baseline): the optimiser's rule does not
depend on the model (``metalearn parity --optimizers …`` runs every model). With each
framework's native Adam instead (equal hyper-parameters, two rules), the update check fails:
the matched classes are what makes the frameworks equal.
"""

from __future__ import annotations

import pytest

from metalearn.parity import run_case
from metalearn.parity_report import summarise
from metalearn_shared import parity

from .checks import assert_case

pytestmark = pytest.mark.parity

STEPS = 10
MATCHED = ("adam-torch", "rmsprop-torch", "adam-keras", "rmsprop-keras")
MODELS = ("protonet", "lstm")
CASES = [c for m in MODELS for c in parity.cases(m, tiny=True, optimizers=MATCHED)]


def test_every_matched_optimizer_is_a_case():
    assert {(c.model, c.optimizer) for c in CASES} == {(m, o) for m in MODELS for o in MATCHED}


@pytest.mark.parametrize(("case", "direction"),
                         [pytest.param(c, d, id=f"{c.name}-{d}") for c in CASES for d in c.directions])
def test_parity(case, direction, tmp_path):
    assert_case(run_case(case, direction, tmp_path, steps=STEPS), STEPS)


def test_native_adam_differs(tmp_path):
    """torch.optim.Adam and keras.optimizers.Adam at the same epsilon are two rules: the
    update check (same weights, state and gradients) tells them apart."""
    case = next(c for c in parity.cases("lstm", tiny=True, optimizers=("adam",)))
    record = summarise(run_case(case, "torch_to_keras", tmp_path, steps=3))
    failed = {f["group"] for f in record["figures"] if not f["passed"]}
    assert "update" in failed, failed
