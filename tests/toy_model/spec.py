"""The toy model's spec: a linear embedding of the flattened image and prototype logits.

Everything generic code needs comes from the :class:`~metalearn_shared.registry.ModelSpec`
registered at the bottom; its two implementations are ``tests.toy_model.toy_torch`` and
``tests.toy_model.toy_keras``. Nothing in the library names it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from metalearn_shared import registry
from metalearn_shared.config import ConfigMixin
from metalearn_shared.weights import ParamSpec, dense

NAME = "toylinear"


@dataclass(frozen=True)
class ToyConfig(ConfigMixin):
    model: ClassVar[str] = NAME
    image_size: int = 12
    embedding_dim: int = 6


def param_spec(config: ToyConfig) -> list[ParamSpec]:
    return dense("proj", config.image_size**2, config.embedding_dim)


def inputs_and_target(episode: Any) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    return (episode.support_x, episode.support_y, episode.query_x), episode.query_y


def reference_logits(params: dict[str, np.ndarray], config: ToyConfig, support_x: np.ndarray,
                     support_y: np.ndarray, query_x: np.ndarray) -> np.ndarray:
    """``-||W q + b - c_n||^2`` in float64, ``c_n`` the mean embedding of class ``n``."""
    w, b = np.asarray(params["proj.weight"], np.float64), np.asarray(params["proj.bias"], np.float64)
    s = np.reshape(support_x, (len(support_x), -1)) @ w.T + b
    q = np.reshape(query_x, (len(query_x), -1)) @ w.T + b
    protos = np.stack([s[support_y == n].mean(0) for n in range(int(support_y.max()) + 1)])
    return -((q[:, None, :] - protos[None]) ** 2).sum(-1)


def _flops(config: ToyConfig, task: registry.Task) -> tuple[float, float]:
    images = task.ways * (task.shots + task.queries)
    f = 2.0 * config.image_size**2 * config.embedding_dim * images
    return f, 2 * f


SPEC = registry.register_model(registry.ModelSpec(
    name=NAME,
    summary="toy: linear embedding + prototypes (tests only)",
    config_cls=ToyConfig,
    family="fewshot",
    param_spec=param_spec,
    inputs_and_target=inputs_and_target,
    config_from_args=lambda args, size: ToyConfig(image_size=size),
    args_from_config=lambda c: {"size": c.image_size},
    defaults=registry.TrainDefaults(batch=1, lr=1e-2, optimizer="adam", image_size=12),
    parity_cases=lambda tiny: [registry.ParityCase(NAME, ToyConfig())],
    workloads=lambda quick: [registry.Workload(NAME, ToyConfig(), registry.Task(ways=3, queries=2),
                                               image_size=12, conv=False)],
    flops=_flops,
    predicts=True,
    implementations={"torch": "tests.toy_model.toy_torch", "keras": "tests.toy_model.toy_keras"},
))
