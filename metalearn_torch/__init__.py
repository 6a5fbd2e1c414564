"""metalearn in PyTorch: mirror of ``metalearn_tf``, file for file.

:func:`tune_malloc` (:mod:`metalearn_shared.allocator`, framework-free) is re-exported here:
the glibc malloc setting the torch command line applies at start (TensorFlow sets its own);
importing the package applies nothing.
"""

from __future__ import annotations

from metalearn_shared.allocator import tune_malloc

__all__: list[str] = ["tune_malloc"]
