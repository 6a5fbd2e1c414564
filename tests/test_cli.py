"""The ``metalearn`` command line: help, data subcommands, clear errors."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metalearn.cli import main

SUBCOMMANDS = {"demo", "data", "train", "eval", "predict", "parity", "convert", "bench"}


def _help(argv, capsys) -> str:
    with pytest.raises(SystemExit) as e:
        main([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_help_lists_subcommands(capsys):
    from metalearn.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == SUBCOMMANDS
    listed = {line.split()[0] for line in _help([], capsys).splitlines()
              if line.startswith("    ") and line.split()[0] in SUBCOMMANDS}
    assert listed == SUBCOMMANDS  # each on its own help line, not as a substring


@pytest.mark.parametrize("argv,defaults", [
    (["train"], ["--steps STEPS", "(default: 1000)", "(default: 500)", "(default: runs/latest)",
                 "(default: glyphs)", "(default: 0)"]),
    (["eval"], ["(default: 1000)", "(default: what the checkpoint was trained on)"]),
    (["data"], ["(default: glyphs)", "(default: 28)", "(default: episode.png)"]),
    (["demo"], ["(default: 800)", "(default: 600)", "(default: runs/demo)"]),
    (["predict"], ["(default: 3)", "(default: predictions)", "(default: torch)"]),
    (["parity"], ["(default: all)", "(default 10)"]),
])
def test_subcommand_help_shows_defaults(argv, defaults, capsys):
    text = " ".join(_help(argv, capsys).split())  # undo argparse's line wrapping
    for d in defaults:
        assert d in text, d


def test_bench_takes_the_runners_options(capsys):
    """``metalearn bench ARGS`` is ``python -m benchmarks ARGS``, --help included."""
    text = _help(["bench"], capsys)
    assert text.startswith("usage: metalearn bench")
    for option in ("--quick", "--only", "--frameworks", "--device", "--repeats", "--threads"):
        assert option in text


def test_train_steps_must_be_positive(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--steps", "0"])
    assert e.value.code == 2
    assert "--steps: must be at least 1; got 0" in capsys.readouterr().err


def test_download_url_is_a_base_and_failures_are_one_line(tmp_path, capsys):
    """--url names a folder (the help's "file:// mirror"); a failure is one line, no traceback."""
    assert main(["data", "download", "small1", "small2", "--url", (tmp_path / "mirror").as_uri() + "/",
                 "--cache-dir", str(tmp_path / "cache")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{(tmp_path / 'mirror').as_uri()}/images_background_small1.zip" in err


def test_download_from_a_file_mirror_folder(tmp_path, capsys):
    """The real small sets, copied from a mirror folder given as a file:// base URL."""
    from metalearn_shared.data import ENV_DIR

    folder = os.environ.get(ENV_DIR)
    if not folder:
        pytest.skip(f"{ENV_DIR} not set: point it at a folder holding the official small zips")
    assert main(["data", "download", "small1", "small2", "--url", Path(folder).resolve().as_uri(),
                 "--cache-dir", str(tmp_path)]) == 0
    assert main(["data", "verify", "--cache-dir", str(tmp_path), "--data-dir", str(tmp_path / "omniglot")]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok ") >= 2 and str(tmp_path / "omniglot") in out


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
    code = ("import sys; from metalearn.cli import main; "
            "main(['data', 'info', '--classes', '20']); "
            "print('tensorflow' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False False"
