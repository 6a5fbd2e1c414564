"""metalearn's orchestration: the command line, the demo, the parity run and report,
checkpoint conversion. It imports the spec (:mod:`metalearn_shared`) and the two framework
packages through their backends (:mod:`metalearn.backends`); nothing below imports it."""

from __future__ import annotations

from metalearn_shared import __version__

__all__ = ["__version__"]
