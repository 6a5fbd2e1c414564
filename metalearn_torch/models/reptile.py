"""PyTorch Reptile: MAML's network and inner loop, the outer step toward the adapted weights.

Mirror of ``metalearn_tf/models/reptile.py``; the spec is :mod:`metalearn_shared.models.
reptile` (its docstring defines the inner loop's data, the pseudo-gradient and BatchNorm).
:class:`Reptile` is :class:`~metalearn_torch.models.maml.MAML` (same weights, same forward
and evaluation) with its own training objective: :meth:`Reptile.objective` adapts a
detached copy of the weights on support and queries together and returns a loss whose
gradient is ``theta - phi`` (the trainers call it through :func:`metalearn_torch.models.
objective`), so ``loss.backward(); opt.step()`` with SGD at rate ``eps`` is
Reptile's interpolation ``theta + eps (phi - theta)``. Nothing is differentiated through the
inner loop, so the step is as cheap as first-order MAML's, and ``torch.compile`` could in
principle take it; the inner loop's ``autograd.grad`` still breaks a graph, so this model
also trains eager.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from metalearn_shared.models import reptile as spec
from metalearn_shared.models.reptile import ReptileConfig
from metalearn_torch.models.backbones import seeded
from metalearn_torch.models.maml import MAML

__all__ = ["Reptile", "build"]


class Reptile(MAML):
    """Reptile on MAML's network (``embedding``, ``head``); see the module docstring.

    Args:
        config: a :class:`~metalearn_shared.models.reptile.ReptileConfig`.
    """

    spec = spec  # inputs_and_target (ProtoNet's), loss_for (MAML's: query cross-entropy)
    @property
    def prefers_channels_last(self) -> bool:
        """Yes: Reptile's inner loop steps real parameters through the modules, and its eager
        step is faster channels-last (``python -m benchmarks``, 1 thread, AMD EPYC: 1.8 vs
        1.6 episodes/s at 5 inner steps, inference 7.8 vs 6.0)."""
        return True

    not_compiled_because = ("the inner loop calls torch.autograd.grad, which torch.compile "
                            "cannot trace into one graph")

    def objective(self, inputs: Sequence[Tensor], target: Tensor, loss_fn: Callable[..., Tensor],
                  forward: Callable[..., Tensor] | None = None) -> tuple[Tensor, Tensor]:
        """``(loss, query logits at phi)``; ``loss``'s value is the query loss at ``phi``,
        its gradient with respect to every parameter is ``theta - phi``.

        ``forward`` is not called: the inner loop runs on this module's own weights
        (detached), and the only graph to the parameters is the pseudo-gradient's.
        """
        support_x, support_y, query_x = inputs
        sx, qx = self._check_inputs(support_x, support_y, query_x, None)
        if tuple(target.shape) != (qx.shape[0],):
            raise ValueError(f"query_y: expected shape ({qx.shape[0]},), one label per query; "
                             f"found {tuple(target.shape)}.")
        theta, rates = self.inner_weights()
        start = {n: t.detach() for n, t in theta.items()}
        x = torch.cat([sx, qx])  # the task's labelled set: support, then queries
        y = torch.cat([support_y.to(target.dtype), target])
        with self._batchnorm_mode() as buffers:
            phi = self._adapt(start, rates, buffers, x, y, self.config.inner_steps,
                              create_graph=False)
            phi = {n: t.detach() for n, t in phi.items()}
            with torch.no_grad():
                output = self._logits(phi, buffers, qx)  # (Q, ways)
                reported = loss_fn(output, target)
        pull = sum((theta[n] * (start[n] - phi[n])).sum() for n in self.adapted)
        return reported + (pull - pull.detach()), output


def build(config: ReptileConfig, seed: int | None = None) -> Reptile:
    """A new :class:`Reptile`; ``seed`` makes its initial weights repeatable."""
    with seeded(seed):
        return Reptile(config)
