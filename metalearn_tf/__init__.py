"""metalearn in Keras 3 (TensorFlow backend): mirror of ``metalearn_torch``, file for file."""

from __future__ import annotations

import os

# Keras 3 picks its backend at first import; this package is the TensorFlow side.
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

__all__: list[str] = []
