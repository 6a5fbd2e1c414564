"""Section ``trainer``: the library's trainers as ``metalearn train`` runs them, against the
``steps`` section's step of the same model, mode, batch and thread count.

The step section times the bare step (inputs prepared once, the optimiser and loss the
trainers use); what a user runs is :func:`metalearn_torch.train.train` /
:func:`metalearn_tf.train.train`, which also draw each step's episode from the seeded
sampler, convert it, log loss and accuracy, and (Keras) go through ``fit``, its data adapter
and a per-step callback. This section runs those trainers, unchanged, on the embedded
``glyphs`` data (no files needed) at each workload's image size, with the workload's model
config and task, and reads the steady-state time per step from the trainer's own
``log.csv`` (its ``seconds`` column, in ms resolution): rows every ``log_every`` steps; the first
:data:`WARMUP_ROWS` intervals (tracing, compilation, the first sampler calls) are left
out and the figure is the **median** ms per step over the remaining intervals — the
steps section's median rule, over log intervals instead of repeats.

Mode: each framework's trainer offers two — torch eager / ``--compile`` (``torch.compile``
of the model), Keras ``tf.function`` / ``--compile`` (XLA). The torch trainer lays a model
out channels-last by default where its eager step prefers it
(:func:`metalearn_torch.models.memory_format`): its eager mode is then the steps section's
``eager-cl`` (:func:`trainer_mode`). Per model (its first workload)
and framework the section runs the one the steps section found faster for that workload
(the default, eager or ``function``, when the steps section did not measure both), and
compares it with that step record: ``ratio`` = trainer ms/step ÷ step ms. Where the ratio
is above :data:`RATIO_AIM` (and always in quick mode, so the path is exercised) it runs the
trainer again under ``cProfile`` (self time per Python function and per C call it makes:
the trainer's own overhead is Python, which the torch profiler does not see).

``--quick``: one workload per framework (the cheapest whose default-mode training step the
steps section measured), a handful of steps; the figures only show that the path works.
"""

from __future__ import annotations

import contextlib
import cProfile
import csv
import functools
import io
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import Device
from benchmarks.report import _best
from benchmarks.steps import Workload, workloads
from metalearn_shared.config import TrainConfig

__all__ = ["TRAINER_MODES", "RATIO_AIM", "WARMUP_ROWS", "plan", "run_trainer",
           "steady_ms_per_step", "trainer_mode"]

#: The step-section mode each trainer runs, by its ``compile`` argument (``--compile``).
TRAINER_MODES = {"torch": {False: "eager", True: "compile"},
                 "keras": {False: "function", True: "xla"}}
#: The issue's aim: the trainer within 1.2× of the benchmarked step.
RATIO_AIM = 1.2
#: Log intervals left out at the start (the first includes tracing and compilation).
WARMUP_ROWS = 2


def trainer_mode(w: Workload, framework: str, compile: bool) -> str:
    """The steps-section mode of ``w``'s trainer in ``framework`` with ``--compile`` or not:
    :data:`TRAINER_MODES`, and ``-cl`` where the torch trainer's default memory format is
    channels-last for ``w``'s model."""
    mode = TRAINER_MODES[framework][compile]
    if framework == "torch":
        from metalearn_torch.models import build_model, memory_format

        model = build_model(w.config, seed=0)
        if memory_format(model, compiled=compile) == "channels-last":
            mode += "-cl"
    return mode


def _step_record(records: list[dict[str, Any]], w: Workload, framework: str, mode: str
                 ) -> dict[str, Any] | None:
    """The steps section's successful training record of ``w`` in ``framework`` ``mode``."""
    return _best(records, workload=w.key, framework=framework, mode=mode, phase="train")


def plan(ws: list[Workload], frameworks: tuple[str, ...], records: list[dict[str, Any]],
         quick: bool) -> list[tuple[Workload, str, bool]]:
    """``(workload, framework, compile)`` to run (see the module docstring)."""
    out = []
    for framework in frameworks:
        if quick:
            measured = [w for w in ws
                        if _step_record(records, w, framework, trainer_mode(w, framework, False))]
            pick = min(measured or ws, key=lambda w: w.flops.train, default=None)
            out += [(pick, framework, False)] if pick else []
            continue
        for w in {w.model: w for w in reversed(ws)}.values():  # each model's first workload
            modes = {c: trainer_mode(w, framework, c) for c in (False, True)}
            timed = {c: r for c, m in modes.items() if (r := _step_record(records, w, framework, m))}
            out.append((w, framework, min(timed, key=lambda c: timed[c]["median_s"])
                        if timed else False))
    return sorted(out, key=lambda p: [x.key for x in ws].index(p[0].key))


@functools.cache
def _glyphs(size: int) -> tuple[Any, Any]:
    """The train and test splits of ``metalearn train --dataset glyphs --size size``."""
    from metalearn_shared import training as T

    return T.load_splits("glyphs", None, size, rotations=False, seed=0)


def _setup(w: Workload, steps: int, log_every: int, root: Path) -> Any:
    """The :class:`~metalearn_shared.training.TrainSetup` ``metalearn train --dataset glyphs``
    would build for ``w``'s model config and task (seed 0, no augmentation)."""
    from metalearn_shared import training as T

    size = w.image_size
    train_ds, test_ds = _glyphs(size)
    cfg = TrainConfig(steps=steps, batch=w.task.batch, lr=w.train.lr,
                      optimizer=w.train.optimizer, seed=0, log_every=log_every)
    return T.TrainSetup(w.config, cfg, w.family, train_ds, test_ds, w.task.ways, w.task.shots,
                        w.task.queries, w.task.samples_per_class, T.RunFiles(root),
                        T.data_record("glyphs", None, 0, size, False))


def _trainer_run(w: Workload, framework: str, compile: bool, device: Device, steps: int,
                 log_every: int, root: Path, profile: cProfile.Profile | None = None) -> None:
    """Train a fresh model with the library's trainer into ``root``; ``profile``: profile
    the ``train`` call (the data, the setup and the model's construction are left out)."""
    setup = _setup(w, steps, log_every, root)
    if framework == "torch":
        from metalearn_torch.models import build_model
        from metalearn_torch.train import train

        model = build_model(setup.model_config, seed=0).to(device.torch_device())
        place: Any = contextlib.nullcontext()
    else:
        import tensorflow as tf  # Keras 3's backend: device placement

        from metalearn_tf.models import build_model
        from metalearn_tf.train import train

        place = tf.device(device.tf_device())
        with place:
            model = build_model(setup.model_config, seed=0)
    call = functools.partial(train, model, setup, compile=compile, progress=False)
    with place, contextlib.redirect_stdout(io.StringIO()):  # the trainer's per-row echo
        profile.runcall(call) if profile else call()


def steady_ms_per_step(log: Path, warmup_rows: int = WARMUP_ROWS) -> dict[str, Any]:
    """Median (and min, max) ms per step over ``log.csv``'s intervals after the first
    ``warmup_rows``; the interval ending at row ``i`` is ``seconds[i] - seconds[i-1]``
    over as many steps."""
    with open(log, newline="") as f:
        rows = [(int(r["step"]), float(r["seconds"])) for r in csv.DictReader(f)]
    per_step = [(t1 - t0) * 1e3 / (s1 - s0)
                for (s0, t0), (s1, t1) in zip(rows, rows[1:], strict=False)][warmup_rows - 1:]
    if not per_step:
        raise ValueError(f"{log}: {len(rows)} log rows; need more than {warmup_rows} to time "
                         "the steady state.")
    return {"ms_per_step": statistics.median(per_step), "min_ms": min(per_step),
            "max_ms": max(per_step), "intervals": len(per_step),
            "timed_steps": rows[-1][0] - rows[warmup_rows - 1][0],
            "first_rows_s": rows[warmup_rows - 1][1], "rows": len(rows)}


def _python_profile(run: Callable[..., None], rows: int = 6) -> list[dict[str, Any]]:
    """The ``rows`` functions with the most self time (cProfile) in one ``train`` call of
    ``run(root, profile=...)``: Python functions, and the C calls they make (an op, a
    ``tf.function`` execution) as ``<built-in method …>``."""
    prof = cProfile.Profile()
    with tempfile.TemporaryDirectory() as root:
        run(Path(root), profile=prof)
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values()) or 1.0  # type: ignore[attr-defined]
    top = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:rows]  # type: ignore[attr-defined]
    return [{"function": f"{Path(file).name}:{line}({name})", "self_s": v[2], "share": v[2] / total,
             "calls": v[1]} for (file, line, name), v in top]


def _lengths(step_s: float | None, quick: bool) -> tuple[int, int]:
    """``(steps, log_every)``: quick, a handful of one-step intervals; else intervals of
    about 0.5 s (the log's clock has 1 ms resolution), ~20 s of timed steps at the step
    section's speed, 300 steps at most."""
    if quick or step_s is None:
        return (WARMUP_ROWS + 3, 1) if quick else (60, 3)
    every = max(1, round(0.5 / step_s))
    intervals = max(6, min(30, round(20.0 / (every * step_s))))
    every = min(every, max(1, 300 // (intervals + WARMUP_ROWS)))
    return every * (intervals + WARMUP_ROWS), every


def run_trainer(quick: bool, frameworks: tuple[str, ...], device: Device,
                step_records: list[dict[str, Any]], progress: Callable[[str], None] = print,
                only_models: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run the :func:`plan`; returns ``{"records", "notes"}``, a record per trainer run."""
    from benchmarks.steps import _keras_cleanup, _torch_cleanup

    ws = [w for w in workloads(quick) if not only_models or w.model in only_models]
    records = []
    for w, framework, compile in plan(ws, frameworks, step_records, quick):
        mode = trainer_mode(w, framework, compile)
        step = _step_record(step_records, w, framework, mode)
        steps, every = _lengths(step["median_s"] if step else None, quick)
        record: dict[str, Any] = {**w.describe(), "framework": framework, "mode": mode,
                                  "compile": compile, "steps": steps, "log_every": every,
                                  "step_ms": step["median_s"] * 1e3 if step else None}
        run = functools.partial(_trainer_run, w, framework, compile, device, steps, every)
        try:
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory() as root:
                run(Path(root))
                record.update(steady_ms_per_step(Path(root) / "log.csv"))
            record["wall_s"] = time.perf_counter() - t0
            if step:
                record["ratio"] = record["ms_per_step"] / record["step_ms"]
            if quick or record.get("ratio", 0) > RATIO_AIM:  # the same run, profiled
                record["python_profile"] = _python_profile(run)
        except Exception as exc:  # a trainer that cannot run is a result, not a crash
            record["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
        finally:
            (_torch_cleanup if framework == "torch" else _keras_cleanup)()
        shown = (f"{record['ms_per_step']:.1f} ms/step vs step "
                 + (f"{record['step_ms']:.1f} ms ({record['ratio']:.2f}×)" if step else "–")
                 if "ms_per_step" in record else record["error"][:80])
        progress(f"  {w.key:18s} {framework:5s} trainer {mode:8s} {shown}")
        records.append(record)
    return {"records": records, "notes": {
        "timing": f"median ms/step over log.csv intervals after the first {WARMUP_ROWS} "
                  "(the trainer's own clock); step = the steps section's median, same "
                  "workload, framework and mode",
        "data": "glyphs (embedded), the workload's image size, seed 0",
        "torch_compile_backend": "inductor (the trainer's own torch.compile call)"}}
