"""Section ``meta-batch``: one MAML meta-step on a meta-batch of ``E`` tasks, two ways (torch).

The two ways, from the same weights and the same episodes:

``loop``  the library's: :func:`metalearn_torch.distributed.meta_step` itself (what
          ``metalearn train --meta-batch E`` runs on one process) — the MAML model's forward
          (the inner loop, ``torch.autograd.grad(create_graph=True)`` unless first order)
          once per episode, ``(loss / E).backward()`` after each, one optimiser step.
``vmap``  :class:`VmapMetaStep`: ``torch.func.grad`` for the inner step, ``torch.func.vmap``
          over the ``E`` tasks, ``torch.func.functional_call`` on the model's own parameters
          (``model.named_parameters()``, so the outer ``loss.backward()`` fills the same
          ``.grad`` fields), the mean of the ``E`` query losses, one optimiser step.

Both include the conversion of the sampler's numpy episodes (``model.inputs_and_target``)
and the library's optimiser with the spec's defaults (``make_optimizer``); the ``vmap`` step
also stacks the episodes into ``(E, ...)`` tensors. :data:`MODELS`: second-order MAML with
1 inner step and first-order MAML, each at its spec's first benchmark workload
(``spec.workloads``): full — conv4 64 channels, 28 px, 5-way 1-shot 15-query, ``E`` in
:data:`META_BATCHES`; ``--quick`` — the specs' tiny workloads (16 px, 8 channels, 1 query),
``E`` in (1, 2).

**What the vmap path cannot do** (why the trainer keeps the loop):

* **BatchNorm running statistics.** Their update is in place and vmap refuses it; the vmap
  path's copy of the net has no running statistics, so it applies to ``bn="transductive"``
  only (batch statistics in every pass — the default, and MAML's). The loop updates the
  running statistics per episode and averages them (``meta_step``); ``bn="running"``
  models need that, and :class:`VmapMetaStep` refuses them.
* **torch's fused BatchNorm under vmap + double backward.** With the BatchNorm scale and
  shift adapted by the inner loop (MAML adapts every parameter), ``vmap`` of
  ``torch.func.grad`` through ``F.batch_norm`` gives wrong second-order meta-gradients for
  everything upstream of the BatchNorm (torch 2.13: off by ~1e-2 on this net, E = 1
  included; first order is right) — the open batching-rule bug pytorch/functorch#534
  ("batch_norm backward batching rule is incorrect for grad_input"). The vmap path
  therefore normalises with :func:`batch_stat_norm`, the same batch-statistics formula in
  differentiable elementary ops; ``norm="fused"`` (``torch.func.
  replace_all_batch_norm_modules_``) is accepted for first order only.
* **Input checks under vmap.** ``Conv4.prepare`` asks whether the weights are channels-last
  (``is_contiguous(memory_format=...)``), which vmap does not implement for per-task
  weights; the vmap path checks and shapes each episode with the model's own ``prepare``
  outside vmap and gives its copy a ``prepare`` that passes the images through.

Timing (:func:`benchmarks.common.measure`): medians, the runner's threads (recorded).
Peak memory: full — each row in a fresh process (:func:`memory_main`), so rows do not
share the allocator's leftovers: the growth of the peak RSS over two meta-steps
(:func:`benchmarks.common.memory_probe`); quick — the same probe in-process around the
timing (figures mean nothing in quick mode).
"""

from __future__ import annotations

import argparse
import copy
import functools
import gc
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_sampling import make_dataset
from benchmarks.common import Budget, Device, measure, memory_probe
from metalearn_shared import models, registry
from metalearn_shared.episodes import FewShotEpisode, FewShotSampler

__all__ = ["MODELS", "META_BATCHES", "PATHS", "NORMS", "batch_stat_norm", "VmapMetaStep",
           "setup", "make_step", "meta_gradient", "run_meta_batch", "memory_main"]

#: Models measured: those whose spec carries the inner-loop tag (the MAML family: second
#: order, first order, Meta-SGD, ANIL; 1 inner step), in registration order.
MODELS = tuple(s.name for s in models.specs() if registry.INNER_LOOP in s.tags)
#: Tasks per meta-step, full mode (quick: 1 and 2).
META_BATCHES = (1, 4, 8)
PATHS = ("loop", "vmap")
#: How the vmap path normalises: elementary ops (right in both orders) or torch's kernel.
NORMS = ("composite", "fused")
ROOT = Path(__file__).resolve().parent.parent


def meta_batches(quick: bool) -> tuple[int, ...]:
    return (1, 2) if quick else META_BATCHES


# -- the vmap path -------------------------------------------------------------------------
def _torch() -> Any:
    import torch

    return torch


@functools.cache
def _classes() -> tuple[type, type]:
    """``(BatchStatNorm, Net)``, built on first use: the module imports without torch."""
    torch = _torch()
    from torch import Tensor, nn

    class BatchStatNorm(nn.Module):
        """Batch-statistics normalisation with the affine parameters of a BatchNorm (same
        names, ``weight`` and ``bias``), in differentiable elementary ops.

        ``y = (x - mean) / sqrt(var + eps) * weight + bias``, mean and biased variance over
        every axis but the channels (``(N, C, ...)`` input): torch's training-mode
        ``BatchNorm`` formula, without running statistics.

        Args:
            norm: the affine BatchNorm whose ``eps`` and parameters to copy.
        """

        def __init__(self, norm: nn.modules.batchnorm._BatchNorm) -> None:
            super().__init__()
            if not norm.affine:
                raise ValueError("BatchStatNorm copies an affine BatchNorm; found affine=False.")
            self.eps = norm.eps
            self.weight = nn.Parameter(norm.weight.detach().clone())
            self.bias = nn.Parameter(norm.bias.detach().clone())

        def forward(self, x: Tensor) -> Tensor:
            axes = [0, *range(2, x.dim())]
            var, mean = torch.var_mean(x, dim=axes, unbiased=False, keepdim=True)  # (1, C, 1, 1)
            shape = [1, -1] + [1] * (x.dim() - 2)
            return ((x - mean) * torch.rsqrt(var + self.eps) * self.weight.view(shape)
                    + self.bias.view(shape))

    class Net(nn.Module):
        """``head(embedding(x))``: the MAML model's net, its parameters named as the model's."""

        def __init__(self, embedding: nn.Module, head: nn.Module) -> None:
            super().__init__()
            self.embedding = embedding
            self.head = head

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.embedding(x))  # (B, ways)

    return BatchStatNorm, Net


def batch_stat_norm(norm: Any) -> Any:
    """A ``BatchStatNorm`` module (see :func:`_classes`) taking the place of BatchNorm ``norm``."""
    return _classes()[0](norm)


def _passthrough(x: Any, what: str = "images") -> Any:
    """The vmap copy's ``prepare``: images were checked and shaped outside vmap."""
    return x


class VmapMetaStep:
    """One MAML meta-step over ``E`` tasks with ``torch.func``: ``vmap`` over tasks of
    (``torch.func.grad`` inner steps on the support set, then the query loss).

    Args:
        model: a torch MAML-family model (``model.embedding``, ``model.head``,
            ``model.adapted``, ``model.config``; Meta-SGD's ``model.inner_lr``), training
            mode, ``config.bn == "transductive"``.
        norm: ``"composite"`` (:func:`batch_stat_norm`) or ``"fused"`` (torch's kernel via
            ``torch.func.replace_all_batch_norm_modules_``: first order only, see the
            module docstring).

    The net is a deep copy of ``model.embedding`` and ``model.head`` with its BatchNorms
    replaced; its own weights are never used: every call substitutes the model's parameters
    (``functional_call``), so gradients land in ``model``'s ``.grad``.

    Raises:
        ValueError: ``bn="running"`` (needs running statistics), ``norm="fused"`` with
            second order, or an unknown ``norm``.
    """

    def __init__(self, model: Any, norm: str = "composite") -> None:
        torch = _torch()
        from torch import nn

        c = model.config
        if getattr(c, "bn", "transductive") != "transductive":
            raise ValueError(f"the vmap path cannot update BatchNorm running statistics "
                             f"(in place, refused by vmap); this model has bn={c.bn!r}. "
                             "Use the library's loop (meta_step) or bn='transductive'.")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}; found {norm!r}.")
        if norm == "fused" and not c.first_order:
            raise ValueError("norm='fused' gives wrong second-order meta-gradients under vmap "
                             "(pytorch/functorch#534); use norm='composite' or a first-order "
                             "model.")
        self.model, self.norm = model, norm
        net = _classes()[1](copy.deepcopy(model.embedding), copy.deepcopy(model.head))
        if norm == "fused":
            torch.func.replace_all_batch_norm_modules_(net)
        else:
            for name, m in list(net.named_modules()):
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    parent, _, leaf = name.rpartition(".")
                    setattr(net.get_submodule(parent), leaf, batch_stat_norm(m))
        net.embedding.prepare = _passthrough
        self.net = net.train()
        self.loss_fn = model.make_loss()

    # one task, unbatched (vmap adds the task axis)
    def _logits(self, theta: Mapping[str, Any], x: Any) -> Any:
        return _torch().func.functional_call(self.net, dict(theta), (x,))  # (B, ways)

    def _support_loss(self, adapted: dict[str, Any], theta: Mapping[str, Any], x: Any,
                      y: Any) -> Any:
        import torch.nn.functional as F

        return F.cross_entropy(self._logits({**theta, **adapted}, x), y)

    def _task(self, theta: dict[str, Any], rates: dict[str, Any], sx: Any, sy: Any, qx: Any,
              qy: Any) -> tuple[Any, Any]:
        """``(query loss, query logits (Q, ways))`` of one task after the inner loop."""
        torch = _torch()
        c = self.model.config
        theta = dict(theta)
        for _ in range(c.inner_steps):
            grads = torch.func.grad(self._support_loss)(
                {n: theta[n] for n in self.model.adapted}, theta, sx, sy)
            for n, g in grads.items():  # first order: the inner gradient is a constant
                theta[n] = theta[n] - rates[n] * (g.detach() if c.first_order else g)
        logits = self._logits(theta, qx)  # (Q, ways)
        return self.loss_fn(logits, qy), logits

    def _weights(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The model's net parameters by name, and each adapted one's inner rate (the
        model's own ``inner_weights``)."""
        return self.model.inner_weights()

    def stack(self, episodes: Sequence[FewShotEpisode]) -> tuple[Any, ...]:
        """Episodes → ``(sx (E, S, 1, H, W), sy (E, S), qx (E, Q, 1, H, W), qy (E, Q))``,
        each checked by the model's own ``prepare``."""
        torch = _torch()
        prep = self.model.embedding.prepare
        pairs = [self.model.inputs_and_target(e) for e in episodes]
        return (torch.stack([prep(sx, "support_x") for (sx, _, _), _ in pairs]),
                torch.stack([sy.long() for (_, sy, _), _ in pairs]),
                torch.stack([prep(qx, "query_x") for (_, _, qx), _ in pairs]),
                torch.stack([qy for _, qy in pairs]))

    def losses(self, episodes: Sequence[FewShotEpisode]) -> tuple[Any, Any, Any]:
        """``(losses (E,), logits (E, Q, ways), qy (E, Q))``, differentiable to the model."""
        torch = _torch()
        sx, sy, qx, qy = self.stack(episodes)
        theta, rates = self._weights()
        losses, logits = torch.func.vmap(self._task, in_dims=(None, None, 0, 0, 0, 0))(
            theta, rates, sx, sy, qx, qy)
        return losses, logits, qy

    def __call__(self, opt: Any, episodes: Sequence[FewShotEpisode]) -> tuple[Any, Any]:
        """One meta-step: zero the gradients, mean query loss, backward, ``opt.step()``.
        Returns ``(loss, accuracy)`` of the meta-batch, 0-d tensors (as ``meta_step``)."""
        opt.zero_grad(set_to_none=True)
        losses, logits, qy = self.losses(episodes)
        loss = losses.mean()
        loss.backward()
        opt.step()
        return loss.detach(), (logits.detach().argmax(-1) == qy).float().mean()


# -- set-up -----------------------------------------------------------------------------------
def setup(name: str, quick: bool, meta_batch: int, device: Device | None = None,
          config: Any = None) -> tuple[Any, list[FewShotEpisode], Any]:
    """``(model, episodes, optimiser)``: a fresh seeded model of registry ``name`` at its
    spec's first benchmark workload (or ``config``), ``meta_batch`` seeded episodes of its
    task, and the library's optimiser with the spec's defaults."""
    from metalearn_torch.models import build_model
    from metalearn_torch.optimizers import make_optimizer

    spec = models.get(name)
    w = spec.workloads(quick)[0]
    config = config or w.config
    images = make_dataset(40 if quick else 200, 20, config.image_size)
    sampler = FewShotSampler(images, w.task.ways, w.task.shots, w.task.queries, seed=0)
    model = build_model(config, seed=0).to((device or Device("cpu")).torch_device()).train()
    opt = make_optimizer(spec.defaults.optimizer, model.parameters(), lr=spec.defaults.lr)
    return model, [sampler.episode(i) for i in range(meta_batch)], opt


def make_step(path: str, model: Any, norm: str = "composite"
              ) -> Callable[[Any, Sequence[FewShotEpisode]], tuple[Any, Any]]:
    """``step(opt, episodes) -> (loss, accuracy)``: one meta-step the ``path`` way."""
    if path == "vmap":
        return VmapMetaStep(model, norm)
    if path != "loop":
        raise ValueError(f"path must be one of {PATHS}; found {path!r}.")
    from metalearn_torch.distributed import DistContext, meta_step

    ctx = DistContext()
    return lambda opt, episodes: meta_step(model, model, opt, episodes, ctx)


def meta_gradient(path: str, model: Any, episodes: Sequence[FewShotEpisode],
                  norm: str = "composite") -> dict[str, Any]:
    """The meta-gradient of ``episodes`` the ``path`` way, by parameter name; the model's
    weights are left as they were (the step runs with a zero-rate SGD)."""
    torch = _torch()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    make_step(path, model, norm)(opt, episodes)
    return {n: p.grad.detach().clone() for n, p in model.named_parameters()}


# -- the section ---------------------------------------------------------------------------------
def _cases(quick: bool, only_models: tuple[str, ...] = ()) -> list[tuple[str, str, str, int]]:
    """``(model, path, norm, E)``; first order also measures the vmap path with the fused
    BatchNorm (right there), to show what the composite one costs. ``only_models``: those of
    :data:`MODELS` only (the runner's ``--models``)."""
    out = []
    for name in (m for m in MODELS if not only_models or m in only_models):
        first_order = models.get(name).workloads(quick)[0].config.first_order
        for e in meta_batches(quick):
            out += [(name, "loop", "", e), (name, "vmap", "composite", e)]
            if first_order:
                out.append((name, "vmap", "fused", e))
    return out


def _one(name: str, path: str, norm: str, e: int, quick: bool, budget: Budget,
         device: Device) -> dict[str, Any]:
    model, episodes, opt = setup(name, quick, e, device)
    w = models.get(name).workloads(quick)[0]
    record: dict[str, Any] = {
        "model": name, "workload": w.name, "path": path, "norm": norm or None,
        "meta_batch": e, "first_order": model.config.first_order,
        "inner_steps": model.config.inner_steps, "task": {"ways": w.task.ways,
        "shots": w.task.shots, "queries": w.task.queries}, "image_size": model.config.image_size,
        "channels": model.config.backbone.hidden, "unit": "episodes"}
    try:
        with memory_probe(device, "torch") as mem:
            step = make_step(path, model, norm or "composite")
            timing = measure(lambda: step(opt, episodes), budget, device.torch_sync)
        record.update(**timing.to_dict(), per_s=timing.rate(e),
                      ms_per_episode=timing.median_s * 1e3 / e,
                      peak_mib=mem.get("peak_mib"), memory_kind=mem.get("memory_kind"))
    except Exception as exc:  # a path that cannot run is a result, not a crash
        record.update(error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}",
                      traceback=traceback.format_exc(limit=3)[-1500:])
    return record


def _fresh_memory(name: str, path: str, norm: str, e: int, threads: int,
                  timeout: float = 300) -> dict[str, Any]:
    """:func:`memory_main` in a fresh interpreter: ``{"peak_mib", "memory_kind"}`` or an error."""
    cmd = [sys.executable, "-m", "benchmarks.meta_batch", "--model", name, "--path", path,
           "--norm", norm or "composite", "--meta-batch", str(e), "--threads", str(threads)]
    try:
        done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                              check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        err = getattr(exc, "stderr", "") or ""
        return {"memory_error": f"{type(exc).__name__}: {exc}"[:300], "stderr_tail": err[-800:]}


def run_meta_batch(quick: bool, budget: Budget, frameworks: tuple[str, ...], device: Device,
                   threads: int, progress: Callable[[str], None] = print,
                   only_models: tuple[str, ...] = ()) -> dict[str, Any]:
    """Measure every :func:`_cases` row; returns ``{"records", "notes"}``."""
    notes = {"paths": "loop = metalearn_torch.distributed.meta_step (per-episode forward + "
                      "(loss/E).backward()); vmap = torch.func.grad inner step, "
                      "torch.func.vmap over tasks, functional_call, one backward",
             "vmap_batchnorm": "no running statistics (bn='transductive' only); composite "
                               "batch-statistics norm (torch's fused BatchNorm gives wrong "
                               "second-order meta-gradients under vmap, pytorch/functorch#534)",
             "memory": "in-process RSS probe around build + timing" if quick or device.is_cuda
             else "fresh process per row: peak RSS growth over two meta-steps"}
    if "torch" not in frameworks:
        return {"records": [], "notes": {**notes, "skipped": "the vmap path is torch code"}}
    records = []
    for name, path, norm, e in _cases(quick, only_models):
        r = _one(name, path, norm, e, quick, budget, device)
        gc.collect()  # the row's model and graphs go before the next row
        if "error" not in r and not quick and not device.is_cuda:
            r.pop("peak_mib", None)
            r["in_process_peak_mib"] = None
            r.update(_fresh_memory(name, path, norm, e, threads))
        records.append(r)
        label = f"{path}{'-' + norm if path == 'vmap' else ''}"
        shown = (f"{r['median_s'] * 1e3:8.1f} ms  {r['per_s']:6.2f} episodes/s"
                 if "per_s" in r else r["error"][:80])
        progress(f"  {name:7s} {label:15s} E={e:<2d} {shown}")
    speedups(records)
    return {"records": records, "notes": notes}


def speedups(records: list[dict[str, Any]]) -> None:
    """Add ``vs_loop`` (loop time / this row's time, same model and E) to each vmap row."""
    base = {(r["model"], r["meta_batch"]): r["median_s"] for r in records
            if r["path"] == "loop" and "median_s" in r}
    for r in records:
        b = base.get((r["model"], r["meta_batch"]))
        if r["path"] == "vmap" and b and "median_s" in r:
            r["vs_loop"] = b / r["median_s"]


# -- the fresh-process memory probe ---------------------------------------------------------------
def memory_main(argv: Sequence[str] | None = None) -> int:
    """``python -m benchmarks.meta_batch --model M --path P --meta-batch E``: peak RSS growth
    of two meta-steps in this fresh process (after the model, episodes and optimiser exist),
    printed as one JSON line."""
    p = argparse.ArgumentParser(description="peak memory of one meta-batch row")
    p.add_argument("--model", choices=MODELS, required=True)
    p.add_argument("--path", choices=PATHS, required=True)
    p.add_argument("--norm", choices=NORMS, default="composite")
    p.add_argument("--meta-batch", type=int, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args(argv)
    torch = _torch()
    torch.set_num_threads(a.threads)
    device = Device("cpu")
    model, episodes, opt = setup(a.model, a.quick, a.meta_batch, device)
    step = make_step(a.path, model, a.norm)
    gc.collect()
    with memory_probe(device, "torch") as mem:
        for _ in range(2):
            step(opt, episodes)
    print(json.dumps({"peak_mib": mem["peak_mib"],
                      "memory_kind": mem["memory_kind"] + " (fresh process, 2 meta-steps)"}))
    return 0


if __name__ == "__main__":
    raise SystemExit(memory_main())
