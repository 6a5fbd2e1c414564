"""MAML (Finn, Abbeel & Levine 2017) and the learners built on its inner loop — the spec.

A MAML model is a network ``f_theta`` (a backbone and a linear ``head`` of ``ways`` outputs)
whose **forward pass is the inner loop**: given one episode ``(support_x, support_y,
query_x)`` it adapts the weights on the support set by ``inner_steps`` SGD steps,

    theta_0 = theta,   theta_{j+1} = theta_j - alpha * grad_theta_j CE(f_theta_j(support_x), support_y),

and returns the query logits ``f_theta_k(query_x)`` ``(Q, ways)``. The loss is the query
cross-entropy, so the trainers' ordinary step (loss, backward, optimiser) is MAML's outer
step, and the gradient of that loss with respect to ``theta`` is the **meta-gradient**:

    d/dtheta CE(f_theta_k(query)) = prod_j (I - alpha H_j) grad CE(f_theta_k(query))   (second order)

Variants, each its own registered model (the same forward, one switch each):

``maml``     second order: the inner gradients stay in the graph (``create_graph=True`` in
             torch, nested ``tf.GradientTape``s in Keras).
``fomaml``   first order: the inner gradients are constants (``I - alpha H`` becomes ``I``).
``metasgd``  Meta-SGD (Li et al. 2017): ``alpha`` is learned, one rate per weight element —
             canonical weights ``inner_lr.<parameter with dots as underscores>``, initialised
             to ``inner_lr``; the inner step is ``theta - alpha ⊙ grad``.
``anil``     ANIL (Raghu et al. 2020): the inner loop adapts the ``head`` only; the backbone
             is shared by all tasks and trained by the outer step alone.

The inner loop never writes to the model's parameters (torch ``functional_call``, Keras
``stateless_call``); the adapted weights exist only inside the forward pass.

Networks (:attr:`MAMLConfig.net`):

``conv4``    the registry's ``conv4`` backbone (``embedding.*``) then ``head`` = Dense(D → ways).
``mlp``      the tiny network of the spec's float64 reference and its finite-difference test:
             flatten, ``embedding.fc1`` = Dense(H*W → hidden), tanh, ``head``. Smooth, so its
             second derivatives are not zero almost everywhere as a ReLU network's are.

BatchNorm (``conv4`` only; :attr:`MAMLConfig.bn`): ``transductive`` — the batch's statistics
in every forward pass, training and evaluation alike, as in the MAML paper (each set of
images is normalised by itself); ``running`` — running statistics at evaluation, updated by
every training-mode pass (the inner-loop passes included). Both keep the same canonical
running-statistics arrays; ``transductive`` never reads them.

Labels: an episode's support labels ``0 .. ways-1`` are the head's outputs (the samplers
relabel every episode, so output ``n`` means "the n-th class of this episode").

Task contract: ProtoNet's — one :class:`~metalearn_shared.episodes.FewShotEpisode` →
``((support_x, support_y, query_x), query_y)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from metalearn_shared import losses, registry
from metalearn_shared.config import BackboneConfig, ConfigMixin, check
from metalearn_shared.flops import Flops, dense_flops
from metalearn_shared.models.backbones import (
    BACKBONE_OPTIONS,
    backbone_args,
    backbone_flops,
    backbone_from_args,
    backbone_spec,
    embedding_chw,
)
from metalearn_shared.models.protonet import inputs_and_target
from metalearn_shared.weights import ParamSpec, dense

__all__ = [
    "NETS",
    "BN_MODES",
    "MAMLConfig",
    "FOMAMLConfig",
    "MetaSGDConfig",
    "ANILConfig",
    "param_spec",
    "loss_for",
    "inner_lr_name",
    "adapted_names",
    "inputs_and_target",
    "net_spec",
    "inner_loop",
    "check_mlp",
    "per_image_flops",
    "config_from_args_for",
    "args_from_config",
    "OPTIONS",
    "reference_forward",
    "reference_meta_gradient",
    "meta_loss",
    "hessian_vector_product",
    "SPEC",
]

NETS = ("conv4", "mlp")
BN_MODES = ("transductive", "running")


@dataclass(frozen=True)
class MAMLConfig(ConfigMixin):
    """A MAML learner (second order).

    Attributes:
        net: ``"conv4"`` (``backbone``) or ``"mlp"`` (``hidden`` tanh units; tests and the
            float64 reference).
        backbone: the ``conv4`` backbone (its ``image_size`` is also the ``mlp``'s input).
        hidden: units of the ``mlp``'s one hidden layer.
        ways: outputs of the head (classes per episode).
        inner_steps: SGD steps on the support set in training.
        eval_inner_steps: steps at evaluation (the MAML paper: 1 in training, 3 at test on
            Omniglot 5-way).
        inner_lr: the inner SGD rate ``alpha`` (Meta-SGD: its initial value).
        first_order: drop the second-order terms (first-order MAML).
        bn: ``"transductive"`` or ``"running"`` (see the module docstring).
    """

    model: ClassVar[str] = "maml"
    #: The inner loop adapts every parameter (ANIL: the head only).
    head_only: ClassVar[bool] = False
    #: The inner rates are learned, per element (Meta-SGD).
    learned_lr: ClassVar[bool] = False
    net: str = "conv4"
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    hidden: int = 32
    ways: int = 5
    inner_steps: int = 1
    eval_inner_steps: int = 3
    inner_lr: float = 0.4
    first_order: bool = False
    bn: str = "transductive"

    def __post_init__(self) -> None:
        check(self.net in NETS, f"unknown net {self.net!r}; choose one of {NETS}.")
        check(self.bn in BN_MODES, f"--bn must be one of {BN_MODES}; got {self.bn!r}.")
        check(self.ways >= 2, f"ways must be at least 2; got {self.ways}.")
        check(self.inner_steps >= 1 and self.eval_inner_steps >= 1,
              "inner_steps and eval_inner_steps must be at least 1 (0 would be no adaptation).")
        check(self.inner_lr > 0, f"inner_lr must be positive; got {self.inner_lr}.")
        check(self.net == "conv4" or self.backbone.name == "conv4",
              "the mlp net reads the images directly; leave backbone at its default.")

    @property
    def image_size(self) -> int:
        return self.backbone.image_size

    @property
    def feature_dim(self) -> int:
        """Size of the head's input."""
        return self.backbone.output_dim if self.net == "conv4" else self.hidden


@dataclass(frozen=True)
class FOMAMLConfig(MAMLConfig):
    """First-order MAML: the inner gradients are constants of the outer step."""

    model: ClassVar[str] = "fomaml"
    first_order: bool = True


@dataclass(frozen=True)
class MetaSGDConfig(MAMLConfig):
    """Meta-SGD: learned per-element inner rates (canonical ``inner_lr.*``)."""

    model: ClassVar[str] = "metasgd"
    learned_lr: ClassVar[bool] = True


@dataclass(frozen=True)
class ANILConfig(MAMLConfig):
    """ANIL: the inner loop adapts the head only."""

    model: ClassVar[str] = "anil"
    head_only: ClassVar[bool] = True


def net_spec(config: MAMLConfig) -> list[ParamSpec]:
    if config.net == "conv4":
        net = backbone_spec(config.backbone, "embedding")
    else:
        net = dense("embedding.fc1", config.image_size**2, config.hidden)
    # conv4 flattens a (C, H, W) map: above 28 px it is larger than 1x1, and each framework
    # flattens in its own order, so the head is a flatten-then-dense kernel.
    chw = embedding_chw(config.backbone) if config.net == "conv4" else None
    return net + dense("head", config.feature_dim, config.ways, flatten_chw=chw)


def adapted_names(config: MAMLConfig) -> list[str]:
    """Canonical names of the parameters the inner loop adapts, in canonical order."""
    return [p.name for p in net_spec(config) if p.trainable
            and (not config.head_only or p.name.startswith("head."))]


def inner_lr_name(name: str) -> str:
    """The Meta-SGD rate of parameter ``name``: ``inner_lr.<name, dots as underscores>``."""
    return "inner_lr." + name.replace(".", "_")


def param_spec(config: MAMLConfig) -> list[ParamSpec]:
    """The network's parameters (``embedding.*``, ``head.*``), and for Meta-SGD one learned
    rate per adapted parameter, of its canonical shape (layout: the parameter's own)."""
    spec = net_spec(config)
    if config.learned_lr:
        by_name = {p.name: p for p in spec}
        for name in adapted_names(config):
            p = by_name[name]
            # Same shape, layout and flatten permutation as the parameter, so that rate and
            # gradient meet element for element in both frameworks.
            keras_path = "inner_lr/" + name.replace(".", "_")
            spec.append(ParamSpec(inner_lr_name(name), p.shape, p.layout, keras_path, chw=p.chw))
    return spec


def loss_for(config: MAMLConfig) -> tuple[str, dict[str, Any]]:
    """The meta-loss in both frameworks' ``losses`` modules: softmax cross-entropy of the
    query logits (the prototypical loss's formula, over the adapted head's logits)."""
    return "PrototypicalLoss", {}


# -- the float64 reference (the mlp net) -----------------------------------------------------
def _ce_grads(p: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray,
              direction: Mapping[str, np.ndarray] | None = None
              ) -> tuple[float, dict[str, np.ndarray], dict[str, np.ndarray] | None]:
    """Mean softmax cross-entropy of the mlp net, its gradient, and — given a ``direction``
    over the net's parameters — the exact Hessian-vector product ``H direction``
    (Pearlmutter's R-operator, by hand: a forward and a backward R-pass)."""
    n = len(y)
    flat = x.reshape(n, -1)
    w1, w2 = p["embedding.fc1.weight"], p["head.weight"]
    h = np.tanh(flat @ w1.T + p["embedding.fc1.bias"])  # (B, U)
    z = h @ w2.T + p["head.bias"]  # (B, N)
    z = z - z.max(axis=1, keepdims=True)
    prob = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    loss = float(-np.log(prob[np.arange(n), y]).mean())
    dz = prob.copy()
    dz[np.arange(n), y] -= 1.0
    dz /= n  # (B, N)
    dh = dz @ w2  # (B, U)
    da = dh * (1.0 - h**2)
    grads = {"head.weight": dz.T @ h, "head.bias": dz.sum(0),
             "embedding.fc1.weight": da.T @ flat, "embedding.fc1.bias": da.sum(0)}
    if direction is None:
        return loss, grads, None
    v1, c1 = direction["embedding.fc1.weight"], direction["embedding.fc1.bias"]
    v2, c2 = direction["head.weight"], direction["head.bias"]
    r_h = (1.0 - h**2) * (flat @ v1.T + c1)  # R{h}
    r_z = r_h @ w2.T + h @ v2.T + c2  # R{z}
    r_dz = prob * (r_z - (prob * r_z).sum(axis=1, keepdims=True)) / n  # R{dz} = R{p} / B
    r_dh = r_dz @ w2 + dz @ v2
    r_da = r_dh * (1.0 - h**2) - dh * 2.0 * h * r_h
    hv = {"head.weight": r_dz.T @ h + dz.T @ r_h, "head.bias": r_dz.sum(0),
          "embedding.fc1.weight": r_da.T @ flat, "embedding.fc1.bias": r_da.sum(0)}
    return loss, grads, hv


def hessian_vector_product(params: Mapping[str, np.ndarray], x: np.ndarray, y: np.ndarray,
                           direction: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``H v`` of the mlp net's mean cross-entropy on ``(x, y)``, exact, float64."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    return _ce_grads(p, np.asarray(x, np.float64), np.asarray(y), direction=direction)[2]


def check_mlp(config: MAMLConfig) -> None:
    if config.net != "mlp":
        raise ValueError(f"the float64 reference covers the mlp net; this config's net is "
                         f"{config.net!r}.")


def _rate(params: Mapping[str, np.ndarray], config: MAMLConfig, name: str) -> Any:
    return np.asarray(params[inner_lr_name(name)], np.float64) if config.learned_lr else config.inner_lr


def inner_loop(params: Mapping[str, np.ndarray], config: MAMLConfig, support_x: np.ndarray,
                support_y: np.ndarray, steps: int
                ) -> tuple[list[dict[str, np.ndarray]], list[dict[str, np.ndarray]]]:
    """``(thetas, grads)``: the net's weights before each step and after the last
    (``steps + 1``), and the support gradient at each step."""
    theta = {k: np.asarray(v, np.float64) for k, v in params.items() if not k.startswith("inner_lr.")}
    thetas, grads = [theta], []
    for _ in range(steps):
        g = _ce_grads(thetas[-1], np.asarray(support_x, np.float64), np.asarray(support_y))[1]
        grads.append(g)
        thetas.append({**thetas[-1], **{n: thetas[-1][n] - _rate(params, config, n) * g[n]
                                        for n in adapted_names(config)}})
    return thetas, grads


def reference_forward(params: Mapping[str, np.ndarray], config: MAMLConfig,
                      support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray,
                      training: bool = False) -> np.ndarray | None:
    """Query logits after the inner loop, float64 (mlp net; None for conv4, whose inner loop
    has no float64 reference here): ``eval_inner_steps`` steps, as the model in inference
    mode (the parity driver's reference), or ``inner_steps`` with ``training``."""
    if config.net != "mlp":
        return None
    steps = config.inner_steps if training else config.eval_inner_steps
    theta = inner_loop(params, config, support_x, support_y, steps)[0][-1]
    q = np.asarray(query_x, np.float64)
    h = np.tanh(q.reshape(len(q), -1) @ theta["embedding.fc1.weight"].T + theta["embedding.fc1.bias"])
    return h @ theta["head.weight"].T + theta["head.bias"]


def meta_loss(params: Mapping[str, np.ndarray], config: MAMLConfig, support_x: np.ndarray,
              support_y: np.ndarray, query_x: np.ndarray, query_y: np.ndarray) -> float:
    """The outer objective (mlp net): query cross-entropy after the training inner loop."""
    check_mlp(config)
    theta = inner_loop(params, config, support_x, support_y, config.inner_steps)[0][-1]
    return _ce_grads(theta, np.asarray(query_x, np.float64), np.asarray(query_y))[0]


def reference_meta_gradient(params: Mapping[str, np.ndarray], config: MAMLConfig,
                            support_x: np.ndarray, support_y: np.ndarray, query_x: np.ndarray,
                            query_y: np.ndarray) -> dict[str, np.ndarray]:
    """``d meta_loss / d params`` for the mlp net, float64, exact (no finite differences).

    Reverse mode through the inner loop ``theta_{j+1} = theta_j - A ⊙ g(theta_j)``
    (``A`` = the rate on adapted parameters, 0 on the others): from ``v = grad CE_query
    (theta_k)``, each step back is ``v <- v - H(theta_j) (A ⊙ v)`` with the exact
    Hessian-vector product of :func:`_ce_grads` — second order, cross terms to parameters
    the inner loop does not adapt (ANIL's backbone) included. First order (``fomaml``)
    drops the ``H`` term: ``v`` is the query gradient. Meta-SGD's rates get
    ``-sum_j g_j ⊙ v_{j+1}``. ``tests/test_maml_spec.py`` checks it against central
    finite differences of :func:`meta_loss`.
    """
    check_mlp(config)
    thetas, gs = inner_loop(params, config, support_x, support_y, config.inner_steps)
    sx, sy = np.asarray(support_x, np.float64), np.asarray(support_y)
    v = _ce_grads(thetas[-1], np.asarray(query_x, np.float64), np.asarray(query_y))[1]
    names = adapted_names(config)
    out = {k: np.zeros(np.shape(a)) for k, a in params.items()}
    for j in range(config.inner_steps - 1, -1, -1):
        if config.learned_lr:
            for n in names:
                out[inner_lr_name(n)] -= gs[j][n] * v[n]
        if not config.first_order:
            u = {k: (_rate(params, config, k) * v[k] if k in names else np.zeros_like(v[k]))
                 for k in v}
            hu = _ce_grads(thetas[j], sx, sy, direction=u)[2]
            v = {k: v[k] - hu[k] for k in v}
    out.update(v)
    return out


# -- the model contract (metalearn_shared.registry) -----------------------------------------
def config_from_args_for(cls: type) -> Any:
    def make(args: Any, size: int) -> MAMLConfig:
        extra = {k: getattr(args, k) for k in ("inner_steps", "eval_inner_steps", "inner_lr", "bn")
                 if getattr(args, k, None) is not None}
        if getattr(args, "first_order", False):
            extra["first_order"] = True
        return cls(backbone=backbone_from_args(args, size), ways=args.ways, **extra)

    return make


def args_from_config(c: MAMLConfig) -> dict[str, Any]:
    return {**backbone_args(c.backbone), "size": c.image_size, "ways": c.ways}


def _parity_cases(cls: type, name: str) -> Any:
    def cases(tiny: bool) -> list[registry.ParityCase]:
        ways = registry.PARITY_WAYS
        mlp = registry.ParityCase(f"{name}-mlp", cls(net="mlp", hidden=8, ways=ways, inner_steps=2,
                                                       backbone=BackboneConfig(image_size=16)))
        # conv4: MAML (and its BatchNorm modes) and Meta-SGD, whose rates take the conv
        # kernels' layouts. First-order MAML and ANIL run MAML's conv4 graph with one flag
        # changed (which gradients flow), and the mlp case compares exactly that; their
        # conv4 cases would add CI time and no code path.
        if tiny or cls in (FOMAMLConfig, ANILConfig):
            return [mlp]
        conv = cls(ways=ways, inner_steps=2, backbone=BackboneConfig(image_size=16, hidden=8))
        out = [mlp, registry.ParityCase(f"{name}-conv4-16px-8ch", conv)]
        if cls is MAMLConfig:  # the BatchNorm modes are one code path in every learner
            out.append(registry.ParityCase(f"{name}-conv4-16px-8ch-running", conv.replace(bn="running")))
        return out

    return cases


def _workloads(cls: type, name: str) -> Any:
    def workloads(quick: bool) -> list[registry.Workload]:
        """5-way 1-shot, 1 inner step; second-order MAML also with 5 (memory grows with the
        steps: every inner step's graph is kept for the meta-gradient)."""
        size, hidden, queries = (16, 8, 1) if quick else (28, 64, 15)
        steps = (1, 5) if cls is MAMLConfig and not quick else (1,)
        return [registry.Workload(
            f"{name}-5w1s{queries}q" + (f"-k{k}" if k > 1 else ""),
            cls(ways=5, inner_steps=k, backbone=BackboneConfig(image_size=size, hidden=hidden)),
            registry.Task(ways=5, shots=1, queries=queries), image_size=size) for k in steps]

    return workloads


def per_image_flops(config: MAMLConfig) -> Flops:
    """Forward and training FLOPs of the net (backbone and head) per image."""
    if config.net == "conv4":
        return backbone_flops(config.backbone) + Flops(
            *(2 * [dense_flops(dense("head", config.feature_dim, config.ways))]))
    f = dense_flops(net_spec(config))
    return Flops(f, 3 * f)


def _flops(config: MAMLConfig, task: registry.Task) -> tuple[float, float]:
    """One forward/backward per inner step on the support set, one on the queries; the
    outer backward of second-order MAML costs about twice a backward per inner step more
    (a Hessian-vector product); first order, one backward more."""
    per_image = per_image_flops(config)
    support = per_image * (task.ways * task.shots)
    query = per_image * (task.ways * task.queries)
    inner = support.train * config.inner_steps
    forward = inner + query.forward
    outer = query.train - query.forward + (2 if not config.first_order else 1) * inner
    return forward, forward + outer


OPTIONS = (
    *BACKBONE_OPTIONS,
    registry.Option(("--inner-steps",), {"type": int, "default": None,
                                         "help": "MAML family: inner SGD steps in training (default 1)"}),
    registry.Option(("--eval-inner-steps",), {"type": int, "default": None,
                                              "help": "MAML family: inner steps at evaluation (default 3; "
                                                      "metalearn eval applies it to a trained model)"},
                    at_eval=True),
    registry.Option(("--inner-lr",), {"type": float, "default": None,
                                      "help": "MAML family: inner learning rate (default 0.4)"}),
    registry.Option(("--first-order",), {"action": "store_true", "default": False,
                                         "help": "MAML family: drop the second-order terms"}),
    registry.Option(("--bn",), {"default": None, "choices": BN_MODES,
                                "help": "MAML family: BatchNorm statistics at evaluation "
                                        "(default transductive; metalearn eval applies it to a "
                                        "trained model)"}, at_eval=True),
)


def _register(cls: type, summary: str) -> registry.ModelSpec:
    name = cls.model
    return registry.register_model(registry.ModelSpec(
        name=name,
        summary=summary,
        config_cls=cls,
        family="fewshot",
        param_spec=param_spec,
        inputs_and_target=inputs_and_target,
        config_from_args=config_from_args_for(cls),
        args_from_config=args_from_config,
        # Finn et al.: Adam 1e-3 outer, 32 tasks per meta-batch (here 1 episode per step;
        # --meta-batch averages more).
        defaults=registry.TrainDefaults(batch=1, lr=1e-3, optimizer="adam", image_size=28),
        options=OPTIONS,
        parity_cases=_parity_cases(cls, name),
        workloads=_workloads(cls, name),
        flops=_flops,
        reference_forward=reference_forward,
        reference_loss=lambda target, logits: float(losses.softmax_cross_entropy(target, logits).mean()),
        predicts=True,
        implementations={"torch": "metalearn_torch.models.maml", "keras": "metalearn_tf.models.maml"},
        tags=frozenset({registry.INNER_LOOP}),
    ))


SPEC = _register(MAMLConfig, "MAML (Finn et al. 2017), second-order meta-gradient")
_register(FOMAMLConfig, "first-order MAML")
_register(MetaSGDConfig, "Meta-SGD (Li et al. 2017): learned per-element inner rates")
_register(ANILConfig, "ANIL (Raghu et al. 2020): inner loop on the head only")
