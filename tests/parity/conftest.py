"""Shared fixtures of the parity tests: both frameworks, determinism, small datasets.

Parity needs both frameworks; each is an optional extra (``[tf]``, ``[torch]``), so the
whole directory is skipped when either is missing.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from metalearn_shared.data.glyphs import make_glyphs  # noqa: E402

# One intra-op thread: torch's CPU reductions split work by thread count, so figures then
# repeat on any machine; and on a busy 2-core runner, OpenMP barriers waiting for a
# descheduled thread made a conv4 step 15x slower (0.6 s against 0.04 s).
torch.set_num_threads(1)


@pytest.fixture
def tf_torch():
    """``(keras, torch)``, both seeded: ``keras.utils.set_random_seed`` and ``torch.manual_seed``."""
    keras.utils.set_random_seed(0)
    torch.manual_seed(0)
    return keras, torch


@pytest.fixture(scope="session")
def glyphs_28():
    """20 glyph classes × 8 drawings at 28×28: enough for 5-way 1-shot 3-query episodes."""
    return make_glyphs(num_classes=20, instances=8, size=28, seed=0)


@pytest.fixture(scope="session")
def glyphs_32():
    """As ``glyphs_28`` at 32×32, where ``conv4`` ends on a 2×2 map (flatten order matters)."""
    return make_glyphs(num_classes=20, instances=8, size=32, seed=0)
