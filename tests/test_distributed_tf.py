"""Two TensorFlow replicas equal one: ``MirroredStrategy`` on two logical CPU devices and
``MultiWorkerMirroredStrategy`` on two local worker processes (``TF_CONFIG``, 127.0.0.1).

* teacher-forced: ProtoNet and MANN, every step of 2 mirrored replicas from the one-replica
  weights, under the tolerance table's "step" entry;
* the CLI: ProtoNet and MANN on 2 mirrored replicas == 1 replica after 2 steps ("train");
  ProtoNet on 2 workers == 1 process after 2 steps.

Each TensorFlow program runs in a fresh subprocess with a bounded timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metalearn_shared.distributed import free_ports
from metalearn_shared.tolerances import measure
from metalearn_shared.weights import load_canonical

pytestmark = pytest.mark.tf
pytest.importorskip("tensorflow")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TIMEOUT_S = 240


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _assert_close_checkpoints(got_path: Path, want_path: Path, kind: str) -> None:
    got, meta = load_canonical(got_path)
    want, _ = load_canonical(want_path)
    assert set(got) == set(want)
    for k, w in want.items():
        m = measure(got[k], w, kind, scale=None)
        assert m.passed, (k, m)


def test_mirrored_two_replicas_equal_one(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(HERE / "_tf_mirrored_check.py"), str(tmp_path)],
                          env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["world"] == 2 and report["strategy"] == "MirroredStrategy"
    assert {c["model"] for c in report["cases"]} == {"protonet", "mann"}
    assert report["passed"], report
    for name in ("protonet", "mann"):
        two = tmp_path / f"{name}-two" / "checkpoint.safetensors"
        _, meta = load_canonical(two)
        assert meta["world"] == 2 and meta["step"] == 2
        _assert_close_checkpoints(two, tmp_path / f"{name}-one" / "checkpoint.safetensors", "train")


def test_multiworker_two_processes_equal_one(tmp_path: Path) -> None:
    args = [sys.executable, "-m", "metalearn.cli", "train", "--framework", "tf",
            "--model", "protonet", "--size", "16", "--ways", "3", "--shots", "1", "--queries",
            "2", "--seed", "3", "--optimizer", "sgd", "--lr", "0.1", "--meta-batch", "2",
            "--steps", "2"]
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = []
    for i in range(2):
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}}
        procs.append(subprocess.Popen(
            [*args, "--distribute", "multiworker", "--out", str(tmp_path / f"w{i}")],
            env=_env(TF_CONFIG=json.dumps(config)), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    try:
        outs = [p.communicate(timeout=TIMEOUT_S)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert all(p.returncode == 0 for p in procs), "\n".join(o[-3000:] for o in outs)
    assert not (tmp_path / "w1").exists()  # only the chief writes
    one = subprocess.run([*args, "--out", str(tmp_path / "one")], env=_env(),
                         capture_output=True, text=True, timeout=TIMEOUT_S)
    assert one.returncode == 0, one.stderr[-3000:]
    _, meta = load_canonical(tmp_path / "w0" / "checkpoint.safetensors")
    assert meta["world"] == 2 and meta["step"] == 2
    _assert_close_checkpoints(tmp_path / "w0" / "checkpoint.safetensors",
                              tmp_path / "one" / "checkpoint.safetensors", "train")
