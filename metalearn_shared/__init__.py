"""metalearn's framework-agnostic core: data, episodes, loss specs, metrics, configs,
canonical weights and the CLI. numpy only — never imports tensorflow or torch."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
