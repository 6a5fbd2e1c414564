"""Keras MAML family: MAML, first-order MAML, Meta-SGD and ANIL, in one model.

Mirror of ``metalearn_torch/models/maml.py``; the spec (configs, canonical weights, float64
reference forward pass and meta-gradient) is :mod:`metalearn_shared.models.maml`. All four
registered names build :class:`MAML`; the config's flags switch the variant:
``first_order`` (FOMAML), ``learned_lr`` (Meta-SGD), ``head_only`` (ANIL).

The forward pass *is* the inner loop. The weights are read once as tensors, adapted as
tensors, and fed to the network through ``Layer.stateless_call`` — the inner loop never
assigns to a variable. Each inner gradient comes from its own ``tf.GradientTape``; the
tape's gradient ops are themselves recorded by any enclosing tape (``fit``'s train step, a
test's), so the gradient of the query loss with respect to the variables is the
second-order meta-gradient. First order: the inner gradients go through
``ops.stop_gradient``. Keras' standard ``train_step`` is therefore MAML's outer step as it
is (call, query loss, gradient, optimiser); no custom ``train_step`` is needed.

BatchNorm (``conv4``) — the order the torch mirror follows:

- training: every pass uses batch statistics and updates the moving statistics, in the
  order support(theta_0), ..., support(theta_{k-1}), query(theta_k); the updates are
  threaded through the passes (``stateless_call`` returns them) and assigned to the
  variables at the end of ``call``;
- evaluation, ``bn="transductive"``: batch statistics in every pass, moving statistics
  untouched; ``bn="running"``: the moving statistics in every pass.

Task contract: ProtoNet's (see :mod:`metalearn_tf.models.protonet`); the loss is softmax
cross-entropy over the query logits (:class:`metalearn_tf.losses.PrototypicalLoss`, which
is exactly that for any logits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from metalearn_shared import registry
from metalearn_shared.models import maml as spec
from metalearn_shared.models.backbones import check_images
from metalearn_shared.models.maml import MAMLConfig
from metalearn_shared.weights import framework_shape
from metalearn_tf import losses
from metalearn_tf.checkpoint import keras_variables
from metalearn_tf.models.backbones import TaskMixin, make_backbone, seeded

__all__ = ["MLPNet", "InnerRates", "MAML", "build"]

_PACKAGE = "metalearn_tf"


@keras.saving.register_keras_serializable(_PACKAGE)
class MLPNet(keras.layers.Layer):
    """The spec's ``mlp`` net body: flatten ``(B, H*W)``, ``fc1`` = Dense(hidden), tanh.

    Smooth, so that its second derivatives are not zero almost everywhere (the float64
    reference's network). Inputs ``(B, H, W)`` or ``(B, H, W, 1)`` float32 images.

    Args:
        image_size: ``H = W``.
        hidden: units of ``fc1``.
    """

    def __init__(self, image_size: int, hidden: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image_size, self.hidden = image_size, hidden
        self.fc1 = keras.layers.Dense(hidden, name="fc1")

    def build(self, input_shape: Any = None) -> None:
        self.fc1.build((None, self.image_size**2))

    def prepare(self, x: Any, what: str = "images") -> Any:
        """Check ``x`` and return it as ``(B, H, W, 1)``.

        Raises:
            ValueError: wrong shape or dtype (naming expected and found).
        """
        x = ops.convert_to_tensor(x)
        dtype = keras.backend.standardize_dtype(x.dtype)
        if check_images(tuple(x.shape), dtype, self.image_size, channels_last=True,
                        expected_dtype=self.compute_dtype, what=what):
            x = ops.expand_dims(x, -1)  # (B, H, W, 1)
        return x

    def call(self, x: Any, training: bool | None = None) -> Any:
        x = ops.reshape(self.prepare(x), (-1, self.image_size**2))  # (B, H*W), row-major
        return ops.tanh(self.fc1(x))  # (B, hidden)

    def compute_output_shape(self, input_shape: Any) -> tuple[int | None, ...]:
        return (input_shape[0], self.hidden)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "image_size": self.image_size, "hidden": self.hidden}


@keras.saving.register_keras_serializable(_PACKAGE)
class InnerRates(keras.layers.Layer):
    """Meta-SGD's learned inner rates: one variable per adapted parameter, named after it
    (``embedding_fc1_weight``), of the parameter's Keras shape, initialised to ``initial``.

    Args:
        shapes: ``{variable name: Keras shape}``, in the adapted parameters' order.
        initial: the initial rate (``config.inner_lr``).
    """

    def __init__(self, shapes: dict[str, Any], initial: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.shapes = {k: tuple(int(d) for d in s) for k, s in shapes.items()}
        self.initial = float(initial)

    def build(self, input_shape: Any = None) -> None:
        for name, shape in self.shapes.items():
            self.add_weight(shape=shape, name=name,
                            initializer=keras.initializers.Constant(self.initial))

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "shapes": {k: list(s) for k, s in self.shapes.items()},
                "initial": self.initial}


def _read(variable: Any) -> Any:
    """A variable's value as a tensor (a read the enclosing tapes record).

    ``tf.convert_to_tensor``: ``ops.convert_to_tensor`` returns a Keras variable as it is,
    and a tape can only ``watch`` tensors."""
    return tf.convert_to_tensor(variable)


@dataclass(frozen=True)
class _Plan:
    """Which of the net's trainable variables the inner loop adapts, by position.

    Attributes:
        adapted: indices into ``embedding.trainable_variables + head.trainable_variables``.
        rates: per adapted index, the Meta-SGD rate's variable (empty otherwise).
    """

    adapted: tuple[int, ...]
    rates: tuple[Any, ...]


@keras.saving.register_keras_serializable(_PACKAGE)
class MAML(TaskMixin, keras.Model):
    """A MAML-family learner: ``embedding`` (conv4 backbone or mlp body), ``head`` =
    Dense(ways), and for Meta-SGD ``inner_lr`` (the learned rates).

    Args:
        config: a :class:`~metalearn_shared.models.maml.MAMLConfig` or one of its subclasses
            (``FOMAMLConfig``, ``MetaSGDConfig``, ``ANILConfig``); its class is the variant.
    """

    spec = spec  # the shared spec: inputs_and_target, loss_for (see TaskMixin)
    config_cls = MAMLConfig  # per instance: type(config) (a subclass names the variant)

    def __init__(self, config: MAMLConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.config = config
        self.config_cls = type(config)
        if config.net == "conv4":
            self.embedding = make_backbone(config.backbone, name="embedding")
        else:
            self.embedding = MLPNet(config.image_size, config.hidden, name="embedding")
        self.head = keras.layers.Dense(config.ways, name="head")
        if config.learned_lr:
            by_name = {p.name: p for p in spec.param_spec(config)}
            shapes = {n.replace(".", "_"): framework_shape(by_name[n], "keras")
                      for n in spec.adapted_names(config)}
            self.inner_lr = InnerRates(shapes, config.inner_lr, name="inner_lr")

    def build(self, input_shape: Any = None) -> None:
        # Every shape follows from the config; input_shape (from .keras files) is not needed.
        self.embedding.build()
        self.head.build((None, self.config.feature_dim))
        if self.config.learned_lr:
            self.inner_lr.build()

    # -- the task contract -------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MAML:
        # The dict's "model" key picks the config class (maml, fomaml, metasgd, anil).
        return cls(registry.config_from_dict(config))

    # -- the inner loop ----------------------------------------------------------------------
    def _net_variables(self) -> list[Any]:
        return [*self.embedding.trainable_variables, *self.head.trainable_variables]

    def _plan(self) -> _Plan:
        """The adapted variables' positions and rates, from the spec's Keras names; worked
        out once (it walks every variable) and kept: the variables are fixed once built."""
        cached = self.__dict__.get("_cached_plan")
        if cached is not None:
            return cached
        variables = keras_variables(self)
        path = {id(v): p for p, v in variables.items()}
        params = spec.param_spec(self.config)
        canonical = {p.keras_name: p.name for p in params}
        keras_name = {p.name: p.keras_name for p in params}
        names = [canonical[path[id(v)]] for v in self._net_variables()]
        adapted = set(spec.adapted_names(self.config))
        idx = tuple(i for i, n in enumerate(names) if n in adapted)
        rates = tuple(variables[keras_name[spec.inner_lr_name(names[i])]] for i in idx
                      ) if self.config.learned_lr else ()
        # Not through Keras' __setattr__ (which would track the variables a second time).
        self.__dict__["_cached_plan"] = plan = _Plan(idx, rates)
        return plan

    def _net(self, theta: list[Any], stats: list[Any], x: Any, bn_batch: bool) -> tuple[Any, list[Any]]:
        """Logits of ``x`` under weights ``theta`` and BatchNorm statistics ``stats``, without
        side effects; returns ``(logits (B, ways), updated stats)``."""
        n = len(self.embedding.trainable_variables)
        h, stats = self.embedding.stateless_call(theta[:n], stats, x, training=bn_batch)  # (B, D)
        logits, _ = self.head.stateless_call(theta[n:], [], h)  # (B, ways)
        return logits, stats

    def _check_inputs(self, inputs: Any, ways: int | None) -> tuple[Any, Any, Any]:
        if not isinstance(inputs, (tuple, list)) or len(inputs) != 3:
            raise ValueError("MAML expects inputs = (support_x, support_y, query_x); found "
                             f"{type(inputs).__name__}.")
        if ways is not None and ways != self.config.ways:
            raise ValueError(f"this model's head has {self.config.ways} outputs (config.ways); "
                             f"an episode of {ways} ways needs a model built with ways={ways}.")
        s = self.embedding.prepare(inputs[0], "support_x")  # (S, H, W, 1)
        q = self.embedding.prepare(inputs[2], "query_x")  # (Q, H, W, 1)
        support_y = ops.convert_to_tensor(inputs[1])
        n_s = s.shape[0]
        if n_s is not None and tuple(support_y.shape) not in ((n_s,), (None,)):
            raise ValueError(f"support_y: expected shape ({n_s},), one label per support image; "
                             f"found {tuple(support_y.shape)}.")
        return s, support_y, q

    def call(self, inputs: Any, training: bool | None = None, ways: int | None = None) -> Any:
        """Query logits after the inner loop.

        Args:
            inputs: ``(support_x, support_y, query_x)``: ``(S, H, W)`` or ``(S, H, W, 1)``
                images, ``(S,)`` integer labels ``0 .. ways-1``, ``(Q, H, W)`` or
                ``(Q, H, W, 1)`` images.
            training: ``inner_steps`` inner steps, batch statistics updating the moving
                ones; otherwise ``eval_inner_steps`` steps and ``config.bn``'s statistics.
            ways: must equal ``config.ways`` when given (the head's size is fixed).

        Returns:
            ``(Q, ways)`` logits of the adapted network.
        """
        config = self.config
        sx, sy, qx = self._check_inputs(inputs, ways)
        training = bool(training)
        steps = config.inner_steps if training else config.eval_inner_steps
        bn_batch = training or config.bn == "transductive"
        # Read once: the outer tape (fit's, a test's) records these reads and everything
        # computed from them, the inner gradients included.
        theta, stats, rates = self._start()
        theta, stats = self._adapt(theta, stats, rates, sx, sy, steps, bn_batch, training,
                                   config.first_order)
        logits, new_stats = self._net(theta, stats, qx, bn_batch)  # (Q, ways)
        if training:
            self._assign_stats(new_stats)
        return logits

    def _start(self) -> tuple[list[Any], list[Any], list[Any]]:
        """``(theta, stats, rates)``: the net's trainable weights and BatchNorm statistics as
        tensors (reads the enclosing tapes record), and each adapted weight's inner rate."""
        plan = self._plan()
        theta = [_read(v) for v in self._net_variables()]
        stats = [_read(v) for v in self.embedding.non_trainable_variables]
        if self.config.learned_lr:
            rates = [_read(v) for v in plan.rates]
        else:
            rates = [self.config.inner_lr] * len(plan.adapted)
        return theta, stats, rates

    def _adapt(self, theta: list[Any], stats: list[Any], rates: list[Any], x: Any, y: Any,
               steps: int, bn_batch: bool, training: bool, first_order: bool
               ) -> tuple[list[Any], list[Any]]:
        """``(theta, stats)`` after ``steps`` SGD steps on ``(x, y)`` (mean cross-entropy):
        the adapted weights replaced, and — in training — the statistics each pass updated."""
        plan = self._plan()
        theta = list(theta)
        for _ in range(steps):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                adapted = [theta[i] for i in plan.adapted]
                tape.watch(adapted)
                logits, new_stats = self._net(theta, stats, x, bn_batch)  # (B, ways)
                # The loss of make_loss (sparse softmax cross-entropy), mean over the batch;
                # TF differentiates its gradient (the second order) exactly.
                loss = ops.mean(losses.prototypical_loss(y, logits))
            grads = tape.gradient(loss, adapted, unconnected_gradients=tf.UnconnectedGradients.ZERO)
            if first_order:
                grads = [ops.stop_gradient(g) for g in grads]
            for i, g, lr in zip(plan.adapted, grads, rates, strict=True):
                theta[i] = theta[i] - lr * g
            if training:
                stats = new_stats
        return theta, stats

    def _assign_stats(self, stats: list[Any]) -> None:
        for v, s in zip(self.embedding.non_trainable_variables, stats, strict=True):
            v.assign(s)

    def predict_episode(self, support_x: Any, support_y: Any, query_x: Any,
                        ways: int | None = None) -> Any:
        """Label of each query after adaptation, in inference mode; ``(Q,)`` integers."""
        logits = self((support_x, support_y, query_x), training=False, ways=ways)
        return ops.argmax(logits, axis=1)


def build(config: MAMLConfig, seed: int | None = None) -> MAML:
    """A new, built :class:`MAML` (any of the four variants); ``seed`` seeds Keras' RNG first."""
    with seeded(seed):
        model = MAML(config)
        model.build()
    return model

