"""The glibc malloc setting of torch processes (:mod:`metalearn_shared.allocator`).

* In a fresh interpreter (the setting is process-wide): ``tune_malloc()`` returns what it
  applied, a second call returns the same, and glibc then serves large blocks from the heap
  (``mallinfo2().hblks``, the number of mmapped blocks, stays 0); ``METALEARN_MALLOC=default``
  changes nothing.
* In this process, with ``mallopt`` replaced by a recorder: the modes, the refusals, and that
  ``metalearn train --framework torch`` applies the setting and records it in ``run.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metalearn_shared import allocator

ROOT = Path(__file__).resolve().parents[1]
GLIBC = allocator._glibc_version() is not None

# Run in a fresh interpreter: tune twice, then malloc a 16 MiB and a 64 MiB block and count
# the blocks glibc mmapped (mallinfo2, glibc >= 2.33; None where it is missing).
PROBE = """
import ctypes, json
from metalearn_torch import tune_malloc
first, second = tune_malloc(), tune_malloc()
libc = ctypes.CDLL(None)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
mmapped = {}
if hasattr(libc, "mallinfo2"):
    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc.mallinfo2.restype = Info
    for mib in (16, 64):
        before = libc.mallinfo2().hblks
        block = libc.malloc(mib << 20)  # kept: the count must see it live
        mmapped[mib] = libc.mallinfo2().hblks - before
print(json.dumps({"first": first, "second": second, "mmapped": mmapped or None}))
"""


def _probe(mode: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in (allocator.ENV_VAR, "GLIBC_TUNABLES")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    if mode is not None:
        env[allocator.ENV_VAR] = mode
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True,
                          timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt settings are glibc's")
@pytest.mark.parametrize(("mode", "expected", "mmapped"), [
    (None, {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": -1}, {"16": 0, "64": 0}),
    ("threshold", {"M_MMAP_THRESHOLD": 32 << 20, "M_TRIM_THRESHOLD": -1}, {"16": 0, "64": 1}),
    ("default", {}, {"16": 1, "64": 1}),
])
def test_tune_malloc_in_a_fresh_process(mode, expected, mmapped):
    """Unset = "heap": no block is mmapped; "threshold": only blocks above 32 MiB; "default":
    glibc's 128 KiB threshold, both."""
    got = _probe(mode)
    assert got["first"] == got["second"]  # idempotent
    assert got["first"]["mode"] == (mode or allocator.DEFAULT_MODE)
    assert got["first"]["applied"] == expected
    if got["mmapped"] is not None:  # glibc < 2.33 has no mallinfo2
        assert got["mmapped"] == mmapped


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """A fresh, untuned process state whose ``mallopt`` calls are recorded, not made."""
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator, "_mallopt", lambda p, v: calls.append((p, v)) or 1)
    monkeypatch.setattr(allocator, "_glibc_version", lambda: "2.36")
    monkeypatch.delenv(allocator.ENV_VAR, raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    return calls


def test_default_mode_calls_mallopt_once_per_call(recorded):
    first = allocator.tune_malloc()
    assert first["mode"] == "heap" and recorded == [(-4, 0), (-1, -1)]
    assert allocator.tune_malloc() == first == allocator.malloc_setting()
    assert recorded == [(-4, 0), (-1, -1)] * 2  # re-asserted, same values


def test_opt_out_is_a_no_op(recorded, monkeypatch):
    monkeypatch.setenv(allocator.ENV_VAR, "default")
    got = allocator.tune_malloc()
    assert (got["mode"], got["applied"], recorded) == ("default", {}, [])
    assert "METALEARN_MALLOC=default" in got["reason"]
    assert allocator.tune_malloc() == got and recorded == []


def test_no_op_without_glibc_and_under_glibc_tunables(recorded, monkeypatch):
    monkeypatch.setattr(allocator, "_glibc_version", lambda: None)
    got = allocator.tune_malloc()
    assert (got["mode"], got["applied"], recorded) == ("default", {}, [])
    assert "not glibc" in got["reason"]
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.setattr(allocator, "_glibc_version", lambda: "2.36")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.hugetlb=1")
    assert allocator.tune_malloc()["mode"] == "GLIBC_TUNABLES" and recorded == []


def test_unknown_and_conflicting_modes_are_errors(recorded, monkeypatch):
    monkeypatch.setenv(allocator.ENV_VAR, "jemalloc")
    with pytest.raises(ValueError, match="heap, threshold, default.*'jemalloc'"):
        allocator.tune_malloc()
    monkeypatch.delenv(allocator.ENV_VAR)
    assert allocator.tune_malloc("threshold")["mode"] == "threshold"
    with pytest.raises(ValueError, match="already runs with malloc mode 'threshold'"):
        allocator.tune_malloc("heap")
    assert allocator.tune_malloc()["mode"] == "threshold"  # None: keep what the process has


def test_cli_train_applies_and_records_it(recorded, tmp_path):
    pytest.importorskip("torch")
    from metalearn.cli import main

    out = tmp_path / "run"
    assert allocator.malloc_setting()["reason"] == "tune_malloc() not called in this process"
    assert main(["train", "--framework", "torch", "--steps", "1", "--ways", "3", "--shots", "1",
                 "--queries", "2", "--size", "16", "--out", str(out)]) == 0
    assert recorded[:2] == [(-4, 0), (-1, -1)]
    run = json.loads((out / "run.json").read_text())
    assert run["malloc"]["mode"] == "heap"
    assert run["malloc"]["applied"] == {"M_MMAP_MAX": 0, "M_TRIM_THRESHOLD": -1}


def test_importing_the_package_tunes_nothing():
    done = subprocess.run([sys.executable, "-c", "import metalearn_torch;"
                           "from metalearn_shared.allocator import malloc_setting;"
                           "print(malloc_setting()['reason'])"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.stdout.strip() == "tune_malloc() not called in this process", done.stderr
