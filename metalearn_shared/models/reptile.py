"""Reptile (Nichol, Achiam & Schulman 2018) — the spec.

Reptile shares MAML's network, inner loop and evaluation (:mod:`metalearn_shared.models.
maml`: the same canonical weights, ``conv4`` or ``mlp`` net, BatchNorm modes), and differs in
its outer step. For one episode, starting from ``theta``:

    phi = theta after ``inner_steps`` SGD steps (rate ``inner_lr``) on the episode's whole
          labelled set — support and queries together, full batch —

and the outer step moves ``theta`` toward ``phi``: ``theta <- theta + eps (phi - theta)``
(a meta-batch averages ``phi - theta`` over its episodes). No gradient flows through the
inner loop: ``phi`` is a constant of the outer step.

**The pseudo-gradient.** The trainers of both frameworks run "loss, gradient, optimiser
step". Reptile's training objective (:func:`objective_value`, the models' ``objective``
method) is a number whose gradient with respect to ``theta`` is exactly ``theta - phi``:

    loss = CE(f_phi(query_x), query_y) + S - stop_gradient(S),   S = sum_n <theta_n, stop_gradient(theta_n - phi_n)>

Its value is the query cross-entropy after adaptation (what the log shows; the queries were
part of the inner loop's data, so it is a training loss); its gradient is ``theta - phi``.
With the outer optimiser plain SGD at rate ``eps`` (``--optimizer sgd --lr eps``), the
trainer's step is Reptile's interpolation exactly; any other optimiser is applied to the
pseudo-gradient (as in Nichol et al.'s "Reptile with Adam" variant).

**Evaluation** is MAML's: ``eval_inner_steps`` SGD steps on the support set only, then the
query logits (``reference_forward``). A training-mode forward without the query labels
adapts on the support set (``inner_steps``) — the parity driver's training-mode output.

BatchNorm (``conv4``), training: each inner pass (support and queries as one batch) uses
batch statistics and updates the running ones; the reporting pass on the queries at
``phi`` does too. Evaluation: ``config.bn``, as in MAML.

Task contract: ProtoNet's (``((support_x, support_y, query_x), query_y)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from metalearn_shared import losses, registry
from metalearn_shared.config import BackboneConfig
from metalearn_shared.models import maml
from metalearn_shared.models.maml import MAMLConfig, inputs_and_target, loss_for

__all__ = ["ReptileConfig", "inputs_and_target", "loss_for", "task_data", "reference_adapted", "reference_pseudo_gradient",
           "objective_value", "SPEC"]


@dataclass(frozen=True)
class ReptileConfig(MAMLConfig):
    """Reptile: MAML's network and inner loop, the outer step toward the adapted weights.

    Defaults after Nichol et al.'s Omniglot setting, with SGD in the inner loop: 5 inner
    steps in training, 10 at evaluation (they use 50 Adam steps at rate 1e-3; plain SGD at
    0.1 needs fewer). ``first_order`` has no meaning for Reptile (it is first order by
    construction) and must stay ``False``.
    """

    model: ClassVar[str] = "reptile"
    inner_steps: int = 5
    eval_inner_steps: int = 10
    inner_lr: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.first_order:
            raise ValueError("--first-order: Reptile has no second-order terms to drop; "
                             "leave it off (use --model fomaml for first-order MAML).")


def task_data(support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray,
              query_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The inner loop's training data: support then queries, one batch ``(S + Q, ...)``."""
    return np.concatenate([support_x, query_x]), np.concatenate([support_y, query_y])


def reference_adapted(params: Mapping[str, np.ndarray], config: ReptileConfig,
                      support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray,
                      query_y: np.ndarray) -> dict[str, np.ndarray]:
    """``phi``: the mlp net's weights after the training inner loop, float64."""
    maml.check_mlp(config)
    x, y = task_data(support_x, support_y, query_x, query_y)
    return maml.inner_loop(params, config, x, y, config.inner_steps)[0][-1]


def reference_pseudo_gradient(params: Mapping[str, np.ndarray], config: ReptileConfig,
                              support_x: np.ndarray, support_y: np.ndarray,
                              query_x: np.ndarray, query_y: np.ndarray) -> dict[str, np.ndarray]:
    """``theta - phi`` for every trainable parameter (mlp net, float64): the gradient of the
    training objective, which an SGD step at rate ``eps`` turns into Reptile's update."""
    phi = reference_adapted(params, config, support_x, support_y, query_x, query_y)
    return {n: np.asarray(params[n], np.float64) - phi[n] for n in phi}


def objective_value(params: Mapping[str, np.ndarray], config: ReptileConfig,
                    support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray,
                    query_y: np.ndarray) -> tuple[float, np.ndarray]:
    """``(loss, logits)`` of the training objective (mlp net, float64): the query
    cross-entropy at ``phi`` and the query logits ``(Q, ways)`` there."""
    phi = reference_adapted(params, config, support_x, support_y, query_x, query_y)
    q = np.asarray(query_x, np.float64)
    h = np.tanh(q.reshape(len(q), -1) @ phi["embedding.fc1.weight"].T + phi["embedding.fc1.bias"])
    logits = h @ phi["head.weight"].T + phi["head.bias"]
    return float(losses.softmax_cross_entropy(np.asarray(query_y), logits).mean()), logits


# -- the model contract (metalearn_shared.registry) -----------------------------------------
def _parity_cases(tiny: bool) -> list[registry.ParityCase]:
    ways = registry.PARITY_WAYS
    mlp = registry.ParityCase("reptile-mlp", ReptileConfig(
        net="mlp", hidden=8, ways=ways, inner_steps=3, eval_inner_steps=3,
        backbone=BackboneConfig(image_size=16)))
    if tiny:
        return [mlp]
    conv = ReptileConfig(ways=ways, inner_steps=3, eval_inner_steps=3,
                         backbone=BackboneConfig(image_size=16, hidden=8))
    return [mlp, registry.ParityCase("reptile-conv4-16px-8ch", conv)]


def _workloads(quick: bool) -> list[registry.Workload]:
    """5-way 1-shot, 5 inner steps (Nichol et al.'s training setting, SGD inner loop)."""
    size, hidden, queries = (16, 8, 1) if quick else (28, 64, 15)
    return [registry.Workload(
        f"reptile-5w1s{queries}q-k5",
        ReptileConfig(ways=5, backbone=BackboneConfig(image_size=size, hidden=hidden)),
        registry.Task(ways=5, shots=1, queries=queries), image_size=size)]


def _flops(config: ReptileConfig, task: registry.Task) -> tuple[float, float]:
    """Inference: MAML's (inner steps on the support set, a forward of the queries).
    Training: ``inner_steps`` forward+backward passes over support and queries together, one
    forward of the queries at ``phi``; no backward through the inner loop."""
    per_image = maml.per_image_flops(config)
    queries = task.ways * task.queries * per_image.forward
    forward = task.ways * task.shots * per_image.train * config.inner_steps + queries
    train = task.ways * (task.shots + task.queries) * per_image.train * config.inner_steps + queries
    return forward, train


_OPTIONS = tuple(o for o in maml.OPTIONS if o.flags != ("--first-order",))

SPEC = registry.register_model(registry.ModelSpec(
    name="reptile",
    summary="Reptile (Nichol et al. 2018): outer step toward the task-adapted weights",
    config_cls=ReptileConfig,
    family="fewshot",
    param_spec=maml.param_spec,
    inputs_and_target=inputs_and_target,
    config_from_args=maml.config_from_args_for(ReptileConfig),
    args_from_config=maml.args_from_config,
    # The outer step: SGD at eps (Nichol et al.: eps = 1 annealed to 0, 5 tasks per meta-batch;
    # here one episode per step, so a smaller fixed eps).
    defaults=registry.TrainDefaults(batch=1, lr=0.5, optimizer="sgd", image_size=28),
    options=_OPTIONS,
    parity_cases=_parity_cases,
    workloads=_workloads,
    flops=_flops,
    # MAML's: eval_inner_steps SGD steps on the support set (inference mode).
    reference_forward=maml.reference_forward,
    # The training loss is the query loss after an inner loop that saw the query labels: the
    # forward reference (support only) is not its reference; objective_value is (unit tests).
    reference_loss=None,
    predicts=True,
))
