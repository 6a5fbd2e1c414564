"""LSTM baseline on MANN episodes (Keras 3); also the base class the MANN shares.

Spec: :mod:`metalearn_shared.models.lstm`. Mirror: ``metalearn_torch/models/lstm.py``.

The controller is ``keras.layers.LSTMCell`` (one bias vector, gate blocks i, f, g, o — the
canonical layout up to a transpose) run by ``keras.layers.RNN``. Its variables are created
in the model's :meth:`~SequenceModel.build`, inside the model's name scope, so their paths
are ``controller/kernel`` … — the canonical names with ``.`` → ``/`` — rather than
``rnn/controller/kernel``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import keras
from keras import ops

from metalearn_shared.episodes import SequenceEpisode
from metalearn_shared.models import lstm as spec
from metalearn_shared.models.lstm import LSTMConfig, SequenceConfig, check_sequence_inputs
from metalearn_tf import losses
from metalearn_tf.models.backbones import seeded

__all__ = ["SequenceModel", "LSTMBaseline", "build"]

_PACKAGE = "metalearn_tf"


class SequenceModel(keras.Model):
    """What the sequence models share: config handling, input checks, logit grouping.

    Subclasses set ``config_cls`` and create the layers; ``get_config()`` is the config
    dataclass as a dict (plus the model's name), so ``.keras`` files round-trip.

    Task contract (what a generic trainer calls)::

        inputs, target = model.inputs_and_target(episode)  # ((x, prev_label), y) numpy
        model.compile(optimizer=..., loss=model.make_loss()); model.fit(...)

    Inputs: a tuple ``(x (B, T, image_size**2), prev_label (B, T, C*G))``.
    Returns: logits ``(B, T, C)``, or ``(B, T, G, C)`` when ``label_groups > 1``.
    """

    config_cls: ClassVar[type] = LSTMConfig

    def __init__(self, config: SequenceConfig | dict[str, Any], **kwargs: Any) -> None:
        if isinstance(config, dict):
            config = self.config_cls.from_dict(config)
        kwargs.setdefault("name", config.model)
        super().__init__(**kwargs)
        self.config = config

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, **self.config.to_dict()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SequenceModel:
        config = dict(config)
        kwargs = {k: config.pop(k) for k in ("name", "trainable", "dtype") if k in config}
        return cls(cls.config_cls.from_dict(config), **kwargs)

    @property
    def step_input_size(self) -> int:
        """Width of ``[x_t ; prev_label_t]``."""
        return self.config.input_size + self.config.label_size

    def build_input_shape(self) -> tuple[tuple[None, None, int], tuple[None, None, int]]:
        """The ``input_shape`` to ``build`` a fresh model with."""
        return (None, None, self.config.input_size), (None, None, self.config.label_size)

    def join_inputs(self, inputs: Any) -> Any:
        """Check ``(x, prev_label)`` and return ``[x ; prev_label]`` ``(B, T, I + L)``."""
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
            raise ValueError(f"{self.config.model} expects inputs (x, prev_label), a tuple of "
                             f"two arrays; found {type(inputs).__name__}.")
        x, prev_label = (ops.convert_to_tensor(v, dtype=self.compute_dtype) for v in inputs)
        check_sequence_inputs(self.config, tuple(x.shape), tuple(prev_label.shape))
        return ops.concatenate([x, prev_label], axis=-1)

    def group_logits(self, logits: Any) -> Any:
        """``(B, T, G*C)`` → ``(B, T, C)`` or ``(B, T, G, C)`` (group-major)."""
        cfg = self.config
        if cfg.label_groups == 1:
            return logits
        shape = ops.shape(logits)
        return ops.reshape(logits, (shape[0], shape[1], cfg.label_groups, cfg.num_classes))

    # -- task contract ----------------------------------------------------------------------
    def make_loss(self) -> keras.losses.Loss:
        """Sequence cross-entropy, mean over steps and episodes; ``loss(y, logits)``."""
        return losses.SequenceCrossEntropy()

    def batch_accuracy(self, output: Any, target: Any) -> Any:
        """Keras mirror of the spec's ``batch_accuracy`` (argmax of the logits)."""
        pred = ops.argmax(output, axis=-1)
        return ops.mean(ops.cast(ops.equal(pred, ops.cast(target, pred.dtype)), "float32"))

    @staticmethod
    def inputs_and_target(episode: SequenceEpisode) -> tuple[tuple[Any, Any], Any]:
        """Episodes (batched or one) → ``((x, prev_label), y)`` numpy arrays."""
        return spec.inputs_and_target(episode)


@keras.saving.register_keras_serializable(_PACKAGE)
class LSTMBaseline(SequenceModel):
    """LSTM(U) on ``[x_t ; prev_label_t]`` → dense → logits at every step.

    Args:
        config: :class:`~metalearn_shared.config.LSTMConfig` (or its dict).

    Layers (variable paths): ``controller`` (``keras.layers.LSTMCell``, run by the
    ``keras.layers.RNN`` ``rnn``), ``classifier`` (``Dense(C*G)``).
    """

    config_cls = LSTMConfig

    def __init__(self, config: LSTMConfig | dict[str, Any], **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.controller = keras.layers.LSTMCell(self.config.controller_units, name="controller")
        self.rnn = keras.layers.RNN(self.controller, return_sequences=True, name="rnn")
        self.classifier = keras.layers.Dense(self.config.label_size, name="classifier")

    def build(self, input_shape: Any = None) -> None:
        # Built here, in the model's name scope: paths "controller/kernel", not "rnn/...".
        self.controller.build((None, self.step_input_size))
        self.classifier.build((None, self.config.controller_units))

    def call(self, inputs: Any) -> Any:
        h = self.rnn(self.join_inputs(inputs))  # (B, T, U)
        return self.group_logits(self.classifier(h))


def build(config: LSTMConfig, seed: int | None = None) -> LSTMBaseline:
    """The LSTM baseline of ``config``, variables created; ``seed`` seeds Keras' global RNG."""
    with seeded(seed):
        model = LSTMBaseline(config)
        model.build(model.build_input_shape())
    return model
