"""What every benchmark section shares: the timer, memory probes, the device, the environment.

Timing rule (every figure in the suite): ``warmup`` untimed calls, then ``repeats`` timed
repeats of ``inner`` calls each, a device barrier at the end of each repeat; the figure is
the **median** repeat divided by ``inner``. ``inner`` is chosen after the warm-ups so that
one repeat lasts at least :data:`MIN_REPEAT_S` (fast calls are otherwise timer noise).
Repeats stop early (never below ``min_repeats``) once a measurement has used its time
budget, so that slow eager modes do not dominate the run; the record keeps how many ran.

Besides wall-clock time each measurement records the process CPU time and the minor page
faults per call: on a shared 2-core machine wall time moves with other people's jobs, CPU
time much less, and page faults are the allocator's signature (see ``docs/benchmarks.md``).
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import resource
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = [
    "MIN_REPEAT_S",
    "Budget",
    "Device",
    "Timing",
    "cpu_model",
    "environment",
    "measure",
    "memory_probe",
    "rss_mib",
]

#: Shortest timed repeat; faster calls are batched ``inner`` times per repeat.
MIN_REPEAT_S = 0.05
_MIB = 1024 * 1024


@dataclass(frozen=True)
class Budget:
    """How hard to measure: untimed warm-ups, most/fewest repeats, seconds per measurement."""

    warmup: int = 2
    repeats: int = 5
    min_repeats: int = 3
    seconds: float = 10.0

    def scaled(self, warmup: int | None = None) -> Budget:
        """The same budget with another number of warm-ups (compiled modes want more)."""
        return Budget(self.warmup if warmup is None else warmup, self.repeats,
                      self.min_repeats, self.seconds)


@dataclass
class Timing:
    """One measurement. Times are per call, in seconds."""

    median_s: float
    min_s: float
    max_s: float
    repeats: int
    inner: int
    warmup: int
    first_call_s: float  # the first warm-up call: includes tracing / compilation
    cpu_s: float  # process CPU time (all threads) per call, median repeat
    minor_faults: float  # minor page faults per call, median repeat
    samples: list[float] = field(default_factory=list)

    def rate(self, units: float) -> float:
        """``units`` per second at the median."""
        return units / self.median_s if self.median_s > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["samples"] = [round(s, 6) for s in self.samples]
        return d


class Device:
    """Where a section runs, and the barrier that makes its timings honest.

    Args:
        kind: ``"cpu"`` or ``"cuda"``.

    On CUDA every timed repeat ends with ``torch.cuda.synchronize()`` (torch) — Keras' barrier
    is a ``.numpy()`` of a result, done by the caller (``train_on_batch`` and
    ``predict_on_batch`` return numpy already).
    """

    def __init__(self, kind: str) -> None:
        if kind not in ("cpu", "cuda"):
            raise ValueError(f"device must be 'cpu' or 'cuda'; found {kind!r}.")
        self.kind = kind

    @property
    def is_cuda(self) -> bool:
        return self.kind == "cuda"

    def torch_sync(self) -> None:
        if self.is_cuda:
            import torch

            torch.cuda.synchronize()

    def torch_device(self) -> str:
        return "cuda" if self.is_cuda else "cpu"

    def tf_device(self) -> str:
        return "/GPU:0" if self.is_cuda else "/CPU:0"

    @staticmethod
    def resolve(request: str) -> tuple[Device | None, str]:
        """``cpu | cuda | auto`` → (device or None, a sentence saying what was chosen and why)."""
        if request == "cpu":
            return Device("cpu"), "cpu (requested)"
        found = cuda_available()
        if request == "cuda":
            if not found:
                return None, ("cuda requested but no GPU is visible to torch "
                              "(torch.cuda.is_available() is False); nothing measured.")
            return Device("cuda"), "cuda (requested)"
        if request != "auto":
            raise ValueError(f"--device must be cpu, cuda or auto; found {request!r}.")
        return (Device("cuda"), "cuda (auto: a GPU is visible)") if found else (
            Device("cpu"), "cpu (auto: no GPU visible)")


def cuda_available() -> bool:
    """True when torch sees a CUDA device (torch not installed: False)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def measure(fn: Callable[[], Any], budget: Budget, sync: Callable[[], None] | None = None
            ) -> Timing:
    """Time ``fn()`` by the module's rule (warm-ups, median of repeats; see the docstring).

    A call slower than the whole budget (a 30 s eager step on an oversubscribed machine)
    gets one warm-up and ``min_repeats`` lowered to 1: the record's ``repeats`` says so.
    """
    sync = sync or (lambda: None)
    warm_times: list[float] = []
    for _ in range(max(1, budget.warmup)):
        t0 = time.perf_counter()
        fn()
        sync()
        warm_times.append(time.perf_counter() - t0)
        if sum(warm_times[1:]) > budget.seconds or (len(warm_times) > 1 and
                                                     warm_times[-1] > budget.seconds / 2):
            break
    typical = min(warm_times[1:] or warm_times)
    inner = max(1, math.ceil(MIN_REPEAT_S / max(typical, 1e-9)))
    fewest = 1 if typical > budget.seconds else budget.min_repeats
    walls, cpus, faults = [], [], []
    start = time.perf_counter()
    while len(walls) < budget.repeats:
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        c0 = time.process_time()
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        walls.append((time.perf_counter() - t0) / inner)
        cpus.append((time.process_time() - c0) / inner)
        faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0.ru_minflt) / inner)
        if len(walls) >= fewest and time.perf_counter() - start > budget.seconds:
            break
    return Timing(
        median_s=statistics.median(walls), min_s=min(walls), max_s=max(walls),
        repeats=len(walls), inner=inner, warmup=len(warm_times), first_call_s=warm_times[0],
        cpu_s=statistics.median(cpus), minor_faults=statistics.median(faults), samples=walls,
    )


# -- memory ------------------------------------------------------------------------------
def _proc_status_kib(key: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def rss_mib() -> float | None:
    """Resident set size of this process now, MiB (None where /proc is missing)."""
    kib = _proc_status_kib("VmRSS")
    return None if kib is None else kib / 1024


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (``VmHWM``) of this process; False if unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


@contextmanager
def memory_probe(device: Device, framework: str) -> Iterator[dict[str, Any]]:
    """Peak memory of the code in the ``with`` block; fills the yielded dict on exit.

    What is measured (the ``memory_kind`` key says which):

    * CPU, both frameworks — ``rss_peak_delta``: the process's peak resident set size
      during the block (the kernel's ``VmHWM``, reset on entry through
      ``/proc/self/clear_refs``) minus the RSS on entry. It counts activations, gradients,
      optimiser state created in the block, allocator caches and compiler working memory;
      memory freed by an earlier measurement and reused is not counted again.
    * CUDA, torch — ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``
      (tensors only, not the caching allocator's reserve).
    * CUDA, Keras (TensorFlow backend) —
      ``tf.config.experimental.get_memory_info('GPU:0')['peak']`` after ``reset_memory_stats``
      (TF's BFC allocator, bytes in use at the peak).
    """
    out: dict[str, Any] = {}
    if device.is_cuda and framework == "torch":
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        yield out
        torch.cuda.synchronize()
        out.update(peak_mib=torch.cuda.max_memory_allocated() / _MIB,
                   memory_kind="torch.cuda.max_memory_allocated")
        return
    if device.is_cuda and framework == "keras":
        import tensorflow as tf

        tf.config.experimental.reset_memory_stats("GPU:0")
        yield out
        peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
        out.update(peak_mib=peak / _MIB, memory_kind="tf get_memory_info('GPU:0')['peak']")
        return
    before = rss_mib()
    ok = _reset_peak_rss()
    yield out
    peak_kib = _proc_status_kib("VmHWM")
    if before is None or peak_kib is None or not ok:
        out.update(peak_mib=None, memory_kind="unavailable (no /proc/self/clear_refs)")
    else:
        out.update(peak_mib=max(0.0, peak_kib / 1024 - before), memory_kind="rss_peak_delta")


# -- environment -------------------------------------------------------------------------
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else ``platform.processor()``."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        mod = __import__(module)
    except ImportError:
        return None
    return getattr(mod, "__version__", "unknown")


def environment(frameworks: tuple[str, ...], device: Device | None) -> dict[str, Any]:
    """Versions, CPU, threads, numerics settings and load: everything a figure depends on."""
    import numpy as np

    env: dict[str, Any] = {
        "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpus_allowed": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "device": device.kind if device else None,
        "env_vars": {k: os.environ.get(k) for k in (
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "TF_ENABLE_ONEDNN_OPTS", "GLIBC_TUNABLES",
            "LD_PRELOAD", "TF_XLA_FLAGS", "CUDA_VISIBLE_DEVICES")},
        "easyfsl": _version("easyfsl"),
    }
    if "torch" in frameworks:
        import torch

        env["torch"] = {
            "version": torch.__version__,
            "num_threads": torch.get_num_threads(),
            "num_interop_threads": torch.get_num_interop_threads(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkldnn_enabled": torch.backends.mkldnn.enabled,
            "parallel_backend": torch.__config__.parallel_info().splitlines()[-1].strip(),
        }
        if device and device.is_cuda:
            env["torch"].update(
                gpu=torch.cuda.get_device_name(0),
                cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(),
                tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
                tf32_cudnn=torch.backends.cudnn.allow_tf32,
                float32_matmul_precision=torch.get_float32_matmul_precision(),
                cudnn_benchmark=torch.backends.cudnn.benchmark,
                mixed_precision="off (float32 everywhere)",
            )
    if "keras" in frameworks:
        import keras
        import tensorflow as tf

        env["keras"] = {
            "version": keras.__version__,
            "backend": keras.backend.backend(),
            "tensorflow": tf.__version__,
            "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
            "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads(),
            "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86 Linux)"),
            "keras_dtype_policy": keras.config.dtype_policy().name,
        }
        if device and device.is_cuda:
            env["keras"].update(
                gpus=[d.name for d in tf.config.list_physical_devices("GPU")],
                tf32=tf.config.experimental.is_tensor_float_32_execution_enabled(),
                mixed_precision=keras.config.dtype_policy().name,
            )
    return env


def set_threads(threads: int, frameworks: tuple[str, ...]) -> dict[str, Any]:
    """Set intra-op (and inter-op) threads in both frameworks; returns what took effect.

    TF accepts thread settings only before its runtime starts; when it has already started
    (a test process that used TF before) the values in force are recorded instead.
    """
    applied: dict[str, Any] = {"requested": threads}
    if "torch" in frameworks:
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(threads)
        except RuntimeError:  # only settable once, before any inter-op work
            pass
        applied["torch"] = (torch.get_num_threads(), torch.get_num_interop_threads())
    if "keras" in frameworks:
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError as exc:
            applied["keras_note"] = f"TF already initialised, settings unchanged: {exc}"
        applied["keras"] = (tf.config.threading.get_intra_op_parallelism_threads(),
                            tf.config.threading.get_inter_op_parallelism_threads())
    return applied


def dumps(obj: Any) -> str:
    """JSON for results: sorted keys, non-finite floats as strings, unknown objects as str."""
    def clean(o: Any) -> Any:
        if isinstance(o, float) and (o != o or o in (float("inf"), float("-inf"))):
            return str(o)
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    return json.dumps(clean(obj), indent=1, sort_keys=True, default=str)
