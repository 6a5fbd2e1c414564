"""The toy model in PyTorch (``tests.toy_model.spec``)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from tests.toy_model.spec import ToyConfig, inputs_and_target


class ToyNet(nn.Module):
    def __init__(self, config: ToyConfig) -> None:
        super().__init__()
        self.config = config
        self.proj = nn.Linear(config.image_size**2, config.embedding_dim)

    def forward(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                ways: int | None = None) -> Tensor:
        s = self.proj(support_x.flatten(1))  # (S, D)
        q = self.proj(query_x.flatten(1))  # (Q, D)
        ways = int(support_y.max()) + 1 if ways is None else ways
        onehot = nn.functional.one_hot(support_y.long(), ways).to(s.dtype)  # (S, N)
        protos = onehot.T @ s / onehot.sum(0)[:, None]  # (N, D)
        return -((q[:, None, :] - protos[None]) ** 2).sum(-1)  # (Q, N)

    def make_loss(self) -> nn.Module:
        return nn.CrossEntropyLoss()

    def inputs_and_target(self, batch: Any) -> tuple[tuple[Tensor, ...], Tensor]:
        (sx, sy, qx), qy = inputs_and_target(batch)
        return (torch.as_tensor(sx), torch.as_tensor(sy), torch.as_tensor(qx)), torch.as_tensor(qy)

    def batch_accuracy(self, output: Tensor, target: Tensor) -> Tensor:
        return (output.argmax(-1) == target).float().mean()

    def predict_episode(self, support_x: Any, support_y: Any, query_x: Any) -> Tensor:
        with torch.no_grad():
            return self(torch.as_tensor(support_x), torch.as_tensor(support_y),
                        torch.as_tensor(query_x)).argmax(1)


def build(config: ToyConfig, seed: int | None = None) -> ToyNet:
    if seed is not None:
        torch.manual_seed(seed)
    return ToyNet(config)
