"""One registry of model names; both frameworks implement every entry (timm-style)."""

from __future__ import annotations

import pytest

from metalearn_shared.models import names as model_names


@pytest.mark.parametrize("framework", ["metalearn_tf", "metalearn_torch"])
def test_every_registered_model_is_implemented(framework):
    pytest.importorskip("keras" if framework == "metalearn_tf" else "torch")
    import importlib

    models = importlib.import_module(f"{framework}.models")
    assert sorted(models.available_models()) == sorted(model_names())


def test_model_files_mirror_each_other():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    tf_files = sorted(p.name for p in (root / "metalearn_tf").rglob("*.py"))
    torch_files = sorted(p.name for p in (root / "metalearn_torch").rglob("*.py"))
    assert tf_files == torch_files


def test_representatives_cover_every_implementation_once():
    from metalearn_shared import models

    reps = models.representatives()
    modules = {tuple(sorted(s.implementations.items())) for s in models.specs()}
    assert len(reps) == len(set(reps)) == len(modules)
    assert {tuple(sorted(models.get(n).implementations.items())) for n in reps} == modules
    assert "maml" in reps and "fomaml" not in reps  # one module, four learners
