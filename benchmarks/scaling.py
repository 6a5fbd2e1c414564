"""Section ``scaling``: meta-training throughput on 1 and 2 processes / replicas, the same
total meta-batch on both.

What is compared (:data:`MODELS`: per family whose meta-batch the distributed trainers
split, the registered model with the most training FLOPs per step at full size — ProtoNet
conv4 and the MANN among the built-in ones; the library's own distributed trainers, not a
re-implementation: :func:`metalearn_torch.distributed.meta_step`,
:class:`metalearn_tf.distributed.DistributedStep`):

==================  ========================================================================
engine              what runs
==================  ========================================================================
torch DDP           ``python -m torch.distributed.run --nproc-per-node W`` (gloo on CPU,
                    NCCL on GPUs); ``W = 1`` is the same worker without the launcher
Keras mirrored      TF's ``MirroredStrategy`` over ``W`` logical CPU devices (``W`` GPUs),
                    one process holding both ``W = 1`` and ``W = 2``
Keras multiworker   TF's ``MultiWorkerMirroredStrategy``, ``W`` local worker processes on
                    127.0.0.1 (``TF_CONFIG``); full mode only
==================  ========================================================================

Workloads: full — each model at its spec's defaults (``spec.defaults``, the options'
defaults) on the task of its first full-size benchmark workload (``spec.workloads(False)``),
:data:`META_BATCH` episodes per step: ProtoNet conv4 28×28, 5-way 1-shot 15-query, 4 episodes
(320 images); MANN paper sizes, 20×20, 5 ways × 10 samples, 16 sequences (800 images).
``--quick`` — the equivalence checks' tiny models
(:func:`metalearn_shared.distributed.tiny_setup`), meta-batch 2, one warm-up and two timed
steps: the figures only show that every path runs.

Timing: every rank runs ``warmup`` untimed steps (tracing, DDP's bucket set-up, allocator
warm-up), then ``steps`` timed ones, each ending on the step's loss as a host float (a
barrier: the loss is all-reduced, and ``.item()`` / ``float()`` waits for the device). The
figure is the median step; rank 0's, with every rank's median kept in ``per_rank``. A step
includes drawing its episodes from the seeded sampler, as in training.

Scaling efficiency = throughput at W / (W × throughput at 1), with the same meta-batch, so
``1.0`` means W times faster; the baseline is the same framework and engine family at
``W = 1`` with all the threads (see :data:`THREAD_POLICIES`).

GPU: ``--device cuda`` takes the NCCL path (torch) and ``MirroredStrategy`` over GPUs (Keras);
2-way rows need 2 visible GPUs and are skipped otherwise. **That path has not been run**:
the machine this was written on has no GPU; the report says so on every CUDA row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from metalearn_shared import models
from metalearn_shared.distributed import FAMILIES, free_ports
from metalearn_shared.registry import FRAMEWORKS, ModelSpec, canonical_framework

__all__ = ["MODELS", "META_BATCH", "THREAD_POLICIES", "GPU_NOTE", "scaling_models",
           "run_scaling", "workload_setup", "time_steps", "efficiency", "main"]


def _train_flops(spec: ModelSpec) -> float:
    """Training FLOPs per call of ``spec``'s heaviest full-size benchmark workload."""
    return max((spec.flops(w.config, w.task)[1] for w in spec.workloads(False)), default=0.0)


def scaling_models() -> tuple[str, ...]:
    """Per family the distributed trainers split (:data:`metalearn_shared.distributed.FAMILIES`),
    the registered model with the most training FLOPs per step at full size: the one that
    has the most to gain from a second worker."""
    return tuple(max(specs, key=_train_flops).name for f in FAMILIES if (specs := models.specs(f)))


#: Registry names measured.
MODELS = scaling_models()
#: Episodes (sequences) per full-size step, per family: the same total on 1 and 2 workers.
META_BATCH = {"fewshot": 4, "sequence": 16}
#: Threads per process at ``W`` processes: ``split`` gives each ``threads // W`` (the
#: machine's threads shared out, what ``torchrun`` assumes when it sets OMP_NUM_THREADS=1);
#: ``all`` gives each all of them (oversubscribed on a CPU: the processes compete).
THREAD_POLICIES = ("split", "all")
GPU_NOTE = ("GPU path (NCCL, MirroredStrategy over GPUs) written but untested: no GPU was "
            "available where this benchmark was developed.")
ROOT = Path(__file__).resolve().parents[1]
_QUICK_META_BATCH = 2


# -- the workloads ------------------------------------------------------------------------
def workload_setup(name: str, quick: bool, framework: str, root: Path) -> tuple[Any, int]:
    """The :class:`metalearn_shared.training.TrainSetup` and total meta-batch ``E`` of one
    workload (``framework``: ``"torch"`` or ``"keras"``)."""
    from metalearn_shared import distributed as D
    from metalearn_shared import training as T

    if quick:
        return D.tiny_setup(name, 0, _QUICK_META_BATCH, root, framework), _QUICK_META_BATCH
    spec = models.get(name)
    task = spec.workloads(False)[0].task
    e = META_BATCH[spec.family]
    options = {opt.dest: opt.kwargs.get("default") for opt in spec.options}
    args = argparse.Namespace(**{
        **options, "model": name, "dataset": "glyphs", "data_dir": None, "size": None,
        "rotations": False, "seed": 0, "steps": 0, "lr": None, "optimizer": None,
        # a sequence step takes `batch` sequences; a few-shot step E episodes (the meta-batch)
        "batch": e if spec.family == "sequence" else None, "ways": task.ways,
        "shots": task.shots, "queries": task.queries,
        "samples_per_class": task.samples_per_class, "out": str(root / name)})
    return T.setup_from_args(args), e


def _work_per_step(setup: Any, e: int) -> dict[str, int]:
    """Episodes and images one step of ``E`` episodes consumes (images: support + query of
    every episode, or every time step of every sequence)."""
    if setup.family == "fewshot":
        per_episode = setup.ways * (setup.shots + setup.queries)
    else:
        per_episode = setup.ways * setup.samples_per_class
    return {"episodes_per_step": e, "images_per_step": e * per_episode}


def time_steps(step: Callable[[int], None], warmup: int, steps: int) -> dict[str, Any]:
    """``warmup`` untimed calls ``step(0 .. warmup-1)``, then ``steps`` timed ones; wall and
    process-CPU seconds per step (median), the first call, and every timed sample."""
    t0 = time.perf_counter()
    step(0)
    first = time.perf_counter() - t0
    for s in range(1, warmup):
        step(s)
    walls, cpus = [], []
    for s in range(warmup, warmup + steps):
        c0, t0 = time.process_time(), time.perf_counter()
        step(s)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return {"median_s": statistics.median(walls), "min_s": min(walls), "max_s": max(walls),
            "cpu_s": statistics.median(cpus), "first_step_s": first, "warmup": warmup,
            "steps": steps, "samples": [round(w, 6) for w in walls]}


def _rates(timing: dict[str, Any], work: dict[str, int]) -> dict[str, float]:
    return {"episodes_per_s": work["episodes_per_step"] / timing["median_s"],
            "images_per_s": work["images_per_step"] / timing["median_s"]}


# -- workers (each runs in its own process) ----------------------------------------------
def _torch_worker(a: argparse.Namespace) -> list[dict[str, Any]]:
    import torch
    import torch.distributed as dist

    from metalearn_shared import distributed as D
    from metalearn_shared import training as T
    from metalearn_torch import distributed as TD
    from metalearn_torch.models import build_model
    from metalearn_torch.optimizers import make_optimizer

    torch.set_num_threads(a.threads)
    ctx = TD.init_from_env("nccl" if a.device == "cuda" else "gloo")
    if a.device == "cuda" and ctx.world == 1:
        ctx = TD.DistContext(0, 1, torch.device("cuda", 0))
    records = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for name in a.models:
                setup, e = workload_setup(name, a.quick, "torch", Path(tmp))
                model = build_model(setup.model_config, seed=0).to(ctx.device).train()
                opt = make_optimizer(setup.train.optimizer, model.parameters(), lr=setup.train.lr)
                wrapped = TD.wrap(model, ctx, "ddp")
                sampler = T.train_sampler(setup)

                def step(s: int, model: Any = model, wrapped: Any = wrapped, opt: Any = opt,
                         sampler: Any = sampler, setup: Any = setup, e: int = e) -> None:
                    batches = D.rank_batches(sampler, setup.family, s, e, ctx.rank, ctx.world)
                    loss, _ = TD.meta_step(model, wrapped, opt, batches, ctx, "ddp")
                    float(loss)  # host float: waits for the device (and the all-reduce)

                timing = time_steps(step, a.warmup, a.steps)
                per_rank = [timing["median_s"]]
                if ctx.world > 1:
                    gathered: list[Any] = [None] * ctx.world
                    dist.all_gather_object(gathered, timing["median_s"])
                    per_rank = gathered
                work = _work_per_step(setup, e)
                records.append({"model": name, "framework": "torch", "world": ctx.world,
                                "engine": f"DDP {'NCCL' if ctx.device.type == 'cuda' else 'gloo'}"
                                if ctx.world > 1 else "1 process",
                                "threads_per_process": torch.get_num_threads(),
                                "meta_batch": e, "per_rank_meta_batch": e // ctx.world,
                                **work, **timing, **_rates(timing, work),
                                "per_rank_median_s": per_rank})
    finally:
        TD.shutdown(ctx)
    return records if ctx.is_main else []


def _keras_worker(a: argparse.Namespace) -> list[dict[str, Any]]:
    import tensorflow as tf  # Keras 3's backend: threads, strategies, devices

    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    from metalearn_shared import training as T
    from metalearn_tf import distributed as TD
    from metalearn_tf.models import build_model
    from metalearn_tf.optimizers import make_optimizer

    # Every strategy before any op: the CPU split into logical devices needs a fresh runtime.
    if a.distribute == "multiworker":
        strategies = {0: TD.make_strategy("multiworker")}
    else:
        strategies = {w: TD.make_strategy("mirrored", w) for w in sorted(a.replicas, reverse=True)}
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models:
            for strategy in strategies.values():
                setup, e = workload_setup(name, a.quick, "keras", Path(tmp))
                with strategy.scope():
                    model = build_model(setup.model_config, seed=0)
                    opt = make_optimizer(setup.train.optimizer, lr=setup.train.lr)
                    opt.build(model.trainable_variables)
                step_fn = TD.DistributedStep(model, opt, strategy, setup.family, e)
                sampler = T.train_sampler(setup)
                timing = time_steps(lambda s, f=step_fn, sm=sampler: f(sm, s), a.warmup, a.steps)
                work = _work_per_step(setup, e)
                world = strategy.num_replicas_in_sync
                kind = "multiworker" if a.distribute == "multiworker" else "mirrored"
                devices = "GPU" if tf.config.list_physical_devices("GPU") else "logical CPU"
                engine = (f"MultiWorkerMirrored, {world} worker process(es)" if kind == "multiworker"
                          else f"Mirrored, {world} {devices} device(s)")
                records.append({"model": name, "framework": "keras", "world": world,
                                "engine": engine, "family_engine": kind,
                                "threads_per_process": a.threads, "meta_batch": e,
                                "per_rank_meta_batch": e // world, **work, **timing,
                                **_rates(timing, work)})
    return records if TD.is_chief() else []


def _parse_worker(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.scaling",
                                description="one worker of the scaling section (internal)")
    p.add_argument("framework", type=canonical_framework, help=" | ".join(FRAMEWORKS))
    p.add_argument("--models", nargs="+", default=list(MODELS))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--distribute", default="mirrored", choices=("mirrored", "multiworker"))
    p.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", required=True, help="where rank 0 / the chief writes its records")
    return p.parse_args(argv)


def _worker_main(argv: Sequence[str]) -> int:
    a = _parse_worker(argv)
    records = _torch_worker(a) if a.framework == "torch" else _keras_worker(a)
    if records:
        Path(a.json).write_text(json.dumps(records))
    return 0


# -- the section (runs the workers) ------------------------------------------------------


def _env(threads: int, **extra: str) -> dict[str, str]:
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2",
               OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    return env


def _launch(cmds: list[list[str]], envs: list[dict[str, str]], out: Path, timeout: float
            ) -> list[dict[str, Any]]:
    """Start the processes together, wait for all; the records rank 0 wrote to ``out``."""
    procs = [subprocess.Popen(c, cwd=ROOT, env=e, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for c, e in zip(cmds, envs,
                                                                                   strict=True)]
    outputs, failed = [], False
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            outputs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            outputs.append(p.communicate()[0])
            raise RuntimeError(f"timed out after {timeout:.0f} s: {' '.join(cmds[0])}\n"
                               + outputs[-1][-2000:]) from None
        failed |= p.returncode != 0
    if failed or not out.exists():
        tail = "\n".join(o[-1500:] for o in outputs)
        raise RuntimeError(f"exit {[p.returncode for p in procs]}: {' '.join(cmds[0])}\n{tail}")
    return json.loads(out.read_text())


def _worker_args(framework: str, quick: bool, threads: int, warmup: int, steps: int,
                 device: str, out: Path) -> list[str]:
    return ["-m", "benchmarks.scaling", framework, "--threads", str(threads), "--warmup",
            str(warmup), "--steps", str(steps), "--device", device, "--json", str(out),
            *(["--quick"] if quick else [])]


def efficiency(records: list[dict[str, Any]]) -> None:
    """Add ``baseline``, ``speedup`` and ``efficiency`` to every W > 1 record, in place: the
    record's throughput over W × that of the same model, framework and engine family at W = 1."""
    for r in records:
        if "median_s" not in r or r["world"] == 1:
            continue
        base = next((b for b in records if "median_s" in b and b["world"] == 1
                     and b["model"] == r["model"] and b["framework"] == r["framework"]
                     and b.get("family_engine") == r.get("family_engine")), None)
        if base:
            r["baseline"] = f"{base['engine']}, {base['threads_per_process']} thread(s)"
            r["speedup"] = r["images_per_s"] / base["images_per_s"]
            r["efficiency"] = r["speedup"] / r["world"]


def run_scaling(quick: bool, frameworks: tuple[str, ...], device: Any, threads: int,
                progress: Callable[[str], None] = print, multiworker: bool | None = None
                ) -> dict[str, Any]:
    """Measure every engine at 1 and 2 processes / replicas; returns ``{"records", "notes"}``.

    Args:
        threads: intra-op threads of a one-process run (all the machine's, normally);
            2-process runs get ``threads // 2`` each (``split``) and, when that differs,
            ``threads`` each (``all``) — see :data:`THREAD_POLICIES`.
        multiworker: also TF ``MultiWorkerMirroredStrategy`` (default: not in quick mode).
    """
    kind = device.kind
    warmup, steps = (1, 2) if quick else (3, 12)
    timeout = 300.0 if quick else 1800.0
    multiworker = (not quick and kind == "cpu") if multiworker is None else multiworker
    gpus = 0
    if kind == "cuda":
        import torch

        gpus = torch.cuda.device_count()
    two_ok = kind == "cpu" or gpus >= 2
    notes = {"timing": f"{warmup} warm-up step(s) excluded, median of {steps} timed steps; "
                       "rank 0's clock (steps end on the all-reduced loss)"
                       + ("; quick: every engine launched at once, figures meaningless"
                          if quick else "; one engine at a time"),
             "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    if kind == "cuda":
        notes["gpu"] = GPU_NOTE
    if not two_ok:
        notes["skipped"] = f"2-way rows need 2 GPUs; {gpus} visible."
    policies = {"split": max(1, threads // 2), "all": threads}
    policies = {k: v for k, v in policies.items() if k == "split" or v != policies["split"]}
    records: list[dict[str, Any]] = []
    py = sys.executable

    jobs: list[tuple[str, Callable[[], list[dict[str, Any]]], dict[str, Any]]] = []

    def attempt(label: str, fn: Callable[[], list[dict[str, Any]]], **fields: Any) -> None:
        jobs.append((label, fn, fields))

    def run_job(label: str, fn: Callable[[], list[dict[str, Any]]], fields: dict[str, Any]
                ) -> list[dict[str, Any]]:
        progress(f"scaling: {label}")
        load = os.getloadavg()[0]
        try:
            got = fn()
        except Exception as exc:  # one failed engine must not lose the others
            return [{"label": label, "error": str(exc)[-3000:], **fields}]
        for r in got:
            r.update(label=label, load_1min_before=round(load, 2), device=kind, **fields)
            r.setdefault("family_engine", "ddp" if r["framework"] == "torch" else None)
            if kind == "cuda":
                r["untested"] = GPU_NOTE
        return got

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "torch" in frameworks:
            def torch_run(nproc: int, t: int, tag: str) -> list[dict[str, Any]]:
                out = work / f"torch-{tag}.json"
                args = _worker_args("torch", quick, t, warmup, steps, kind, out)
                if quick and nproc == 1 and "WORLD_SIZE" not in os.environ:
                    # A path check: the baseline in this process saves a torch start-up.
                    return _torch_worker(_parse_worker(args[2:]))
                cmd = [py, *args] if nproc == 1 else [
                    py, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                    "--master-addr", "127.0.0.1", "--master-port", str(free_ports(1)[0]), *args]
                return _launch([cmd], [_env(t)], out, timeout)

            attempt("torch ×1", lambda: torch_run(1, threads, "1"), thread_policy="all")
            if two_ok:
                for policy, t in policies.items():
                    attempt(f"torch ×2 ({policy})", lambda t=t, p=policy: torch_run(2, t, p),
                            thread_policy=policy)
        if "keras" in frameworks:
            def keras_mirrored() -> list[dict[str, Any]]:
                out = work / "keras-mirrored.json"
                reps = ["1", "2"] if two_ok else ["1"]
                cmd = [py, *_worker_args("keras", quick, threads, warmup, steps, kind, out),
                       "--replicas", *reps]
                return _launch([cmd], [_env(threads)], out, timeout)

            attempt("keras mirrored ×1, ×2", keras_mirrored, thread_policy="all (one process)")
            if multiworker:
                for n, policy, t in ((1, "all", threads),
                                     *((2, p, t) for p, t in policies.items())):
                    attempt(f"keras multiworker ×{n} ({policy})",
                            lambda n=n, t=t, p=policy: _multiworker(n, t, p, quick, warmup, steps,
                                                                    work, timeout),
                            thread_policy=policy)
        if quick:  # a path check: launch every engine at once (the figures mean nothing)
            with ThreadPoolExecutor(len(jobs)) as pool:
                for got in pool.map(lambda j: run_job(*j), jobs):
                    records.extend(got)
        else:  # one engine at a time, so that each has the machine to itself
            for job in jobs:
                records.extend(run_job(*job))
    efficiency(records)
    notes["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    return {"records": records, "notes": notes}


def _multiworker(n: int, threads: int, tag: str, quick: bool, warmup: int, steps: int,
                 work: Path, timeout: float) -> list[dict[str, Any]]:
    out = work / f"keras-multiworker-{n}-{tag}.json"
    hosts = [f"127.0.0.1:{p}" for p in free_ports(n)]
    cmds, envs = [], []
    for i in range(n):
        config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": i}}
        cmds.append([sys.executable, *_worker_args("keras", quick, threads, warmup, steps,
                                                   "cpu", out), "--distribute", "multiworker"])
        envs.append(_env(threads, TF_CONFIG=json.dumps(config)))
    return _launch(cmds, envs, out, timeout)


def main(argv: Sequence[str] | None = None) -> int:
    """Worker entry point: ``python -m benchmarks.scaling torch|keras …`` (the runner starts it;
    run the section with ``python -m benchmarks --only scaling``)."""
    return _worker_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
