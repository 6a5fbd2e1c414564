"""LSTM baseline on MANN episodes — the numpy spec (Santoro et al. 2016, comparison row).

Also holds the two pieces every sequence model shares: the LSTM step with **one** bias
vector (:func:`lstm_step`, the MANN's controller too) and the input check
(:func:`check_sequence_inputs`) whose messages both frameworks raise.

Model:
    ``(h_t, c_t) = LSTM([x_t ; prev_label_t], h_{t-1}, c_{t-1})`` with ``h_0 = c_0 = 0``;
    ``logits_t = W_o h_t + b_o``, one softmax of ``num_classes`` per label group.

Parameters (canonical = torch names and layouts, see :func:`param_spec`):
    ``controller.weight_ih (4U, I + L)``, ``controller.weight_hh (4U, U)``,
    ``controller.bias (4U,)`` with gate blocks ordered i, f, g, o (torch's and Keras'
    order); ``classifier.weight (C*G, U)``, ``classifier.bias (C*G,)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np

from metalearn_shared import losses, registry
from metalearn_shared.config import ConfigMixin
from metalearn_shared.episodes import SequenceEpisode
from metalearn_shared.flops import Flops, dense_flops
from metalearn_shared.weights import ParamSpec, dense, lstm_cell

__all__ = [
    "LSTMConfig",
    "SequenceConfig",
    "SequenceSizes",
    "SPEC",
    "sequence_spec",
    "param_spec",
    "check_sequence_inputs",
    "sigmoid",
    "lstm_step",
    "group_logits",
    "inputs_and_target",
    "join_inputs",
    "reference_forward",
]


class SequenceConfig(Protocol):
    """What the shared sequence-model pieces read of a config (the LSTM's and the MANN's)."""

    image_size: int
    num_classes: int
    label_groups: int

    @property
    def input_size(self) -> int: ...

    @property
    def label_size(self) -> int: ...


class SequenceSizes:
    """The sizes every sequence-model config derives from its fields (a mixin)."""

    image_size: int
    num_classes: int
    label_groups: int

    @property
    def input_size(self) -> int:
        """Pixels of a flattened image, ``image_size ** 2``."""
        return self.image_size * self.image_size

    @property
    def label_size(self) -> int:
        """Size of the previous-label input and of the logits, ``num_classes * label_groups``."""
        return self.num_classes * self.label_groups


@dataclass(frozen=True)
class LSTMConfig(SequenceSizes, ConfigMixin):
    """LSTM-only baseline on MANN episodes (the paper's comparison row)."""

    model: ClassVar[str] = "lstm"
    image_size: int = 20
    num_classes: int = 5
    label_groups: int = 1
    controller_units: int = 200


def param_spec(config: LSTMConfig) -> list[ParamSpec]:
    """Canonical parameters of the LSTM baseline (see the module docstring)."""
    units = config.controller_units
    return [
        *lstm_cell("controller", config.input_size + config.label_size, units),
        *dense("classifier", units, config.label_size),
    ]


def check_sequence_inputs(
    config: SequenceConfig,
    x_shape: Sequence[int | None],
    prev_label_shape: Sequence[int | None],
) -> None:
    """Raise ``ValueError`` unless ``x`` and ``prev_label`` fit a sequence model.

    Unknown (``None``) dimensions — symbolic batch or time in a Keras graph — pass.

    Args:
        config: the model's config (gives ``input_size`` and ``label_size``).
        x_shape: expected ``(B, T, image_size**2)``.
        prev_label_shape: expected ``(B, T, num_classes * label_groups)``.
    """
    name = config.model
    want_x = ("B", "T", config.input_size)
    want_p = ("B", "T", config.label_size)
    x_shape, prev_label_shape = tuple(x_shape), tuple(prev_label_shape)
    hint = (
        f"{name} expects x (B, T, {config.input_size}) = flattened "
        f"{config.image_size}×{config.image_size} images and prev_label "
        f"(B, T, {config.label_size}) = previous labels ({config.label_groups} group(s) "
        f"of {config.num_classes}), as SequenceSampler.batch gives them"
    )
    if len(x_shape) != 3 or len(prev_label_shape) != 3:
        raise ValueError(f"{hint}; found x {x_shape} and prev_label {prev_label_shape}.")
    for found, want, what in ((x_shape, want_x, "x"), (prev_label_shape, want_p, "prev_label")):
        if found[2] is not None and found[2] != want[2]:
            raise ValueError(f"{hint}; found {what} {found} (last axis {found[2]}, "
                             f"expected {want[2]}). Check image_size/num_classes/label_groups.")
    for axis, label in ((0, "batch"), (1, "time")):
        a, b = x_shape[axis], prev_label_shape[axis]
        if a is not None and b is not None and a != b:
            raise ValueError(f"{hint}; x and prev_label disagree on the {label} axis: "
                             f"x {x_shape}, prev_label {prev_label_shape}.")


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Logistic function, overflow-free: ``(1 + tanh(z / 2)) / 2``."""
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def lstm_step(
    params: Mapping[str, np.ndarray], prefix: str, x: np.ndarray, h: np.ndarray, c: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One LSTM step with one bias vector (Keras ``LSTMCell``; torch ``LSTMCell`` with
    ``bias_ih + bias_hh`` folded into one).

    Formula:
        ``z = W_ih x + W_hh h + b``, split in four blocks i, f, g, o;
        ``c' = σ(f) c + σ(i) tanh(g)``, ``h' = σ(o) tanh(c')``.

    Args:
        params: canonical arrays; uses ``{prefix}.weight_ih (4U, I)``,
            ``{prefix}.weight_hh (4U, U)``, ``{prefix}.bias (4U,)``.
        x: ``(B, I)``; h, c: ``(B, U)``.

    Returns:
        ``(h', c')``, each ``(B, U)`` float64.
    """
    z = (x @ np.asarray(params[f"{prefix}.weight_ih"], np.float64).T
         + h @ np.asarray(params[f"{prefix}.weight_hh"], np.float64).T
         + np.asarray(params[f"{prefix}.bias"], np.float64))  # (B, 4U)
    i, f, g, o = np.split(z, 4, axis=-1)
    c = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h = sigmoid(o) * np.tanh(c)
    return h, c


def group_logits(logits: np.ndarray, config: SequenceConfig) -> np.ndarray:
    """``(B, T, G*C)`` → ``(B, T, C)`` when ``G = 1``, else ``(B, T, G, C)`` (group-major)."""
    if config.label_groups == 1:
        return logits
    b, t, _ = logits.shape
    return logits.reshape(b, t, config.label_groups, config.num_classes)


def inputs_and_target(
    episode: SequenceEpisode,
) -> tuple[tuple[np.ndarray, np.ndarray], np.ndarray]:
    """The task contract of the sequence models: episodes → ``((x, prev_label), y)``.

    Args:
        episode: ``SequenceSampler.batch(start, size)`` (fields ``(B, T, ...)``) or one
            ``SequenceSampler.episode(i)`` (``(T, ...)``, given a batch axis of 1).

    Returns:
        ``x float32 (B, T, H*W)``, ``prev_label float32 (B, T, L)`` and the targets
        ``y int64 (B, T)`` (or ``(B, T, 5)`` for string labels).
    """
    x, prev_label, y = episode.x, episode.prev_label, episode.y
    if np.ndim(x) == 2:
        x, prev_label, y = x[None], prev_label[None], y[None]
    if np.ndim(x) != 3:
        raise ValueError(f"expected SequenceEpisode.x of shape (B, T, H*W) or (T, H*W); "
                         f"found {np.shape(x)}.")
    return (x, prev_label), y


def join_inputs(config: SequenceConfig, x: np.ndarray, prev_label: np.ndarray
                ) -> np.ndarray:
    """Check shapes (:func:`check_sequence_inputs`) and return ``[x ; prev_label]`` float64."""
    check_sequence_inputs(config, np.shape(x), np.shape(prev_label))
    return np.concatenate([np.asarray(x, np.float64), np.asarray(prev_label, np.float64)], -1)


def reference_forward(
    params: Mapping[str, np.ndarray], config: LSTMConfig, x: np.ndarray, prev_label: np.ndarray
) -> np.ndarray:
    """The LSTM baseline over a batch of episodes, in float64.

    Args:
        params: canonical arrays (:func:`param_spec` names and shapes).
        config: the model's config.
        x: ``(B, T, image_size**2)`` flattened images.
        prev_label: ``(B, T, C*G)`` previous step's label encoding (zeros at ``t = 0``).

    Returns:
        Logits ``(B, T, C)``, or ``(B, T, G, C)`` when ``label_groups > 1``.
    """
    inputs = join_inputs(config, x, prev_label)  # (B, T, I + L)
    b, t, _ = inputs.shape
    h = c = np.zeros((b, config.controller_units))
    w_o = np.asarray(params["classifier.weight"], np.float64)
    b_o = np.asarray(params["classifier.bias"], np.float64)
    logits = np.empty((b, t, config.label_size))  # (B, T, C*G)
    for step in range(t):
        h, c = lstm_step(params, "controller", inputs[:, step], h, c)
        logits[:, step] = h @ w_o.T + b_o
    return group_logits(logits, config)


# -- the model contract (metalearn_shared.registry), and what the MANN's reuses --------------
def sequence_parity_cases(make: Any, name: str, tiny: bool, tiny_extra: dict[str, Any],
                          small_extra: dict[str, Any]) -> list[registry.ParityCase]:
    """Parity cases of a sequence model built by ``make(**kwargs)``.

    Tiny: 8x8 images, 12 units, 4 presentations per class. Otherwise one small enough to be
    quick (10x10 images, 24 units) and the paper's sizes (20x20 images, 200 units), forward
    only, torch → Keras.
    """
    ways = registry.PARITY_WAYS
    if tiny:
        return [registry.ParityCase(f"{name}-tiny", make(image_size=8, num_classes=ways,
                                                         controller_units=12, **tiny_extra),
                                    batch=2, glyphs=(8, 4), samples_per_class=4)]
    return [
        registry.ParityCase(name, make(image_size=10, num_classes=ways, controller_units=24,
                                       **small_extra), batch=2, glyphs=(12, 10)),
        registry.ParityCase(f"{name}-paper-sizes", make(), batch=2, glyphs=(ways, 10),
                            train=False, both_directions=False),
    ]


def sequence_workloads(make: Any, name: str, quick: bool, small: dict[str, Any]
                       ) -> list[registry.Workload]:
    """One workload: 5-way episodes of 10 presentations per class, 16 per step (quick: 2-way,
    2 presentations, 2 per step, with ``small`` sizes)."""
    ways, per_class, batch = (2, 2, 2) if quick else (5, 10, 16)
    config = make(num_classes=ways, **(small if quick else {}))
    return [registry.Workload(name, config, registry.Task(batch=batch, ways=ways,
                                                          samples_per_class=per_class),
                              image_size=config.image_size, conv=False)]


def _flops(config: LSTMConfig, task: registry.Task) -> tuple[float, float]:
    spec = param_spec(config)
    first = dense_flops([p for p in spec if p.name == "controller.weight_ih"])
    rest = dense_flops(spec) - first  # the input matmul reads data: no input gradient
    return tuple(Flops(first + rest, 2 * first + 3 * rest) * (task.batch * task.steps))


#: The training defaults of the sequence models: Santoro et al. 2016 train with RMSprop 1e-4
#: on 20x20 images, 16 episodes per step.
SEQUENCE_DEFAULTS = registry.TrainDefaults(batch=16, lr=1e-4, optimizer="rmsprop", image_size=20)


def sequence_spec(**fields: Any) -> registry.ModelSpec:
    """A :class:`~metalearn_shared.registry.ModelSpec` with what every sequence model shares:
    family, task contract, config from ``--size``/``--ways`` and the model's own options,
    defaults."""
    cls = fields["config_cls"]
    # A model's own options (``fields["options"]``) name config fields: given on the command
    # line they go into the config, and ``metalearn eval`` reads them back from it.
    own = [o.dest for o in fields.get("options", ())]

    def config_from_args(args: Any, size: int) -> Any:
        given = {k: getattr(args, k) for k in own if getattr(args, k, None) is not None}
        return cls(image_size=size, num_classes=args.ways, **given)

    return registry.ModelSpec(**{
        "family": "sequence",
        "inputs_and_target": inputs_and_target,
        "config_from_args": config_from_args,
        "args_from_config": lambda c: {"size": c.image_size, "ways": c.num_classes,
                                       **{k: getattr(c, k) for k in own}},
        "defaults": SEQUENCE_DEFAULTS,
        "reference_loss": lambda target, logits: float(
            losses.sequence_cross_entropy(target, logits).mean()),
        **fields,
    })


SPEC = registry.register_model(sequence_spec(
    name="lstm",
    summary="LSTM baseline on MANN episodes (Santoro et al. 2016's comparison row)",
    config_cls=LSTMConfig,
    param_spec=param_spec,
    parity_cases=lambda tiny: sequence_parity_cases(LSTMConfig, "lstm", tiny, {}, {}),
    workloads=lambda quick: sequence_workloads(LSTMConfig, "lstm", quick, {"controller_units": 16}),
    flops=_flops,
    reference_forward=reference_forward,
))
