"""PyTorch Siamese network: twin embedding + contrastive, cosine or Koch head.

Mirror of ``metalearn_tf/models/siamese.py``; the spec (heads, outputs, losses, labels) is
:mod:`metalearn_shared.models.siamese`.

Outputs (``forward(x1, x2)``, one value per pair, ``(B,)``): the Euclidean distance
(``contrastive``), the cosine similarity (``cosine``) or the verification logit (``koch``;
no sigmoid — :meth:`SiameseNetwork.same_probability` applies it). Both images of every pair
go through the backbone in one batch (``x1`` then ``x2``), so BatchNorm sees all ``2B``.

Task contract (for a generic trainer; every metalearn torch model has it)::

    inputs, target = model.inputs_and_target(batch)  # PairBatch -> ((x1, x2), y) tensors
    output = model(*inputs)                           # (B,)
    loss = model.make_loss()(output, target)          # scalar mean; == model.compute_loss_on(batch)
    labels = model.predict_episode(support_x, support_y, query_x)  # (Q,) int64, eval mode
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from metalearn_shared.models import siamese as spec
from metalearn_shared.models.siamese import SiameseConfig
from metalearn_torch import losses
from metalearn_torch.models.backbones import TaskMixin, inference, make_backbone, seeded

__all__ = ["SiameseNetwork", "build"]


class SiameseNetwork(TaskMixin, nn.Module):
    """Siamese network (Bromley et al. 1993; Koch et al. 2015) on a shared backbone.

    Args:
        config: backbone, head (``"contrastive" | "cosine" | "koch"``) and margin.

    Attributes:
        embedding: the backbone (``SeedConvNet`` or ``Conv4``).
        head: ``nn.Linear(D, 1)`` on ``|e1 - e2|`` for the Koch head, else ``None``.
    """

    spec = spec  # the shared spec: inputs_and_target, loss_for (see TaskMixin)
    #: The eager step is faster with channels-last weights and inputs on CPU (``python -m
    #: benchmarks``, 1 thread, AMD EPYC: Conv4 training 645 vs
    #: 400 pairs/s, the seed's network 455 vs 381); the trainer and the evaluator use it by
    #: default (``metalearn_torch.models.memory_format``).
    prefers_channels_last: ClassVar[bool] = True

    def __init__(self, config: SiameseConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = make_backbone(config.backbone)
        self.head = nn.Linear(config.backbone.output_dim, 1) if config.head == "koch" else None

    def embed(self, x: Tensor) -> Tensor:
        """``(B, H, W)`` or ``(B, 1, H, W)`` images → ``(B, D)`` embeddings."""
        return self.embedding(x)

    def compare(self, e1: Tensor, e2: Tensor) -> Tensor:
        """The head on broadcastable embeddings ``(..., D)`` → ``(...)``: distance, cosine or logit."""
        if self.config.head == "contrastive":
            return losses.euclidean_distance(e1, e2)
        if self.config.head == "cosine":
            return losses.cosine_similarity(e1, e2)
        return self.head((e1 - e2).abs()).squeeze(-1)  # (..., 1) -> (...)

    def forward(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Head output for ``B`` pairs, ``(B,)``; ``x1``, ``x2``: ``(B, H, W)`` or ``(B, 1, H, W)``."""
        x1 = self.embedding.prepare(x1, "x1")
        x2 = self.embedding.prepare(x2, "x2")
        if x1.shape[0] != x2.shape[0]:
            raise ValueError(f"x1 and x2 must hold the same number of images; found "
                             f"{tuple(x1.shape)} and {tuple(x2.shape)}.")
        e = self.embedding(torch.cat([x1, x2]))  # (2B, D), one BatchNorm batch
        b = x1.shape[0]
        return self.compare(e[:b], e[b:])  # (B,)

    def same_probability(self, x1: Tensor, x2: Tensor) -> Tensor:
        """Koch head only: ``sigmoid(logit)``, the probability that each pair is the same class."""
        if self.config.head != "koch":
            raise ValueError(f"same_probability needs the koch head; this model's head is "
                             f"{self.config.head!r} (its output is not a logit).")
        return torch.sigmoid(self(x1, x2))

    def batch_accuracy(self, output: Tensor, target: Tensor) -> Tensor:
        """On-device mirror of :func:`metalearn_shared.models.siamese.batch_accuracy`."""
        same = spec.judged_same(self.config, output)
        return (same == (target > 0)).float().mean()

    def one_shot_scores(self, train_x: Tensor, test_x: Tensor) -> Tensor:
        """``(Q, K)`` similarity of each test image to each training image (one-shot runs)."""
        return self.support_scores(self.embed(train_x), self.embed(test_x))

    def support_scores(self, support_emb: Tensor, query_emb: Tensor) -> Tensor:
        """``(Q, S)`` similarity of each query to each support embedding, higher = closer."""
        out = self.compare(query_emb[:, None, :], support_emb[None, :, :])  # (Q, S)
        return -out if self.config.head == "contrastive" else out

    def predict_episode(self, support_x: Any, support_y: Any, query_x: Any) -> Tensor:
        """Label of each query's most similar support image (nearest embedding for the
        distance and cosine heads, highest verification logit for Koch).

        Runs in eval mode (BatchNorm running statistics) without autograd; the module's
        mode is restored afterwards. Accepts tensors or numpy arrays.

        Args:
            support_x: ``(S, H, W)`` images; support_y: ``(S,)`` labels; query_x: ``(Q, H, W)``.

        Returns:
            ``(Q,)`` int64 predicted labels.
        """
        device = next(self.parameters()).device
        support_y = torch.as_tensor(support_y, device=device)
        with inference(self):
            s = self.embed(torch.as_tensor(support_x, device=device))  # (S, D)
            q = self.embed(torch.as_tensor(query_x, device=device))  # (Q, D)
            best = self.support_scores(s, q).argmax(dim=1)  # (Q,)
        return support_y[best].long()


def build(config: SiameseConfig, seed: int | None = None) -> SiameseNetwork:
    """A new :class:`SiameseNetwork`; ``seed`` makes its initial weights repeatable."""
    with seeded(seed):
        return SiameseNetwork(config)
