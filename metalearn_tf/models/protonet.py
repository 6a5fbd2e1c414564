"""Keras Prototypical network (Snell, Swersky & Zemel 2017).

Mirror of ``metalearn_torch/models/protonet.py``; the spec is
:mod:`metalearn_shared.models.protonet`. Support and query images go through the backbone
in one batch (support first); prototypes are mean support embeddings; logits are
``-||q - c_n||^2`` computed from the differences.

Task contract (for a generic trainer; every metalearn Keras model has it)::

    inputs, target = model.inputs_and_target(episode)  # FewShotEpisode -> ((sx, sy, qx), qy) numpy
    model.compile(optimizer, loss=model.make_loss())    # loss(query_y, logits) -> mean
    model.fit(py_dataset)                               # one episode per item (leading dims differ)
    labels = model.predict_episode(support_x, support_y, query_x)  # (Q,) int, inference mode
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

from metalearn_shared.models import protonet as spec
from metalearn_shared.models.protonet import ProtoNetConfig
from metalearn_tf import losses
from metalearn_tf.models.backbones import TaskMixin, make_backbone, seeded

__all__ = ["PrototypicalNetwork", "build"]


@keras.saving.register_keras_serializable("metalearn_tf")
class PrototypicalNetwork(TaskMixin, keras.Model):
    """Prototypical network on a backbone.

    Args:
        config: the backbone.

    Attributes:
        embedding: the backbone layer (``SeedConvNet`` or ``Conv4``).
    """

    spec = spec  # the shared spec: inputs_and_target, loss_for (see TaskMixin)
    config_cls = ProtoNetConfig

    def __init__(self, config: ProtoNetConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.embedding = make_backbone(config.backbone, name="embedding")

    def build(self, input_shape: Any = None) -> None:
        # Every shape follows from the config; input_shape (from .keras files) is not needed.
        self.embedding.build()

    def embed(self, x: Any, training: bool | None = None) -> Any:
        """``(B, H, W)`` or ``(B, H, W, 1)`` images → ``(B, D)`` embeddings."""
        return self.embedding(x, training=training)

    def call(self, inputs: Any, training: bool | None = None, ways: int | None = None) -> Any:
        """Logits of every query for every class.

        Args:
            inputs: ``(support_x, support_y, query_x)``: ``(S, H, W)`` or ``(S, H, W, 1)``
                images (``S = N*K``), ``(S,)`` integer labels ``0 .. N-1`` each present at
                least once, ``(Q, H, W)`` or ``(Q, H, W, 1)`` images.
            training: BatchNorm mode.
            ways: ``N``; ``max(support_y) + 1`` when None (computed in the graph).

        Returns:
            ``(Q, N)`` logits ``-||q - c_n||^2``.
        """
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 3:
            raise ValueError("PrototypicalNetwork expects inputs = (support_x, support_y, "
                             f"query_x); found {type(inputs).__name__}.")
        s = self.embedding.prepare(inputs[0], "support_x")
        q = self.embedding.prepare(inputs[2], "query_x")
        support_y = ops.convert_to_tensor(inputs[1])
        n_s = s.shape[0]
        if n_s is not None and tuple(support_y.shape) not in ((n_s,), (None,)):
            raise ValueError(f"support_y: expected shape ({n_s},), one label per support image; "
                             f"found {tuple(support_y.shape)}.")
        e = self.embedding(ops.concatenate([s, q], axis=0), training=training)  # (S+Q, D)
        if ways is None:
            ways = ops.cast(ops.max(support_y), "int32") + 1
        onehot = ops.one_hot(support_y, ways, dtype=e.dtype)  # (S, N)
        b = ops.shape(s)[0]
        protos = ops.matmul(ops.transpose(onehot), e[:b]) / ops.sum(onehot, axis=0)[:, None]
        return -losses.squared_euclidean(e[b:, None, :], protos[None, :, :])  # (Q, N)

    def one_shot_scores(self, train_x: Any, test_x: Any) -> Any:
        """``(Q, K)`` logits of each test image for each training image as its own class
        (one-shot runs)."""
        return self((train_x, np.arange(len(train_x)), test_x), training=False, ways=len(train_x))

    def predict_episode(
        self, support_x: Any, support_y: Any, query_x: Any, ways: int | None = None
    ) -> Any:
        """Label of each query's nearest prototype, in inference mode; ``(Q,)`` integers."""
        logits = self((support_x, support_y, query_x), training=False, ways=ways)
        return ops.argmax(logits, axis=1)


def build(config: ProtoNetConfig, seed: int | None = None) -> PrototypicalNetwork:
    """A new, built :class:`PrototypicalNetwork`; ``seed`` seeds Keras' RNG first."""
    with seeded(seed):
        model = PrototypicalNetwork(config)
        model.build()
    return model
