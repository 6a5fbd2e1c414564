"""Section ``steps``: a training step and an inference call of every registered model, in
every mode of each framework.

Workloads: every registered model's own (``spec.workloads(quick)``,
:class:`metalearn_shared.registry.Workload`: a config, the task one call runs, the unit it
counts, the image size, whether it has convolutions); ``--quick`` takes each spec's tiny
ones. The inputs come from the sampler of the model's family at the workload's image size,
the FLOPs from the spec's formula (:func:`benchmarks.flops.model_flops`), the optimiser and
learning rate from the spec's training defaults (``spec.defaults``) — a model registered
outside the library is benchmarked like the built-in ones.

Modes:

* torch ``eager``; ``eager-cl`` (channels-last weights and inputs, conv models);
  ``compile`` — ``torch.compile`` of the model's forward, the region the trainer's
  ``--compile`` compiles (the loss stays outside, as there, so inductor's on-disk cache
  serves the ``trainer`` section the same graphs): for the recurrent models the whole
  unrolled episode, one forward and one backward graph. Each compiled record counts
  dynamo's graph breaks (``graph_breaks``).
  Measured at the paper's sizes (batch 16, 50 steps, 2 threads, RMSprop; the three
  variants in one process, steps interleaved, medians of 12): the MANN's training step
  143 ms whole-episode vs 261 ms with only the per-step cell compiled
  (``model.compile_cell()``, still offered) vs 392 ms eager; the LSTM 43 vs 71 vs 68 ms.
  The price is the first compile: 250–300 s for the MANN (60 s the LSTM) on 2 cores, 13 s
  when inductor's on-disk cache already holds the graphs; ``compile-cl`` (both, conv
  models).
* Keras ``eager`` (``compile(run_eagerly=True)``), ``function`` (``tf.function``, Keras'
  default), ``xla`` (``jit_compile=True``); steps through ``train_on_batch`` /
  ``predict_on_batch``, which return numpy (the barrier on a GPU).

A training step is forward, loss, backward and the optimiser update with the library's own
optimiser settings (``make_optimizer`` of each framework with the spec's default optimiser
and learning rate, epsilons pinned equal); inference is a forward pass in inference mode
(BatchNorm running statistics, no gradients). Inputs are prepared once (sampler →
framework tensors) and reused: the sampler's own cost is reported separately
(``sampler_s``) and combined in the runner as its share of a step.

Keras BatchNorm ablation (``keras_batchnorm_ablation``): Keras ``function`` training of each
workload with BatchNorm layers, once per dtype the layers can accumulate batch statistics in
(``metalearn_tf.set_batchnorm_statistics``: float64, the parity default, and float32) —
what the float64 statistics cost. Quick: the cheapest such workload.
"""

from __future__ import annotations

import collections
import dataclasses
import gc
import re
import tempfile
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.bench_sampling import make_dataset
from benchmarks.common import Budget, Device, measure, memory_probe
from benchmarks.flops import Flops, model_flops
from metalearn_shared import models
from metalearn_shared.config import TrainConfig
from metalearn_shared.data.dataset import ImageDataset
from metalearn_shared.episodes import FewShotSampler, PairSampler, SequenceSampler
from metalearn_shared.registry import ModelSpec, Task
from metalearn_shared.registry import Workload as SpecWorkload
from metalearn_shared.training import step_batch

__all__ = ["Workload", "workloads", "TORCH_MODES", "KERAS_MODES", "modes_for", "plan",
           "run_steps", "torch_profile", "keras_profile", "keras_batchnorm_ablation"]

TORCH_MODES = ("eager", "eager-cl", "compile", "compile-cl")
KERAS_MODES = ("eager", "function", "xla")
PHASES = ("train", "infer")


@dataclass(frozen=True)
class Workload:
    """A registered model's workload made runnable: its config, its sampler, the optimiser
    it trains with and how to count its work."""

    key: str
    config: Any
    family: str  # "pairs" | "fewshot" | "sequence"
    task: Task
    unit: str  # "pairs" | "episodes"
    units: int  # units per call
    sampler: Any
    flops: Flops
    conv: bool
    train: TrainConfig
    image_size: int

    def batch(self, step: int) -> Any:
        """The numpy batch of training step ``step``, as the trainers draw it."""
        return step_batch(self.sampler, self.family, step, self.units)

    @property
    def model(self) -> str:
        return self.config.model

    def describe(self) -> dict[str, Any]:
        """What a record says about the workload (the report selects rows by these)."""
        return {"workload": self.key, "model": self.model, "family": self.family,
                "conv": self.conv, "task": dataclasses.asdict(self.task), "unit": self.unit,
                "units_per_call": self.units}


def _sampler(family: str, images: ImageDataset, task: Task) -> Any:
    """The seeded sampler of ``family`` for ``task``, as
    :func:`metalearn_shared.training.train_sampler` makes it."""
    if family == "pairs":
        return PairSampler(images, batch=task.batch, seed=0)
    if family == "fewshot":
        return FewShotSampler(images, task.ways, task.shots, task.queries, seed=0)
    return SequenceSampler(images, task.ways, task.samples_per_class, seed=0)


def _runnable(spec: ModelSpec, w: SpecWorkload, images: ImageDataset) -> Workload:
    # A few-shot call is one episode whatever task.batch says (the trainers average
    # task.batch episodes over as many calls); pairs and sequences come task.batch per call.
    units = 1 if spec.family == "fewshot" else w.task.batch
    return Workload(w.name, w.config, spec.family, w.task, w.unit, units,
                    _sampler(spec.family, images, w.task), model_flops(w.config, w.task),
                    w.conv, TrainConfig(lr=spec.defaults.lr, optimizer=spec.defaults.optimizer),
                    w.image_size)


def workloads(quick: bool) -> list[Workload]:
    """Every registered model's workloads (``spec.workloads(quick)``), in registry order;
    ``quick``: the specs' tiny ones — they check that every path runs, their figures mean
    nothing. Random images, ``40 × 20`` (quick) or ``200 × 20`` per image size."""
    datasets: dict[int, ImageDataset] = {}
    out = []
    for spec in models.specs():
        for w in spec.workloads(quick):
            if w.image_size not in datasets:
                datasets[w.image_size] = make_dataset(40 if quick else 200, 20, w.image_size)
            out.append(_runnable(spec, w, datasets[w.image_size]))
    return out


def modes_for(workload: Workload, framework: str) -> tuple[str, ...]:
    """The modes that apply: channels-last only where there are convolutions."""
    if framework == "keras":
        return KERAS_MODES
    return TORCH_MODES if workload.conv else ("eager", "compile")


# -- torch -------------------------------------------------------------------------------
def _torch_call(w: Workload, mode: str, phase: str, device: Device,
                compile_backend: str) -> tuple[Callable[[], Any], dict[str, Any]]:
    """Build a fresh model for ``mode`` and return the call to time, plus settings."""
    import torch

    from metalearn_torch.models import build_model, objective
    from metalearn_torch.optimizers import make_optimizer

    model = build_model(w.config, seed=0).to(device.torch_device())
    info: dict[str, Any] = {}
    if mode.endswith("-cl"):
        model = model.to(memory_format=torch.channels_last)
        info["memory_format"] = "channels_last"
    inputs, target = model.inputs_and_target(w.batch(0))
    loss_fn = model.make_loss()
    compiled = mode.startswith("compile")
    if compiled and not getattr(model, "compilable", True):
        # The trainer trains such a model eager under --compile; the row says why.
        raise NotImplementedError(f"not compiled: {model.not_compiled_because}")
    if compiled:
        info["compile_backend"] = compile_backend
    if phase == "train":
        model.train()
        opt = make_optimizer(w.train.optimizer, model.parameters(), lr=w.train.lr)

        forward = None
        if compiled:  # the model's forward, as the trainer (see the module docstring)
            forward = torch.compile(model, backend=compile_backend)
            info["compiled"] = "forward (torch.compile of the model, as the trainer)"

        def forward_loss(*args: Any) -> Any:
            return objective(model, args, target, loss_fn, forward)[0]  # the trainer's objective

        def call() -> None:
            loss = forward_loss(*inputs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return call, info
    model.eval()
    forward = torch.compile(model, backend=compile_backend) if compiled else model
    if compiled:
        info["compiled"] = "forward (torch.compile)"

    def infer() -> None:
        with torch.no_grad():
            forward(*inputs)

    return infer, info


def _torch_cleanup() -> None:
    import torch

    torch._dynamo.reset()  # compiled graphs of one model must not count against the next
    gc.collect()


def torch_profile(call: Callable[[], None], steps: int = 2, rows: int = 8, warm: bool = True
                  ) -> list[dict[str, Any]]:
    """The ``rows`` torch ops with the most self CPU time over ``steps`` calls (after one
    untimed call unless ``warm`` is False)."""
    from torch.profiler import ProfilerActivity, profile

    if warm:
        call()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            call()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0

    def name(key: str) -> str:  # "## Call CompiledFxGraph <hash> ##" -> a readable name
        return "inductor compiled graph" if "CompiledFxGraph" in key else key

    return [{"op": name(e.key), "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / steps,
             "share": e.self_cpu_time_total / total, "calls_per_step": e.count / steps}
            for e in events[:rows]]


def keras_profile(call: Callable[[], None], steps: int = 1, rows: int = 6
                  ) -> list[dict[str, Any]]:
    """The ``rows`` TensorFlow ops with the most self time over ``steps`` calls, in
    :func:`torch_profile`'s format, from TensorFlow's own profiler (its XPlane trace).

    Self time = an event's duration minus its nested events' on the same thread. The runtime's
    worker threads are counted (``tf.function``: the graph executor's ops, named
    ``layer/op:OpType``, grouped by ``OpType``; XLA: the compiled program's HLO thunks, named
    ``convolution.8``, grouped without the numeric suffix); the Python thread, which only
    waits for them there, is counted alone when no worker ran anything (eager: ops run on the
    calling thread).
    """
    import tensorflow as tf  # Keras 3's backend: its profiler
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(steps):
                call()
        finally:
            tf.profiler.experimental.stop()
        space = xplane_pb2.XSpace()
        for f in Path(logdir).rglob("*.xplane.pb"):
            space.MergeFromString(f.read_bytes())

    def group(name: str) -> str:
        if ":" in name:  # graph executor: "model/layer/op:OpType"
            return name.rsplit(":", 1)[1]
        return re.sub(r"\.\d+$", "", name)  # XLA: "convolution.8", "fusion.3"

    workers: collections.Counter[str] = collections.Counter()
    caller: collections.Counter[str] = collections.Counter()
    counts: collections.Counter[str] = collections.Counter()
    for plane in (p for p in space.planes if p.name.startswith("/host:CPU")):
        for line in plane.lines:
            into = caller if line.name == "python" else workers
            stack: list[list[Any]] = []  # [end_ps, name, self_ps] of open events
            for e in sorted(line.events, key=lambda e: (e.offset_ps, -e.duration_ps)):
                while stack and stack[-1][0] <= e.offset_ps:
                    end, name, own = stack.pop()
                    into[name] += own
                if stack:
                    stack[-1][2] -= e.duration_ps
                name = group(plane.event_metadata[e.metadata_id].name)
                counts[name] += 1
                stack.append([e.offset_ps + e.duration_ps, name, e.duration_ps])
            for _, name, own in stack:
                into[name] += own
    self_ps = workers if sum(workers.values()) > 0 else caller
    total = sum(v for v in self_ps.values() if v > 0) or 1
    return [{"op": op, "self_cpu_ms_per_step": ps / 1e9 / steps, "share": ps / total,
             "calls_per_step": counts[op] / steps}
            for op, ps in self_ps.most_common(rows)]


# -- Keras ---------------------------------------------------------------------------------
def _keras_call(w: Workload, mode: str, phase: str, device: Device,
                compile_backend: str) -> tuple[Callable[[], Any], dict[str, Any]]:
    import tensorflow as tf  # Keras 3's backend here: device placement and constants

    from metalearn_tf.models import build_model
    from metalearn_tf.optimizers import make_optimizer

    with tf.device(device.tf_device()):
        model = build_model(w.config, seed=0)
        model.compile(optimizer=make_optimizer(w.train.optimizer, lr=w.train.lr),
                      loss=model.make_loss(), run_eagerly=mode == "eager",
                      jit_compile=mode == "xla")
        inputs, target = model.inputs_and_target(w.batch(0))
        x = tf.nest.map_structure(tf.constant, inputs)
        y = tf.constant(target)
    info = {"run_eagerly": mode == "eager", "jit_compile": mode == "xla",
            "batchnorm_statistics": _bn_statistics(model)}
    if phase == "train":
        return (lambda: model.train_on_batch(x, y)), info
    return (lambda: model.predict_on_batch(x)), info


def _bn_statistics(model: Any) -> str | None:
    """The dtype the model's BatchNorm layers accumulate batch statistics in; ``None``
    without BatchNorm (no ``moving_variance`` among its weights)."""
    if not any(v.path.endswith("moving_variance") for v in model.non_trainable_weights):
        return None
    import metalearn_tf

    return metalearn_tf.batchnorm_statistics()


def keras_batchnorm_ablation(ws: list[Workload], budget: Budget, device: Device,
                             quick: bool, progress: Callable[[str], None] = print
                             ) -> list[dict[str, Any]]:
    """Keras ``function`` training of each workload with BatchNorm, its statistics in each
    dtype of ``metalearn_tf.BN_STATISTICS``: ``{dtype}_s`` per step and ``float64_share``,
    the share of the float64 step the float64 statistics cost. Quick: the cheapest one."""
    import metalearn_tf

    out = []
    warm = budget.scaled(warmup=max(budget.warmup, 2))
    for w in sorted((w for w in ws if w.conv), key=lambda w: w.flops.train):
        row: dict[str, Any] = {**w.describe(), "framework": "keras", "mode": "function"}
        try:
            for dtype in metalearn_tf.BN_STATISTICS:
                metalearn_tf.set_batchnorm_statistics(dtype)
                call, info = _keras_call(w, "function", "train", device, "")
                if info["batchnorm_statistics"] is None:
                    break
                row[f"{dtype}_s"] = measure(call, warm).median_s
                _keras_cleanup()
        finally:
            metalearn_tf.set_batchnorm_statistics(None)
            _keras_cleanup()
        if "float64_s" not in row:
            continue
        row["float64_share"] = 1 - row["float32_s"] / row["float64_s"]
        progress(f"  {w.key:18s} keras function BN statistics float64 "
                 f"{row['float64_s'] * 1e3:.0f} ms, float32 {row['float32_s'] * 1e3:.0f} ms "
                 f"per step ({row['float64_share']:.0%})")
        out.append(row)
        if quick:
            break
    return out


def _keras_cleanup() -> None:
    import keras

    keras.backend.clear_session()
    gc.collect()


# -- the section ---------------------------------------------------------------------------
def _one(w: Workload, framework: str, mode: str, phase: str, device: Device, budget: Budget,
         compile_backend: str) -> dict[str, Any]:
    record: dict[str, Any] = {**w.describe(), "framework": framework, "mode": mode,
                              "phase": phase}
    build = _torch_call if framework == "torch" else _keras_call
    sync = device.torch_sync if framework == "torch" else None
    breaks = _graph_breaks() if framework == "torch" and mode.startswith("compile") else None
    try:
        with memory_probe(device, framework) as mem:
            call, info = build(w, mode, phase, device, compile_backend)
            warm = budget.scaled(warmup=max(budget.warmup, 2)) if mode != "eager" else budget
            timing = measure(call, warm, sync)
        if breaks is not None:
            info.update(breaks())
        if phase == "train" and not device.is_cuda:
            record["profile_top"] = (torch_profile(call, steps=1, rows=6, warm=False)
                                     if framework == "torch" else keras_profile(call))
        flops = w.flops.train if phase == "train" else w.flops.forward
        record.update(info, **timing.to_dict(), per_s=timing.rate(w.units),
                      flops_per_call=flops, gflops_per_s=flops / timing.median_s / 1e9,
                      peak_mib=mem.get("peak_mib"), memory_kind=mem.get("memory_kind"))
    except Exception as exc:  # a mode that cannot run this model is a result, not a crash
        record.update(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                      traceback=traceback.format_exc(limit=3)[-1500:])
    finally:
        (_torch_cleanup if framework == "torch" else _keras_cleanup)()
    return record


def _graph_breaks() -> Callable[[], dict[str, Any]]:
    """Start counting dynamo's graph breaks; the returned call says how many since, and why
    (the first reason's first line)."""
    from torch._dynamo.utils import counters

    counters["graph_break"].clear()

    def found() -> dict[str, Any]:
        reasons = counters["graph_break"]
        first = next(iter(reasons), "")
        return {"graph_breaks": sum(reasons.values()),
                "graph_break_reason": first.splitlines()[0][:200] if first else None}

    return found


def _cheapest(ws: list[Workload]) -> Workload | None:
    """The workload with the fewest training FLOPs per call (the quickest to trace, too)."""
    return min(ws, key=lambda w: w.flops.train, default=None)


def plan(ws: list[Workload], frameworks: tuple[str, ...], quick: bool
         ) -> list[tuple[Workload, str, str, str]]:
    """``(workload, framework, mode, phase)`` to measure.

    Full: every combination. Quick (a smoke test that must take seconds, and Keras tracing
    or XLA compilation alone takes seconds per model): every workload trains and infers in
    torch ``eager`` and infers in Keras ``function``; every other mode runs once, on the
    cheapest workload it applies to (by training FLOPs): the channels-last and compiled
    torch modes on the cheapest conv workload; torch ``compile`` (the unrolled episode), the
    Keras training modes and Keras ``xla`` inference (whose graph compiles fastest) on the
    cheapest ``sequence``-family workload — the recurrent loop is where those modes differ
    most — or, without one, the cheapest workload without convolutions. So every model and
    every mode is exercised.
    """
    if not quick:
        return [(w, f, m, p) for w in ws for f in frameworks for m in modes_for(w, f)
                for p in PHASES]
    out = []
    for w in ws:
        if "torch" in frameworks:
            out += [(w, "torch", "eager", "train"), (w, "torch", "eager", "infer")]
        if "keras" in frameworks:
            out.append((w, "keras", "function", "infer"))
    conv = _cheapest([w for w in ws if w.conv])
    light = (_cheapest([w for w in ws if w.family == "sequence"])
             or _cheapest([w for w in ws if not w.conv]) or _cheapest(ws))
    if "torch" in frameworks:
        if conv:
            out += [(conv, "torch", m, "train") for m in ("eager-cl", "compile", "compile-cl")]
        if light and light is not conv:
            out.append((light, "torch", "compile", "train"))
    if "keras" in frameworks and light:
        out += [(light, "keras", "function", "train"), (light, "keras", "eager", "train"),
                (light, "keras", "xla", "infer")]
    return out


def run_steps(quick: bool, budget: Budget, frameworks: tuple[str, ...], device: Device,
              compile_backend: str, progress: Callable[[str], None] = print,
              only_models: tuple[str, ...] = ()) -> dict[str, Any]:
    """Measure the :func:`plan`; returns ``{"records", "sampler"}`` and, with Keras,
    ``"keras_batchnorm_ablation"`` (:func:`keras_batchnorm_ablation`).

    ``sampler`` holds, per workload, the time to draw one step's numpy batch, for the
    sampler's share of a step.
    """
    ws = [w for w in workloads(quick) if not only_models or w.model in only_models]
    sampler = []
    for w in ws:
        t = measure(lambda w=w: w.batch(7), budget)
        sampler.append({**w.describe(), **t.to_dict()})
    records = []
    for w, framework, mode, phase in plan(ws, frameworks, quick):
        r = _one(w, framework, mode, phase, device, budget, compile_backend)
        records.append(r)
        shown = f"{r['per_s']:.1f} {w.unit}/s" if "per_s" in r else r["error"][:80]
        progress(f"  {w.key:18s} {framework:5s} {mode:10s} {phase:5s} {shown}")
    result = {"records": records, "sampler": sampler}
    if "keras" in frameworks:
        result["keras_batchnorm_ablation"] = keras_batchnorm_ablation(ws, budget, device, quick,
                                                                      progress)
    return result
