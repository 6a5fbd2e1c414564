"""metalearn in PyTorch: mirror of ``metalearn_tf``, file for file.

:func:`tune_malloc` (:mod:`metalearn_torch.allocator`) is the one torch-only addition: the
glibc malloc setting the command line applies at start; importing the package applies nothing.
"""

from __future__ import annotations

from metalearn_torch.allocator import tune_malloc

__all__: list[str] = ["tune_malloc"]
