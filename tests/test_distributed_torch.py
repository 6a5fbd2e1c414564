"""Two torch ranks (``torchrun``, gloo, two processes) equal one process.

* the split rule (:mod:`metalearn_shared.distributed`);
* teacher-forced: every step of 2 ranks from the one-process weights, ProtoNet and MANN,
  with DDP and with the explicit all-reduce (second-order learners), under the tolerance
  table's "step" and "grad" entries;
* the CLI under ``torchrun``: ProtoNet and MANN train on 2 processes; step 1 (both from the
  seeded initial weights) equals one process's, and a 2-process checkpoint resumes on 1.

Every launch uses a free 127.0.0.1 port and a bounded timeout.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from metalearn_shared import distributed as D
from metalearn_shared.tolerances import measure
from metalearn_shared.weights import load_canonical

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 180


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", KERAS_BACKEND="tensorflow",
               TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _torchrun(cwd: Path, *args: str, nproc: int = 2) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *args]
    done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_rank_episodes_split_the_step() -> None:
    assert list(D.step_episodes(3, 4)) == [12, 13, 14, 15]
    assert [D.rank_episodes(3, 4, r, 2) for r in (0, 1)] == [[12, 14], [13, 15]]
    assert D.rank_episodes(5, 1, 0, 1) == [5]  # meta-batch 1: the one-process trainer's episode
    assert D.meta_batch_size("sequence", 16, None) == 16
    assert D.meta_batch_size("fewshot", 1, None) == 1
    with pytest.raises(ValueError, match="multiple of 2"):
        D.rank_episodes(0, 3, 0, 2)
    with pytest.raises(ValueError, match="one process"):
        D.meta_batch_size("pairs", 32, None)
    with pytest.raises(ValueError, match="--batch"):
        D.meta_batch_size("sequence", 16, 4)


@pytest.mark.torch
def test_two_ranks_equal_one_process_teacher_forced(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    _torchrun(tmp_path, "-m", "metalearn_torch.distributed", "--out", "eq.json", "--steps", "3")
    report = json.loads((tmp_path / "eq.json").read_text())
    assert report["world"] == 2 and report["passed"]
    assert {(c["model"], c["mode"]) for c in report["cases"]} == {
        (m, mode) for m in ("protonet", "mann") for mode in ("ddp", "allreduce")}
    assert len(report["cases"]) == 12
    for c in report["cases"]:
        assert c["weights"]["passed"] and c["grads"]["passed"], c


def _cli(fw_args: list[str], out: Path, steps: int, *extra: str) -> list[str]:
    return ["train", *fw_args, "--steps", str(steps), "--out", str(out), *extra]


PROTONET = ["--framework", "torch", "--model", "protonet", "--size", "16", "--ways", "3",
            "--shots", "1", "--queries", "2", "--seed", "3", "--optimizer", "sgd", "--lr", "0.1",
            "--meta-batch", "2"]
MANN = ["--framework", "torch", "--model", "mann", "--size", "16", "--ways", "3",
        "--samples-per-class", "3", "--batch", "4", "--seed", "3", "--optimizer", "sgd",
        "--lr", "0.1"]


def _assert_close_checkpoints(got_path: Path, want_path: Path, kind: str) -> float:
    """Every tensor within the table's ``kind`` (scaled to its size, as parity does);
    returns the worst share of the allowance used."""
    got, _ = load_canonical(got_path)
    want, _ = load_canonical(want_path)
    assert set(got) == set(want)
    worst = 0.0
    for k, w in want.items():
        m = measure(got[k], w, kind, scale=None)
        assert m.passed, (k, m)
        worst = max(worst, m.ratio)
    return worst


@pytest.mark.torch
@pytest.mark.parametrize("model_args", [PROTONET, MANN], ids=["protonet", "mann"])
def test_cli_two_processes_equal_one(model_args: list[str], tmp_path: Path) -> None:
    """2 ranks train 1 step from the CLI; == 1 process ("step"); resumed on 1 process for a
    second step, == 2 uninterrupted one-process steps ("train", free-running)."""
    pytest.importorskip("torch")
    from metalearn.cli import main
    from metalearn_shared.training import RunFiles

    _torchrun(tmp_path, "-m", "metalearn.cli", *_cli(model_args, tmp_path / "two", 1,
                                                            "--checkpoint-every", "1"))
    two = RunFiles(tmp_path / "two")
    _, meta = load_canonical(two.checkpoint)
    assert meta["world"] == 2 and meta["step"] == 1
    assert json.loads(two.config.read_text())["world"] == 2
    assert main(_cli(model_args, tmp_path / "one", 1)) == 0
    _assert_close_checkpoints(two.checkpoint, RunFiles(tmp_path / "one").checkpoint, "step")
    assert main(_cli(model_args, tmp_path / "one", 2, "--resume")) == 0
    assert main(_cli(model_args, tmp_path / "two", 2, "--resume")) == 0  # world 2 -> 1
    _, meta = load_canonical(two.checkpoint)
    assert meta["step"] == 2
    _assert_close_checkpoints(two.checkpoint, RunFiles(tmp_path / "one").checkpoint, "train")
