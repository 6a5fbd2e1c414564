"""PyTorch Prototypical network (Snell, Swersky & Zemel 2017).

Mirror of ``metalearn_tf/models/protonet.py``; the spec is
:mod:`metalearn_shared.models.protonet`. Support and query images go through the backbone
in one batch (support first); prototypes are mean support embeddings; logits are
``-||q - c_n||^2`` computed from the differences.

Task contract (for a generic trainer; every metalearn torch model has it)::

    inputs, target = model.inputs_and_target(episode)  # FewShotEpisode -> ((sx, sy, qx, N), qy)
    logits = model(*inputs)                             # (Q, N)
    loss = model.make_loss()(logits, target)            # scalar mean; == model.compute_loss_on(episode)
    labels = model.predict_episode(support_x, support_y, query_x)  # (Q,) int64, eval mode

``inputs`` end with the episode's ways ``N`` as a Python int, read from the numpy labels
before they go to the device: ``forward`` then needs no host sync, and under
``torch.compile`` the whole step is one graph (``int(support_y.max())`` on a tensor would
break it; ``tests/test_compile.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metalearn_shared.episodes import FewShotEpisode
from metalearn_shared.models import protonet as spec
from metalearn_shared.models.protonet import ProtoNetConfig
from metalearn_torch import losses
from metalearn_torch.models.backbones import TaskMixin, inference, make_backbone, seeded

__all__ = ["PrototypicalNetwork", "build"]


class PrototypicalNetwork(TaskMixin, nn.Module):
    """Prototypical network on a backbone.

    Args:
        config: the backbone.

    Attributes:
        embedding: the backbone (``SeedConvNet`` or ``Conv4``).
    """

    spec = spec  # the shared spec: inputs_and_target, loss_for (see TaskMixin)
    #: The eager step is faster with channels-last weights and inputs on CPU (``python -m
    #: benchmarks``, 1 thread, AMD EPYC: 5-way training 15.4 vs 9.3
    #: episodes/s, inference 45.6 vs 22.0); the trainer and the evaluator use it by
    #: default (``metalearn_torch.models.memory_format``).
    prefers_channels_last: ClassVar[bool] = True

    def __init__(self, config: ProtoNetConfig) -> None:
        super().__init__()
        self.config = config
        self.embedding = make_backbone(config.backbone)

    def embed(self, x: Tensor) -> Tensor:
        """``(B, H, W)`` or ``(B, 1, H, W)`` images → ``(B, D)`` embeddings."""
        return self.embedding(x)

    def forward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None
    ) -> Tensor:
        """Logits of every query for every class.

        Args:
            support_x: ``(S, H, W)`` or ``(S, 1, H, W)`` images, ``S = N*K``.
            support_y: ``(S,)`` integer labels ``0 .. N-1``, each present at least once.
            query_x: ``(Q, H, W)`` or ``(Q, 1, H, W)`` images.
            ways: ``N``; ``max(support_y) + 1`` when None (one host sync, and a graph
                break under ``torch.compile``; :meth:`inputs_and_target` passes it).

        Returns:
            ``(Q, N)`` logits ``-||q - c_n||^2``.
        """
        s = self.embedding.prepare(support_x, "support_x")
        q = self.embedding.prepare(query_x, "query_x")
        n_s = s.shape[0]
        if tuple(support_y.shape) != (n_s,):
            raise ValueError(f"support_y: expected shape ({n_s},), one label per support image; "
                             f"found {tuple(support_y.shape)}.")
        e = self.embedding(torch.cat([s, q]))  # (S+Q, D), one BatchNorm batch
        if ways is None:
            ways = int(support_y.max()) + 1
        onehot = F.one_hot(support_y.long(), ways).to(e.dtype)  # (S, N)
        protos = onehot.T @ e[:n_s] / onehot.sum(0)[:, None]  # (N, D)
        return -losses.squared_euclidean(e[n_s:, None, :], protos[None, :, :])  # (Q, N)

    def inputs_and_target(self, episode: FewShotEpisode
                          ) -> tuple[tuple[Tensor, Tensor, Tensor, int], Tensor]:
        """One episode → ``((support_x, support_y, query_x, ways), query_y)``: tensors on the
        model's device, and ``ways = max(support_y) + 1`` as an int, taken from the numpy
        labels (what ``forward`` would compute with ``ways=None``, without the host sync)."""
        (sx, sy, qx), qy = super().inputs_and_target(episode)
        return (sx, sy, qx, int(np.max(episode.support_y)) + 1), qy

    def one_shot_scores(self, train_x: Tensor, test_x: Tensor) -> Tensor:
        """``(Q, K)`` logits of each test image for each training image as its own class
        (one-shot runs)."""
        labels = torch.arange(len(train_x), device=train_x.device)
        return self(train_x, labels, test_x, len(train_x))

    def predict_episode(
        self, support_x: Any, support_y: Any, query_x: Any, ways: int | None = None
    ) -> Tensor:
        """Label of each query's nearest prototype; eval mode, no autograd, mode restored.

        Accepts tensors or numpy arrays. Returns ``(Q,)`` int64.
        """
        device = next(self.parameters()).device
        with inference(self):
            logits = self(torch.as_tensor(support_x, device=device),
                          torch.as_tensor(support_y, device=device),
                          torch.as_tensor(query_x, device=device), ways)
        return logits.argmax(dim=1)


def build(config: ProtoNetConfig, seed: int | None = None) -> PrototypicalNetwork:
    """A new :class:`PrototypicalNetwork`; ``seed`` makes its initial weights repeatable."""
    with seeded(seed):
        return PrototypicalNetwork(config)
