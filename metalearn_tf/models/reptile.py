"""Keras Reptile: MAML's network and inner loop, the outer step toward the adapted weights.

Mirror of ``metalearn_torch/models/reptile.py``; the spec is :mod:`metalearn_shared.models.
reptile` (the inner loop's data, the pseudo-gradient, BatchNorm). :class:`Reptile` is
:class:`~metalearn_tf.models.maml.MAML` (same variables, same ``call`` and evaluation) with
its own training objective and a custom ``train_step``: ``fit`` runs :meth:`Reptile.
objective` under its tape, whose loss has the query loss at ``phi`` as value and ``theta -
phi`` as gradient, and applies the optimiser to that gradient — with SGD at rate ``eps``,
Reptile's interpolation ``theta + eps (phi - theta)``. The inner loop starts from
``stop_gradient`` of the weights, so nothing is differentiated through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from metalearn_shared.models import reptile as spec
from metalearn_shared.models.reptile import ReptileConfig
from metalearn_tf.models.backbones import seeded
from metalearn_tf.models.maml import MAML

__all__ = ["Reptile", "build"]

_PACKAGE = "metalearn_tf"


@keras.saving.register_keras_serializable(_PACKAGE)
class Reptile(MAML):
    """Reptile on MAML's network (``embedding``, ``head``); see the module docstring.

    Args:
        config: a :class:`~metalearn_shared.models.reptile.ReptileConfig`.
    """

    spec = spec  # inputs_and_target (ProtoNet's), loss_for (MAML's: query cross-entropy)
    config_cls = ReptileConfig

    def objective(self, inputs: Any, target: Any, loss_fn: Callable[[Any, Any], Any]
                  ) -> tuple[Any, Any]:
        """``(loss, query logits at phi)``: ``loss``'s value is the query loss at ``phi``,
        its gradient with respect to every trainable variable ``theta - phi``."""
        sx, sy, qx = self._check_inputs(inputs, None)
        target = ops.convert_to_tensor(target)
        theta, stats, rates = self._start()
        start = [ops.stop_gradient(t) for t in theta]
        x = ops.concatenate([sx, qx], axis=0)  # the task's labelled set: support, then queries
        y = ops.concatenate([ops.cast(sy, target.dtype), target], axis=0)
        phi, stats = self._adapt(start, stats, rates, x, y, self.config.inner_steps,
                                 bn_batch=True, training=True, first_order=True)
        phi = [ops.stop_gradient(t) for t in phi]
        output, stats = self._net(phi, stats, qx, True)  # (Q, ways)
        self._assign_stats(stats)
        output = ops.stop_gradient(output)
        reported = ops.stop_gradient(loss_fn(target, output))
        pull = ops.sum(ops.stack([ops.sum(t * (s - p)) for t, s, p in zip(theta, start, phi, strict=True)]))
        return reported + (pull - ops.stop_gradient(pull)), output

    def train_step(self, data: Any) -> dict[str, Any]:
        """``fit``'s step: :meth:`objective` under a tape, its gradient to the optimiser,
        then the compiled metrics (Keras' own ``train_step`` with the objective in place of
        ``loss(y, model(x))``)."""
        x, y = data[0], data[1]

        def loss_fn(target: Any, output: Any) -> Any:
            return self.compute_loss(x=x, y=target, y_pred=output, training=True)

        with tf.GradientTape() as tape:
            loss, y_pred = self.objective(x, y, loss_fn)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(loss, variables), variables)
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
        return self.compute_metrics(x, y, y_pred)


def build(config: ReptileConfig, seed: int | None = None) -> Reptile:
    """A new, built :class:`Reptile`; ``seed`` seeds Keras' RNG first."""
    with seeded(seed):
        model = Reptile(config)
        model.build()
    return model
