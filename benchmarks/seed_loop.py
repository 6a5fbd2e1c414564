"""Section ``seed``: the seed document's training loop against our pipeline for the same
network, and why torch eager lags Keras on the seed network (the "gap ladder").

Our side is the registered model whose spec carries the seed document's configuration
(:attr:`metalearn_shared.registry.ModelSpec.seed_document`: the Siamese network with the
seed backbone and the cosine head), trained with its spec's default optimiser and learning
rate on its default image size.

The seed document (section 5.1) trains a ``SiameseNetwork`` — Conv 64@5×5, ReLU, MaxPool 2,
Conv 128@5×5, ReLU, MaxPool 2, Linear 2048→1024, ReLU, Linear 1024→128, each twin image
embedded by its own forward pass — with ``nn.CosineEmbeddingLoss()``, ``Adam(lr=1e-3)`` and a
``train_loader`` of pairs. :class:`SeedSiameseNetwork` is that code; the loader is a
per-pair ``Dataset`` (two ``(1, 28, 28)`` images and a ±1 target per ``__getitem__``)
collated by a ``DataLoader``. It is a baseline, not library code.

Both sides train on the **same pairs**: batch ``i`` of the seed loop holds exactly the pairs
of ``PairSampler(...).episode(i)``. One timed call = one batch, data loading included.

The ladder times the training step alone (seed backbone, cosine head, 128 pairs) while
switching on one knob at a time — fused Adam, channels-last, ``torch.compile``, the glibc
malloc setting — and records CPU time and page faults per step next to the wall time.
The in-process rungs run with this process's malloc setting (the runner applies the
library's, :func:`metalearn_shared.allocator.tune_malloc`: ``mallopt`` at start); a malloc
setting cannot be undone in a running process, so the others run in fresh processes
(:func:`probe_main`): glibc's defaults (untuned), each ``mallopt`` mode, and
:data:`MALLOC_TUNABLES` through ``GLIBC_TUNABLES`` (which must be set before a process starts).
Each row says which it ran under (``malloc``).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

from benchmarks.bench_sampling import make_dataset
from benchmarks.common import Budget, Device, measure, memory_probe
from benchmarks.flops import model_flops
from benchmarks.steps import keras_profile, torch_profile
from metalearn_shared import models
from metalearn_shared.episodes import PairSampler
from metalearn_shared.registry import ModelSpec, Task

__all__ = ["SeedSiameseNetwork", "seed_pair_loader", "seed_spec", "torch_train_step", "run_seed",
           "MALLOC_TUNABLES", "PROBE_MALLOC", "probe_main"]

#: The malloc settings a fresh-process rung can run under: the library's ``mallopt`` modes
#: (:data:`metalearn_shared.allocator.MODES`, "default" = glibc's own) and these tunables.
PROBE_MALLOC = ("default", "heap", "threshold", "tunables")

#: glibc malloc settings that keep freed activations in the heap for reuse instead of
#: returning them to the kernel (``mmap_threshold`` at its 32 MiB maximum, trimming off),
#: and back what is still mapped with transparent huge pages (``hugetlb=1``), so a training
#: step does not page-fault its activations in again. (Adding ``top_pad=256 MiB`` made
#: steps 5× slower here: keep it out.)
MALLOC_TUNABLES = ("glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=4294967296:"
                   "glibc.malloc.hugetlb=1")


def _seed_network() -> Any:
    import torch.nn as nn

    class SiameseNetwork(nn.Module):
        """The seed document's network, as written there (section 5.1)."""

        def __init__(self) -> None:
            super().__init__()
            self.cnn = nn.Sequential(
                nn.Conv2d(1, 64, kernel_size=5),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=2),
                nn.Conv2d(64, 128, kernel_size=5),
                nn.ReLU(),
                nn.MaxPool2d(kernel_size=2),
            )
            self.fc = nn.Sequential(
                nn.Linear(128 * 4 * 4, 1024),
                nn.ReLU(),
                nn.Linear(1024, 128),
            )

        def forward_one(self, x: Any) -> Any:
            x = self.cnn(x)
            x = x.view(x.size(0), -1)
            x = self.fc(x)
            return x

        def forward(self, input1: Any, input2: Any) -> tuple[Any, Any]:
            output1 = self.forward_one(input1)
            output2 = self.forward_one(input2)
            return output1, output2

    return SiameseNetwork


def SeedSiameseNetwork() -> Any:  # noqa: N802 - reads like the seed's constructor call
    """A new instance of the seed document's ``SiameseNetwork``."""
    return _seed_network()()


def seed_pair_loader(images: Any, sampler: PairSampler, batches: int) -> Any:
    """A per-pair ``DataLoader`` over the pairs of ``sampler``'s first ``batches`` batches."""
    import numpy as np
    import torch

    drawn = [sampler.episode(i) for i in range(batches)]
    index1 = np.concatenate([b.index1 for b in drawn])
    index2 = np.concatenate([b.index2 for b in drawn])
    target = np.concatenate([b.y for b in drawn]) * 2 - 1  # 1 same / 0 different -> +1 / -1

    class PairDataset(torch.utils.data.Dataset):
        """One pair per ``__getitem__``: two ``(1, H, W)`` images in [0, 1] and a ±1 target."""

        def __len__(self) -> int:
            return len(target)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x1 = torch.from_numpy(images[index1[i]]).float().div_(255).unsqueeze(0)
            x2 = torch.from_numpy(images[index2[i]]).float().div_(255).unsqueeze(0)
            return x1, x2, torch.tensor(float(target[i]))

    return torch.utils.data.DataLoader(PairDataset(), batch_size=sampler.batch_size,
                                       shuffle=False, num_workers=0)


def _cycle(make: Callable[[], Any]) -> Iterator[Any]:
    """Iterate ``make()`` forever, remaking it when exhausted (a DataLoader epoch, say)."""
    while True:
        yield from make()


# -- the timed calls -------------------------------------------------------------------------
def _seed_loop_call(images: Any, sampler: PairSampler, batches: int, device: Device
                    ) -> Callable[[], None]:
    import torch
    import torch.nn as nn
    import torch.optim as optim

    model = SeedSiameseNetwork().to(device.torch_device())
    criterion = nn.CosineEmbeddingLoss()
    optimizer = optim.Adam(model.parameters(), lr=0.001)
    loader = _cycle(lambda: seed_pair_loader(images, sampler, batches))
    dev = device.torch_device()

    def call() -> None:
        input1, input2, label = next(loader)
        input1, input2, label = input1.to(dev), input2.to(dev), label.to(dev)
        output1, output2 = model(input1, input2)
        loss = criterion(output1, output2, label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    torch.manual_seed(0)
    return call


def seed_spec() -> ModelSpec:
    """The registered model whose spec carries the seed document's configuration."""
    spec = next((s for s in models.specs() if s.seed_document is not None), None)
    if spec is None:
        raise LookupError("no registered model has a seed_document; the seed section compares "
                          "the seed's loop against that model (metalearn_shared.registry).")
    if spec.family != "pairs":
        raise ValueError(f"the seed document trains on pairs; {spec.name!r} carries its "
                         f"configuration but its family is {spec.family!r}.")
    return spec


def torch_train_step(config: Any, sampler: PairSampler, device: Device, *,
                     channels_last: bool | None = None, fused_adam: bool = False,
                     compile_backend: str | None = None, sample: bool = True
                     ) -> Callable[[], None]:
    """Our torch training step of ``config``'s model; ``sample``: draw batch ``i`` each call
    (the pipeline) or reuse batch 0 (the step alone). Knobs off = the library's defaults
    (the optimiser and learning rate of the model's spec; ``channels_last`` None: the
    trainer's memory format, :func:`metalearn_torch.models.memory_format`)."""
    import torch

    from metalearn_torch.models import build_model, memory_format, use_memory_format
    from metalearn_torch.optimizers import make_optimizer

    defaults = models.get(config.model).defaults
    model = build_model(config, seed=0).to(device.torch_device())
    choice = "auto" if channels_last is None else ("channels-last" if channels_last
                                                   else "contiguous")
    use_memory_format(model, memory_format(model, compiled=bool(compile_backend), choice=choice))
    if fused_adam:
        opt = torch.optim.Adam(model.parameters(), lr=defaults.lr, eps=1e-7, fused=True)
    else:
        opt = make_optimizer(defaults.optimizer, model.parameters(), lr=defaults.lr)
    loss_fn = model.make_loss()

    def forward_loss(*args: Any) -> Any:
        *inputs, y = args
        return loss_fn(model(*inputs), y)

    if compile_backend:
        forward_loss = torch.compile(forward_loss, backend=compile_backend)
    fixed = model.inputs_and_target(sampler.episode(0))
    counter = itertools.count()
    model.train()

    def call() -> None:
        inputs, y = model.inputs_and_target(sampler.episode(next(counter))) if sample else fixed
        loss = forward_loss(*inputs, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return call


def _keras_pipeline_call(config: Any, sampler: PairSampler, device: Device,
                         mode: str) -> Callable[[], None]:
    import tensorflow as tf  # Keras 3's backend: device placement

    from metalearn_tf.models import build_model
    from metalearn_tf.optimizers import make_optimizer

    defaults = models.get(config.model).defaults
    with tf.device(device.tf_device()):
        model = build_model(config, seed=0)
        model.compile(optimizer=make_optimizer(defaults.optimizer, lr=defaults.lr),
                      loss=model.make_loss(), run_eagerly=mode == "eager",
                      jit_compile=mode == "xla")
    counter = itertools.count()

    def call() -> None:
        x, y = model.inputs_and_target(sampler.episode(next(counter)))
        model.train_on_batch(x, y)

    return call


# -- the malloc probe ---------------------------------------------------------------------
def _probe_subprocess(variant: str, malloc: str, quick: bool, threads: int,
                      timeout: float = 300) -> dict[str, Any]:
    """Run :func:`probe_main` in a fresh interpreter under malloc setting ``malloc``
    (one of :data:`PROBE_MALLOC`)."""
    from metalearn_shared.allocator import ENV_VAR

    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", ENV_VAR)}
    if malloc == "tunables":
        env["GLIBC_TUNABLES"] = MALLOC_TUNABLES
    cmd = [sys.executable, "-m", "benchmarks.seed_loop", "--variant", variant, "--malloc", malloc,
           "--threads", str(threads)] + (["--quick"] if quick else [])
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout,
                              check=True)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        err = getattr(exc, "stderr", "") or ""
        return {"error": f"{type(exc).__name__}: {exc}"[:300], "stderr_tail": err[-800:]}


_MALLOC_NAMES = {"default": "glibc defaults (untuned)", "heap": "mallopt heap (library default)",
                 "threshold": "mallopt threshold 32 MiB",
                 "tunables": "GLIBC_TUNABLES (+hugetlb)"}


def _budget_for(quick: bool) -> Budget:
    return Budget(1, 2, 2, 0.3) if quick else Budget(2, 5, 3, 8.0)


def probe_main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.seed_loop --variant default|tuned --malloc MODE``: one ladder
    rung in this (fresh) process, as one JSON line.

    ``--malloc``: a :mod:`metalearn_shared.allocator` mode applied first (``default``: glibc's
    own), or ``tunables``: whatever ``GLIBC_TUNABLES`` holds (the caller sets it before the
    process starts; :data:`MALLOC_TUNABLES` in the ladder).
    """
    import argparse
    import resource

    from metalearn_shared.allocator import malloc_setting, tune_malloc

    parser = argparse.ArgumentParser(description="one rung of the seed-network gap ladder")
    parser.add_argument("--variant", choices=("default", "tuned"), default="default")
    parser.add_argument("--malloc", choices=PROBE_MALLOC, default="default")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.malloc != "tunables":
        tune_malloc(args.malloc)  # before torch allocates anything
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    config, _, sampler = _ladder_setup(args.quick)
    tuned = args.variant == "tuned"
    call = torch_train_step(config, sampler, Device("cpu"), channels_last=tuned,
                            fused_adam=tuned, sample=False)
    t = measure(call, _budget_for(args.quick))
    setting = malloc_setting()
    print(json.dumps({"variant": args.variant, "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES"),
                      "malloc": "tunables" if args.malloc == "tunables" else setting["mode"],
                      "malloc_applied": setting["applied"], "threads": torch.get_num_threads(),
                      # peak resident size of the whole process: what keeping freed memory costs
                      "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      **t.to_dict()}))
    return 0


def _ladder_setup(quick: bool) -> tuple[Any, Any, PairSampler]:
    """The seed document's config (:func:`seed_spec`), the images (uint8, the spec's default
    size), and the pair sampler."""
    spec = seed_spec()
    dataset = make_dataset(40 if quick else 200, 20, spec.defaults.image_size)
    config = spec.seed_document
    return config, dataset.images, PairSampler(dataset, batch=4 if quick else 128, seed=0)


# -- the section --------------------------------------------------------------------------------
def _row(name: str, units: int, timing: Any, **extra: Any) -> dict[str, Any]:
    return {"variant": name, "per_s": timing.rate(units), "units_per_call": units,
            **timing.to_dict(), **extra}


def run_seed(quick: bool, budget: Budget, frameworks: tuple[str, ...], device: Device,
             compile_backend: str, threads: int, progress: Callable[[str], None] = print
             ) -> dict[str, Any]:
    """Seed loop vs our pipelines (pairs/s), the gap ladder, and profiles."""
    if "torch" not in frameworks:
        return {"pipelines": [], "ladder": [], "note": "skipped: the seed loop is torch code"}
    import torch

    from metalearn_shared.allocator import DEFAULT_MODE, malloc_setting

    config, images, sampler = _ladder_setup(quick)
    pairs = sampler.batch_size
    batches = 4 if quick else 8

    pipelines: list[dict[str, Any]] = []

    def timed(name: str, make: Callable[[], Callable[[], None]], framework: str,
              **extra: Any) -> dict[str, Any]:
        try:
            with memory_probe(device, framework) as mem:
                call = make()
                t = measure(call, budget, device.torch_sync if framework == "torch" else None)
            row = _row(name, pairs, t, framework=framework, peak_mib=mem.get("peak_mib"),
                       memory_kind=mem.get("memory_kind"), **extra)
        except Exception as exc:  # report, keep going
            row = {"variant": name, "framework": framework,
                   "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"}
        finally:
            torch._dynamo.reset()
        progress(f"  {name:34s} " + (f"{row['per_s']:.1f} pairs/s" if "per_s" in row
                                      else row["error"][:80]))
        return row

    loader = _cycle(lambda: seed_pair_loader(images, sampler, batches))
    counter = itertools.count()
    for name, draw in (("data only: the seed's per-pair DataLoader", lambda: next(loader)),
                       ("data only: PairSampler.episode(i)",
                        lambda: sampler.episode(next(counter)))):
        pipelines.append(timed(name, lambda d=draw: d, "torch", data_only=True))
    pipelines.append(timed("seed loop (torch, per-pair DataLoader)",
                           lambda: _seed_loop_call(images, sampler, batches, device), "torch",
                           baseline=True))
    pipelines.append(timed("ours torch eager (library defaults)",
                           lambda: torch_train_step(config, sampler, device), "torch",
                           library_default=True))
    pipelines.append(timed("ours torch eager, channels-last + fused Adam",
                           lambda: torch_train_step(config, sampler, device, channels_last=True,
                                                    fused_adam=True), "torch"))
    pipelines.append(timed("ours torch compile-cl + fused Adam",
                           lambda: torch_train_step(config, sampler, device, channels_last=True,
                                                    fused_adam=True,
                                                    compile_backend=compile_backend), "torch",
                           compile_backend=compile_backend))
    if "keras" in frameworks:
        pipelines.append(timed("ours keras tf.function",
                               lambda: _keras_pipeline_call(config, sampler, device, "function"),
                               "keras", library_default=True))

    # The ladder: the step alone (no sampling), one knob at a time.
    ladder: list[dict[str, Any]] = []
    default, tuned = {"channels_last": False}, {"fused_adam": True, "channels_last": True}
    rungs = [("eager, NCHW, the trainer's Adam (fused)", default, threads),
             ("+ torch.optim.Adam(fused=True, eps=1e-7)", {"fused_adam": True,
                                                          "channels_last": False}, threads),
             ("+ channels-last (the library default)", {"channels_last": True}, threads),
             ("+ fused Adam + channels-last", tuned, threads)]
    if threads > 1 and not device.is_cuda:  # what do the OpenMP threads buy (or cost)?
        rungs += [(f"{name} — 1 thread instead of {threads}", knobs, 1)
                  for name, knobs, _ in (rungs[0], rungs[-1])]
    here = malloc_setting()["mode"]  # this process's: the runner applies the library's
    for name, knobs, n in rungs:
        torch.set_num_threads(n)
        try:
            ladder.append(timed(name, lambda k=knobs: torch_train_step(
                config, sampler, device, sample=False, **k), "torch", **knobs, threads=n,
                malloc=here, process="this"))
        finally:
            torch.set_num_threads(threads)
    profiles = {}
    if not device.is_cuda and not quick:  # quick: a subprocess costs a torch import, seconds
        fresh = [("default", m) for m in PROBE_MALLOC] + [("tuned", "default"),
                                                          ("tuned", "tunables")]
        for variant, malloc in fresh:
            row = _probe_subprocess(variant, malloc, quick, threads)
            name = rungs[0][0] if variant == "default" else rungs[3][0]
            row["variant"] = f"{name}, fresh process, malloc {_MALLOC_NAMES[malloc]}"
            row.update(process="fresh", malloc=malloc, knobs=variant)
            if "median_s" in row:
                row["per_s"] = pairs / row["median_s"]
            ladder.append(row)
            progress(f"  {row['variant'][:60]:60s} " + (f"{row['per_s']:.1f} pairs/s"
                                                        if "per_s" in row else row["error"][:80]))
    if not device.is_cuda:
        profiles["torch eager, library default"] = torch_profile(
            torch_train_step(config, sampler, device, sample=False), steps=1 if quick else 2)
        profiles["torch eager, NCHW"] = torch_profile(
            torch_train_step(config, sampler, device, sample=False, channels_last=False),
            steps=1 if quick else 2)
        if "keras" in frameworks:
            profiles["keras tf.function, library default"] = keras_profile(
                _keras_pipeline_call(config, sampler, device, "function"))
    return {"pipelines": pipelines, "ladder": ladder, "profiles": profiles,
            "pairs_per_batch": pairs, "batches_in_loader": batches,
            # the spec's FLOP count of one training batch: achieved rate vs the GEMM peak
            "train_flops_per_batch": model_flops(config, Task(batch=pairs)).train,
            "malloc_tunables": MALLOC_TUNABLES,
            "malloc": {**malloc_setting(), "default_mode": DEFAULT_MODE}}


if __name__ == "__main__":
    raise SystemExit(probe_main())
