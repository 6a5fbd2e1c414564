"""The benchmark suite's one entry point: ``python -m benchmarks …`` or ``metalearn bench …``.

Sections (``--only``, comma-separated; all by default, run in this order):

* ``gemm`` — fp32 GEMM in each framework: the machine's limit (:mod:`benchmarks.flops`);
* ``sampling`` — our samplers vs a per-item DataLoader and easyfsl (:mod:`benchmarks.sampling`);
* ``steps`` — training and inference of every registered model, every mode
  (:mod:`benchmarks.steps`);
* ``trainer`` — the library's trainers (``metalearn train``, on the embedded glyphs data)
  per model in its faster trainer mode, steady-state ms per step from their own log,
  against the ``steps`` section's step of the same model and mode
  (:mod:`benchmarks.trainer`);
* ``meta-batch`` — one MAML meta-step on ``E`` = 1, 4, 8 tasks, torch: the library's
  per-episode loop vs ``torch.func`` (``grad`` inner step, ``vmap`` over the tasks)
  (:mod:`benchmarks.meta_batch`);
* ``seed`` — the seed document's loop vs our pipeline, and the torch gap ladder
  (:mod:`benchmarks.seed_loop`);
* ``scaling`` — training throughput of the meta-batch-splitting families' models on 1 and
  2 processes / replicas with the same meta-batch: torch DDP under ``torchrun``, Keras on
  TF's ``MirroredStrategy`` and ``MultiWorkerMirroredStrategy`` (:mod:`benchmarks.scaling`;
  its workers run in fresh processes).

Output, in ``--out`` (``results/`` by default): ``<timestamp>.json`` (everything: the
environment, every measurement, the targets), ``<timestamp>.md`` (the same as tables,
also printed), and PNG charts ``<timestamp>-<workload>.png`` and ``<timestamp>-targets.png``.

``--quick`` shrinks every size and repeat so that the suite runs in about a minute
(the tests run it); its figures only show that every path works. On ``--device cuda`` the
same suite runs on the GPU, float32 with TF32 off unless ``--tf32``; both are recorded.

When torch is measured, the process starts with the library's glibc malloc setting, as
``metalearn train --framework torch`` does (:func:`metalearn_shared.allocator.tune_malloc`;
it is process-wide, so the Keras rows of the same run share it). ``--malloc default``
measures glibc's defaults instead; the choice is recorded (``meta.malloc``) and passed to
the sections' subprocesses through ``METALEARN_MALLOC``. The seed section's gap ladder also
measures each setting in a fresh process.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import report
from benchmarks.common import Budget, Device, dumps, environment, set_threads
from metalearn_shared import models
from metalearn_shared.registry import FRAMEWORK_ALIASES, FRAMEWORKS, canonical_framework

__all__ = ["main", "SECTIONS"]

SECTIONS = ("gemm", "sampling", "steps", "trainer", "meta-batch", "seed", "scaling")


def _parse(argv: Sequence[str] | None, prog: str = "python -m benchmarks") -> argparse.Namespace:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--quick", action="store_true", help="tiny sizes and repeats (seconds)")
    p.add_argument("--only", default=",".join(SECTIONS),
                   help=f"comma-separated sections out of {','.join(SECTIONS)} (default: all)")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                   help=f"comma-separated: {','.join(FRAMEWORKS)} (aliases: "
                        f"{', '.join(f'{a}={c}' for a, c in sorted(FRAMEWORK_ALIASES.items()))})")
    p.add_argument("--models", default="",
                   help="comma-separated registry names (steps, trainer and meta-batch sections): "
                        + ",".join(models.names()))
    p.add_argument("--device", default="auto", choices=("cpu", "cuda", "auto"))
    p.add_argument("--out", default="results", help="folder for the JSON, Markdown and PNGs")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repeats per measurement (median taken); default 5, quick 2")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads in both frameworks (default: the CPUs allowed; "
                        "quick: 1)")
    p.add_argument("--compile-backend", default=None,
                   help="torch.compile backend (default inductor; quick: eager — tracing only)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls/convs on the GPU")
    p.add_argument("--malloc", default=None, choices=("heap", "threshold", "default"),
                   help="glibc malloc setting when torch is measured (metalearn_shared.allocator;"
                        " default: $METALEARN_MALLOC, else the library's default, heap)")
    args = p.parse_args(argv)
    args.sections = tuple(s for s in args.only.split(",") if s)
    bad = [s for s in args.sections if s not in SECTIONS]
    frameworks = []
    for f in filter(None, args.frameworks.split(",")):
        try:
            frameworks.append(canonical_framework(f))
        except ValueError:
            bad.append(f)
    args.framework_list = tuple(dict.fromkeys(frameworks))  # "tf,keras" is one framework
    args.model_list = tuple(m for m in args.models.split(",") if m)
    bad += [m for m in args.model_list if m not in models.names()]
    if bad:
        p.error(f"unknown section, framework or model {bad}; sections: {SECTIONS}, frameworks: "
                f"{FRAMEWORKS} (aliases {sorted(FRAMEWORK_ALIASES)}), models: {models.names()}.")
    return args


def _numerics(device: Device, frameworks: tuple[str, ...], tf32: bool) -> str:
    """Pin the GPU numerics (TF32) and say what they are; float32 throughout, no AMP."""
    if not device.is_cuda:
        return "float32 on CPU; no mixed precision."
    if "torch" in frameworks:
        import torch

        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32
    if "keras" in frameworks:
        import tensorflow as tf  # Keras 3's backend

        tf.config.experimental.enable_tensor_float_32_execution(tf32)
    return (f"float32 weights and activations, TF32 {'ON' if tf32 else 'OFF'} for matmuls "
            "and convolutions in both frameworks; mixed precision OFF (Keras policy float32, "
            "no torch.autocast).")


def _malloc(mode: str | None, frameworks: tuple[str, ...]) -> dict[str, Any]:
    """Apply the torch library's malloc setting at start, as its command line does; say what
    this process runs with. ``mode`` given: also the setting of the sections' subprocesses."""
    if "torch" not in frameworks:
        return {"mode": "default", "applied": {}, "reason": "torch not measured: not tuned"}
    from metalearn_shared.allocator import ENV_VAR, tune_malloc

    if mode is not None:
        os.environ[ENV_VAR] = mode
    return tune_malloc(mode)


def _stamp(out: Path) -> Path:
    """``out/<UTC timestamp>``, unique within ``out``."""
    base = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    stem, k = out / base, 1
    while stem.with_suffix(".json").exists():
        stem, k = out / f"{base}-{k}", k + 1
    return stem


def main(argv: Sequence[str] | None = None, prog: str = "python -m benchmarks") -> int:
    """Run the suite; returns the exit status (0 also when a requested GPU is absent)."""
    args = _parse(argv, prog)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    device, why = Device.resolve(args.device)
    if device is None:
        print(f"benchmarks: {why}")
        return 0
    frameworks = args.framework_list
    quick = args.quick
    malloc = _malloc(args.malloc, frameworks)
    repeats = args.repeats or (2 if quick else 5)
    budget = Budget(warmup=1, repeats=repeats, min_repeats=min(2, repeats), seconds=0.3) if quick \
        else Budget(warmup=2, repeats=repeats, min_repeats=min(3, repeats), seconds=5.0)
    compile_backend = args.compile_backend or ("eager" if quick else "inductor")
    # Quick runs use one thread: on a busy machine two OpenMP threads wait for each other at
    # every op (see docs/benchmarks.md), and quick figures only show that the paths run.
    threads = args.threads or (1 if quick else len(os.sched_getaffinity(0))
                               if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    old_torch_threads = None
    if "torch" in frameworks:
        import torch

        old_torch_threads = torch.get_num_threads()
    applied = set_threads(threads, frameworks)
    numerics = _numerics(device, frameworks, args.tf32)
    command = "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:])
    results: dict[str, Any] = {"meta": {
        "command": command.strip(), "quick": quick, "device": why, "numerics": numerics,
        "threads": applied, "budget": vars(budget), "compile_backend": compile_backend,
        "malloc": malloc,
        "sections": args.sections, "frameworks": frameworks,
        "environment": environment(frameworks, device)}}
    started = time.perf_counter()

    def say(line: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {line}", flush=True)

    try:
        if "gemm" in args.sections:
            from benchmarks.flops import run_gemm

            say("gemm")
            results["gemm"] = run_gemm(quick, budget, frameworks, device)
        if "sampling" in args.sections:
            from benchmarks.sampling import run_sampling

            say("sampling")
            results["sampling"] = run_sampling(quick, budget, frameworks)
        if "steps" in args.sections:
            from benchmarks.steps import run_steps

            say("steps")
            results["steps"] = run_steps(quick, budget, frameworks, device, compile_backend,
                                         progress=say, only_models=args.model_list)
        if "trainer" in args.sections:
            from benchmarks.trainer import run_trainer

            say("trainer")
            results["trainer"] = run_trainer(quick, frameworks, device,
                                             (results.get("steps") or {}).get("records", []),
                                             progress=say, only_models=args.model_list)
        if "meta-batch" in args.sections:
            from benchmarks.meta_batch import run_meta_batch

            say("meta-batch")
            results["meta-batch"] = run_meta_batch(quick, budget, frameworks, device, threads,
                                                   progress=say, only_models=args.model_list)
        if "seed" in args.sections:
            from benchmarks.seed_loop import run_seed

            say("seed")
            results["seed"] = run_seed(quick, budget, frameworks, device, compile_backend,
                                       threads, progress=say)
        if "scaling" in args.sections:
            from benchmarks.scaling import run_scaling

            say("scaling")
            t0 = time.perf_counter()
            results["scaling"] = run_scaling(quick, frameworks, device, threads, progress=say)
            results["scaling"]["notes"]["seconds"] = time.perf_counter() - t0
    finally:
        if old_torch_threads is not None:
            torch.set_num_threads(old_torch_threads)  # a calling test keeps its setting
    results["meta"]["seconds"] = time.perf_counter() - started
    results["meta"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    report.derive(results)
    results["targets"] = report.targets(results)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = _stamp(out)
    text = report.markdown(results)
    pngs = report.charts(results, stem)
    results["meta"]["files"] = [str(stem.with_suffix(".md")), *map(str, pngs)]
    stem.with_suffix(".json").write_text(dumps(results))
    stem.with_suffix(".md").write_text(text + "\n")
    print(text)
    say(f"wrote {stem}.json, {stem}.md and {len(pngs)} PNGs")
    return 0
