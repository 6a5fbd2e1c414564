"""The model contract: one :class:`ModelSpec` per model, registered once by its spec module.

A model is three files: ``metalearn_shared/models/<name>.py`` (config, numpy spec and the
:class:`ModelSpec` below), ``metalearn_torch/models/<name>.py`` and
``metalearn_tf/models/<name>.py`` (each with ``build(config, seed=None)``). Everything generic
code needs to know about a model — its config and how command-line options map onto it,
the task shape and optimiser it trains with by default, its parity cases, its benchmark
workloads and FLOP formula, how a batch's accuracy is read from its output — is a field of
its spec. Trainers, evaluators, the parity driver, the benchmarks and the CLI iterate the
registry and never name a model (``tests/test_architecture.py`` checks it); adding a model
is adding its three files (``docs/architecture.md``).

This module is the bottom of the contract: it imports no model. The built-in models register
when :mod:`metalearn_shared.models` is imported, which also imports the modules named in
``$METALEARN_PLUGINS`` (comma-separated) and the ``metalearn.models`` entry points, so a
model outside the library registers the same way (timm's ``register_model``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "FAMILIES",
    "FRAMEWORKS",
    "FRAMEWORK_ALIASES",
    "PARITY_WAYS",
    "canonical_framework",
    "Option",
    "TrainDefaults",
    "Task",
    "ParityCase",
    "Workload",
    "ModelSpec",
    "register_model",
    "unregister_model",
    "get",
    "names",
    "specs",
    "config_from_dict",
    "default_config",
    "argmax_accuracy",
    "add_options",
]

#: Episode families: which sampler feeds training, how a model is evaluated.
#: ``pairs``: :class:`~metalearn_shared.episodes.PairSampler` batches, evaluated on few-shot
#: episodes; ``fewshot``: one :class:`~metalearn_shared.episodes.FewShotEpisode` per step;
#: ``sequence``: :class:`~metalearn_shared.episodes.SequenceSampler` batches, evaluated by
#: per-instance accuracy.
FAMILIES = ("pairs", "fewshot", "sequence")

#: The canonical framework names (weights, logs, metadata, parity, the CLI). The CLI also
#: takes ``tf`` for ``keras`` (:data:`FRAMEWORK_ALIASES`).
FRAMEWORKS = ("torch", "keras")
FRAMEWORK_ALIASES = {"tf": "keras", "tensorflow": "keras", "pytorch": "torch"}

#: Ways of every parity episode (few-shot and sequence); the specs' parity cases use it.
PARITY_WAYS = 5


def canonical_framework(name: str) -> str:
    """``"torch"`` or ``"keras"`` for a framework name or alias (``tf``)."""
    name = FRAMEWORK_ALIASES.get(name, name)
    if name not in FRAMEWORKS:
        raise ValueError(f"unknown framework {name!r}; choose one of {list(FRAMEWORKS)} "
                         f"(aliases: {sorted(FRAMEWORK_ALIASES)}).")
    return name


#: Tag: the model's forward pass is a differentiable inner loop over the net's own
#: parameters (torch: ``inner_weights()`` and the ``functional_call``-able submodules
#: ``embedding`` and ``head``), so a meta-batch of its tasks can be vectorised (``torch.func``).
INNER_LOOP = "inner-loop"

@dataclass(frozen=True)
class Option:
    """A command-line option a model adds to ``metalearn train``/``eval`` (``--head``).

    ``flags`` and ``kwargs`` are :meth:`argparse.ArgumentParser.add_argument`'s. Two models
    may declare the same option (the first one registered wins the help text). ``at_eval``:
    an evaluation-time setting, a config field the model reads when it runs (never when it
    is built), so ``metalearn eval`` applies a value given on its command line over the
    checkpoint's; any other option given to ``eval`` that differs from the checkpoint's
    config draws a note and the checkpoint's value is used.
    """

    flags: tuple[str, ...]
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    at_eval: bool = False

    @property
    def dest(self) -> str:
        return self.kwargs.get("dest") or self.flags[0].lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class TrainDefaults:
    """What ``metalearn train`` uses when the command line does not say.

    Attributes:
        batch: pairs (``pairs``), episodes (``fewshot``: averaged) or sequences per step.
        lr: learning rate.
        optimizer: a name of :data:`metalearn_shared.optimizers.OPTIMIZERS`.
        image_size: image side in pixels.
    """

    batch: int = 1
    lr: float = 1e-3
    optimizer: str = "adam"
    image_size: int = 28


@dataclass(frozen=True)
class Task:
    """The shape of one training step or forward call (FLOP formulas, workloads).

    Attributes:
        batch: pairs or sequences per call; episodes for ``fewshot``.
        ways, shots, queries: a few-shot episode.
        samples_per_class: presentations of each class in a sequence episode.
    """

    batch: int = 1
    ways: int = 5
    shots: int = 1
    queries: int = 15
    samples_per_class: int = 10

    @property
    def steps(self) -> int:
        """Sequence length ``T = ways * samples_per_class``."""
        return self.ways * self.samples_per_class


@dataclass(frozen=True)
class ParityCase:
    """One configuration of a model to compare across frameworks (the spec's view; the
    parity module adds the learning rate and optimiser).

    Attributes:
        name: ``"<model>-<variant>"`` (the report's row).
        config: the model.
        batch: pairs / sequences per step (1: one episode).
        glyphs: ``(classes, drawings per class)`` of the glyph dataset the case trains on.
        samples_per_class: presentations per class in a sequence episode.
        train: False for a forward-only check.
        both_directions: False: torch → Keras only (a large forward-only case).
    """

    name: str
    config: Any
    batch: int = 1
    glyphs: tuple[int, int] = (20, 8)
    samples_per_class: int = 10
    train: bool = True
    both_directions: bool = True


@dataclass(frozen=True)
class Workload:
    """A benchmark workload: a config and the task one timed call runs.

    Attributes:
        name: ``"<model>-<variant>"``, the benchmark table's row.
        config: the model.
        task: the step's shape.
        unit: what ``task.batch`` counts (``"pairs"`` or ``"episodes"``).
        image_size: side of the benchmark's images.
        conv: the model has convolutions (channels-last modes apply).
    """

    name: str
    config: Any
    task: Task
    unit: str = "episodes"
    image_size: int = 28
    conv: bool = True


def argmax_accuracy(config: Any, output: np.ndarray, target: np.ndarray) -> float:
    """Batch accuracy of a classifier: ``mean(argmax(output, -1) == target)``."""
    return float(np.mean(np.argmax(np.asarray(output), axis=-1) == np.asarray(target)))


@dataclass(frozen=True)
class ModelSpec:
    """Everything generic code knows about one model.

    Attributes:
        name: registry key, ``--model NAME``.
        summary: one line for ``--help``.
        config_cls: the frozen config dataclass (``config_cls.model == name``).
        family: one of :data:`FAMILIES`.
        param_spec: ``config -> list[ParamSpec]``, the canonical weights.
        inputs_and_target: the task contract, ``numpy batch -> (inputs, target)``.
        config_from_args: ``(args, image_size) -> config`` for ``metalearn train``.
        args_from_config: ``config -> {option: value}``, what ``metalearn eval`` takes from
            a checkpoint's config (image size, ways of a fixed-output model, ...).
        defaults: :class:`TrainDefaults`.
        options: model-specific command-line options.
        parity_cases: ``tiny -> list[ParityCase]``; the first trainable case also runs the
            non-SGD optimisers.
        workloads: ``quick -> list[Workload]`` for the benchmarks.
        flops: ``(config, Task) -> (forward, training step)`` floating-point operations.
        batch_accuracy: ``(config, output, target) -> float`` on numpy arrays (the
            frameworks' on-device mirrors are the models' ``batch_accuracy`` methods).
        reference_forward: ``(params, config, *inputs) -> logits`` or a trace (a NamedTuple
            with ``logits`` and the fields in ``trace_fields``) in float64 — the model in
            inference mode — where the spec has a whole-model reference the parity driver
            compares against (None from it: none for this configuration).
        reference_loss: ``(target, reference logits) -> mean loss`` in float64, compared
            to the frameworks' loss where ``reference_forward`` exists.
        trace_fields: fields of the reference trace compared to the frameworks' traces
            (``model.forward_with_trace``) to the forward bound; ``trace_exact``: compared
            exactly (discrete choices).
        predicts: ``metalearn predict`` applies (a model that classifies queries against a
            support set).
        seed_document: the configuration the seed document's own code trains, if this
            model is the seed's (the naive-loop benchmark compares against it).
        implementations: framework → module with ``build(config, seed)``; by default
            ``metalearn_torch.models.<name>`` and ``metalearn_tf.models.<name>``.
        tags: capabilities other layers select models by (never by name), e.g.
            :data:`INNER_LOOP`.
    """

    name: str
    summary: str
    config_cls: type
    family: str
    param_spec: Callable[[Any], list]
    inputs_and_target: Callable[[Any], tuple]
    config_from_args: Callable[[argparse.Namespace, int], Any]
    args_from_config: Callable[[Any], dict[str, Any]]
    defaults: TrainDefaults
    parity_cases: Callable[[bool], list[ParityCase]]
    workloads: Callable[[bool], list[Workload]]
    flops: Callable[[Any, Task], tuple[float, float]]
    batch_accuracy: Callable[[Any, np.ndarray, np.ndarray], float] = argmax_accuracy
    options: tuple[Option, ...] = ()
    reference_forward: Callable[..., Any] | None = None
    reference_loss: Callable[[np.ndarray, np.ndarray], float] | None = None
    trace_fields: tuple[str, ...] = ()
    trace_exact: tuple[str, ...] = ()
    predicts: bool = False
    seed_document: Any = None
    implementations: Mapping[str, str] = field(default_factory=dict)
    tags: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"model {self.name!r}: family must be one of {FAMILIES}; "
                             f"got {self.family!r}.")
        if getattr(self.config_cls, "model", None) != self.name:
            raise ValueError(f"model {self.name!r}: {self.config_cls.__name__}.model must be "
                             f"{self.name!r} (it names the model in checkpoints).")
        packages = {"torch": "metalearn_torch", "keras": "metalearn_tf"}
        impl = {fw: f"{packages[fw]}.models.{self.name}" for fw in FRAMEWORKS}
        impl.update(self.implementations)
        object.__setattr__(self, "implementations", impl)

    def implementation(self, framework: str) -> str:
        """The module that implements this model in ``framework`` (``"torch"``/``"keras"``)."""
        return self.implementations[framework]


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to the registry (once per name; re-registering the same spec object,
    as a module reload does, is allowed)."""
    old = _REGISTRY.get(spec.name)
    if old is not None and old.config_cls.__qualname__ != spec.config_cls.__qualname__:
        raise ValueError(f"model {spec.name!r} is registered already (by "
                         f"{old.config_cls.__module__}); choose another name.")
    _REGISTRY[spec.name] = spec
    return spec


def unregister_model(name: str) -> None:
    """Remove model ``name`` from the registry (a test's toy model, a plugin being reloaded)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> ModelSpec:
    """The spec of model ``name``; a :class:`ValueError` listing the registered names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {names()}.") from None


def names() -> list[str]:
    """Registered model names, in registration order."""
    return list(_REGISTRY)


def specs(family: str | None = None) -> list[ModelSpec]:
    """Registered specs (of one family)."""
    return [s for s in _REGISTRY.values() if family in (None, s.family)]


def config_from_dict(d: Mapping[str, Any]) -> Any:
    """Rebuild a model config from ``to_dict()`` output (its ``"model"`` key picks the class)."""
    name = d.get("model")
    if name not in _REGISTRY:
        raise ValueError(f"config dict names model {name!r}; known models: {names()}.")
    return _REGISTRY[name].config_cls.from_dict(dict(d))


def default_config(name: str, **overrides: Any) -> Any:
    """The default config of a registered model, with overrides."""
    return get(name).config_cls(**overrides)


def add_options(parser: argparse.ArgumentParser, models: Sequence[ModelSpec]) -> None:
    """Add every model's own options to ``parser`` (once per flag)."""
    seen = {a for action in parser._actions for a in action.option_strings}
    for spec in models:
        for opt in spec.options:
            if seen.isdisjoint(opt.flags):
                parser.add_argument(*opt.flags, **dict(opt.kwargs))
                seen.update(opt.flags)
