"""metalearn in PyTorch: mirror of ``metalearn_tf``, file for file."""

from __future__ import annotations

__all__: list[str] = []
