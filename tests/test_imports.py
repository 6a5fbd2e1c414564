"""Framework isolation: the shared core imports no framework; each framework package
imports only its own."""

from __future__ import annotations

import subprocess
import sys

import pytest

SHARED_MODULES = [
    "metalearn_shared", "metalearn_shared.config", "metalearn_shared.registry",
    "metalearn_shared.episodes", "metalearn_shared.losses", "metalearn_shared.metrics",
    "metalearn_shared.weights", "metalearn_shared.data", "metalearn_shared.models",
    "metalearn_shared.parity", "metalearn_shared.tolerances", "metalearn_shared.optimizers",
    "metalearn_shared.predict", "metalearn_shared.backend", "metalearn_shared.flops",
    "metalearn_shared.augment", "metalearn_shared.sampling",
    # orchestration imports a framework only when a command needs one
    "metalearn", "metalearn.cli", "metalearn.parity_report", "metalearn.convert",
]


def _loaded_after(imports: list[str]) -> set[str]:
    code = (
        "import sys\n"
        + "".join(f"import {m}\n" for m in imports)
        + "print(' '.join(sorted(m for m in ('tensorflow', 'torch', 'keras', 'jax') if m in sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_shared_imports_no_framework():
    assert _loaded_after(SHARED_MODULES) == set()


def test_shared_model_specs_import_no_framework():
    from metalearn_shared import models

    mods = sorted({s.config_cls.__module__ for s in models.specs()})
    assert "metalearn_shared.models.maml" in mods
    assert _loaded_after(mods) == set()


def test_torch_package_does_not_need_tensorflow():
    pytest.importorskip("torch")
    loaded = _loaded_after(["metalearn_torch.models", "metalearn_torch.checkpoint", "metalearn_torch.losses"])
    assert "tensorflow" not in loaded and "keras" not in loaded


def test_tf_package_does_not_need_torch():
    pytest.importorskip("keras")
    loaded = _loaded_after(["metalearn_tf.models", "metalearn_tf.checkpoint", "metalearn_tf.losses"])
    assert "torch" not in loaded
