"""Section ``steps``: a training step and an inference call of every registered model, in
every mode of each framework.

Workloads (full size; ``--quick`` shrinks every one):

==================  =========================================================  ==========
key                 what one call does                                         unit
==================  =========================================================  ==========
siamese-seed        128 pairs, seed backbone, cosine head (the seed's setup)   pairs
siamese-conv4       128 pairs, conv4 backbone, contrastive head                pairs
protonet-5w1s15q    one 5-way 1-shot 15-query episode, conv4                   episodes
protonet-20w1s15q   one 20-way 1-shot 15-query episode, conv4                  episodes
mann                16 episodes × 50 steps (5 ways × 10), 20×20, paper sizes   episodes
lstm                the same episodes, LSTM(200) baseline                      episodes
==================  =========================================================  ==========

Modes:

* torch ``eager``; ``eager-cl`` (channels-last weights and inputs, conv models);
  ``compile`` — ``torch.compile`` of forward + loss for the conv models, and of the
  per-step cell (``model.compile_cell()``, the library's option) for the sequence models —
  a whole-episode ``torch.compile`` unrolls the 50 steps into one graph: measured once on
  this machine, the MANN took 309 s to compile and then ran no faster (256 vs 209 ms per
  training step), the LSTM 110 s for 46 vs 77 ms; ``compile-cl`` (both, conv models).
* Keras ``eager`` (``compile(run_eagerly=True)``), ``function`` (``tf.function``, Keras'
  default), ``xla`` (``jit_compile=True``); steps through ``train_on_batch`` /
  ``predict_on_batch``, which return numpy (the barrier on a GPU).

A training step is forward, loss, backward and the optimiser update with the library's own
optimiser settings (``make_optimizer`` of each framework: Adam 1e-3 for the metric models,
RMSprop 1e-4 for the sequence models, epsilons pinned equal); inference is a forward pass
in inference mode (BatchNorm running statistics, no gradients). Inputs are prepared once
(sampler → framework tensors) and reused: the sampler's own cost is reported separately
(``sampler_s``) and combined in the runner as its share of a step.
"""

from __future__ import annotations

import gc
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

from benchmarks.bench_sampling import make_dataset
from benchmarks.common import Budget, Device, measure, memory_probe
from benchmarks.flops import Flops, model_flops
from metalearn_shared.config import BackboneConfig, ModelConfig, TrainConfig
from metalearn_shared.models.lstm import LSTMConfig
from metalearn_shared.models.mann import MANNConfig
from metalearn_shared.models.protonet import ProtoNetConfig
from metalearn_shared.models.siamese import SiameseConfig
from metalearn_shared.episodes import FewShotSampler, PairSampler, SequenceSampler
from metalearn_shared.training import _FAMILY_DEFAULTS  # the trainers' (batch, lr, optimizer)

__all__ = ["Workload", "workloads", "TORCH_MODES", "TF_MODES", "modes_for", "plan", "run_steps",
           "torch_profile"]

TORCH_MODES = ("eager", "eager-cl", "compile", "compile-cl")
TF_MODES = ("eager", "function", "xla")
PHASES = ("train", "infer")


@dataclass(frozen=True)
class Workload:
    """One model at one size: its config, its sampler and how to count its work."""

    key: str
    config: ModelConfig
    family: str  # "pairs" | "fewshot" | "sequence"
    unit: str  # "pairs" | "episodes"
    units: int  # units per call
    sampler: Any
    flops: Flops
    conv: bool

    def batch(self, step: int) -> Any:
        """The numpy batch of training step ``step``, as the trainers draw it."""
        if self.family == "sequence":
            return self.sampler.batch(step * self.units, self.units)
        return self.sampler.episode(step)

    @property
    def model(self) -> str:
        return self.config.model

    def train_config(self) -> TrainConfig:
        _, lr, optimizer = _FAMILY_DEFAULTS[self.family]
        return TrainConfig(lr=lr, optimizer=optimizer)


def workloads(quick: bool) -> list[Workload]:
    """The suite's workloads; ``quick``: one tiny workload per registered model (16×16
    images, 8-channel conv4, a few pairs / queries / steps) — it checks that every path
    runs, its figures mean nothing."""
    size = 16 if quick else 28
    images = make_dataset(40 if quick else 200, 20, size)
    seq_images = make_dataset(40 if quick else 200, 20, 20)
    pairs = 4 if quick else 128
    hidden = {"hidden": 8} if quick else {}
    out = []
    for backbone, head in (("seed", "cosine"), ("conv4", "contrastive")):
        if quick and backbone == "conv4":
            continue
        cfg = SiameseConfig(backbone=BackboneConfig(name=backbone, image_size=size, **hidden),
                            head=head)
        out.append(Workload(f"siamese-{backbone}", cfg, "pairs", "pairs", pairs,
                            PairSampler(images, batch=pairs, seed=0),
                            model_flops(cfg, batch=pairs), True))
    queries = 1 if quick else 15
    for ways in (3,) if quick else (5, 20):
        cfg = ProtoNetConfig(backbone=BackboneConfig(name="conv4", image_size=size, **hidden))
        out.append(Workload(f"protonet-{ways}w1s{queries}q", cfg, "fewshot", "episodes", 1,
                            FewShotSampler(images, ways, 1, queries, seed=0),
                            model_flops(cfg, ways=ways, shots=1, queries=queries), True))
    ways, per_class, batch = (2, 2, 2) if quick else (5, 10, 16)
    small = {"controller_units": 16, "memory_slots": 8, "memory_width": 4,
             "read_heads": 1} if quick else {}
    for cfg in (MANNConfig(num_classes=ways, **small),
                LSTMConfig(num_classes=ways, **{k: v for k, v in small.items()
                                                 if k == "controller_units"})):
        out.append(Workload(cfg.model, cfg, "sequence", "episodes", batch,
                            SequenceSampler(seq_images, ways, per_class, seed=0),
                            model_flops(cfg, batch=batch, steps=ways * per_class), False))
    return out


def modes_for(workload: Workload, framework: str) -> tuple[str, ...]:
    """The modes that apply: channels-last only where there are convolutions."""
    if framework == "tf":
        return TF_MODES
    return TORCH_MODES if workload.conv else ("eager", "compile")


# -- torch -------------------------------------------------------------------------------
def _torch_call(w: Workload, mode: str, phase: str, device: Device,
                compile_backend: str) -> tuple[Callable[[], Any], dict[str, Any]]:
    """Build a fresh model for ``mode`` and return the call to time, plus settings."""
    import torch

    from metalearn_torch.models import build_model
    from metalearn_torch.train import make_optimizer

    model = build_model(w.config, seed=0).to(device.torch_device())
    info: dict[str, Any] = {}
    if mode.endswith("-cl"):
        model = model.to(memory_format=torch.channels_last)
        info["memory_format"] = "channels_last"
    inputs, target = model.inputs_and_target(w.batch(0))
    loss_fn = model.make_loss()
    compiled = mode.startswith("compile")
    if compiled:
        info["compile_backend"] = compile_backend
    sequence = w.family == "sequence"
    if compiled and sequence:
        model.compile_cell(backend=compile_backend)
        info["compiled"] = "cell (model.compile_cell)"
    if phase == "train":
        model.train()
        opt = make_optimizer(model.parameters(), w.train_config())

        def forward_loss(*args: Any) -> Any:
            return loss_fn(model(*args), target)

        if compiled and not sequence:
            forward_loss = torch.compile(forward_loss, backend=compile_backend)
            info["compiled"] = "forward + loss (torch.compile)"

        def call() -> None:
            loss = forward_loss(*inputs)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        return call, info
    model.eval()
    forward = torch.compile(model, backend=compile_backend) if compiled and not sequence else model
    if compiled and not sequence:
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


# -- Keras / TF --------------------------------------------------------------------------
def _tf_call(w: Workload, mode: str, phase: str, device: Device,
             compile_backend: str) -> tuple[Callable[[], Any], dict[str, Any]]:
    import tensorflow as tf

    from metalearn_tf.models import build_model
    from metalearn_tf.train import make_optimizer

    with tf.device(device.tf_device()):
        model = build_model(w.config, seed=0)
        model.compile(optimizer=make_optimizer(w.train_config()), loss=model.make_loss(),
                      run_eagerly=mode == "eager", jit_compile=mode == "xla")
        inputs, target = model.inputs_and_target(w.batch(0))
        x = tf.nest.map_structure(tf.constant, inputs)
        y = tf.constant(target)
    info = {"run_eagerly": mode == "eager", "jit_compile": mode == "xla"}
    if phase == "train":
        return (lambda: model.train_on_batch(x, y)), info
    return (lambda: model.predict_on_batch(x)), info


def _tf_cleanup() -> None:
    import keras

    keras.backend.clear_session()
    gc.collect()


# -- the section ---------------------------------------------------------------------------
def _one(w: Workload, framework: str, mode: str, phase: str, device: Device, budget: Budget,
         compile_backend: str) -> dict[str, Any]:
    record: dict[str, Any] = {"workload": w.key, "model": w.model, "framework": framework,
                              "mode": mode, "phase": phase, "unit": w.unit,
                              "units_per_call": w.units}
    build = _torch_call if framework == "torch" else _tf_call
    sync = device.torch_sync if framework == "torch" else None
    try:
        with memory_probe(device, framework) as mem:
            call, info = build(w, mode, phase, device, compile_backend)
            warm = budget.scaled(warmup=max(budget.warmup, 2)) if mode != "eager" else budget
            timing = measure(call, warm, sync)
        if framework == "torch" and phase == "train" and not device.is_cuda:
            record["profile_top"] = torch_profile(call, steps=1, rows=6, warm=False)
        flops = w.flops.train if phase == "train" else w.flops.forward
        record.update(info, **timing.to_dict(), per_s=timing.rate(w.units),
                      flops_per_call=flops, gflops_per_s=flops / timing.median_s / 1e9,
                      peak_mib=mem.get("peak_mib"), memory_kind=mem.get("memory_kind"))
    except Exception as exc:  # a mode that cannot run this model is a result, not a crash
        record.update(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                      traceback=traceback.format_exc(limit=3)[-1500:])
    finally:
        (_torch_cleanup if framework == "torch" else _tf_cleanup)()
    return record


def plan(ws: list[Workload], frameworks: tuple[str, ...], quick: bool
         ) -> list[tuple[Workload, str, str, str]]:
    """``(workload, framework, mode, phase)`` to measure.

    Full: every combination. Quick (a smoke test that must take seconds, and Keras tracing
    or XLA compilation alone takes seconds per model): every workload trains and infers in
    torch ``eager`` and infers in Keras ``function``; every other mode runs once, on the
    cheapest workload it applies to (Keras ``xla`` on inference, whose graph compiles
    fastest) — so every model and every mode is exercised.
    """
    if not quick:
        return [(w, f, m, p) for w in ws for f in frameworks for m in modes_for(w, f)
                for p in PHASES]
    out = []
    for w in ws:
        if "torch" in frameworks:
            out += [(w, "torch", "eager", "train"), (w, "torch", "eager", "infer")]
        if "tf" in frameworks:
            out.append((w, "tf", "function", "infer"))
    conv = next(w for w in ws if w.conv)
    seq = ws[-1]  # the LSTM: the cheapest to trace
    if "torch" in frameworks:
        out += [(conv, "torch", m, "train") for m in ("eager-cl", "compile", "compile-cl")]
        out.append((seq, "torch", "compile", "train"))
    if "tf" in frameworks:
        out += [(seq, "tf", "function", "train"), (seq, "tf", "eager", "train"),
                (seq, "tf", "xla", "infer")]
    return out


@contextmanager
def _keras_batchnorm() -> Iterator[None]:
    """Run the Keras models with Keras' own ``BatchNormalization.call`` (float32 statistics)
    instead of ``UnbiasedBatchNormalization``'s (float64 statistics, torch's running-variance
    update) — an ablation, restored on exit; the models themselves are not changed."""
    import keras

    from metalearn_tf.models.backbones import UnbiasedBatchNormalization

    saved = UnbiasedBatchNormalization.call
    UnbiasedBatchNormalization.call = keras.layers.BatchNormalization.call
    try:
        yield
    finally:
        UnbiasedBatchNormalization.call = saved


def tf_batchnorm_ablation(ws: list[Workload], budget: Budget, device: Device
                          ) -> list[dict[str, Any]]:
    """Keras ``function`` training of each (conv4) workload with the model's BatchNorm and
    with Keras' own: how much of the TF step the parity-exact statistics cost."""
    out = []
    for w in ws:
        row: dict[str, Any] = {"workload": w.key, "framework": "tf", "mode": "function"}
        for label, ctx in (("model_bn", nullcontext), ("keras_bn", _keras_batchnorm)):
            with ctx():
                call, _ = _tf_call(w, "function", "train", device, "")
                row[f"{label}_s"] = measure(call, budget).median_s
            _tf_cleanup()
        row["bn_share"] = 1 - row["keras_bn_s"] / row["model_bn_s"]
        out.append(row)
    return out


def run_steps(quick: bool, budget: Budget, frameworks: tuple[str, ...], device: Device,
              compile_backend: str, progress: Callable[[str], None] = print,
              only_models: tuple[str, ...] = ()) -> dict[str, Any]:
    """Measure the :func:`plan`; returns ``{"records", "sampler"}``.

    ``sampler`` holds, per workload, the time to draw one step's numpy batch, for the
    sampler's share of a step.
    """
    ws = [w for w in workloads(quick) if not only_models or w.model in only_models]
    sampler = []
    for w in ws:
        t = measure(lambda w=w: w.batch(7), budget)
        sampler.append({"workload": w.key, "unit": w.unit, "units_per_call": w.units,
                        **t.to_dict()})
    records = []
    for w, framework, mode, phase in plan(ws, frameworks, quick):
        r = _one(w, framework, mode, phase, device, budget, compile_backend)
        records.append(r)
        shown = f"{r['per_s']:.1f} {w.unit}/s" if "per_s" in r else r["error"][:80]
        progress(f"  {w.key:18s} {framework:5s} {mode:10s} {phase:5s} {shown}")
    result = {"records": records, "sampler": sampler}
    if "tf" in frameworks:
        conv4 = [w for w in ws if w.conv and w.config.backbone.name == "conv4"]
        result["tf_batchnorm_ablation"] = tf_batchnorm_ablation(conv4[:1] if quick else conv4,
                                                                budget, device)
        for row in result["tf_batchnorm_ablation"]:
            progress(f"  {row['workload']:18s} tf    BN ablation: model {row['model_bn_s'] * 1e3:.0f}"
                     f" ms, keras BN {row['keras_bn_s'] * 1e3:.0f} ms per step")
    return result
