"""Cross-framework parity, the framework-free half: the constants, the cases (each model's
spec lists its own: ``ModelSpec.parity_cases``), the records and comparisons, the nudges and
distances the noise floor is made of. The run that builds models in both frameworks and
compares them is :mod:`metalearn.parity` (the method is described there); the report is
:mod:`metalearn.parity_report`; the tests are ``tests/parity/``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from metalearn_shared.config import ModelConfig
from metalearn_shared.registry import PARITY_WAYS, ParityCase
from metalearn_shared.tolerances import measure

__all__ = [
    "DIRECTIONS",
    "LR",
    "ADAPTIVE_LR",
    "FLOOR_RUNS",
    "FLOOR_ULPS",
    "EVENT_NUDGES",
    "EVENT_CHECK_SHARE",
    "Case",
    "Comparison",
    "CaseResult",
    "TrainRecord",
    "ParityError",
    "cases",
    "perturb_batchnorm",
    "sampler_for",
    "Collector",
    "nudge",
    "distance",
]

#: Source → destination framework, both ways.
DIRECTIONS = ("torch_to_keras", "keras_to_torch")

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

#: Episode shapes: few-shot N-way K-shot with Q queries per class; sequences of N ways
#: (pairs per batch, presentations per class and sequences per batch are each case's).
WAYS, SHOTS, QUERIES = PARITY_WAYS, 1, 3


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
        name: the spec's case name, ``+<optimizer>`` for the non-SGD runs.
        config: the model.
        lr: SGD learning rate of the training comparison.
        batch: pairs or sequences per step; 1 for one few-shot episode.
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
    samples_per_class: int = 10
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
    def spec(self) -> Any:
        """The model's :class:`~metalearn_shared.registry.ModelSpec`."""
        from metalearn_shared import models

        return models.get(self.config.model)

    @property
    def family(self) -> str:
        return self.spec.family

    @property
    def image_size(self) -> int:
        return self.spec.args_from_config(self.config)["size"]

    @property
    def scaled(self) -> bool:
        """Compare relative to size above 1 (``assert_close_scaled``): the metric models'
        outputs and gradients reach ~1e2 (ProtoNet logits, conv-kernel gradients summed over
        ``B*H*W`` products), where fp32 rounding is relative. The sequence models' logits
        and gradients are O(1) and are held to the absolute bounds."""
        return self.family != "sequence"


# -- the cases --------------------------------------------------------------------------------
def _case(spec: Any, pc: ParityCase) -> Case:
    lr = LR["sequence" if spec.family == "sequence" else "metric"]
    return Case(pc.name, pc.config, lr, batch=pc.batch, glyphs=pc.glyphs,
                samples_per_class=pc.samples_per_class, train=pc.train,
                directions=DIRECTIONS if pc.both_directions else DIRECTIONS[:1])


def cases(model: str = "all", tiny: bool = False,
          optimizers: Sequence[str] = ("sgd",)) -> list[Case]:
    """The parity cases of registered models, or of all (``"all"``): each model's spec
    lists its own (``ModelSpec.parity_cases``).

    Args:
        model: a registered model name, several joined by commas, or ``"all"``.
        tiny: one small variant per model (for a quick run and the CLI's test).
        optimizers: names of :data:`metalearn_shared.optimizers.OPTIMIZERS`. SGD runs every
            case; each other optimiser runs the first trainable case of each model (named
            ``"<case>+<optimizer>"``): the optimiser rule does not depend on the variant.

    Raises:
        ValueError: an unknown model or optimiser name.
    """
    from metalearn_shared import models
    from metalearn_shared.optimizers import OPTIMIZERS

    wanted = set(models.names()) if model == "all" else set(model.split(","))
    if not wanted or not wanted <= set(models.names()):
        raise ValueError(f"--model must be 'all' or registered names joined by commas "
                         f"({', '.join(models.names())}); got {model!r}.")
    unknown = [o for o in optimizers if o not in OPTIMIZERS]
    if unknown:
        raise ValueError(f"unknown optimizer(s) {unknown}; choose from {sorted(OPTIMIZERS)}.")
    out: list[Case] = []
    for spec in models.specs():
        if spec.name in wanted:
            own = [_case(spec, pc) for pc in spec.parity_cases(tiny)]
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
        group: ``forward`` | ``spec`` | ``exact`` | ``loss`` | ``grad`` | ``train``.
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


def sampler_for(case: Case, seed: int) -> Any:
    from metalearn_shared.data.glyphs import make_glyphs
    from metalearn_shared.episodes import FewShotSampler, PairSampler, SequenceSampler

    classes, drawings = case.glyphs
    data = make_glyphs(num_classes=classes, instances=drawings, size=case.image_size, seed=seed)
    if case.family == "pairs":
        return PairSampler(data, batch=case.batch, seed=seed + 1)
    if case.family == "fewshot":
        return FewShotSampler(data, WAYS, SHOTS, QUERIES, seed=seed + 1)
    return SequenceSampler(data, WAYS, case.samples_per_class, seed=seed + 1)


class Collector:
    """Builds the case's :class:`Comparison` list with its scaling rule."""

    def __init__(self, case: Case) -> None:
        self.case = case
        self.items: list[Comparison] = []

    def _scale(self, expected: Any) -> float:
        return float(np.max(np.abs(expected))) if self.case.scaled else 1.0

    def scale(self, expected: Any) -> float:
        """What a figure of ``expected``'s size has its absolute bound multiplied by:
        ``max(1, max |expected|)`` in a scaled case, else 1."""
        return max(1.0, self._scale(expected))

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


def distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], scaled: bool) -> float:
    """The largest per-array max abs difference (divided by ``max(1, max |b|)`` when
    ``scaled``) between two canonical weight sets: one number per step."""
    worst = 0.0
    for name, ref in b.items():
        ref = np.asarray(ref, dtype=np.float64)
        s = max(1.0, float(np.abs(ref).max())) if scaled and ref.size else 1.0
        worst = max(worst, float(np.abs(np.asarray(a[name], dtype=np.float64) - ref).max()) / s)
    return worst


