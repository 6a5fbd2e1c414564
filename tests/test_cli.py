"""The ``metalearn`` command line: help, data subcommands, clear errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from metalearn_shared.cli import main


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for cmd in ("data", "train", "eval", "parity", "convert", "bench"):
        assert cmd in out


def test_data_info_glyphs(capsys):
    assert main(["data", "info", "--dataset", "glyphs", "--classes", "40"]) == 0
    out = capsys.readouterr().out
    assert "40" in out


def test_data_preview_writes_an_episode_grid(tmp_path, capsys):
    out = tmp_path / "ep.png"
    assert main(["data", "preview", "--classes", "30", "--ways", "4", "--shots", "2",
                 "--queries", "3", "--out", str(out)]) == 0
    img = np.asarray(Image.open(out))
    assert img.ndim >= 2 and img.shape[0] > 28 * 2 and img.std() > 0


def test_unknown_dataset_is_a_clear_error(capsys):
    assert main(["data", "info", "--dataset", "mnist"]) == 2
    assert "mnist" in capsys.readouterr().err


def test_data_command_needs_no_framework():
    code = ("import sys; from metalearn_shared.cli import main; "
            "main(['data', 'info', '--classes', '20']); "
            "print('tensorflow' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"
