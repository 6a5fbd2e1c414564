"""Cross-framework parity, framework-agnostic: the driver of ``metalearn parity`` and of the
parity tests (``tests/parity/``).

For every registered model and variant (:func:`cases`: Siamese heads × backbones, ProtoNet ×
backbones, MANN, LSTM), in both directions (:data:`DIRECTIONS`), :func:`run_case`:

1. builds the model in the source framework (BatchNorm affine and running statistics made
   non-trivial, so inference mode is tested), saves a canonical checkpoint *file*, and
   builds the destination model from that file with the other framework's
   ``load_checkpoint``;
2. on identical episodes from the shared samplers compares, destination against source:
   forward outputs (and embeddings, in inference mode; the MANN's memory trace and the
   slots its LRUA chose, with the numpy float64 spec as a third witness), the loss, the
   gradient of every parameter in canonical layout, and every parameter after each of
   ``steps`` SGD steps — torch with its plain loop, Keras with ``compile`` + ``fit`` on the
   trainer's ``PyDataset`` — and the outputs after training;
3. times each training step in each framework.

Each comparison is a :class:`Comparison` holding both arrays and the tolerance-table entry
(:data:`metalearn_shared.tolerances.TOL`) it must meet; the tests assert them, the command
measures them (:func:`metalearn_shared.tolerances.measure`) into a table, ``parity.json``
and plots, and exits non-zero when any exceeds the table.

Framework code lives in ``metalearn_torch/parity.py`` and ``metalearn_tf/parity.py``
(mirror files: ``forward``, ``embed``, ``trace``, ``loss_and_grads``, ``train_steps``,
``parity_context``); this module imports them lazily and never imports a framework itself.

Why SGD at small rates for ``conv4`` (:data:`LR`): the 10-step map of a ``conv4`` network is
itself ill-conditioned at larger rates, whatever the framework. BatchNorm makes the convs
scale-invariant, so the effective step on a kernel is ``lr / |w|^2``; on glyphs (mostly
blank images) the first conv's outputs have batch variances ~1e-3, and torch *against
itself*, with the weights perturbed by 1e-6 (relative), ends 1.8e-2 apart after 10 steps at
lr 1e-2 and 2e-4 apart at 3e-4 (Koch head, 32 px), but 2e-6 apart at 1e-4. Keras and torch
differ by ~1e-6 after the first forward pass, so only a rate at which the training map does
not amplify 1e-6 can test the implementations rather than the chaos. (A larger BatchNorm
epsilon, e.g. Keras' 1e-3, also removes the amplification.) The seed network has no
BatchNorm and trains at 1e-2; at 3e-2 its ProtoNet (Keras-initialised) already amplifies
fp32 noise to 3e-3 in 10 steps.
"""

from __future__ import annotations

import importlib
import os
import platform
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from metalearn_shared.config import (
    MODEL_REGISTRY,
    BackboneConfig,
    LSTMConfig,
    MANNConfig,
    ModelConfig,
    ProtoNetConfig,
    SiameseConfig,
)
from metalearn_shared.tolerances import TOL, measure

__all__ = [
    "DIRECTIONS",
    "LR",
    "Case",
    "Comparison",
    "CaseResult",
    "TrainRecord",
    "ParityError",
    "cases",
    "perturb_batchnorm",
    "run_case",
    "summarise",
    "format_table",
    "write_report",
    "main",
]

#: Source → destination framework, both ways.
DIRECTIONS = ("torch_to_keras", "keras_to_torch")
_PACKAGES = {"torch": "metalearn_torch", "keras": "metalearn_tf"}

#: SGD learning rate: per backbone for the metric models (see the module docstring for why
#: ``conv4``'s is small), and for the sequence models.
LR = {"conv4": 1e-4, "seed": 1e-2, "sequence": 0.5}

#: Episode shapes: few-shot N-way K-shot with Q queries per class; pairs per Siamese batch;
#: sequence ways × presentations per class (T = 50 steps), episodes per batch.
WAYS, SHOTS, QUERIES = 5, 1, 3
PAIRS = 8
SAMPLES = 10
SEQUENCE_BATCH = 2


class ParityError(RuntimeError):
    """The parity run itself went wrong (not a figure out of tolerance)."""


@dataclass
class TrainRecord:
    """What ``train_steps`` of either framework returns.

    Attributes:
        weights: canonical arrays after each step (``weights[k]`` after step ``k + 1``).
        seconds: wall time of each step (the forward, backward and update only).
    """

    weights: list[dict[str, np.ndarray]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Case:
    """One model configuration to compare across frameworks.

    Attributes:
        name: ``"siamese-koch-conv4-32px"``, ``"mann"``, ...
        config: the model.
        lr: SGD learning rate of the training comparison.
        batch: pairs (Siamese) or episodes (sequence models) per step; 1 for ProtoNet.
        glyphs: ``(classes, drawings per class)`` of the glyph dataset drawn at the
            model's image size.
        samples_per_class: presentations per class in a sequence episode.
        train: False for a forward-only check.
        directions: which of :data:`DIRECTIONS` to run.
    """

    name: str
    config: ModelConfig
    lr: float
    batch: int = 1
    glyphs: tuple[int, int] = (20, 8)
    samples_per_class: int = SAMPLES
    train: bool = True
    directions: tuple[str, ...] = DIRECTIONS

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def family(self) -> str:
        return MODEL_REGISTRY[self.config.model].family

    @property
    def image_size(self) -> int:
        backbone = getattr(self.config, "backbone", None)
        return backbone.image_size if backbone is not None else self.config.image_size

    @property
    def scaled(self) -> bool:
        """Compare relative to size above 1 (``assert_close_scaled``): the metric models'
        outputs and gradients reach ~1e2 (ProtoNet logits, conv-kernel gradients summed over
        ``B*H*W`` products), where fp32 rounding is relative. The sequence models' logits
        and gradients are O(1) and are held to the absolute bounds."""
        return self.family != "sequence"


# -- the cases --------------------------------------------------------------------------------
def _metric_cases(name: str, tiny: bool) -> list[Case]:
    from metalearn_shared.models import protonet, siamese

    if tiny:
        # Seed network at 20 px: its first dense layer reads a 2x2 map (flatten permutation);
        # conv4 with 8 channels at 16 px: BatchNorm in both modes.
        if name == "siamese":
            config: ModelConfig = SiameseConfig(BackboneConfig("seed", image_size=20), head="koch")
            return [Case("siamese-koch-seed-20px", config, LR["seed"], batch=PAIRS)]
        config = ProtoNetConfig(BackboneConfig("conv4", image_size=16, hidden=8))
        return [Case("protonet-conv4-16px-8ch", config, LR["conv4"])]
    variants = siamese.variants() if name == "siamese" else protonet.variants()
    if name == "siamese":
        # conv4 ends on a 2x2 map at 32 px: the Koch head's kernel needs the flatten
        # permutation (at 28 px the map is 1x1 and the permutation is the identity).
        variants.append(("siamese-koch-conv4-32px",
                         SiameseConfig(BackboneConfig("conv4", image_size=32), head="koch")))
    batch = PAIRS if name == "siamese" else 1
    return [Case(n, c, LR[c.backbone.name], batch=batch) for n, c in variants]


def _sequence_cases(name: str, tiny: bool) -> list[Case]:
    cls = MANNConfig if name == "mann" else LSTMConfig
    memory = {"memory_slots": 16, "memory_width": 6, "read_heads": 3} if name == "mann" else {}
    if tiny:
        memory = {"memory_slots": 8, "memory_width": 4, "read_heads": 2} if name == "mann" else {}
        config = cls(image_size=8, num_classes=WAYS, controller_units=12, **memory)
        return [Case(f"{name}-tiny", config, LR["sequence"], batch=SEQUENCE_BATCH,
                     glyphs=(8, 4), samples_per_class=4)]
    # Small enough to be quick, large enough that the LRUA reuses every slot (50 steps x 3
    # heads over 16 slots) and the label groups are exercised; then the paper's sizes
    # (MANN: 200 units, 128 x 40 memory, 4 heads; 20x20 images), forward only.
    small = cls(image_size=10, num_classes=WAYS, controller_units=24, **memory)
    return [
        Case(name, small, LR["sequence"], batch=SEQUENCE_BATCH, glyphs=(12, SAMPLES)),
        Case(f"{name}-paper-sizes", cls(), LR["sequence"], batch=SEQUENCE_BATCH,
             glyphs=(WAYS, SAMPLES), train=False, directions=("torch_to_keras",)),
    ]


_FAMILY_CASES = {"pairs": _metric_cases, "fewshot": _metric_cases, "sequence": _sequence_cases}


def cases(model: str = "all", tiny: bool = False) -> list[Case]:
    """The parity cases of one registered model, or of all (``"all"``).

    Args:
        model: a :data:`~metalearn_shared.config.MODEL_REGISTRY` name or ``"all"``.
        tiny: one small variant per model (for a quick run and the CLI's test).

    Raises:
        ValueError: an unknown model name.
    """
    if model != "all" and model not in MODEL_REGISTRY:
        raise ValueError(f"--model must be 'all' or one of {sorted(MODEL_REGISTRY)}; got {model!r}.")
    out: list[Case] = []
    for name, entry in MODEL_REGISTRY.items():
        if model in ("all", name):
            if entry.family not in _FAMILY_CASES:
                raise ParityError(f"model {name!r} has episode family {entry.family!r}, for "
                                  "which metalearn_shared.parity defines no parity case.")
            out += _FAMILY_CASES[entry.family](name, tiny)
    return out


# -- comparisons ----------------------------------------------------------------------------
@dataclass
class Comparison:
    """One figure of a parity run: ``actual`` (destination framework, or the framework
    against the spec) against ``expected``, under the table's ``kind``.

    Attributes:
        what: a readable label (``"grad embedding.conv1.weight"``).
        group: ``forward`` | ``spec`` | ``lrua`` | ``loss`` | ``grad`` | ``train``.
        kind: the :data:`~metalearn_shared.tolerances.TOL` key.
        actual, expected: the arrays (or scalars).
        scale: errors are divided by ``max(1, scale)`` (``assert_close_scaled``).
        param: the canonical parameter name, for per-parameter figures.
        step: the training step, for figures after training steps.
    """

    what: str
    group: str
    kind: str
    actual: Any
    expected: Any
    scale: float = 1.0
    param: str | None = None
    step: int | None = None


@dataclass
class CaseResult:
    """Everything :func:`run_case` measured for one case and direction.

    Attributes:
        moved: max abs change of the source weights over training (0 if not trained) —
            parity of weights that did not move would prove nothing.
        seconds: per framework (``"torch"``, ``"keras"``), the wall time of each step.
    """

    case: Case
    direction: str
    comparisons: list[Comparison]
    moved: float = 0.0
    seconds: dict[str, list[float]] = field(default_factory=dict)


def perturb_batchnorm(canonical: Mapping[str, np.ndarray], seed: int = 0) -> dict[str, np.ndarray]:
    """Non-trivial BatchNorm affine and running statistics (others unchanged), so that
    inference mode — which reads them — is tested, not just their initial 1s and 0s."""
    rng = np.random.default_rng(seed)
    draw = {"weight": lambda n: rng.uniform(0.5, 1.5, n), "bias": lambda n: rng.normal(0.0, 0.1, n),
            "running_mean": lambda n: rng.normal(0.0, 0.1, n),
            "running_var": lambda n: rng.uniform(0.5, 2.0, n)}
    out = dict(canonical)
    for name, value in canonical.items():
        if ".bn" in name:
            out[name] = draw[name.rsplit(".", 1)[1]](value.shape).astype(np.float32)
    return out


class _Side:
    """One framework's model with its package's ``parity`` and ``checkpoint`` modules."""

    def __init__(self, framework: str, model: Any) -> None:
        self.name = framework
        self.model = model
        self.parity = _module(framework, "parity")
        self.checkpoint = _module(framework, "checkpoint")

    def canonical(self) -> dict[str, np.ndarray]:
        return self.checkpoint.get_canonical(self.model)


def _module(framework: str, module: str) -> ModuleType:
    package = _PACKAGES[framework]
    try:
        return importlib.import_module(f"{package}.{module}")
    except ModuleNotFoundError as e:
        if (e.name or "").split(".")[0] in ("tensorflow", "keras", "torch"):
            raise ParityError(
                f"parity needs both frameworks; {e.name} is not installed. Install them with: "
                'pip install -c constraints.txt -e ".[dev]"') from e
        raise


def _moved_through_file(case: Case, direction: str, workdir: Path, seed: int) -> tuple[_Side, _Side]:
    """``(source, destination)``: a fresh source model and its copy through a checkpoint file."""
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}; got {direction!r}.")
    src_fw, dst_fw = direction.split("_to_")
    build = importlib.import_module(f"{_PACKAGES[src_fw]}.models").build_model
    src = _Side(src_fw, build(case.config, seed=seed))
    src.checkpoint.set_canonical(src.model, perturb_batchnorm(src.canonical(), seed))
    path = src.checkpoint.save_checkpoint(
        src.model, Path(workdir) / f"{case.name}-{direction}.safetensors", step=0)
    dst_model, meta = _module(dst_fw, "checkpoint").load_checkpoint(path)
    if meta["source_framework"] != src_fw or meta["config"] != case.config.to_dict():
        raise ParityError(f"{path}: metadata says {meta['source_framework']!r} / {meta['config']}; "
                          f"expected {src_fw!r} / {case.config.to_dict()}.")
    return src, _Side(dst_fw, dst_model)


def _sampler(case: Case, seed: int) -> Any:
    from metalearn_shared.data.glyphs import make_glyphs
    from metalearn_shared.episodes import FewShotSampler, PairSampler, SequenceSampler

    classes, drawings = case.glyphs
    data = make_glyphs(num_classes=classes, instances=drawings, size=case.image_size, seed=seed)
    if case.family == "pairs":
        return PairSampler(data, batch=case.batch, seed=seed + 1)
    if case.family == "fewshot":
        return FewShotSampler(data, WAYS, SHOTS, QUERIES, seed=seed + 1)
    return SequenceSampler(data, WAYS, case.samples_per_class, seed=seed + 1)


class _Collector:
    """Builds the case's :class:`Comparison` list with its scaling rule."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.items: list[Comparison] = []

    def add(self, what: str, group: str, kind: str, actual: Any, expected: Any,
            scale: float | None = None, **where: Any) -> None:
        if scale is None:
            scale = float(np.max(np.abs(expected))) if self.case.scaled else 1.0
        self.items.append(Comparison(what, group, kind, actual, expected, scale, **where))


def _reference(case: Case, params: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray]) -> Any:
    """The numpy float64 spec's forward pass of a sequence model, as a ``MANNTrace``
    (only ``logits`` set for the LSTM baseline)."""
    from metalearn_shared.models.mann import MANNTrace

    spec = importlib.import_module(f"metalearn_shared.models.{case.model}")
    out = spec.reference_forward(params, case.config, *inputs)
    return out if isinstance(out, MANNTrace) else MANNTrace(out, None, None, None, None)


def _compare_forward(out: _Collector, src: _Side, dst: _Side, inputs: Sequence[np.ndarray],
                     label: str) -> None:
    """Inference-mode outputs of dst against src (and, for sequence models, both against
    the numpy float64 spec, with the MANN's memory trace and LRUA slot choices)."""
    case = out.case
    if case.family != "sequence":
        x = inputs[0]
        out.add(f"{label}: embedding (inference)", "forward", "forward",
                dst.parity.embed(dst.model, x), src.parity.embed(src.model, x))
        out.add(f"{label}: output (inference)", "forward", "forward",
                dst.parity.forward(dst.model, inputs, False), src.parity.forward(src.model, inputs, False))
        return
    ref = _reference(case, src.canonical(), inputs)
    d_logits = dst.parity.forward(dst.model, inputs, False)
    s_logits = src.parity.forward(src.model, inputs, False)
    out.add(f"{label}: logits vs src", "forward", "forward", d_logits, s_logits)
    out.add(f"{label}: logits vs spec", "spec", "forward", d_logits, ref.logits)
    out.add(f"{label}: src logits vs spec", "spec", "forward", s_logits, ref.logits)
    if case.model != "mann":
        return
    for who, side in (("src", src), ("dst", dst)):
        tr = side.parity.trace(side.model, inputs)
        out.add(f"{label}: {who} ({side.name}) least-used slots vs spec (the LRUA's choice)",
                "lrua", "exact", tr.least_used, ref.least_used)
        for name in ("logits", "read_weights", "write_weights", "usage"):
            out.add(f"{label}: {who} {name} vs spec", "spec", "forward",
                    getattr(tr, name), getattr(ref, name))


def run_case(case: Case, direction: str, workdir: str | Path, steps: int = 10,
             seed: int = 0) -> CaseResult:
    """Every comparison of one case in one direction (see the module docstring).

    Args:
        case: from :func:`cases`.
        direction: ``"torch_to_keras"`` or ``"keras_to_torch"``.
        workdir: where the checkpoint file is written.
        steps: SGD steps compared (ignored for a forward-only case).
        seed: initial weights (``seed``), BatchNorm statistics, data (``seed``) and
            episodes (``seed + 1``).

    Returns:
        A :class:`CaseResult`; nothing is asserted here.
    """
    from metalearn_shared.training import step_batch

    src, dst = _moved_through_file(case, direction, Path(workdir), seed)
    sampler = _sampler(case, seed)
    spec = importlib.import_module(f"metalearn_shared.models.{case.model}")
    # Batch 0 is compared; the training steps see batches 1 .. steps (step s = batch s).
    inputs, target = spec.inputs_and_target(step_batch(sampler, case.family, 0, case.batch))
    out = _Collector(case)
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
        from metalearn_shared.losses import sequence_cross_entropy

        spec_loss = sequence_cross_entropy(target, _reference(case, initial, inputs).logits).mean()
        out.add("loss", "loss", "loss", d_loss, s_loss)
        out.add("loss vs spec", "spec", "loss", s_loss, spec_loss)
    for name in s_grads:
        out.add(f"grad {name}", "grad", "grad", d_grads[name], s_grads[name], param=name)

    s_rec = src.parity.train_steps(src.model, sampler, case.family, steps, case.lr, case.batch)
    d_rec = dst.parity.train_steps(dst.model, sampler, case.family, steps, case.lr, case.batch)
    for k, (d_w, s_w) in enumerate(zip(d_rec.weights, s_rec.weights, strict=True), start=1):
        for name in s_w:
            out.add(f"after {k} steps: {name}", "train", "train", d_w[name], s_w[name],
                    param=name, step=k)
    _compare_forward(out, src, dst, inputs, "after training")
    final = s_rec.weights[-1]
    moved = max(float(np.abs(final[n] - initial[n]).max()) for n in final)
    return CaseResult(case, direction, out.items, moved,
                      {src.name: s_rec.seconds, dst.name: d_rec.seconds})


# -- the report --------------------------------------------------------------------------
def _median_ms(seconds: Sequence[float]) -> float | None:
    """Median step time in ms, the first step (tracing, warm-up) left out when there are more."""
    if not seconds:
        return None
    return 1e3 * float(np.median(seconds[1:] if len(seconds) > 1 else seconds))


def summarise(result: CaseResult) -> dict[str, Any]:
    """A JSON-ready record of one :class:`CaseResult`: every figure with its measure, the
    worst per group, the error after each step, the step times."""
    figures = []
    for c in result.comparisons:
        m = measure(c.actual, c.expected, c.kind, c.scale)
        figures.append({"what": c.what, "group": c.group, "kind": c.kind, "param": c.param,
                        "step": c.step, "scale": c.scale, "max_abs": m.max_abs,
                        "max_rel": m.max_rel, "ratio": m.ratio, "passed": m.passed})

    def worst(group: str, key: str, step: int | None = None) -> float | None:
        vals = [f[key] for f in figures if f["group"] == group and (step is None or f["step"] == step)]
        return max(vals) if vals else None

    n_steps = max((f["step"] or 0 for f in figures), default=0)
    return {
        "case": result.case.name, "model": result.case.model, "direction": result.direction,
        "config": result.case.config.to_dict(), "lr": result.case.lr, "steps": n_steps,
        "passed": all(f["passed"] for f in figures),
        "worst_ratio": max((f["ratio"] for f in figures), default=0.0),
        "summary": {
            "forward_max_abs": worst("forward", "max_abs"),
            "forward_max_rel": worst("forward", "max_rel"),
            "spec_max_abs": worst("spec", "max_abs"),
            "lrua_max_abs": worst("lrua", "max_abs"),
            "loss_abs": worst("loss", "max_abs"), "loss_rel": worst("loss", "max_rel"),
            "grad_max_abs": worst("grad", "max_abs"),
            "train_max_abs": worst("train", "max_abs", n_steps) if n_steps else None,
        },
        "step_errors": [worst("train", "max_abs", k) for k in range(1, n_steps + 1)],
        "moved": result.moved,
        "step_ms": {fw: _median_ms(s) for fw, s in result.seconds.items()},
        "figures": figures,
    }


def _fmt(v: float | None, spec: str = ".1e") -> str:
    return "-" if v is None else format(v, spec)


def format_table(records: Sequence[Mapping[str, Any]]) -> str:
    """The terminal table: one row per case and direction."""
    head = (f"{'case':<26} {'direction':<15} {'fwd abs':>8} {'fwd rel':>8} {'spec abs':>8} "
            f"{'loss rel':>8} {'grad abs':>8} {'train abs':>9} {'torch ms':>8} {'keras ms':>8} "
            f"{'worst/tol':>9}  result")
    lines = [head, "-" * len(head)]
    for r in records:
        s, ms = r["summary"], r["step_ms"]
        lines.append(
            f"{r['case']:<26} {r['direction']:<15} {_fmt(s['forward_max_abs']):>8} "
            f"{_fmt(s['forward_max_rel']):>8} {_fmt(s['spec_max_abs']):>8} {_fmt(s['loss_rel']):>8} "
            f"{_fmt(s['grad_max_abs']):>8} {_fmt(s['train_max_abs']):>9} "
            f"{_fmt(ms.get('torch'), '.1f'):>8} {_fmt(ms.get('keras'), '.1f'):>8} "
            f"{r['worst_ratio']:>9.2f}  {'ok' if r['passed'] else 'FAIL'}")
    return "\n".join(lines)


def _plot_layers(records: Sequence[Mapping[str, Any]], out: Path) -> Path:
    """Per-parameter error of one case, both directions: gradient, and weights after training."""
    import matplotlib.pyplot as plt

    params = [f["param"] for f in records[0]["figures"] if f["group"] == "grad"]
    n_steps = records[0]["steps"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 0.28 * len(params) + 1.6), sharey=True)
    y = np.arange(len(params))
    for ax, group, step, title in ((axes[0], "grad", None, "gradient"),
                                   (axes[1], "train", n_steps, f"weights after {n_steps} steps")):
        for i, r in enumerate(records):
            err = {f["param"]: f["max_abs"] for f in r["figures"]
                   if f["group"] == group and f["step"] == step}
            ax.barh(y + 0.4 * i - 0.2, [max(err[p], 1e-12) for p in params], height=0.4,
                    label=r["direction"])
        ax.axvline(TOL[group][1], color="k", ls="--", lw=1, label=f"tolerance ({group})")
        ax.set(xscale="log", xlabel="max abs error", title=title)
    axes[0].set_yticks(y, params, fontsize=7)
    axes[0].invert_yaxis()
    axes[1].legend(fontsize=7)
    fig.suptitle(f"{records[0]['case']}: error per parameter (floor 1e-12 = exact)", fontsize=9)
    fig.tight_layout()
    return _save(fig, out)


def _plot_steps(records: Sequence[Mapping[str, Any]], out: Path) -> Path:
    """Max abs weight error after each training step, one panel per registered model."""
    import matplotlib.pyplot as plt

    models = [m for m in MODEL_REGISTRY if any(r["model"] == m and r["step_errors"] for r in records)]
    fig, axes = plt.subplots(1, max(1, len(models)), figsize=(4.2 * max(1, len(models)), 3.4),
                             squeeze=False)
    for ax, model in zip(axes[0], models, strict=False):
        for r in records:
            if r["model"] == model and r["step_errors"]:
                k = np.arange(1, len(r["step_errors"]) + 1)
                ax.plot(k, np.maximum(r["step_errors"], 1e-12), marker="o", ms=3,
                        label=f"{r['case']} {r['direction'].replace('_to_', '→')}")
        ax.axhline(TOL["train"][1], color="k", ls="--", lw=1, label="tolerance")
        ax.set(yscale="log", xlabel="SGD step", ylabel="max abs weight error", title=model)
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return _save(fig, out)


def _save(fig: Any, out: Path) -> Path:
    import matplotlib.pyplot as plt

    from metalearn_shared.data.cache import atomic_path

    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out


def write_report(records: Sequence[Mapping[str, Any]], out_dir: str | Path,
                 meta: Mapping[str, Any]) -> list[Path]:
    """``parity.json`` and the PNG plots of a parity run; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    from metalearn_shared.training import write_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [write_json(out_dir / "parity.json", {
        **meta, "tolerances": {k: {"rtol": r, "atol": a} for k, (r, a) in TOL.items()},
        "passed": all(r["passed"] for r in records), "results": list(records)})]
    by_case: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        by_case.setdefault(r["case"], []).append(r)
    for name, recs in by_case.items():
        if any(f["group"] == "grad" for f in recs[0]["figures"]):
            paths.append(_plot_layers(recs, out_dir / f"layers-{name}.png"))
    if any(r["step_errors"] for r in records):
        paths.append(_plot_steps(records, out_dir / "steps.png"))
    return paths


def _versions() -> dict[str, str]:
    import metalearn_shared

    out = {"metalearn": metalearn_shared.__version__, "python": platform.python_version(),
           "numpy": np.__version__}
    for name in ("torch", "tensorflow", "keras"):
        try:
            out[name] = importlib.import_module(name).__version__
        except ModuleNotFoundError:
            out[name] = "not installed"
    return out


def _run_all(selected: Sequence[Case], steps: int, seed: int, workdir: Path) -> Iterator[dict]:
    for case in selected:
        for direction in case.directions:
            t0 = time.perf_counter()
            record = summarise(run_case(case, direction, workdir, steps=steps, seed=seed))
            record["seconds"] = time.perf_counter() - t0
            yield record


def main(args: Any) -> int:
    """``metalearn parity [--model all|NAME] [--steps N] [--seed S] [--out DIR] [--tiny]``.

    Returns:
        0 when every figure is within the tolerance table, 1 otherwise.
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if args.steps < 1:
        raise ValueError(f"--steps must be at least 1; got {args.steps}.")
    selected = cases(args.model, tiny=args.tiny)
    steps = min(args.steps, 3) if args.tiny else args.steps
    records = []
    t0 = time.perf_counter()
    try:
        with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="metalearn-parity-") as tmp:
            for fw in _PACKAGES:
                stack.enter_context(_module(fw, "parity").parity_context(args.seed))
            for record in _run_all(selected, steps, args.seed, Path(tmp)):
                print(f"  {record['case']:<26} {record['direction']:<15} "
                      f"{'ok' if record['passed'] else 'FAIL'} ({record['seconds']:.1f} s)", flush=True)
                records.append(record)
    except ParityError as e:
        from metalearn_shared.cli import CLIError

        raise CLIError(str(e)) from e
    meta = {"command": "metalearn parity", "model": args.model, "steps": steps, "seed": args.seed,
            "tiny": bool(args.tiny), "seconds": round(time.perf_counter() - t0, 1),
            "versions": _versions()}
    paths = write_report(records, args.out, meta)
    print()
    print(format_table(records))
    failed = [(r, f) for r in records for f in r["figures"] if not f["passed"]]
    for r, f in failed[:20]:
        rtol, atol = TOL[f["kind"]]
        print(f"FAIL {r['case']} {r['direction']}: {f['what']}: max abs {f['max_abs']:.3g}, "
              f"{f['ratio']:.3g}x its tolerance ({f['kind']}: rtol {rtol}, atol {atol}, "
              f"scale {f['scale']:.3g})")
    if len(failed) > 20:
        print(f"... and {len(failed) - 20} more failing figures in {paths[0]}")
    print("Errors are raw max abs / max rel; worst/tol is the largest share of its allowance any "
          "figure used (metric models: relative to size above 1), > 1 fails.")
    print(f"\nwrote {', '.join(str(p) for p in paths)}")
    print(f"{len(records)} runs, {sum(len(r['figures']) for r in records)} figures: "
          + ("all within the tolerance table" if not failed else f"{len(failed)} out of tolerance"))
    return 1 if failed else 0
