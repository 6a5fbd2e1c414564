"""Keras evaluation: numpy-in/numpy-out views of a model for the shared evaluator.

Mirror of ``metalearn_torch/evaluate.py``; the protocol (episodes, CI, per-instance accuracy,
one-shot runs) is :mod:`metalearn_shared.evaluation`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from metalearn_shared import evaluation as E
from metalearn_shared import training as T
from metalearn_shared.predict import ClassScores
from metalearn_tf.checkpoint import load_checkpoint

__all__ = ["adapted_scores", "class_scores", "model_fns", "evaluate_model", "load_any", "main_eval",
           "tuning_objective"]


def class_scores(model: keras.Model) -> ClassScores:
    """``(support_x, support_y, query_x, ways) -> (Q, ways)`` scores of ``model``, inference mode.

    Prototype models score each class by their logits; pair models (with
    ``support_scores``) by the query's best match among the class's support images.
    """

    def scores(sx: np.ndarray, sy: np.ndarray, qx: np.ndarray, ways: int) -> np.ndarray:
        if not hasattr(model, "support_scores"):
            return ops.convert_to_numpy(model((sx, sy, qx), training=False, ways=ways))
        per_image = model.support_scores(model.embed(sx, training=False),
                                         model.embed(qx, training=False))  # (Q, S)
        onehot = ops.one_hot(sy, ways) > 0  # (S, N)
        masked = ops.where(onehot[None, :, :], per_image[:, :, None], -np.inf)  # (Q, S, N)
        return ops.convert_to_numpy(ops.max(masked, axis=1))  # (Q, N)

    return scores


def tuning_objective(model: keras.Model, episode: Any, trial: Any,
                     entropy: float) -> Callable[[], Any]:
    """``() -> loss``: :meth:`metalearn_shared.evaluation.FineTuning.objective` of the model
    as it is when called — its loss on ``episode`` plus ``entropy`` times the mean entropy
    of its predictions for ``trial``'s queries."""
    loss_fn = model.make_loss()
    inputs, target = model.inputs_and_target(episode)
    trial_inputs, _ = model.inputs_and_target(trial)

    def objective() -> Any:
        loss = loss_fn(target, model(inputs, training=False))
        if entropy:
            logp = ops.log_softmax(model(trial_inputs, training=False), axis=-1)
            loss = loss + entropy * -ops.mean(ops.sum(ops.exp(logp) * logp, axis=-1))
        return loss

    return objective


def adapted_scores(model: keras.Model) -> Callable[..., np.ndarray]:
    """:attr:`~metalearn_shared.evaluation.ModelFns.adapted_scores` of a few-shot model:
    plain SGD on :func:`tuning_objective`, ``training=False`` (BatchNorm on its moving
    statistics, as torch's eval mode), then the trial's class scores; the weights are
    restored afterwards, whatever happens."""
    import tensorflow as tf

    score = class_scores(model)

    def adapted(episode: Any, trial: Any, steps: int, lr: float, entropy: float) -> np.ndarray:
        variables = model.trainable_variables
        saved = [ops.copy(v.value) for v in variables]
        try:
            objective = tuning_objective(model, episode, trial, entropy)
            for _ in range(steps):
                with tf.GradientTape() as tape:
                    loss = objective()
                for v, g in zip(variables, tape.gradient(loss, variables), strict=True):
                    v.assign_sub(lr * g)
            return score(trial.support_x, trial.support_y, trial.query_x, len(trial.classes))
        finally:
            for v, w in zip(variables, saved, strict=True):
                v.assign(w)

    return adapted


def model_fns(model: keras.Model) -> E.ModelFns:
    """The numpy functions :class:`~metalearn_shared.evaluation.ModelFns` needs."""
    np_ = keras.ops.convert_to_numpy

    def predict(sx: np.ndarray, sy: np.ndarray, qx: np.ndarray) -> np.ndarray:
        return np_(model.predict_episode(sx, sy, qx))

    def scores(test: np.ndarray, train: np.ndarray) -> np.ndarray:
        return np_(model.one_shot_scores(train, test))

    def logits(x: np.ndarray, prev_label: np.ndarray) -> np.ndarray:
        return np_(model((x, prev_label), training=False))

    return E.ModelFns(predict=predict, logits=logits,
                      scores=scores if hasattr(model, "one_shot_scores") else None,
                      class_scores=class_scores(model) if hasattr(model, "predict_episode") else None,
                      adapted_scores=adapted_scores(model) if E.tunable(model.config.model) else None)


def evaluate_model(model: keras.Model, setup: T.TrainSetup, episodes: int,
                   out: Any = None) -> dict[str, Any]:
    """Accuracy ± 95% CI of ``model`` on ``setup``'s held-out classes."""
    return E.evaluate(model_fns(model), setup, episodes, out, label=f"{model.config.model} (keras)")


def load_any(path: str) -> tuple[keras.Model, dict[str, Any]]:
    """A canonical ``.safetensors`` checkpoint, or a ``.keras`` file (safe mode, no lambdas)."""
    if Path(path).suffix == ".keras":
        from metalearn_tf.models import available_models

        available_models()  # imports (and so registers) every serialisable model class
        import json
        import zipfile

        from metalearn_shared.weights import KERAS_META

        model = keras.saving.load_model(path, safe_mode=True)
        meta: dict[str, Any] = {"source_framework": "keras"}
        with zipfile.ZipFile(path) as z:
            if KERAS_META in z.namelist():  # step and training data, as save_keras wrote them
                meta.update(json.loads(z.read(KERAS_META)))
        return model, meta
    return load_checkpoint(path)


def main_eval(args: Any) -> int:
    """``metalearn eval --framework tf CHECKPOINT``."""
    return E.main_eval(args, "keras", load_any, model_fns)
