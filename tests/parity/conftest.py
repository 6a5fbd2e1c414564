"""Shared set-up of the parity tests: both frameworks, one torch thread.

Parity needs both frameworks; each is an optional extra (``[tf]``, ``[torch]``), so the
whole directory is skipped when either is missing. The comparisons themselves are
:mod:`metalearn_shared.parity`'s (also behind ``metalearn parity``); the tests assert them
against the one tolerance table, :mod:`metalearn_shared.tolerances`.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def parity_context():
    """The package's parity set-up in both frameworks (seeded RNGs; one torch thread, as
    ``metalearn parity`` runs: see ``metalearn_torch.parity.parity_context``)."""
    from metalearn_tf.parity import parity_context as keras_context
    from metalearn_torch.parity import parity_context as torch_context

    with torch_context(0), keras_context(0):
        yield
