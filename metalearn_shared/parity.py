"""Cross-framework parity, framework-agnostic: the cases and the runs behind ``metalearn
parity`` and the parity tests (``tests/parity/``); the report is :mod:`metalearn_shared.parity_report`.

For every registered model and variant (:func:`cases`: Siamese heads × backbones, ProtoNet ×
backbones, MANN, LSTM; SGD, and the matched Adam/RMSprop rules on one case per model), in both
directions (:data:`DIRECTIONS`), :func:`run_case`:

1. builds the model in the source framework (BatchNorm affine and running statistics made
   non-trivial, so inference mode is tested), saves a canonical checkpoint *file*, and
   builds the destination model from that file with the other framework's ``load_checkpoint``;
2. on identical episodes from the shared samplers compares, destination against source:
   forward outputs (and embeddings in inference mode; the MANN's memory trace and the slots
   its LRUA chose, with the numpy float64 spec as a third witness), the loss and the
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
``train_steps``, ``forced_steps``, ``apply_update``, ``parity_context``, ``threads_in_use``);
this module imports them lazily and never imports a framework itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
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
from metalearn_shared.tolerances import FLOOR_MULTIPLE, measure

__all__ = [
    "DIRECTIONS",
    "LR",
    "ADAPTIVE_LR",
    "FLOOR_RUNS",
    "FLOOR_ULPS",
    "EVENT_NUDGES",
    "EVENT_CHECK_SHARE",
    "event_sensitivity",
    "Case",
    "Comparison",
    "CaseResult",
    "TrainRecord",
    "ParityError",
    "cases",
    "perturb_batchnorm",
    "run_case",
    "nudge",
    "noise_floor",
    "framework_module",
    "PACKAGES",
]

#: Source → destination framework, both ways.
DIRECTIONS = ("torch_to_keras", "keras_to_torch")
PACKAGES = {"torch": "metalearn_torch", "keras": "metalearn_tf"}

#: SGD learning rate, one per family of models, never per case: a rate at which training
#: amplifies rounding (chaos) is judged against the measured noise floor, not avoided.
LR = {"metric": 1e-2, "sequence": 0.5}
#: Learning rate of the adaptive optimisers (Adam, RMSprop: a step of ~lr per parameter
#: whatever the gradient's size), one for every case.
ADAPTIVE_LR = 1e-3

#: The noise floor: each framework trains ``FLOOR_RUNS`` more times from its start nudged by
#: up to ``FLOOR_ULPS`` units in the last place (:func:`nudge`).
FLOOR_RUNS, FLOOR_ULPS = 1, 4.0
#: A teacher-forced figure beyond its bound is checked for a rounding-flipped event by
#: recomputing the source's step from this many nudged starts (:func:`event_sensitivity`).
EVENT_NUDGES = 8
#: ... whenever one of its trainable figures uses more than this share of its plain bound
#: (teacher-forced figures must stay within half their bound on any CPU).
EVENT_CHECK_SHARE = 0.5

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
        states: the canonical optimiser state after each step (``{"step", "slots"}``, see
            ``metalearn_torch.optimizers.get_state`` and its Keras mirror).
        seconds: wall time of each step (the forward, backward and update only).
    """

    weights: list[dict[str, np.ndarray]] = field(default_factory=list)
    states: list[dict[str, Any]] = field(default_factory=list)
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
        optimizer: the name (:data:`metalearn_shared.optimizers.OPTIMIZERS`) both
            frameworks train with, each with its trainer's own optimiser object.
    """

    name: str
    config: ModelConfig
    lr: float
    batch: int = 1
    glyphs: tuple[int, int] = (20, 8)
    samples_per_class: int = SAMPLES
    train: bool = True
    directions: tuple[str, ...] = DIRECTIONS
    optimizer: str = "sgd"

    @property
    def model(self) -> str:
        return self.config.model

    @property
    def rate(self) -> float:
        """The case's SGD rate, or :data:`ADAPTIVE_LR` for Adam and RMSprop (any rule)."""
        return self.lr if self.optimizer == "sgd" else ADAPTIVE_LR

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
            return [Case("siamese-koch-seed-20px", config, LR["metric"], batch=PAIRS)]
        config = ProtoNetConfig(BackboneConfig("conv4", image_size=16, hidden=8))
        return [Case("protonet-conv4-16px-8ch", config, LR["metric"])]
    variants = siamese.variants() if name == "siamese" else protonet.variants()
    if name == "siamese":
        # conv4 ends on a 2x2 map at 32 px: the Koch head's kernel needs the flatten
        # permutation (at 28 px the map is 1x1 and the permutation is the identity).
        variants.append(("siamese-koch-conv4-32px",
                         SiameseConfig(BackboneConfig("conv4", image_size=32), head="koch")))
    batch = PAIRS if name == "siamese" else 1
    return [Case(n, c, LR["metric"], batch=batch) for n, c in variants]


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


def cases(model: str = "all", tiny: bool = False,
          optimizers: Sequence[str] = ("sgd",)) -> list[Case]:
    """The parity cases of one registered model, or of all (``"all"``).

    Args:
        model: a :data:`~metalearn_shared.config.MODEL_REGISTRY` name or ``"all"``.
        tiny: one small variant per model (for a quick run and the CLI's test).
        optimizers: names of :data:`metalearn_shared.optimizers.OPTIMIZERS`. SGD runs every
            case; each other optimiser runs the first trainable case of each model (named
            ``"<case>+<optimizer>"``): the optimiser rule does not depend on the variant.

    Raises:
        ValueError: an unknown model or optimiser name.
    """
    from metalearn_shared.optimizers import OPTIMIZERS

    if model != "all" and model not in MODEL_REGISTRY:
        raise ValueError(f"--model must be 'all' or one of {sorted(MODEL_REGISTRY)}; got {model!r}.")
    unknown = [o for o in optimizers if o not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"unknown optimizer(s) {unknown}; choose from {sorted(OPTIMIZERS)}.")
    out: list[Case] = []
    for name, entry in MODEL_REGISTRY.items():
        if model in ("all", name):
            if entry.family not in _FAMILY_CASES:
                raise ParityError(f"model {name!r} has episode family {entry.family!r}, for "
                                  "which metalearn_shared.parity defines no parity case.")
            own = _FAMILY_CASES[entry.family](name, tiny)
            if "sgd" in optimizers:
                out += own
            first = next(c for c in own if c.train)
            out += [replace(first, name=f"{first.name}+{o}", optimizer=o)
                    for o in optimizers if o != "sgd"]
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
        floor: the measured noise floor after this step (free-running trajectories).
        allow: the measured allowance added to the table's absolute bound (scaled units;
            :func:`metalearn_shared.tolerances.measure`): ``FLOOR_MULTIPLE x floor`` for
            free-running trajectories, ``FLOOR_MULTIPLE x`` the source's own measured jump
            for a confirmed event in a teacher-forced step, 0 for every other figure.
    """

    what: str
    group: str
    kind: str
    actual: Any
    expected: Any
    scale: float = 1.0
    param: str | None = None
    step: int | None = None
    floor: float = 0.0
    allow: float = 0.0


@dataclass
class CaseResult:
    """Everything :func:`run_case` measured for one case and direction.

    Attributes:
        moved: max abs change of the source's trainable parameters over training (0 if
            not trained) — parity of weights that did not move would prove nothing.
            BatchNorm running statistics are left out: they move in training mode whatever
            the optimiser does.
        floor: the noise floor after each step (:func:`noise_floor`, both frameworks).
        seconds: per framework (``"torch"``, ``"keras"``), the wall time of each step.
    """

    case: Case
    direction: str
    comparisons: list[Comparison]
    moved: float = 0.0
    seconds: dict[str, list[float]] = field(default_factory=dict)
    floor: list[float] = field(default_factory=list)


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
        self.parity = framework_module(framework, "parity")
        self.checkpoint = framework_module(framework, "checkpoint")

    def canonical(self) -> dict[str, np.ndarray]:
        return self.checkpoint.get_canonical(self.model)


def framework_module(framework: str, module: str) -> ModuleType:
    package = PACKAGES[framework]
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
    build = importlib.import_module(f"{PACKAGES[src_fw]}.models").build_model
    src = _Side(src_fw, build(case.config, seed=seed))
    src.checkpoint.set_canonical(src.model, perturb_batchnorm(src.canonical(), seed))
    path = src.checkpoint.save_checkpoint(
        src.model, Path(workdir) / f"{case.name}-{direction}.safetensors", step=0)
    dst_model, meta = framework_module(dst_fw, "checkpoint").load_checkpoint(path)
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

    def _scale(self, expected: Any) -> float:
        return float(np.max(np.abs(expected))) if self.case.scaled else 1.0

    def ratio(self, kind: str, actual: Any, expected: Any) -> float:
        """The share of its plain bound (no allowance) a figure would use."""
        return measure(actual, expected, kind, self._scale(expected)).ratio

    def add(self, what: str, group: str, kind: str, actual: Any, expected: Any,
            scale: float | None = None, allow_abs: float = 0.0, **where: Any) -> None:
        """One figure; ``allow_abs`` is an absolute allowance, converted to the scaled units
        :func:`~metalearn_shared.tolerances.measure` adds it in."""
        if scale is None:
            scale = self._scale(expected)
        if allow_abs:
            where["allow"] = allow_abs / max(1.0, scale)
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


def nudge(canonical: Mapping[str, np.ndarray], seed: int, ulps: float = FLOOR_ULPS
          ) -> dict[str, np.ndarray]:
    """Every float32 value moved by up to ``ulps`` units in the last place, at random — a
    start as valid as the original, which another CPU's rounding could have produced."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, value in canonical.items():
        v = np.asarray(value, dtype=np.float32)
        out[name] = (v * (1 + rng.uniform(-ulps, ulps, v.shape) * 2.0 ** -23)).astype(np.float32)
    return out


def _distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], scaled: bool) -> float:
    """The largest per-array max abs difference (divided by ``max(1, max |b|)`` when
    ``scaled``) between two canonical weight sets: one number per step."""
    worst = 0.0
    for name, ref in b.items():
        ref = np.asarray(ref, dtype=np.float64)
        s = max(1.0, float(np.abs(ref).max())) if scaled and ref.size else 1.0
        worst = max(worst, float(np.abs(np.asarray(a[name], dtype=np.float64) - ref).max()) / s)
    return worst


def noise_floor(side: _Side, initial: Mapping[str, np.ndarray], reference: TrainRecord,
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
            floor[k] = max(floor[k], _distance(rec.weights[k], reference.weights[k], case.scaled))
    return np.maximum.accumulate(floor).tolist()


def _forced_figures(out: _Collector, src: _Side, dst: _Side, sampler: Any, spec: ModuleType,
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
      forward pass at the forced weights, no kinks); for SGD, also the trainable parameters.

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
            elif optimizer == "sgd":  # the step is -lr x the gradient
                out.add(f"step {k} (forced): {name}", "step", "step", f_w[name], s_w[name],
                        param=name, step=k, allow_abs=FLOOR_MULTIPLE * lr * jumps.get(name, 0.0))


def event_sensitivity(side: _Side, weights: Mapping[str, np.ndarray], inputs: Sequence[np.ndarray],
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

    src, dst = _moved_through_file(case, direction, Path(workdir), seed)
    sampler = _sampler(case, seed)
    spec = importlib.import_module(f"metalearn_shared.models.{case.model}")
    lr, optimizer = case.rate, case.optimizer
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
