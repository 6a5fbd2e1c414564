"""PyTorch MAML family: MAML, first-order MAML, Meta-SGD and ANIL — one module, four models.

Mirror of ``metalearn_tf/models/maml.py``; the spec is :mod:`metalearn_shared.models.maml`
(its docstring defines the variants, the networks and the BatchNorm modes). The four
registered configs differ by class flags only, and :class:`MAML` switches on them:
``config.first_order`` (inner gradients are constants), ``config.learned_lr`` (Meta-SGD's
per-element rates, the parameters ``inner_lr.*``) and ``config.head_only`` (ANIL: the inner
loop adapts ``head.*``).

The forward pass is the inner loop. It never writes to the parameters: the adapted weights
are a dict of tensors fed to the two submodules through ``torch.func.functional_call``.

Autograd in the inner loop:

* training mode, gradients on (a training step): ``create_graph=True`` unless first order,
  so ``loss.backward()`` gives the exact meta-gradient (Meta-SGD's rates included);
* training mode under ``torch.no_grad()`` (the parity driver's forward): the same values,
  no graph to the outer step;
* eval mode: the inner loop starts from detached weights, so the logits carry no graph.

The loop runs under ``torch.enable_grad()``, so evaluation under ``torch.no_grad()``
(``inference``) still adapts; ``torch.inference_mode()`` cannot (it forbids autograd) and
raises. Second-order graphs are not meant for ``torch.compile``.

BatchNorm (conv4), the passes in the order support(θ_0), …, support(θ_{k-1}), query(θ_k):

* training mode: batch statistics; every pass updates the running statistics;
* eval, ``bn="transductive"``: batch statistics; the running statistics are untouched
  (the passes update copies, which are discarded);
* eval, ``bn="running"``: the running statistics.

Task contract (ProtoNet's)::

    inputs, target = model.inputs_and_target(episode)  # FewShotEpisode -> ((sx, sy, qx), qy)
    logits = model(*inputs)                             # (Q, ways), after the inner loop
    loss = model.make_loss()(logits, target)            # query cross-entropy: the meta-loss
    labels = model.predict_episode(support_x, support_y, query_x)  # (Q,) int64, eval mode
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from metalearn_shared.models import maml as spec
from metalearn_shared.models.backbones import check_images
from metalearn_shared.models.maml import MAMLConfig, adapted_names, inner_lr_name
from metalearn_torch.models.backbones import TaskMixin, inference, make_backbone, seeded

__all__ = ["TanhMLP", "MAML", "build"]

Weights = dict[str, Tensor]


def _dtype_name(t: Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


class TanhMLP(nn.Module):
    """The spec's ``mlp`` net (before the head): flatten, ``fc1`` (H*W → hidden), tanh.

    Args:
        image_size: ``H = W`` of the input images.
        hidden: units of ``fc1``.
    """

    def __init__(self, image_size: int, hidden: int) -> None:
        super().__init__()
        self.image_size = image_size
        self.fc1 = nn.Linear(image_size**2, hidden)

    def prepare(self, x: Tensor, what: str = "images") -> Tensor:
        """Check ``x`` (``(B, H, W)`` or ``(B, 1, H, W)``, the weights' dtype); returns it as is.

        Raises:
            TypeError: not a tensor.
            ValueError: wrong shape or dtype (naming expected and found).
        """
        if not isinstance(x, Tensor):
            raise TypeError(f"{what}: expected a torch.Tensor; found {type(x).__name__}. "
                            "Convert with torch.as_tensor(x).")
        check_images(tuple(x.shape), _dtype_name(x), self.image_size, channels_last=False,
                     expected_dtype=_dtype_name(self.fc1.weight), what=what)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.prepare(x)
        return torch.tanh(self.fc1(x.flatten(1)))  # (B, hidden)


def _under(weights: Mapping[str, Tensor], prefix: str) -> Weights:
    """The entries of submodule ``prefix``, named relative to it."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in weights.items() if k.startswith(prefix + ".")}


def _leaf(t: Tensor) -> Tensor:
    """``t`` if autograd tracks it, else a detached copy that it does (never flips a
    parameter's own ``requires_grad``)."""
    return t if t.requires_grad else t.detach().requires_grad_()


class MAML(TaskMixin, nn.Module):
    """A MAML-family learner: a net whose forward pass adapts to the episode's support set.

    Args:
        config: a :class:`~metalearn_shared.models.maml.MAMLConfig` or one of its
            subclasses (``FOMAMLConfig``, ``MetaSGDConfig``, ``ANILConfig``).

    Attributes:
        embedding: ``Conv4``/``SeedConvNet`` (``net="conv4"``) or :class:`TanhMLP`.
        head: ``Linear(feature_dim, ways)``; output ``n`` is the episode's label ``n``.
        inner_lr: Meta-SGD only: one learned rate tensor per adapted parameter, keyed by its
            canonical name with dots as underscores (``state_dict``: ``inner_lr.head_weight``).
    """

    spec = spec  # the shared spec: inputs_and_target, loss_for (see TaskMixin)
    #: ``metalearn train --compile`` trains this model eager, and says why.
    compilable: ClassVar[bool] = False
    #: Several processes average the finished meta-gradients (``metalearn_torch.
    #: distributed``): DDP's hooks would fire on the inner loop's first backward.
    distributed_mode: ClassVar[str] = "allreduce"
    not_compiled_because = ("torch.compile does not support the double backward of a "
                            "second-order meta-gradient (the inner loop's autograd.grad "
                            "also breaks the graph in first order)")

    @property
    def prefers_channels_last(self) -> bool:
        """ANIL only (``metalearn_torch.models.memory_format``): its backbone runs as modules
        outside the inner loop, and its eager step is faster channels-last (``python -m
        benchmarks``, 1 thread, AMD EPYC: training 15.3 vs 9.5 episodes/s, inference 30.3 vs
        14.3). MAML, first-order MAML and Meta-SGD run the whole network functionally in the
        inner loop and measured slower channels-last (8.3 vs 8.5, 8.7 vs 9.6, 7.2 vs 8.1)."""
        return self.config.head_only

    def __init__(self, config: MAMLConfig) -> None:
        super().__init__()
        self.config = config
        if config.net == "conv4":
            self.embedding = make_backbone(config.backbone)
        else:
            self.embedding = TanhMLP(config.image_size, config.hidden)
        self.head = nn.Linear(config.feature_dim, config.ways)
        self.adapted = adapted_names(config)
        if config.learned_lr:
            params = dict(self.named_parameters())
            # (key, value) pairs: ParameterDict sorts a plain dict's keys; canonical order kept.
            self.inner_lr = nn.ParameterDict([
                (inner_lr_name(n).removeprefix("inner_lr."),
                 nn.Parameter(torch.full_like(params[n].detach(), config.inner_lr)))
                for n in self.adapted])

    # -- the inner loop ------------------------------------------------------------------
    def inner_weights(self) -> tuple[Weights, dict[str, Any]]:
        """``(theta, rates)``: the net's parameters by canonical name, and the inner rate of
        each adapted one (a float, or Meta-SGD's tensor)."""
        theta = {n: p for n, p in self.named_parameters() if not n.startswith("inner_lr.")}
        if self.config.learned_lr:
            rates: dict[str, Any] = {n: self.inner_lr[inner_lr_name(n).removeprefix("inner_lr.")]
                                     for n in self.adapted}
        else:
            rates = dict.fromkeys(self.adapted, self.config.inner_lr)
        return theta, rates

    def _logits(self, theta: Mapping[str, Tensor], buffers: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """The net at weights ``theta`` (buffers: ``buffers``, else the model's own)."""
        features = functional_call(self.embedding, {**_under(theta, "embedding"),
                                                    **_under(buffers, "embedding")}, (x,))  # (B, D)
        return functional_call(self.head, _under(theta, "head"), (features,))  # (B, ways)

    @contextmanager
    def _batchnorm_mode(self) -> Iterator[dict[str, Tensor]]:
        """The buffers the passes use, with BatchNorm set for this mode (restored after).

        Training and eval ``running``: the model's own buffers and BatchNorm modes. Eval
        ``transductive``: BatchNorm in training mode on copies of the buffers.
        """
        if self.training or self.config.bn == "running":
            yield {}
            return
        norms = {m: m.training for m in self.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm)}
        try:
            for m in norms:
                m.train()
            yield {n: b.clone() for n, b in self.named_buffers()}
        finally:
            for m, mode in norms.items():
                m.train(mode)

    def forward(
        self, support_x: Tensor, support_y: Tensor, query_x: Tensor, ways: int | None = None
    ) -> Tensor:
        """Query logits after the inner loop.

        Args:
            support_x: ``(S, H, W)`` or ``(S, 1, H, W)`` images.
            support_y: ``(S,)`` integer labels ``0 .. ways-1`` (the head's outputs).
            query_x: ``(Q, H, W)`` or ``(Q, 1, H, W)`` images.
            ways: the episode's ``N``; must equal ``config.ways`` when given.

        Returns:
            ``(Q, ways)`` logits of the adapted net: ``inner_steps`` SGD steps in training
            mode, ``eval_inner_steps`` in eval mode.

        Raises:
            ValueError: bad shapes, or ``ways`` other than the head's.
            RuntimeError: called under ``torch.inference_mode()``.
        """
        c = self.config
        sx, qx = self._check_inputs(support_x, support_y, query_x, ways)
        # The outer step differentiates through the loop only in a training step.
        outer = self.training and torch.is_grad_enabled()
        steps = c.inner_steps if self.training else c.eval_inner_steps
        theta, rates = self.inner_weights()
        if not outer:
            theta = {n: t.detach() for n, t in theta.items()}
            rates = {n: r.detach() if isinstance(r, Tensor) else r for n, r in rates.items()}
        with self._batchnorm_mode() as buffers:
            theta = self._adapt(theta, rates, buffers, sx, support_y, steps,
                                create_graph=outer and not c.first_order)
            if not outer:
                theta = {n: t.detach() for n, t in theta.items()}
            return self._logits(theta, buffers, qx)  # (Q, ways)

    def _check_inputs(self, support_x: Tensor, support_y: Tensor, query_x: Tensor,
                      ways: int | None) -> tuple[Tensor, Tensor]:
        """The checked ``(support_x, query_x)``; raises the errors :meth:`forward` lists."""
        c = self.config
        if ways is not None and ways != c.ways:
            raise ValueError(f"this model's head has {c.ways} outputs (config.ways); the episode "
                             f"has {ways} ways. Sample {c.ways}-way episodes or train a model "
                             f"with --ways {ways}.")
        sx = self.embedding.prepare(support_x, "support_x")
        qx = self.embedding.prepare(query_x, "query_x")
        if tuple(support_y.shape) != (sx.shape[0],):
            raise ValueError(f"support_y: expected shape ({sx.shape[0]},), one label per support "
                             f"image; found {tuple(support_y.shape)}.")
        if torch.is_inference_mode_enabled():
            raise RuntimeError("the MAML inner loop needs autograd, which torch.inference_mode() "
                               "forbids; evaluate under torch.no_grad() instead.")
        return sx, qx

    def _adapt(self, theta: Weights, rates: Mapping[str, Any], buffers: Mapping[str, Tensor],
               x: Tensor, y: Tensor, steps: int, create_graph: bool) -> Weights:
        """``theta`` after ``steps`` SGD steps on ``(x, y)`` (mean cross-entropy), the adapted
        entries only; ``create_graph`` keeps each step's gradient in the graph (second order)."""
        theta = dict(theta)
        labels = y.long()
        with torch.enable_grad():
            for _ in range(steps):
                theta.update({n: _leaf(theta[n]) for n in self.adapted})
                loss = F.cross_entropy(self._logits(theta, buffers, x), labels)
                grads = torch.autograd.grad(loss, [theta[n] for n in self.adapted],
                                            create_graph=create_graph)
                theta.update({n: theta[n] - rates[n] * g
                              for n, g in zip(self.adapted, grads, strict=True)})
        return theta

    def predict_episode(
        self, support_x: Any, support_y: Any, query_x: Any, ways: int | None = None
    ) -> Tensor:
        """Argmax of the adapted net's query logits; eval mode (``eval_inner_steps``), no
        graph kept, mode restored.

        Accepts tensors or numpy arrays. Returns ``(Q,)`` int64.
        """
        device = next(self.parameters()).device
        with inference(self):  # no_grad: the inner loop enables autograd for itself
            logits = self(torch.as_tensor(support_x, device=device),
                          torch.as_tensor(support_y, device=device),
                          torch.as_tensor(query_x, device=device), ways)
        return logits.argmax(dim=1)


def build(config: MAMLConfig, seed: int | None = None) -> MAML:
    """A new :class:`MAML` (any of the four configs); ``seed`` makes its initial weights
    repeatable."""
    with seeded(seed):
        return MAML(config)
