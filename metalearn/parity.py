"""Cross-framework parity, the run: what ``metalearn parity`` and the parity tests
(``tests/parity/``) measure; the cases and records are :mod:`metalearn_shared.parity`, the
report :mod:`metalearn.parity_report`.

For every registered model and variant (:func:`~metalearn_shared.parity.cases`, each model's
spec lists its own; SGD, and the matched Adam/RMSprop rules on one case per model), in both
directions (:data:`DIRECTIONS`), :func:`run_case`:

1. builds the model in the source framework (BatchNorm affine and running statistics made
   non-trivial, so inference mode is tested), saves a canonical checkpoint *file*, and
   builds the destination model from that file with the other framework's ``load_checkpoint``;
2. on identical episodes from the shared samplers compares, destination against source:
   forward outputs (and embeddings in inference mode; where the spec has a whole-model
   reference, the numpy float64 spec as a third witness, with the model's trace — e.g. a
   memory's read/write weights and the slots it chose — field by field), the loss and the
   gradient of every parameter in canonical layout (batch 0);
3. **teacher-forced steps** (group ``step``/``update``): for every step ``k``, both
   frameworks start from *the same* weights and optimiser state — the source's after
   ``k - 1`` steps, converted through the canonical layout — and batch ``k``: the gradients,
   the optimiser's update from identical gradients (the trainers' own optimiser objects,
   fused kernels included), the BatchNorm statistics and the destination's whole trainer
   step (torch's loop, Keras' ``compile`` + ``fit`` on the trainer's ``PyDataset``) must
   agree within the single-step bounds. This tests the math of every step tightly, whatever
   the training map does to rounding over many steps;
4. **free-running trajectories against the measured noise floor** (group ``train``): both
   frameworks train ``steps`` steps on their own, and each measures its own sensitivity —
   its trajectory from a start :func:`nudged <nudge>` by a few ulps (:func:`noise_floor`).
   The cross-framework divergence after each step must stay within the "train" bound plus
   ``FLOOR_MULTIPLE`` × the larger floor;
5. times each training step in each framework.

Why the floor and not a fixed bound: the training map of a ``conv4`` network is chaotic at
ordinary learning rates. Its divergence comes in jumps — discrete events that rounding flips
at a kink of the loss surface (a ReLU input or a max-pool tie within an ulp of switching, the
contrastive hinge at its margin) — and each framework's trajectory is as sensitive to a
one-ulp nudge of its own start as to the other framework. A fixed absolute bound on a
free-running trajectory measures the CPU's rounding and the chaos, not the implementations;
it held on one CPU and failed on another. An event inside a teacher-forced step is confirmed by
measurement — the source framework recomputes that step from starts nudged by a few ulps and
jumps as well (:func:`event_sensitivity`) — then allowed ``FLOOR_MULTIPLE`` x that jump and
*named* in the report (which case, step, parameter, rule); a wrong formula makes no such jump
and leaves its bound by orders of magnitude (``tests/parity/test_mutations.py``). The learning rates are one per family (:data:`LR`,
:data:`ADAPTIVE_LR`), never tuned per case to dodge amplification.

Each comparison is a :class:`Comparison` holding both arrays, the tolerance-table entry
(:data:`metalearn_shared.tolerances.TOL`) it must meet and any measured allowance; the tests
assert them, the command measures them into a table, ``parity.json`` and plots, and exits
non-zero when any exceeds its bound.

Framework code lives in ``metalearn_torch/parity.py`` and ``metalearn_tf/parity.py``
(mirror files: ``forward``, ``embed``, ``trace``, ``loss_and_grads``, ``set_weights``,
``train_steps``, ``forced_steps``, ``apply_update``, ``parity_context``, ``threads_in_use``),
reached through each framework's backend (:mod:`metalearn.backends`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from metalearn import backends
from metalearn_shared.parity import (
    DIRECTIONS,
    EVENT_CHECK_SHARE,
    EVENT_NUDGES,
    FLOOR_RUNS,
    Case,
    CaseResult,
    Collector,
    ParityError,
    TrainRecord,
    distance,
    nudge,
    perturb_batchnorm,
    sampler_for,
)
from metalearn_shared.tolerances import FLOOR_MULTIPLE, TOL

__all__ = ["Side", "run_case", "noise_floor", "event_sensitivity", "moved_through_file"]


class Side:
    """One framework's model with its backend and the backend's parity hooks."""

    def __init__(self, framework: str, model: Any) -> None:
        self.name = framework
        self.model = model
        self.backend = backend(framework)
        self.parity = self.backend.parity_hooks()

    def canonical(self) -> dict[str, np.ndarray]:
        return self.backend.get_canonical(self.model)


def backend(framework: str) -> ModuleType:
    """:func:`metalearn.backends.get`, with a missing framework as a :class:`ParityError`."""
    try:
        return backends.get(framework)
    except backends.FrameworkMissing as e:
        raise ParityError(f"parity needs both frameworks: {e}") from e


def moved_through_file(case: Case, direction: str, workdir: Path, seed: int) -> tuple[Side, Side]:
    """``(source, destination)``: a fresh source model and its copy through a checkpoint file."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}; got {direction!r}.")
    src_fw, dst_fw = direction.split("_to_")
    src = Side(src_fw, backend(src_fw).build_model(case.config, seed=seed))
    src.backend.set_canonical(src.model, perturb_batchnorm(src.canonical(), seed))
    path = src.backend.save_checkpoint(
        src.model, Path(workdir) / f"{case.name}-{direction}.safetensors", step=0)
    dst_model, meta = backend(dst_fw).load_checkpoint(path)
    if meta["source_framework"] != src_fw or meta["config"] != case.config.to_dict():
        raise ParityError(f"{path}: metadata says {meta['source_framework']!r} / {meta['config']}; "
                          f"expected {src_fw!r} / {case.config.to_dict()}.")
    return src, Side(dst_fw, dst_model)


def _reference(case: Case, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> Any:
    """The spec's whole-model float64 forward pass (``ModelSpec.reference_forward``): logits,
    or a trace with ``logits`` and the spec's ``trace_fields``."""
    return case.spec.reference_forward(params, case.config, *inputs)


def _logits(ref: Any) -> np.ndarray:
    return ref.logits if hasattr(ref, "logits") else ref


def _compare_forward(out: Collector, src: Side, dst: Side, inputs: Sequence[np.ndarray],
                     label: str) -> None:
    """Inference-mode outputs of dst against src; where the spec has a whole-model
    reference, both against it too, with the trace fields it names (``trace_fields`` to the
    forward bound, ``trace_exact`` — discrete choices such as a memory's least-used slots —
    exactly)."""
    case = out.case
    spec = case.spec
    ref = None if spec.reference_forward is None else _reference(case, src.canonical(), inputs)
    if ref is None:  # no whole-model reference (for this configuration)
        x = inputs[0]
        if hasattr(src.model, "embed"):
            out.add(f"{label}: embedding (inference)", "forward", "forward",
                    dst.parity.embed(dst.model, x), src.parity.embed(src.model, x))
        out.add(f"{label}: output (inference)", "forward", "forward",
                dst.parity.forward(dst.model, inputs, False), src.parity.forward(src.model, inputs, False))
        return
    d_logits = dst.parity.forward(dst.model, inputs, False)
    s_logits = src.parity.forward(src.model, inputs, False)
    out.add(f"{label}: logits vs src", "forward", "forward", d_logits, s_logits)
    out.add(f"{label}: logits vs spec", "spec", "forward", d_logits, _logits(ref))
    out.add(f"{label}: src logits vs spec", "spec", "forward", s_logits, _logits(ref))
    if not (spec.trace_fields or spec.trace_exact):
        return
    for who, side in (("src", src), ("dst", dst)):
        tr = side.parity.trace(side.model, inputs)
        for name in spec.trace_exact:
            out.add(f"{label}: {who} ({side.name}) {name} vs spec (exact: a discrete choice)",
                    "exact", "exact", tr[name], getattr(ref, name))
        for name in spec.trace_fields:
            out.add(f"{label}: {who} {name} vs spec", "spec", "forward", tr[name], getattr(ref, name))


def noise_floor(side: Side, initial: Mapping[str, np.ndarray], reference: TrainRecord,
                sampler: Any, case: Case, steps: int, optimizer: str, lr: float,
                runs: int = FLOOR_RUNS, seed: int = 0) -> list[float]:
    """One framework's own sensitivity, per step: how far its free-running trajectory moves
    when its start is :func:`nudged <nudge>` (``runs`` times, each nudge different).

    Returns:
        ``floor[k - 1]``: the largest distance (as :func:`_distance`) after step ``k``
        between ``reference`` (the unperturbed run) and any nudged run, as a running
        maximum over steps — a divergence, once started, does not heal, and the nudged
        run may hit the same discrete event (a max-pool tie, a ReLU or hinge kink) a step
        earlier or later than the cross-framework run does.
    """
    floor = np.zeros(steps)
    for r in range(runs):
        side.parity.set_weights(side.model, nudge(initial, seed=1000 * (seed + 1) + r))
        rec = side.parity.train_steps(side.model, sampler, case.family, steps, lr, case.batch,
                                      optimizer)
        for k in range(steps):
            floor[k] = max(floor[k], distance(rec.weights[k], reference.weights[k], case.scaled))
    return np.maximum.accumulate(floor).tolist()


def _forced_figures(out: Collector, src: Side, dst: Side, sampler: Any, spec: Any,
                    starts: Sequence[tuple[dict[str, np.ndarray], Any]],
                    s_rec: TrainRecord) -> None:
    """The teacher-forced figures: step ``k`` of both frameworks starts from ``starts[k-1]``
    (the source's weights and optimiser state after ``k - 1`` steps) on batch ``k``.

    * ``grad k (forced)``: the gradients at the forced weights (group and bound "grad", as
      batch 0's gradients: a conv kernel's gradient sums ~1e4 products in another order in
      each framework);
    * ``update k``: the optimiser's rule alone — the trainers' optimiser objects (fused
      kernels included) from the same weights, state *and* gradients (the source's) — to
      fp32 rounding ("step" bound);
    * ``step k (forced)``: the destination's whole trainer step (``fit``'s train step / the
      torch loop) against the source's: BatchNorm statistics to the "step" bound (the
      forward pass at the forced weights, no kinks); for SGD, also the trainable parameters,
      allowed ``lr`` times what their gradients are allowed (the step is ``-lr`` times the
      gradient: where a gradient dwarfs its weights — ResNet-12's first conv, 145 against
      1.5 — the "step" bound alone was ten times tighter than the "grad" bound it follows
      from).

    A trainable gradient (or SGD step) near or beyond its bound (over
    :data:`EVENT_CHECK_SHARE` of it) may be a discrete event that rounding
    flipped at a kink — a ReLU input or a max-pool near-tie within an ulp of switching, a
    hinge at its margin — or a wrong formula. They are told apart by measurement
    (:func:`event_sensitivity`): the source recomputes that step's gradients from
    :data:`EVENT_NUDGES` starts nudged by a few ulps; an event makes the source jump as
    well, a wrong formula does not. The figure is then allowed ``FLOOR_MULTIPLE`` x the
    source's own jump and is named in the report. Adam's and RMSprop's whole step is left to
    the two checks it is made of: their update divides by ``sqrt(v) + eps``, so a gradient
    element at rounding level (a bias that cancels in ``e1 - e2`` or ``q - c``) moves by up
    to ``lr`` at random in *any* implementation; from identical gradients the rule is well
    conditioned.
    """
    from metalearn_shared.training import step_batch

    case = out.case
    lr, optimizer = case.rate, case.optimizer
    trainable = _trainable(case)
    f_rec = dst.parity.forced_steps(dst.model, starts, sampler, case.family, lr, case.batch,
                                    optimizer)
    for k, (weights, state) in enumerate(starts, start=1):
        inputs, target = spec.inputs_and_target(step_batch(sampler, case.family, k, case.batch))
        grads = {}
        for side in (src, dst):
            side.parity.set_weights(side.model, weights)
            grads[side.name] = side.parity.loss_and_grads(side.model, inputs, target)[2]
        s_g, d_g = grads[src.name], grads[dst.name]
        s_w, f_w = s_rec.weights[k - 1], f_rec.weights[k - 1]
        jumps: dict[str, float] = {}
        near = max(out.ratio("grad", d_g[n], s_g[n]) for n in s_g)
        if optimizer == "sgd":
            near = max(near, *(out.ratio("step", f_w[n], s_w[n]) for n in s_g))
        if near > EVENT_CHECK_SHARE:
            jumps = event_sensitivity(src, weights, inputs, target, s_g, seed=k)
        for name in s_g:
            out.add(f"grad {k} (forced): {name}", "grad", "grad", d_g[name], s_g[name],
                    param=name, step=k, allow_abs=FLOOR_MULTIPLE * jumps.get(name, 0.0))
        s_upd = src.parity.apply_update(src.model, weights, state, s_g, lr, optimizer)
        d_upd = dst.parity.apply_update(dst.model, weights, state, s_g, lr, optimizer)
        for name in s_g:
            out.add(f"update {k}: {name}", "update", "step", d_upd[name], s_upd[name],
                    param=name, step=k)
        for name in s_w:
            if name not in trainable:
                out.add(f"step {k} (forced): {name}", "step", "step", f_w[name], s_w[name],
                        param=name, step=k)
            elif optimizer == "sgd":  # the step is -lr x the gradient: it may differ by lr x
                # what the gradient may (its "grad" bound and event allowance), or a layer
                # whose gradient dwarfs its weights is held tighter here than in "grad k"
                grad_bound = TOL["grad"][1] * out.scale(s_g[name])
                out.add(f"step {k} (forced): {name}", "step", "step", f_w[name], s_w[name],
                        param=name, step=k,
                        allow_abs=lr * (FLOOR_MULTIPLE * jumps.get(name, 0.0) + grad_bound))


def event_sensitivity(side: Side, weights: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray],
                      target: np.ndarray, grads: Mapping[str, np.ndarray], seed: int,
                      runs: int | None = None) -> dict[str, float]:
    """How far one framework's gradients jump when the weights move by a few ulps.

    Returns:
        Per trainable parameter, the largest max abs difference between ``grads`` (at
        ``weights``) and the gradients at ``runs`` (default :data:`EVENT_NUDGES`) starts
        :func:`nudged <nudge>` by up to :data:`FLOOR_ULPS` ulps. Rounding-level where the
        loss is smooth; the size of the event where a kink sits within rounding distance.
    """
    jumps = dict.fromkeys(grads, 0.0)
    for r in range(EVENT_NUDGES if runs is None else runs):
        side.parity.set_weights(side.model, nudge(weights, seed=7919 * (seed + 1) + r))
        nudged = side.parity.loss_and_grads(side.model, inputs, target)[2]
        for name, g in grads.items():
            jumps[name] = max(jumps[name], float(np.abs(nudged[name] - g).max()))
    side.parity.set_weights(side.model, weights)
    return jumps


def _trainable(case: Case) -> set[str]:
    from metalearn_shared.models import param_spec

    return {p.name for p in param_spec(case.config) if p.trainable}


def run_case(case: Case, direction: str, workdir: str | Path, steps: int = 10,
             seed: int = 0, floor_runs: int = FLOOR_RUNS) -> CaseResult:
    """Every comparison of one case in one direction (see the module docstring).

    Args:
        case: from :func:`cases`.
        direction: ``"torch_to_keras"`` or ``"keras_to_torch"``.
        workdir: where the checkpoint file is written.
        steps: training steps compared (ignored for a forward-only case).
        seed: initial weights (``seed``), BatchNorm statistics, data (``seed``) and
            episodes (``seed + 1``).
        floor_runs: nudged runs per framework that measure the noise floor.

    Returns:
        A :class:`CaseResult`; nothing is asserted here.
    """
    from metalearn_shared.training import step_batch

    src, dst = moved_through_file(case, direction, Path(workdir), seed)
    sampler = sampler_for(case, seed)
    spec = case.spec
    lr, optimizer = case.rate, case.optimizer
    # Batch 0 is compared; the training steps see batches 1 .. steps (step s = batch s).
    inputs, target = spec.inputs_and_target(step_batch(sampler, case.family, 0, case.batch))
    out = Collector(case)
    initial = src.canonical()
    _compare_forward(out, src, dst, inputs, "before training")
    if not case.train:
        return CaseResult(case, direction, out.items)

    d_out, d_loss, d_grads = dst.parity.loss_and_grads(dst.model, inputs, target)
    s_out, s_loss, s_grads = src.parity.loss_and_grads(src.model, inputs, target)
    out.add("output (training)", "forward", "forward", d_out, s_out)
    if case.scaled:
        out.add("loss", "loss", "loss_inputs", d_loss, s_loss,
                scale=max(abs(s_loss), float(np.abs(s_out).max())))
    else:
        out.add("loss", "loss", "loss", d_loss, s_loss)
        if spec.reference_loss is not None:
            ref_out = _logits(_reference(case, initial, inputs))
            out.add("loss vs spec", "spec", "loss", s_loss, spec.reference_loss(target, ref_out))
    for name in s_grads:
        out.add(f"grad {name}", "grad", "grad", d_grads[name], s_grads[name], param=name)

    # Free-running: each framework trains on its own from the same start (the loss_and_grads
    # passes above moved the BatchNorm statistics, so both restart from ``initial``).
    for side in (src, dst):
        side.parity.set_weights(side.model, initial)
    s_rec = src.parity.train_steps(src.model, sampler, case.family, steps, lr, case.batch, optimizer)
    d_rec = dst.parity.train_steps(dst.model, sampler, case.family, steps, lr, case.batch, optimizer)
    # Teacher-forced: every step k of both frameworks starts from the source's weights and
    # optimiser state after k - 1 steps, on batch k (see _forced_figures).
    starts = [(initial, None)] + list(zip(s_rec.weights[:-1], s_rec.states[:-1], strict=True))
    _forced_figures(out, src, dst, sampler, spec, starts, s_rec)
    # Each framework's own noise floor: its trajectory from nudged starts.
    floor = np.maximum(
        noise_floor(src, initial, s_rec, sampler, case, steps, optimizer, lr, floor_runs, seed),
        noise_floor(dst, initial, d_rec, sampler, case, steps, optimizer, lr, floor_runs, seed + 1))
    for k in range(1, steps + 1):
        s_w, d_w = s_rec.weights[k - 1], d_rec.weights[k - 1]
        for name in s_w:
            out.add(f"after {k} steps: {name}", "train", "train", d_w[name], s_w[name],
                    param=name, step=k, floor=float(floor[k - 1]),
                    allow=FLOOR_MULTIPLE * float(floor[k - 1]))
    # Inference after training, at the source's trained weights in both frameworks.
    for side in (src, dst):
        side.parity.set_weights(side.model, s_rec.weights[-1])
    _compare_forward(out, src, dst, inputs, "after training")
    final = s_rec.weights[-1]
    moved = max(float(np.abs(final[n] - initial[n]).max()) for n in _trainable(case))
    return CaseResult(case, direction, out.items, moved,
                      {src.name: s_rec.seconds, dst.name: d_rec.seconds}, floor=list(floor))
