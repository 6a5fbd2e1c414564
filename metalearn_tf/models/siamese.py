"""Keras Siamese network: twin embedding + contrastive, cosine or Koch head.

Mirror of ``metalearn_torch/models/siamese.py``; the spec (heads, outputs, losses, labels)
is :mod:`metalearn_shared.models.siamese`.

Outputs (``model((x1, x2))``, one value per pair, ``(B,)``): the Euclidean distance
(``contrastive``), the cosine similarity (``cosine``) or the verification logit (``koch``;
no sigmoid — :meth:`SiameseNetwork.same_probability` applies it). Both images of every pair
go through the backbone in one batch (``x1`` then ``x2``), so BatchNorm sees all ``2B``.

Task contract (for a generic trainer; every metalearn Keras model has it)::

    inputs, target = model.inputs_and_target(batch)  # PairBatch -> ((x1, x2), y) numpy
    model.compile(optimizer, loss=model.make_loss())  # loss(y, output) -> mean
    model.fit(py_dataset)                             # items: inputs_and_target(sampler.episode(i))
    labels = model.predict_episode(support_x, support_y, query_x)  # (Q,) int, inference mode
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from metalearn_shared.models import siamese as spec
from metalearn_shared.models.siamese import SiameseConfig
from metalearn_tf import losses
from metalearn_tf.models.backbones import TaskMixin, make_backbone, seeded

__all__ = ["SiameseNetwork", "build"]


@keras.saving.register_keras_serializable("metalearn_tf")
class SiameseNetwork(TaskMixin, keras.Model):
    """Siamese network (Bromley et al. 1993; Koch et al. 2015) on a shared backbone.

    Args:
        config: backbone, head (``"contrastive" | "cosine" | "koch"``) and margin.

    Attributes:
        embedding: the backbone layer (``SeedConvNet`` or ``Conv4``).
        head: ``Dense(1)`` on ``|e1 - e2|`` for the Koch head, else ``None``.
    """

    spec = spec  # the shared spec: inputs_and_target, loss_for (see TaskMixin)
    config_cls = SiameseConfig

    def __init__(self, config: SiameseConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.embedding = make_backbone(config.backbone, name="embedding")
        self.head = keras.layers.Dense(1, name="head") if config.head == "koch" else None

    def build(self, input_shape: Any = None) -> None:
        # Every shape follows from the config; input_shape (from .keras files) is not needed.
        self.embedding.build()
        if self.head is not None:
            self.head.build((None, self.config.backbone.output_dim))

    def embed(self, x: Any, training: bool | None = None) -> Any:
        """``(B, H, W)`` or ``(B, H, W, 1)`` images → ``(B, D)`` embeddings."""
        return self.embedding(x, training=training)

    def compare(self, e1: Any, e2: Any) -> Any:
        """The head on broadcastable embeddings ``(..., D)`` → ``(...)``: distance, cosine or logit."""
        if self.config.head == "contrastive":
            return losses.euclidean_distance(e1, e2)
        if self.config.head == "cosine":
            return losses.cosine_similarity(e1, e2)
        return ops.squeeze(self.head(ops.abs(e1 - e2)), -1)  # (..., 1) -> (...)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        """Head output for ``B`` pairs, ``(B,)``; ``inputs = (x1, x2)``, each ``(B, H, W)`` or ``(B, H, W, 1)``."""
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
            raise ValueError("SiameseNetwork expects inputs = (x1, x2), two image batches; "
                             f"found {type(inputs).__name__}.")
        x1 = self.embedding.prepare(inputs[0], "x1")
        x2 = self.embedding.prepare(inputs[1], "x2")
        b1, b2 = x1.shape[0], x2.shape[0]
        if b1 is not None and b2 is not None and b1 != b2:
            raise ValueError(f"x1 and x2 must hold the same number of images; found "
                             f"{tuple(x1.shape)} and {tuple(x2.shape)}.")
        e = self.embedding(ops.concatenate([x1, x2], axis=0), training=training)  # (2B, D)
        b = ops.shape(x1)[0]
        return self.compare(e[:b], e[b:])  # (B,)

    def same_probability(self, x1: Any, x2: Any) -> Any:
        """Koch head only: ``sigmoid(logit)``, the probability that each pair is the same class."""
        if self.config.head != "koch":
            raise ValueError(f"same_probability needs the koch head; this model's head is "
                             f"{self.config.head!r} (its output is not a logit).")
        return ops.sigmoid(self((x1, x2), training=False))

    def batch_accuracy(self, output: Any, target: Any) -> Any:
        """Keras mirror of :func:`metalearn_shared.models.siamese.batch_accuracy`."""
        same = spec.judged_same(self.config, output)
        return ops.mean(ops.cast(ops.equal(same, target > 0), "float32"))

    def one_shot_scores(self, train_x: Any, test_x: Any) -> Any:
        """``(Q, K)`` similarity of each test image to each training image (one-shot runs)."""
        return self.support_scores(self.embed(train_x, training=False),
                                   self.embed(test_x, training=False))

    def support_scores(self, support_emb: Any, query_emb: Any) -> Any:
        """``(Q, S)`` similarity of each query to each support embedding, higher = closer."""
        out = self.compare(query_emb[:, None, :], support_emb[None, :, :])  # (Q, S)
        return -out if self.config.head == "contrastive" else out

    def predict_episode(self, support_x: Any, support_y: Any, query_x: Any) -> Any:
        """Label of each query's most similar support image (nearest embedding for the
        distance and cosine heads, highest verification logit for Koch), in inference mode.

        Args:
            support_x: ``(S, H, W)`` images; support_y: ``(S,)`` labels; query_x: ``(Q, H, W)``.

        Returns:
            ``(Q,)`` integer predicted labels.
        """
        s = self.embed(support_x, training=False)  # (S, D)
        q = self.embed(query_x, training=False)  # (Q, D)
        best = ops.argmax(self.support_scores(s, q), axis=1)  # (Q,)
        return ops.take(ops.convert_to_tensor(support_y), best, axis=0)


def build(config: SiameseConfig, seed: int | None = None) -> SiameseNetwork:
    """A new, built :class:`SiameseNetwork`; ``seed`` seeds Keras' RNG first (see ``seeded``)."""
    with seeded(seed):
        model = SiameseNetwork(config)
        model.build()
    return model
