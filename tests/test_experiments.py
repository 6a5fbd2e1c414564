"""``experiments/``: the ablation script runs end to end on the real small sets (two steps),
writes one row per evaluation, and plots its curves."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mann_ablation_trains_evaluates_and_plots(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    from metalearn_shared.data import ENV_DIR

    folder = os.environ.get(ENV_DIR)
    if not folder:
        pytest.skip(f"{ENV_DIR} not set: point it at a folder holding the official small zips")
    monkeypatch.setenv("METALEARN_HOME", str(tmp_path / "home"))
    script = _script("mann_ablation")
    out = tmp_path / "add.jsonl"
    assert script.main(["--data-dir", folder, "--write-vector", "add", "--rotate", "--clip", "1",
                        "--steps", "2", "--eval-every", "1", "--eval-episodes", "4",
                        "--batch", "2", "--out", str(out)]) == 0
    header, *rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert header["args"]["write_vector"] == "add" and header["test_classes"] > 0
    assert [r["step"] for r in rows] == [0, 1, 2] and rows[-1]["episodes"] == 4
    assert rows[0]["train_loss"] is None and rows[-1]["train_loss"] > 0
    assert set(rows[-1]["per_instance"]) >= {"1", "2", "10"}
    png = tmp_path / "curves.png"
    assert script.main(["--plot", str(out), "--out", str(png)]) == 0
    assert png.stat().st_size > 0
